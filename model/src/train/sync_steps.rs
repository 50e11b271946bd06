//! `--check-syncs` in the trainer: which steps run with libtorch's sync debug mode at
//! "error" (cuda/sync_check.rs), and turning a step that waited for the GPU into the run's
//! error, naming the step.

use super::{TrainConfig, TrainError};

/// A run's first steps are left alone (lazy set-up, a graph's warm-up).
const SYNC_CHECK_AFTER: u64 = 4;

/// `--check-syncs` off CUDA is refused before anything is written; on CUDA the check is
/// armed once here, so that a libtorch that would not see it fails now.
pub(super) fn refuse_sync_check_off_cuda(cfg: &TrainConfig) -> Result<(), TrainError> {
    if !cfg.device.is_cuda() {
        return Err(TrainError::Refused(format!(
            "--check-syncs needs a CUDA device (--device cuda); this run is on {:?}, where nothing waits for a GPU",
            cfg.device
        )));
    }
    drop(crate::cuda::SyncCheck::arm()?);
    Ok(())
}

/// Whether `--check-syncs` checks `step`: with a graph (`captured`: whether it has captured
/// yet) every step after the capture, else every step after the first [`SYNC_CHECK_AFTER`]
/// of this invocation (`first`: its first step).
pub(super) fn sync_checked_step(captured: Option<bool>, step: u64, first: u64) -> bool {
    match captured {
        Some(captured) => captured,
        None => step >= first + SYNC_CHECK_AFTER,
    }
}

/// Runs one step, with libtorch's sync debug mode at "error" when `on`: a synchronising
/// call then throws inside libtorch, which tch turns into a panic (or a bridge into an
/// error); either becomes the run's error, naming the step. The mode is off again after.
pub(super) fn checking_syncs<R>(
    on: bool,
    step: u64,
    f: impl FnOnce() -> Result<R, TrainError>,
) -> Result<R, TrainError> {
    if !on {
        return f();
    }
    let _armed = crate::cuda::SyncCheck::arm()?;
    let failed = |why: &str| {
        TrainError::SyncCheck(crate::cuda::SyncCheckError(format!(
            "step {step} made the host wait for the GPU, or failed while checked: {why}"
        )))
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(failed(&e.to_string())),
        Err(panic) => Err(failed(
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic without a message"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::SyncCheck;

    #[test]
    fn steps_after_the_first_four_or_after_the_capture_are_checked() {
        let checked = |captured, first| {
            (1..=12)
                .filter(|&s| s >= first && sync_checked_step(captured, s, first))
                .collect::<Vec<u64>>()
        };
        assert_eq!(checked(None, 1), (5..=12).collect::<Vec<_>>());
        // Resumed at step 6: its first four are left alone again.
        assert_eq!(checked(None, 7), (11..=12).collect::<Vec<_>>());
        assert!(checked(Some(false), 1).is_empty());
        assert_eq!(checked(Some(true), 1).len(), 12);
    }

    /// A step that fails while checked (a panic, as tch's on a throwing libtorch call, or an
    /// error) becomes the run's error naming the step, and the check is off afterwards. On a
    /// GPU machine the armed mode would fail other tests' CUDA calls: there the device run's
    /// `--check-syncs` runs check it instead.
    #[test]
    fn a_failing_checked_step_names_the_step_and_disarms() {
        if tch::Cuda::is_available() || option_env!("CONVEYOR_GRAPH_BRIDGE") != Some("built") {
            return;
        }
        let _one = crate::test_rng();
        let e = checking_syncs(true, 7, || -> Result<(), TrainError> {
            assert!(SyncCheck::armed());
            panic!("called a synchronizing CUDA operation")
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("step 7") && e.contains("synchronizing"), "{e}");
        assert!(!SyncCheck::armed());
        let e = checking_syncs(true, 9, || -> Result<(), TrainError> {
            Err(TrainError::Refused("from a bridge".into()))
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("step 9") && e.contains("from a bridge"), "{e}");
        assert!(!SyncCheck::armed());
        assert_eq!(checking_syncs(false, 3, || Ok(5)).unwrap(), 5);
    }
}
