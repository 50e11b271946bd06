//! Gradients summed over ranks the way DDP does it: parameters in a fixed order are grouped
//! into buckets of about `BUCKET_BYTES`, each bucket's float32 gradients are copied into one
//! flat buffer, one all-reduce per buffer, and the gradients become views of the buffers.

use tch::{Kind, Tensor};

use crate::dist::{DistError, ProcessGroup};

/// PyTorch DDP's default bucket size (25 MiB).
pub const BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// Sums `grads` (one per parameter of `params`, undefined = zero) over all ranks in place.
pub fn all_reduce(
    pg: &ProcessGroup,
    params: &[Tensor],
    grads: &mut [Tensor],
    bucket_bytes: usize,
) -> Result<(), DistError> {
    let _guard = tch::no_grad_guard();
    for (g, p) in grads.iter_mut().zip(params) {
        if !g.defined() {
            *g = Tensor::zeros_like(p).to_kind(Kind::Float);
        }
    }
    let mut start = 0;
    while start < grads.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < grads.len() && (end == start || bytes + 4 * grads[end].numel() <= bucket_bytes)
        {
            bytes += 4 * grads[end].numel();
            end += 1;
        }
        let flat = Tensor::cat(
            &grads[start..end]
                .iter()
                .map(|g| g.to_kind(Kind::Float).reshape([-1]))
                .collect::<Vec<_>>(),
            0,
        );
        pg.all_reduce_sum_queued(&flat)?;
        let mut offset = 0i64;
        for g in &mut grads[start..end] {
            let n = g.numel() as i64;
            let shape = g.size();
            *g = flat.narrow(0, offset, n).view(shape.as_slice());
            offset += n;
        }
        start = end;
    }
    Ok(())
}
