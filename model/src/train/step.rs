//! One optimiser step of the eager trainer: every micro-batch's forward and backward pass
//! (shared with the CUDA graph's captured step, graph_step.rs), the gradient all-reduce of
//! several ranks, the gradient norm and the update, all left on the device.

use conveyor_pipeline::loader::Batch;
use tch::{Device, Tensor};

use super::{
    grads, micro_seed, tensors, BatchTensors, Counts, Ranks, TrainConfig, TrainError, Weights,
};
use crate::optim::Optimizer;

/// One optimiser step over this rank's micro-batches; returns the sum of this rank's token
/// losses, the norm of the step's gradient and the step's counts over all ranks (as
/// `Counts::to_vec`), all tensors left on the device (see window.rs): the counts' sum
/// scales the loss before the backward pass as a device tensor, so no rank reads anything
/// back during a step.
pub(super) fn run_step(
    cfg: &TrainConfig,
    ranks: &Ranks,
    w: &mut Weights,
    opt: &mut Optimizer,
    batches: &[Batch],
    step: u64,
) -> Result<(Tensor, Tensor, Tensor), TrainError> {
    let counts = ranks.sum_on_device(&Counts::all(batches).to_vec())?;
    let denom = counts.get(0).clamp_min(1.0);
    let nll = forward_backward(w, &denom, cfg.z_loss, batches.len(), |k| {
        tch::manual_seed(micro_seed(cfg, step, ranks.rank, k));
        tensors(&batches[k], cfg.device)
    });
    let mut g = w.take_grads();
    if let Some(pg) = &ranks.pg {
        grads::all_reduce(pg, &w.params, &mut g, grads::BUCKET_BYTES)?;
    }
    let norm = grad_norm(&g, cfg.device);
    opt.step(&mut w.params, &g);
    w.finish_step();
    Ok((nll, norm, counts))
}

/// The forward and backward passes of a step's `n` micro-batches (`micro(k)` gives the k-th,
/// after any reseeding), each loss sum (with `z_loss` times its logsumexp² sum) divided by
/// `denom`, the step's target-token count over all ranks (a device tensor); the gradients
/// are left collected in `w`. Returns the sum of the token cross-entropies (float64, on the
/// device; the z-loss is not in it).
pub(super) fn forward_backward(
    w: &mut Weights,
    denom: &Tensor,
    z_loss: f64,
    n: usize,
    mut micro: impl FnMut(usize) -> BatchTensors,
) -> Tensor {
    let mut nll = Tensor::zeros([], (tch::Kind::Double, denom.device()));
    // In float32, the loss sum's kind: the division and its gradient are the ones a host
    // scalar gave.
    let denom = denom.to_kind(tch::Kind::Float);
    for k in 0..n {
        let t = micro(k);
        let (sum, mean) = t.loss_parts(&w.model, true, Some(&denom), z_loss);
        nll += sum.to_kind(tch::Kind::Double);
        mean.backward();
        w.collect_grads();
    }
    nll
}

/// The L2 norm of all gradients together, as a 0-dim float64 tensor on the device: float32
/// norms per tensor from one multi-tensor call, combined in float64 (no float64 copy of the
/// gradients, and not three launches per parameter). A logged figure; a tensor whose norm
/// passes float32's range (~1.8e19) makes it infinite, as the loss would be by then.
pub(super) fn grad_norm(grads: &[Tensor], device: Device) -> Tensor {
    let defined: Vec<&Tensor> = grads.iter().filter(|g| g.defined()).collect();
    match crate::optim::foreach::global_norm(&defined) {
        Ok(Some(norm)) => norm,
        Ok(None) => Tensor::zeros([], (tch::Kind::Double, device)),
        Err(e) => panic!("the gradient norm failed: {e}"),
    }
}
