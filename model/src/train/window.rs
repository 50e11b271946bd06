//! Steps whose loss and gradient norm are still tensors on the device. Reading a value back
//! waits for the GPU to finish, so on CUDA the trainer reads a window of steps back at once
//! (one host synchronisation per [`CUDA_WINDOW`] steps) and never later than a checkpoint,
//! an evaluation or the run's end; on CPU, where reading costs nothing, after every step
//! (`--sync-every` sets it).
//! Either way every step gets its own line in metrics.jsonl, with the same figures.

use std::time::Instant;

use tch::{Device, Kind, Tensor};

use super::{Counts, Ranks, TrainError};

/// Steps per read-back on CUDA.
pub const CUDA_WINDOW: usize = 16;

/// One step as the training loop leaves it.
pub(super) struct Pending {
    pub step: u64,
    pub lr: f64,
    /// Sum of this rank's token losses (float64, 0-dim, on the device).
    pub nll: Tensor,
    /// L2 norm of the step's gradient over all ranks (float64, 0-dim, on the device).
    pub grad_norm: Tensor,
    /// Over all ranks.
    pub counts: Counts,
    /// Analytic FLOPs of this rank's batches.
    pub flops: f64,
}

/// A step read back.
pub(super) struct Done {
    pub step: u64,
    pub lr: f64,
    /// Mean token loss over all ranks.
    pub loss: f64,
    pub grad_norm: f64,
    pub counts: Counts,
    pub flops: f64,
    /// This step's share of the window's wall time.
    pub seconds: f64,
}

pub(super) struct Window {
    steps: Vec<Pending>,
    started: Option<Instant>,
    capacity: usize,
}

impl Window {
    /// `every` steps per read-back (`--sync-every`); by default [`CUDA_WINDOW`] on CUDA, 1
    /// elsewhere.
    pub fn new(device: Device, every: Option<usize>) -> Self {
        let default = if device.is_cuda() { CUDA_WINDOW } else { 1 };
        Self {
            steps: Vec::new(),
            started: None,
            capacity: every.unwrap_or(default).max(1),
        }
    }

    /// Adds a step that began at `began`.
    pub fn push(&mut self, p: Pending, began: Instant) {
        self.started.get_or_insert(began);
        self.steps.push(p);
    }

    pub fn is_full(&self) -> bool {
        self.steps.len() >= self.capacity
    }

    /// Reads every pending step back (one synchronisation, one sum over ranks), in order.
    pub fn drain(&mut self, ranks: &Ranks) -> Result<Vec<Done>, TrainError> {
        let steps = std::mem::take(&mut self.steps);
        let Some(started) = self.started.take() else {
            return Ok(Vec::new());
        };
        let values: Vec<Tensor> = steps
            .iter()
            .flat_map(|p| [p.nll.shallow_clone(), p.grad_norm.shallow_clone()])
            .collect();
        let values = Vec::<f64>::try_from(
            Tensor::stack(&values, 0)
                .to_kind(Kind::Double)
                .to(Device::Cpu),
        )
        .expect("f64 values");
        let nll = ranks.sum(values.iter().step_by(2).copied().collect())?;
        let seconds = started.elapsed().as_secs_f64().max(1e-9) / steps.len() as f64;
        Ok(steps
            .into_iter()
            .zip(nll)
            .zip(values.chunks(2))
            .map(|((p, nll), v)| Done {
                step: p.step,
                lr: p.lr,
                loss: nll / p.counts.target_tokens.max(1.0),
                grad_norm: v[1],
                counts: p.counts,
                flops: p.flops,
                seconds,
            })
            .collect())
    }
}
