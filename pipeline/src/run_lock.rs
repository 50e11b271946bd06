//! The lock a training run, an evaluation or a study holds on its folder while it writes
//! there: an advisory file lock (`flock`) on `DIR/.conveyor-KIND.lock`. A second process
//! started on the same folder is refused instead of interleaving its metrics, checkpoints or
//! predictions with the first one's. The system releases the lock when the process ends,
//! however it ends, so a killed run never leaves a stale lock on a local disk (on NFSv3 the
//! server holds a lost client's locks until it recovers). The file stays: it is the lock,
//! not a marker (removing it could let two processes lock two different files); it names its
//! holder's host and pid for the refusal message.
//!
//! Data jobs use [`crate::job::lock`] instead: the workers of one split job share a folder
//! on different hosts, which a pid file with its host says and flock would not.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// What holds a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Train,
    Eval,
    Study,
}

impl RunKind {
    const ALL: [RunKind; 3] = [RunKind::Train, RunKind::Eval, RunKind::Study];

    fn name(self) -> &'static str {
        match self {
            RunKind::Train => "train",
            RunKind::Eval => "eval",
            RunKind::Study => "study",
        }
    }

    /// The lock file's name in the folder.
    pub fn lock_name(self) -> String {
        format!(".conveyor-{}.lock", self.name())
    }
}

/// Whether `name` is a run lock file (conveyor's own, never a user's file).
pub fn is_run_lock(name: &str) -> bool {
    RunKind::ALL.iter().any(|k| name == k.lock_name())
}

/// Held while the run writes; dropping it (or the process ending) releases the lock.
#[derive(Debug)]
pub struct RunLock {
    file: Option<File>,
}

impl RunLock {
    /// Locks `dir` (which must exist) for a run of `kind`; refused while another process
    /// holds it, naming its host and pid.
    pub fn take(dir: &Path, kind: RunKind) -> Result<RunLock, Error> {
        let path = dir.join(kind.lock_name());
        let mut file = open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(Error::OutputDir {
                    path: dir.to_path_buf(),
                    message: format!(
                        "is in use: another {} process is writing here (host and pid: {}; it holds {}); wait for it to end or choose another folder",
                        kind.name(),
                        holder.trim(),
                        path.display()
                    ),
                });
            }
            Err(TryLockError::Error(e)) if no_locks(&e) => return Ok(RunLock { file: None }),
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        let me = format!("{} {}\n", crate::job::lock::host(), std::process::id());
        (|| {
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(me.as_bytes())
        })()
        .map_err(|e| Error::io(&path, e))?;
        Ok(RunLock { file: Some(file) })
    }

    /// Waits for the lock on the file `path` (created if missing): for short work that
    /// processes of one job share, such as the ranks of a training run downloading one
    /// dataset into one cache folder.
    pub fn wait(path: &Path) -> Result<RunLock, Error> {
        let file = open(path)?;
        match file.lock() {
            Ok(()) => Ok(RunLock { file: Some(file) }),
            Err(e) if no_locks(&e) => Ok(RunLock { file: None }),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// False where the file system keeps no locks (some network and FUSE mounts): the run
    /// goes on unlocked, as before locks existed, and its caller says so.
    pub fn held(&self) -> bool {
        self.file.is_some()
    }
}

fn open(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

/// A file system without locks: ENOSYS, ENOLCK (NFS without its lock daemon), EOPNOTSUPP
/// (some FUSE mounts).
fn no_locks(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Unsupported || matches!(e.raw_os_error(), Some(37 | 38 | 95))
}

/// Where a cache folder's lock lives: beside it, so the folder holds only its data.
pub fn beside(dir: &Path, what: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{what}.lock"));
    dir.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        let dir = std::env::temp_dir().join(format!("conveyor-runlock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = RunLock::take(&dir, RunKind::Train).unwrap();
        assert!(first.held());
        let e = RunLock::take(&dir, RunKind::Train).unwrap_err().to_string();
        let me = std::process::id().to_string();
        assert!(
            e.contains("in use") && e.contains(".conveyor-train.lock") && e.contains(&me),
            "{e}"
        );
        // Another kind of run is another lock.
        drop(RunLock::take(&dir, RunKind::Eval).unwrap());
        drop(first);
        drop(RunLock::take(&dir, RunKind::Train).unwrap());
        assert!(is_run_lock(".conveyor-train.lock") && !is_run_lock("train.lock"));
        // A waiting lock is taken once the holder lets go.
        let path = beside(&dir, "fetch");
        let held = RunLock::wait(&path).unwrap();
        let waiter = std::thread::spawn(move || RunLock::wait(&path).unwrap().held());
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished());
        drop(held);
        assert!(waiter.join().unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
        let _ = std::fs::remove_file(beside(&dir, "fetch"));
    }
}
