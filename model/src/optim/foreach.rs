//! The multi-tensor optimiser steps of `foreach.cpp`: lists of tensor handles in, the
//! parameters and moments updated in place, nothing read back to the host. Lists go over in
//! chunks of at most [`CHUNK_BYTES`] of float32 gradients, which bounds the step's temporary
//! memory (about two chunks) whatever the model's size.

/// Gradient bytes (as float32) per multi-tensor call, by default: a few launches per step
/// for a base model, and a few hundred MB of temporaries at most.
pub const CHUNK_BYTES: usize = 128 << 20;

use tch::Tensor;
use torch_sys::C_tensor;

mod ffi {
    use torch_sys::C_tensor;

    extern "C" {
        #[allow(clippy::too_many_arguments)]
        pub fn conveyor_adafactor_step(
            params: *const *mut C_tensor,
            grads: *const *mut C_tensor,
            rows: *const *mut C_tensor,
            cols: *const *mut C_tensor,
            vs: *const *mut C_tensor,
            nf: i64,
            nv: i64,
            step_scalars: *mut C_tensor,
            scale_parameter: i32,
            eps1: f64,
            eps2: f64,
            clip: f64,
            err: *mut u8,
            err_len: i64,
        ) -> i32;
        #[allow(clippy::too_many_arguments)]
        pub fn conveyor_adamw_step(
            params: *const *mut C_tensor,
            grads: *const *mut C_tensor,
            ms: *const *mut C_tensor,
            vs: *const *mut C_tensor,
            n: i64,
            step_scalars: *mut C_tensor,
            beta1: f64,
            beta2: f64,
            eps: f64,
            err: *mut u8,
            err_len: i64,
        ) -> i32;
        pub fn conveyor_global_norm(
            ts: *const *mut C_tensor,
            n: i64,
            out: *mut *mut C_tensor,
            err: *mut u8,
            err_len: i64,
        ) -> i32;
        pub fn conveyor_pairwise(
            op: i32,
            dst: *const *mut C_tensor,
            src: *const *mut C_tensor,
            n: i64,
            err: *mut u8,
            err_len: i64,
        ) -> i32;
    }
}

fn handle(t: &Tensor) -> *mut C_tensor {
    t.as_ptr() as *mut C_tensor
}

/// `K` lists of tensor handles in step, one entry per parameter: the parameter, its
/// gradient and its moments (tensors borrowed for `'a`), with the parameter's float32 bytes.
pub struct Lists<'a, const K: usize> {
    tensors: std::marker::PhantomData<&'a Tensor>,
    sizes: Vec<usize>,
    lists: [Vec<*mut C_tensor>; K],
}

impl<const K: usize> Default for Lists<'_, K> {
    fn default() -> Self {
        Self {
            tensors: std::marker::PhantomData,
            sizes: Vec::new(),
            lists: std::array::from_fn(|_| Vec::new()),
        }
    }
}

impl<'a, const K: usize> Lists<'a, K> {
    pub fn push(&mut self, tensors: [&'a Tensor; K]) {
        self.sizes.push(tensors[0].numel() * 4);
        for (list, t) in self.lists.iter_mut().zip(tensors) {
            list.push(handle(t));
        }
    }

    /// List `k` over the parameters in `r`.
    fn at(&self, k: usize, r: &std::ops::Range<usize>) -> Handles<'_> {
        &self.lists[k][r.clone()]
    }
}

/// Matrices with factored second moments: parameter, gradient, row and column moments.
pub type Factored<'a> = Lists<'a, 4>;
/// Tensors with a full second moment: parameter, gradient, moment.
pub type Full<'a> = Lists<'a, 3>;
/// AdamW's parameters: parameter, gradient, first and second moments.
pub type Adam<'a> = Lists<'a, 4>;

/// Adafactor's settings for one step. `step_scalars` (float32, on the parameters' device)
/// holds what changes with the step, [lr, beta2, 1 - beta2]: the kernels read it on the
/// device, so a captured step replays with the values written there before each replay.
pub struct AdafactorScalars<'a> {
    pub step_scalars: &'a Tensor,
    pub scale_parameter: bool,
    pub eps1: f64,
    pub eps2: f64,
    pub clip: f64,
}

/// Runs `call` with an error buffer; libtorch's message when it returns non-zero (every
/// bridge's C boundary, src/bridge.h).
pub(crate) fn checked(call: impl FnOnce(*mut u8, i64) -> i32) -> Result<(), String> {
    let mut err = vec![0u8; 4096];
    if call(err.as_mut_ptr(), err.len() as i64) == 0 {
        return Ok(());
    }
    let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
    Err(String::from_utf8_lossy(&err[..end]).into_owned())
}

