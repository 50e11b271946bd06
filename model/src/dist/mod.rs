//! Data parallelism on PyTorch's own distributed engine (c10d, inside the libtorch tch links),
//! through the C++ bridge in `c10d.cpp`: a TCPStore rendezvous and a Gloo (CPU) or NCCL
//! (CUDA) process group. [`Launch`] reads what torchrun or Slurm set; [`ProcessGroup`] runs
//! the collectives the trainer needs (all-reduce, broadcast) and, when one fails, asks the
//! store which ranks are still there, so the error names the rank that went away.

mod launch;

pub use launch::{Launch, LaunchError};

use std::ffi::{c_char, c_void, CString};
use std::time::Duration;

use tch::Tensor;

mod ffi {
    use std::ffi::{c_char, c_void};
    extern "C" {
        #[allow(clippy::too_many_arguments)]
        pub fn conveyor_dist_new(
            backend: i32,
            host: *const c_char,
            port: i32,
            host_store: i32,
            rank: i32,
            world: i32,
            timeout_ms: i64,
            device: i32,
            prefix: *const c_char,
            err: *mut c_char,
            err_len: usize,
        ) -> *mut c_void;
        pub fn conveyor_dist_free(g: *mut c_void);
        pub fn conveyor_dist_collective(
            g: *mut c_void,
            op: i32,
            t: *const torch_sys::C_tensor,
            root: i32,
            err: *mut c_char,
            err_len: usize,
        ) -> i32;
        pub fn conveyor_dist_store_set(
            g: *mut c_void,
            key: *const c_char,
            value: *const c_char,
            err: *mut c_char,
            err_len: usize,
        ) -> i32;
        pub fn conveyor_dist_store_get(
            g: *mut c_void,
            key: *const c_char,
            out: *mut c_char,
            out_len: usize,
            err: *mut c_char,
            err_len: usize,
        ) -> i64;
    }
}

/// Which collective library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// CPU tensors.
    Gloo,
    /// CUDA tensors, one GPU per rank.
    Nccl,
}

#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error("could not join the process group at {addr} as rank {rank} of {world}: {message}")]
    Join {
        addr: String,
        rank: usize,
        world: usize,
        message: String,
    },
    #[error("{0}")]
    Collective(String),
}

/// A joined process group. Dropping it leaves the group.
pub struct ProcessGroup {
    ptr: *mut c_void,
    pub rank: usize,
    pub world: usize,
    /// `MASTER_ADDR:MASTER_PORT`, for messages.
    addr: String,
    /// How long a rank waits for the others' reports after a failed collective.
    grace: Duration,
}

// SAFETY: the C++ group is used from one thread at a time (the trainer's); c10d's own
// objects are thread-safe for that use.
unsafe impl Send for ProcessGroup {}

const ERR_LEN: usize = 4096;

fn message(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).trim().to_string()
}

impl ProcessGroup {
    /// Joins the group `launch` describes (blocks until every rank has joined, or the
    /// timeout). `device`: the CUDA device index for NCCL.
    pub fn join(launch: &Launch, backend: Backend, device: usize) -> Result<Self, DistError> {
        let host = CString::new(launch.master_addr.clone())
            .map_err(|_| LaunchError::Invalid("MASTER_ADDR holds a NUL byte".into()))?;
        let prefix = cstring(&format!("conveyor/attempt-{}/", launch.restart));
        let mut err = vec![0u8; ERR_LEN];
        // SAFETY: the strings outlive the call; `err` has ERR_LEN bytes; the function catches
        // every C++ exception.
        let ptr = unsafe {
            ffi::conveyor_dist_new(
                matches!(backend, Backend::Nccl) as i32,
                host.as_ptr(),
                launch.master_port as i32,
                launch.hosts_store() as i32,
                launch.rank as i32,
                launch.world_size as i32,
                launch.timeout.as_millis() as i64,
                device as i32,
                prefix.as_ptr(),
                err.as_mut_ptr() as *mut c_char,
                ERR_LEN,
            )
        };
        let addr = format!("{}:{}", launch.master_addr, launch.master_port);
        if ptr.is_null() {
            return Err(DistError::Join {
                addr: addr.clone(),
                rank: launch.rank,
                world: launch.world_size,
                message: explain_join(&message(&err), launch),
            });
        }
        let g = Self {
            ptr,
            rank: launch.rank,
            world: launch.world_size,
            addr,
            grace: Duration::from_secs(5).min(launch.timeout),
        };
        g.store_set(&format!("joined/{}", g.rank), "1")?;
        Ok(g)
    }

