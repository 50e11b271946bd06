//! Steps whose loss, gradient norm and token counts (summed over ranks) are still tensors
//! on the device. Reading a value back waits for the GPU to finish, so on CUDA the trainer
//! reads a window of steps back at once (one host synchronisation per [`CUDA_WINDOW`]
//! steps) and never later than a checkpoint, an evaluation or the run's end; on CPU, where
//! reading costs nothing, after every step (`--sync-every` sets it).
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
    /// Over all ranks, as `Counts::to_vec` (float64, on the device).
    pub counts: Tensor,
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
        // A row per step: the loss sum, the gradient norm, then the four counts.
        const PER_STEP: usize = 6;
        let column = |f: &dyn Fn(&Pending) -> &Tensor| {
            let ts: Vec<Tensor> = steps.iter().map(|p| f(p).to_kind(Kind::Double)).collect();
            Tensor::stack(&ts, 0).reshape([steps.len() as i64, -1])
        };
        let rows = Tensor::cat(
            &[
                column(&|p| &p.nll),
                column(&|p| &p.grad_norm),
                column(&|p| &p.counts),
            ],
            1,
        );
        let values = Vec::<f64>::try_from(rows.reshape([-1]).to(Device::Cpu)).expect("f64 values");
        let nll = ranks.sum(values.iter().step_by(PER_STEP).copied().collect())?;
        let seconds = started.elapsed().as_secs_f64().max(1e-9) / steps.len() as f64;
        Ok(steps
            .into_iter()
            .zip(nll)
            .zip(values.chunks(PER_STEP))
            .map(|((p, nll), v)| {
                let counts = Counts::from_slice(&v[2..]);
                Done {
                    step: p.step,
                    lr: p.lr,
                    loss: nll / counts.target_tokens.max(1.0),
                    grad_norm: v[1],
                    counts,
                    flops: p.flops,
                    seconds,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(step: u64, nll: f64, norm: f64, target_tokens: f64) -> Pending {
        Pending {
            step,
            lr: 0.5 / step as f64,
            nll: Tensor::from(nll),
            grad_norm: Tensor::from(norm),
            counts: Tensor::from_slice(
                &Counts {
                    target_tokens,
                    ..Counts::default()
                }
                .to_vec(),
            ),
            flops: 1e9 * step as f64,
        }
    }

    #[test]
    fn a_window_gives_back_each_step_its_own_figures_in_order() {
        let ranks = Ranks {
            pg: None,
            rank: 0,
            world: 1,
            device: Device::Cpu,
        };
        let mut w = Window::new(Device::Cpu, Some(3));
        let began = Instant::now();
        for (i, (nll, norm, tokens)) in [(6.0, 1.5, 3.0), (10.0, 2.5, 5.0), (9.0, 0.25, 0.0)]
            .into_iter()
            .enumerate()
        {
            assert!(!w.is_full());
            w.push(pending(i as u64 + 1, nll, norm, tokens), began);
        }
        assert!(w.is_full());
        let done = w.drain(&ranks).unwrap();
        let got: Vec<(u64, f64, f64, f64, f64)> = done
            .iter()
            .map(|d| (d.step, d.loss, d.grad_norm, d.lr, d.flops))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, 2.0, 1.5, 0.5, 1e9),
                (2, 2.0, 2.5, 0.25, 2e9),
                // No target tokens: the sum itself (the denominator is at least 1).
                (3, 9.0, 0.25, 0.5 / 3.0, 3e9),
            ]
        );
        assert!(done.iter().all(|d| d.seconds == done[0].seconds));
        assert!(!w.is_full());
        assert!(w.drain(&ranks).unwrap().is_empty());
        // CPU reads back after every step unless told otherwise; CUDA every 16.
        assert_eq!(Window::new(Device::Cpu, None).capacity, 1);
        assert_eq!(Window::new(Device::Cuda(0), None).capacity, CUDA_WINDOW);
    }
}
