//! `train --check-syncs`: while a [`SyncCheck`] lives, libtorch's CUDA sync debug mode is
//! "error" (what `torch.cuda.set_sync_debug_mode("error")` sets), so any call in libtorch that
//! makes the host wait for the GPU (a blocking copy, `.item()`, a stream or device
//! synchronise) fails instead of silently stalling the launch queue. The trainer holds one
//! around each step after the first few, which is how a device run shows the step path has
//! no host synchronisation. Through `graph.cpp`, which has the CUDA headers it needs.

/// The sync debug mode could not be set (no CUDA headers at build time, or libtorch did not
/// see it), or a step made the host wait for the GPU.
#[derive(Debug, thiserror::Error)]
#[error("--check-syncs: {0}")]
pub struct SyncCheckError(pub String);

mod ffi {
    extern "C" {
        pub fn conveyor_sync_check(op: i32, err: *mut u8, len: i64) -> i32;
    }
}

const OFF: i32 = 0;
const ON: i32 = 1;
const QUERY: i32 = 2;

fn call(op: i32) -> Result<i32, SyncCheckError> {
    let mut answer = 0;
    crate::optim::foreach::checked(|e, l| {
        // SAFETY: a plain C function with an error buffer; it catches every C++ exception.
        answer = unsafe { ffi::conveyor_sync_check(op, e, l) };
        answer.min(0)
    })
    .map_err(SyncCheckError)?;
    Ok(answer)
}

/// libtorch's sync debug mode set to "error" until dropped.
#[derive(Debug)]
pub struct SyncCheck(());

impl SyncCheck {
    /// Turns the check on; fails when libtorch would not see it.
    pub fn arm() -> Result<Self, SyncCheckError> {
        call(ON)?;
        Ok(Self(()))
    }

    /// Whether the check is on now (libc10_cuda's answer, not a flag of this crate's).
    pub fn armed() -> bool {
        matches!(call(QUERY), Ok(1))
    }
}

impl Drop for SyncCheck {
    fn drop(&mut self) {
        let _ = call(OFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mode set from the bridge is the one libtorch's own check reads, and it is off
    /// again after the guard (no GPU needed: the mode is host state of libc10_cuda). On a
    /// GPU machine the armed mode would fail other tests' CUDA calls: the device run's
    /// `--check-syncs` runs check it there. Tests that arm it hold `test_rng`.
    #[test]
    fn the_check_is_on_while_armed_and_off_after() {
        if option_env!("CONVEYOR_GRAPH_BRIDGE") != Some("built") {
            let e = SyncCheck::arm().expect_err("the stand-in cannot check");
            assert!(e.to_string().contains("without CUDA headers"), "{e}");
            return;
        }
        if tch::Cuda::is_available() {
            return;
        }
        let _one = crate::test_rng();
        assert!(!SyncCheck::armed());
        {
            let _on = SyncCheck::arm().expect("armed");
            assert!(SyncCheck::armed());
        }
        assert!(!SyncCheck::armed());
    }
}
