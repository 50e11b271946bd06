//! The lock a job holds on its output folder while it runs: `OUT/.conveyor-NAME.lock`,
//! created exclusively and holding the holder's host and pid, removed when the job ends.
//! A second job on the same output is refused with the holder's pid instead of racing it;
//! a lock left by a killed job (its pid is gone on this host) is taken over.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// Held while the job runs; dropping it removes the lock file.
#[derive(Debug)]
pub struct OutLock {
    path: PathBuf,
}

/// Whether `name` is a lock file a job keeps in its output folder (never an output, never
/// a foreign file).
pub fn is_lock_file(name: &str) -> bool {
    name.starts_with(".conveyor-") && name.ends_with(".lock")
}

impl OutLock {
    /// Takes `out/.{work}.lock` (`work`: the job's work folder name, one per worker).
    pub fn take(out: &Path, work: &str) -> Result<OutLock, Error> {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let path = out.join(format!("{work}.lock"));
        let me = format!("{} {}\n", host(), std::process::id());
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(me.as_bytes())
                        .map_err(|e| Error::io(&path, e))?;
                    return Ok(OutLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    if !stale(&holder) {
                        return Err(Error::OutputDir {
                            path: out.to_path_buf(),
                            message: format!(
                                "is in use by another conveyor job (host and pid: {}, lock {}); wait for it to end, or remove the lock if that process is gone",
                                holder.trim(),
                                path.display()
                            ),
                        });
                    }
                    // The holder was killed: its lock is ours to replace.
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Err(Error::OutputDir {
            path: out.to_path_buf(),
            message: format!(
                "another job took {} at the same moment; run one job per --out",
                path.display()
            ),
        })
    }
}

impl Drop for OutLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// A lock whose process no longer runs on this host. A lock from another host (a shared
/// file system) is never taken as stale.
fn stale(holder: &str) -> bool {
    let mut parts = holder.split_whitespace();
    let (Some(h), Some(pid)) = (parts.next(), parts.next()) else {
        // Empty or unreadable: the holder died between creating and writing it.
        return true;
    };
    h == host() && !Path::new("/proc").join(pid).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_job_is_refused_and_a_dead_holder_replaced() {
        let dir = std::env::temp_dir().join(format!("conveyor-lock-{}", std::process::id()));
        let lock = OutLock::take(&dir, ".conveyor-x").unwrap();
        let e = OutLock::take(&dir, ".conveyor-x").unwrap_err().to_string();
        assert!(e.contains(&std::process::id().to_string()), "{e}");
        drop(lock);
        assert!(!dir.join(".conveyor-x.lock").exists());
        // pid 0 never names a running process in /proc.
        std::fs::write(dir.join(".conveyor-x.lock"), format!("{} 0\n", host())).unwrap();
        drop(OutLock::take(&dir, ".conveyor-x").unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