/// Index ranges of consecutive tensors of at most `limit` bytes together (a larger tensor
/// goes alone).
fn chunks(sizes: &[usize], limit: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, &b) in sizes.iter().enumerate() {
        if i > start && bytes + b > limit {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += b;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

/// One Adafactor step over the factored matrices and the other tensors. The handles borrow
/// tensors the caller keeps alive for the call.
pub fn adafactor(
    f: &Factored,
    v: &Full,
    chunk_bytes: usize,
    s: &AdafactorScalars,
) -> Result<(), String> {
    for r in chunks(&f.sizes, chunk_bytes) {
        adafactor_call(
            [f.at(0, &r), f.at(1, &r)],
            [f.at(2, &r), f.at(3, &r), &[]],
            s,
        )?;
    }
    for r in chunks(&v.sizes, chunk_bytes) {
        adafactor_call([v.at(0, &r), v.at(1, &r)], [&[], &[], v.at(2, &r)], s)?;
    }
    Ok(())
}

type Handles<'a> = &'a [*mut C_tensor];

/// One call: factored matrices (rows and cols given) or full tensors (vs given).
fn adafactor_call(
    [params, grads]: [Handles; 2],
    [rows, cols, vs]: [Handles; 3],
    s: &AdafactorScalars,
) -> Result<(), String> {
    checked(|err, len| unsafe {
        ffi::conveyor_adafactor_step(
            params.as_ptr(),
            grads.as_ptr(),
            rows.as_ptr(),
            cols.as_ptr(),
            vs.as_ptr(),
            rows.len() as i64,
            vs.len() as i64,
            handle(s.step_scalars),
            s.scale_parameter as i32,
            s.eps1,
            s.eps2,
            s.clip,
            err,
            len,
        )
    })
}

/// One AdamW step; `constants` are beta1, beta2 and eps, `step_scalars` (float32, on the
/// device) [lr, 1 - beta1^t, 1 - beta2^t, 1 - lr * weight_decay] at step t.
pub fn adamw(
    a: &Adam,
    chunk_bytes: usize,
    constants: [f64; 3],
    step_scalars: &Tensor,
) -> Result<(), String> {
    let [beta1, beta2, eps] = constants;
    for r in chunks(&a.sizes, chunk_bytes) {
        checked(|err, len| unsafe {
            ffi::conveyor_adamw_step(
                a.at(0, &r).as_ptr(),
                a.at(1, &r).as_ptr(),
                a.at(2, &r).as_ptr(),
                a.at(3, &r).as_ptr(),
                r.len() as i64,
                handle(step_scalars),
                beta1,
                beta2,
                eps,
                err,
                len,
            )
        })?;
    }
    Ok(())
}

/// The L2 norm of `ts` together, a 0-dim float64 tensor on their device (float32 norms per
/// tensor, combined in float64); None for an empty list.
pub fn global_norm(ts: &[&Tensor]) -> Result<Option<Tensor>, String> {
    if ts.is_empty() {
        return Ok(None);
    }
    let handles: Vec<*mut C_tensor> = ts.iter().map(|t| handle(t)).collect();
    let mut out: *mut C_tensor = std::ptr::null_mut();
    checked(|err, len| unsafe {
        ffi::conveyor_global_norm(handles.as_ptr(), handles.len() as i64, &mut out, err, len)
    })?;
    // SAFETY: on success the bridge stored a tensor it allocated for us to own.
    Ok(Some(unsafe { Tensor::from_ptr(out) }))
}

/// `dst[i].copy_(src[i])` for every pair, one multi-tensor call.
pub fn copy(dst: &[&Tensor], src: &[&Tensor]) -> Result<(), String> {
    pairwise(0, dst, src)
}

/// `dst[i] += src[i]` for every pair, one multi-tensor call.
pub fn add(dst: &[&Tensor], src: &[&Tensor]) -> Result<(), String> {
    pairwise(1, dst, src)
}

fn pairwise(op: i32, dst: &[&Tensor], src: &[&Tensor]) -> Result<(), String> {
    assert_eq!(dst.len(), src.len(), "lists of one length");
    let d: Vec<*mut C_tensor> = dst.iter().map(|t| handle(t)).collect();
    let s: Vec<*mut C_tensor> = src.iter().map(|t| handle(t)).collect();
    checked(|err, len| unsafe {
        ffi::conveyor_pairwise(op, d.as_ptr(), s.as_ptr(), d.len() as i64, err, len)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_tensor_once_and_stay_under_the_bound() {
        let mb = 1 << 20;
        let sizes = [100 * mb, 20 * mb, 20 * mb, 300 * mb, mb, mb];
        let got = chunks(&sizes, CHUNK_BYTES);
        assert_eq!(got, vec![0..2, 2..3, 3..4, 4..6]);
        assert!(chunks(&[], CHUNK_BYTES).is_empty());
        assert_eq!(chunks(&[mb; 3], CHUNK_BYTES), vec![0..3]);
        assert_eq!(chunks(&[mb; 3], 1), vec![0..1, 1..2, 2..3]);
    }
}
