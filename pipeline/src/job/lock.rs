//! The lock a job holds on its output folder while it runs: `OUT/.conveyor-NAME.lock`,
//! created exclusively and holding the holder's host and pid, removed when the job ends.
//! A second job on the same output is refused with the holder's pid instead of racing it
//! (only the workers of one split job share a folder); a lock left by a killed job (its pid
//! is gone on this host) is taken over.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// Held while the job runs; dropping it removes the lock file.
#[derive(Debug)]
pub struct OutLock {
    path: PathBuf,
}

/// Whether `name` is a lock file a job keeps in its output folder, or one being written or
/// taken over (never an output, never a foreign file).
pub fn is_lock_file(name: &str) -> bool {
    name.starts_with(".conveyor-") && (name.ends_with(".lock") || name.contains(".lock."))
}

impl OutLock {
    /// Takes `out/.{work}.lock` (`work`: the job's work folder name, one per worker), and
    /// refuses when another live job holds a lock on `out` that may not run beside this one:
    /// only workers of one split job (`{base}-worker-…`) share a folder.
    pub fn take(out: &Path, work: &str) -> Result<OutLock, Error> {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let lock = Self::create(out, work)?;
        let base = work.split("-worker-").next().unwrap_or(work);
        let shared = |name: &str| {
            work.contains("-worker-")
                && name.starts_with(&format!("{base}-worker-"))
                && name != format!("{work}.lock")
        };
        for e in std::fs::read_dir(out)
            .map_err(|e| Error::io(out, e))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if !is_lock_file(&name) || e.path() == lock.path || shared(&name) {
                continue;
            }
            let holder = std::fs::read_to_string(e.path()).unwrap_or_default();
            if !stale(&holder) {
                return Err(in_use(out, &e.path(), &holder));
            }
        }
        Ok(lock)
    }

    /// Creates the lock file whole (written under a temporary name, then hard-linked into
    /// place, which fails when it exists), taking over the lock of a dead holder.
    fn create(out: &Path, work: &str) -> Result<OutLock, Error> {
        let path = out.join(format!("{work}.lock"));
        let tmp = out.join(format!("{work}.lock.{}.tmp", std::process::id()));
        std::fs::write(&tmp, format!("{} {}\n", host(), std::process::id()))
            .map_err(|e| Error::io(&tmp, e))?;
        let res = (|| {
            for _ in 0..3 {
                match std::fs::hard_link(&tmp, &path) {
                    Ok(()) => return Ok(OutLock { path: path.clone() }),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let holder = std::fs::read_to_string(&path).unwrap_or_default();
                        if !stale(&holder) {
                            return Err(in_use(out, &path, &holder));
                        }
                        // Renamed away first: of two jobs taking over one stale lock, only
                        // one rename succeeds, and neither removes a lock the other made.
                        let dead = out.join(format!("{work}.lock.dead.{}", std::process::id()));
                        if std::fs::rename(&path, &dead).is_ok() {
                            let _ = std::fs::remove_file(&dead);
                        }
                    }
                    Err(e) => return Err(Error::io(&path, e)),
                }
            }
            Err(Error::OutputDir {
                path: out.to_path_buf(),
                message: format!(
                    "another job keeps taking {}; run one job per --out",
                    path.display()
                ),
            })
        })();
        let _ = std::fs::remove_file(&tmp);
        res
    }
}

fn in_use(out: &Path, lock: &Path, holder: &str) -> Error {
    Error::OutputDir {
        path: out.to_path_buf(),
        message: format!(
            "is in use by another conveyor job (host and pid: {}, lock {}); wait for it to end, or remove the lock if that process is gone",
            holder.trim(),
            lock.display()
        ),
    }
}

impl Drop for OutLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub(crate) fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// A lock whose process no longer runs on this host: its pid is not in `/proc`, or is this
/// very process (a restarted container reuses low pids). A lock from another host (a shared
/// file system), or where `/proc` cannot tell, is never taken as stale.
fn stale(holder: &str) -> bool {
    let mut parts = holder.split_whitespace();
    let (Some(h), Some(pid)) = (parts.next(), parts.next()) else {
        // Locks are written whole before they appear: an empty one is damage.
        return true;
    };
    let proc = Path::new("/proc");
    h == host()
        && proc.join("self").exists()
        && (!proc.join(pid).exists()
            || pid == std::process::id().to_string()
            || zombie(&proc.join(pid).join("stat")))
}

/// Whether `/proc/PID/stat` says the process has exited and waits to be reaped (state Z,
/// the field after the parenthesised command name): a killed job is one until its parent
/// collects it, which may take seconds.
fn zombie(stat: &Path) -> bool {
    std::fs::read_to_string(stat).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.split_whitespace().next() == Some("Z"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child killed and not yet reaped is a zombie: its lock is stale.
    #[test]
    fn an_unreaped_killed_holder_is_dead() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let stat = Path::new("/proc").join(child.id().to_string()).join("stat");
        assert!(!zombie(&stat));
        child.kill().unwrap();
        // Not waited for yet: it stays a zombie until `wait`.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !zombie(&stat) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(zombie(&stat));
        assert!(stale(&format!("{} {}", host(), child.id())));
        child.wait().unwrap();
    }

    #[test]
    fn jobs_exclude_each_other_and_dead_holders_are_replaced() {
        let dir = std::env::temp_dir().join(format!("conveyor-lock-{}", std::process::id()));
        let alive = std::os::unix::process::parent_id().to_string();
        let held_by = |name: &str, pid: &str| {
            std::fs::write(dir.join(name), format!("{} {pid}\n", host())).unwrap();
        };
        let lock = OutLock::take(&dir, ".conveyor-x").unwrap();
        drop(lock);
        assert!(!dir.join(".conveyor-x.lock").exists());
        // Another live job of the same kind, or of another kind, holds the folder.
        held_by(".conveyor-x.lock", &alive);
        let e = OutLock::take(&dir, ".conveyor-x").unwrap_err().to_string();
        assert!(e.contains(&alive), "{e}");
        std::fs::rename(dir.join(".conveyor-x.lock"), dir.join(".conveyor-y.lock")).unwrap();
        OutLock::take(&dir, ".conveyor-x").unwrap_err();
        OutLock::take(&dir, ".conveyor-x-worker-00000-of-00002").unwrap_err();
        std::fs::remove_file(dir.join(".conveyor-y.lock")).unwrap();
        // Workers of one job share the folder; a whole job does not join them.
        held_by(".conveyor-x-worker-00001-of-00002.lock", &alive);
        drop(OutLock::take(&dir, ".conveyor-x-worker-00000-of-00002").unwrap());
        OutLock::take(&dir, ".conveyor-x").unwrap_err();
        // Dead holders: a pid not running (0 never is), or this very process.
        held_by(".conveyor-x-worker-00001-of-00002.lock", "0");
        drop(OutLock::take(&dir, ".conveyor-x").unwrap());
        held_by(".conveyor-x.lock", &std::process::id().to_string());
        drop(OutLock::take(&dir, ".conveyor-x").unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
