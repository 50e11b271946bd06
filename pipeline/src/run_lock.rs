//! The lock a training run, an evaluation or a study holds on its folder while it writes
//! there: an advisory file lock (`flock`) on `DIR/.conveyor-KIND.lock`. The system releases
//! it when the process ends, however it ends (killed, out of memory, its node lost under a
//! shared file system), so a requeued run never finds a stale lock, and a second process
//! started on the same folder is refused instead of interleaving its metrics, checkpoints or
//! predictions with the first one's. The file stays: it is the lock, not a marker, and
//! removing it could let two processes lock two different files.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use crate::error::Error;

/// Held while the run writes; dropping it (or the process ending) releases the lock.
#[derive(Debug)]
pub struct RunLock {
    _file: Option<File>,
}

/// The lock file's name for a kind of run ("train", "eval", "study").
pub fn lock_name(kind: &str) -> String {
    format!(".conveyor-{kind}.lock")
}

/// Whether `name` is a run lock file (conveyor's own, never a user's file).
pub fn is_run_lock(name: &str) -> bool {
    ["train", "eval", "study"]
        .iter()
        .any(|k| name == lock_name(k))
}

impl RunLock {
    /// Locks `dir` (which must exist) for one `kind` of run; refused while another process
    /// holds it. Where the file system has no file locks (some parallel file systems mount
    /// without them), the run goes on unlocked, as it did before locks existed.
    pub fn take(dir: &Path, kind: &str) -> Result<RunLock, Error> {
        let path = dir.join(lock_name(kind));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: Some(file) }),
            Err(TryLockError::WouldBlock) => Err(Error::OutputDir {
                path: dir.to_path_buf(),
                message: format!(
                    "is in use: another {kind} process is writing here (it holds {}); wait for it to end or choose another folder",
                    path.display()
                ),
            }),
            Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                Ok(RunLock { _file: None })
            }
            Err(TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        let dir = std::env::temp_dir().join(format!("conveyor-runlock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = RunLock::take(&dir, "train").unwrap();
        let e = RunLock::take(&dir, "train").unwrap_err().to_string();
        assert!(
            e.contains("in use") && e.contains(".conveyor-train.lock"),
            "{e}"
        );
        // Another kind of run is another lock.
        drop(RunLock::take(&dir, "eval").unwrap());
        drop(first);
        drop(RunLock::take(&dir, "train").unwrap());
        assert!(is_run_lock(".conveyor-train.lock") && !is_run_lock("train.lock"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