    fn collective(&self, op: i32, t: Option<&Tensor>, root: usize) -> Result<(), DistError> {
        let mut err = vec![0u8; ERR_LEN];
        let ptr = t.map(|t| t.as_ptr()).unwrap_or(std::ptr::null());
        // SAFETY: `ptr` is tch's live at::Tensor handle (or null for a barrier, which does
        // not read it); the function catches every C++ exception.
        let rc = unsafe {
            ffi::conveyor_dist_collective(
                self.ptr,
                op,
                ptr,
                root as i32,
                err.as_mut_ptr() as *mut c_char,
                ERR_LEN,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        Err(DistError::Collective(self.failure(&message(&err))))
    }

    /// Sums `t` over all ranks, in place.
    pub fn all_reduce_sum(&self, t: &Tensor) -> Result<(), DistError> {
        self.collective(0, Some(t), 0)
    }

    /// Sums `t` over all ranks, in place, queued on the device: on a GPU the host does not
    /// wait for it (nor for the work before it); reading `t` later waits. A rank lost meanwhile
    /// is reported by the NCCL watchdog when the group's timeout passes. Host tensors (Gloo)
    /// are summed as by [`Self::all_reduce_sum`].
    pub fn all_reduce_sum_queued(&self, t: &Tensor) -> Result<(), DistError> {
        self.collective(3, Some(t), 0)
    }

    /// Overwrites `t` with rank `root`'s `t`.
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<(), DistError> {
        self.collective(1, Some(t), root)
    }

    /// Waits until every rank gets here.
    pub fn barrier(&self) -> Result<(), DistError> {
        self.collective(2, None, 0)
    }

    fn store_set(&self, key: &str, value: &str) -> Result<(), DistError> {
        let (k, v) = (cstring(key), cstring(value));
        let mut err = vec![0u8; ERR_LEN];
        // SAFETY: as in `collective`.
        let rc = unsafe {
            ffi::conveyor_dist_store_set(
                self.ptr,
                k.as_ptr(),
                v.as_ptr(),
                err.as_mut_ptr() as *mut c_char,
                ERR_LEN,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(DistError::Collective(format!(
                "the rendezvous store at {} is gone ({}): rank 0, or the launcher that hosts it, stopped",
                self.addr,
                message(&err)
            )))
        }
    }

    /// `Ok(None)` when the key is absent; `Err` when the store cannot be reached.
    fn store_get(&self, key: &str) -> Result<Option<String>, String> {
        let k = cstring(key);
        let mut out = vec![0u8; 1024];
        let mut err = vec![0u8; ERR_LEN];
        // SAFETY: as in `collective`; `out` has its stated length.
        let n = unsafe {
            ffi::conveyor_dist_store_get(
                self.ptr,
                k.as_ptr(),
                out.as_mut_ptr() as *mut c_char,
                out.len(),
                err.as_mut_ptr() as *mut c_char,
                ERR_LEN,
            )
        };
        match n {
            -2 => Ok(None),
            n if n < 0 => Err(message(&err)),
            n => Ok(Some(
                String::from_utf8_lossy(&out[..(n as usize).min(out.len())]).into_owned(),
            )),
        }
    }

    /// After a failed collective: reports this rank's failure in the store, waits up to the
    /// grace period for the others' reports, and names the ranks that sent none (they died
    /// or hang). A store that cannot be reached means its host (rank 0 or the launcher) went.
    fn failure(&self, cause: &str) -> String {
        let key = |r: usize| format!("failed/{r}");
        let store_gone = || {
            format!(
                "rank {} of {}: a collective failed ({cause}) and the rendezvous store at {} cannot be reached: rank 0 (or the launcher hosting the store) stopped. Rerun every rank with --resume to continue from the last checkpoint",
                self.rank, self.world, self.addr
            )
        };
        // A write to a store whose host died can still "succeed" (the socket buffers it):
        // reading it back tells. Any read that fails ends the wait at once: every further
        // attempt only adds c10d's warning (with its C++ trace) to the log.
        if self.store_set(&key(self.rank), cause).is_err()
            || self.store_get(&key(self.rank)).is_err()
        {
            return store_gone();
        }
        let deadline = std::time::Instant::now() + self.grace;
        let silent = loop {
            let mut silent = Vec::new();
            for r in (0..self.world).filter(|&r| r != self.rank) {
                match self.store_get(&key(r)) {
                    Ok(Some(_)) => {}
                    Ok(None) => silent.push(r),
                    Err(_) => return store_gone(),
                }
            }
            if silent.is_empty() || std::time::Instant::now() >= deadline {
                break silent;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let who = match silent.as_slice() {
            [] => "every rank saw the failure; none of them stopped on its own".to_string(),
            [r] => format!(
                "rank {r} stopped (died or hangs: it did not report within {:?})",
                self.grace
            ),
            rs => format!(
                "ranks {} stopped (died or hang: they did not report within {:?})",
                rs.iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.grace
            ),
        };
        format!(
            "rank {} of {}: a collective failed: {who}. Cause: {cause}. Rerun every rank with --resume to continue from the last checkpoint",
            self.rank, self.world
        )
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from conveyor_dist_new and is freed once.
        unsafe { ffi::conveyor_dist_free(self.ptr) }
    }
}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "")).expect("no NUL left")
}

/// Turns c10d's rendezvous errors into what to do.
fn explain_join(msg: &str, l: &Launch) -> String {
    if msg.contains("EADDRINUSE") || msg.contains("address already in use") {
        format!(
            "port {} is in use on this machine: choose another MASTER_PORT (torchrun --master-port) for every rank",
            l.master_port
        )
    } else if msg.contains("timed out") || msg.contains("Timed out") || msg.contains("timeout") {
        format!(
            "not every rank joined within {:?} ({msg}): start all {} ranks with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE",
            l.timeout, l.world_size
        )
    } else {
        msg.to_string()
    }
}
