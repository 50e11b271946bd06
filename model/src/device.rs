//! Device selection (`--device auto|cpu|cuda`) and the one place libtorch is seeded.

use tch::Device;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Cuda,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "--device cuda was asked for but libtorch sees no CUDA device; use --device cpu or auto"
    )]
    NoCuda,
    #[error("{0}")]
    RankGpu(String),
}

/// The GPU of a rank whose launcher gave it `local_rank` (torchrun's LOCAL_RANK, Slurm's
/// SLURM_LOCALID) when the process sees `visible` GPUs: its own index among a node's GPUs,
/// or, where a launcher `bound` one GPU to the task (set CUDA_VISIBLE_DEVICES, as Slurm's
/// `--gpus-per-task=1` / `--gpu-bind` do), the only one it left visible; other cases are a
/// launch mistake (two ranks on one GPU fail inside NCCL), named here rather than there or
/// as an invalid device ordinal inside libtorch.
pub fn rank_gpu(local_rank: usize, visible: usize, bound: bool) -> Result<usize, DeviceError> {
    match visible {
        v if local_rank < v => Ok(local_rank),
        1 if bound => Ok(0),
        v => Err(DeviceError::RankGpu(format!(
            "local rank {local_rank} has no GPU of its own: this process sees {v} GPU(s); start at most one rank per GPU on a node (torchrun --nproc-per-node, or Slurm tasks per node), or bind one GPU per task (CUDA_VISIBLE_DEVICES)"
        ))),
    }
}

/// The device to run on: CUDA when asked (an error if absent), CPU when asked, and for
/// `auto` the first GPU if libtorch sees one.
pub fn select_device(choice: DeviceChoice) -> Result<Device, DeviceError> {
    let cuda = tch::Cuda::is_available();
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda if cuda => Ok(Device::Cuda(0)),
        DeviceChoice::Cuda => Err(DeviceError::NoCuda),
        DeviceChoice::Auto if cuda => Ok(Device::Cuda(0)),
        DeviceChoice::Auto => Ok(Device::Cpu),
    }
}

/// Seeds libtorch's generators (CPU and CUDA); every random stage of a run goes through here.
pub fn seed_everything(seed: u64) {
    tch::manual_seed(seed as i64);
}

/// A one-line description of what libtorch sees, for `conveyor env` and logs, and whether
/// the CUDA graph and NCCL bridges were compiled ("built") or replaced by their stand-ins
/// (no CUDA headers at build time: `--cuda-graph` and NCCL then refuse with that reason).
pub fn describe() -> String {
    format!(
        "libtorch: cuda available: {}, cuda devices: {}, cudnn: {}, cuda graph bridge: {}, nccl bridge: {}",
        tch::Cuda::is_available(),
        tch::Cuda::device_count(),
        tch::Cuda::cudnn_is_available(),
        option_env!("CONVEYOR_GRAPH_BRIDGE").unwrap_or("stand-in"),
        option_env!("CONVEYOR_NCCL_BRIDGE").unwrap_or("stand-in"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn cpu_is_always_available_and_seeding_repeats() {
        let _rng = crate::test_rng();
        let d = select_device(DeviceChoice::Cpu).unwrap();
        seed_everything(7);
        let a = Tensor::randn([4, 3], (Kind::Float, d));
        seed_everything(7);
        let b = Tensor::randn([4, 3], (Kind::Float, d));
        assert!(a.equal(&b));
        let c = a.matmul(&Tensor::ones([3, 2], (Kind::Float, d)));
        assert_eq!(c.size(), vec![4, 2]);
        assert!(describe().starts_with("libtorch"));
    }

    #[test]
    fn each_rank_gets_its_gpu_or_the_one_bound_to_it() {
        assert_eq!(rank_gpu(3, 8, false).unwrap(), 3);
        // Slurm --gpus-per-task=1: every task sees one GPU, whatever its local id.
        assert_eq!(rank_gpu(3, 1, true).unwrap(), 0);
        // Two ranks started on a node with one GPU nobody bound: named, not both on it.
        let err = rank_gpu(1, 1, false).unwrap_err().to_string();
        assert!(
            err.contains("local rank 1") && err.contains("sees 1 GPU"),
            "{err}"
        );
        let err = rank_gpu(4, 4, true).unwrap_err().to_string();
        assert!(
            err.contains("local rank 4") && err.contains("sees 4 GPU"),
            "{err}"
        );
    }

    #[test]
    fn auto_matches_cuda_availability() {
        let _rng = crate::test_rng();
        let d = select_device(DeviceChoice::Auto).unwrap();
        assert_eq!(d.is_cuda(), tch::Cuda::is_available());
        if !tch::Cuda::is_available() {
            assert!(select_device(DeviceChoice::Cuda).is_err());
        }
    }
}
