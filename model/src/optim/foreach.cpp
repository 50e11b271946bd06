// Adafactor and AdamW steps, and the trainer's other per-parameter work (the gradient norm,
// mixed precision's copies and sums), over all parameters at once with ATen's multi-tensor
// (`_foreach_*`) kernels: on CUDA one launch covers many same-shaped tensors where the
// per-tensor step (optim/mod.rs, `Optimizer::step_per_tensor`) launches one per tensor; on
// CPU the same operations run in the same order, so the two agree bit for bit (tests: 1e-6).
// Nothing here reads a value back to the host. Temporaries are about three float32 copies
// of the list's gradients (more with bfloat16 weights, converted to float32 for their RMS);
// the caller bounds a list's size (optim/foreach.rs, CHUNK_BYTES). Where a list's tensors
// differ in shape (the factored moments' reductions, u * factor), ATen launches per tensor.
//
// Tensors arrive as tch handles (at::Tensor*), only parameters that have a gradient.
// Every function returns 0, or -1 after writing what went wrong to `err` (`err_len` bytes).
#include "../bridge.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <vector>

namespace {

std::vector<at::Tensor> list(at::Tensor** ts, int64_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (int64_t i = 0; i < n; ++i) out.push_back(*ts[i]);
  return out;
}

// Gradients in float32 (the moments' kind); float ones are used as they are.
std::vector<at::Tensor> as_float(const std::vector<at::Tensor>& ts) {
  std::vector<at::Tensor> out;
  out.reserve(ts.size());
  for (const auto& t : ts) out.push_back(t.to(at::kFloat));
  return out;
}

// 1 / sqrt(numel) of each tensor: RMS(t) = ||t||_2 / sqrt(n).
std::vector<at::Scalar> root_counts(const std::vector<at::Tensor>& ts) {
  std::vector<at::Scalar> out;
  out.reserve(ts.size());
  for (const auto& t : ts) {
    out.emplace_back(std::sqrt(static_cast<double>(std::max<int64_t>(t.numel(), 1))));
  }
  return out;
}

// p -= update, the update cast to each parameter's kind (bf16 weights under pure bf16).
void subtract(std::vector<at::Tensor>& params, std::vector<at::Tensor>& updates) {
  for (size_t i = 0; i < params.size(); ++i) {
    if (params[i].scalar_type() != updates[i].scalar_type()) {
      updates[i] = updates[i].to(params[i].scalar_type());
    }
  }
  at::_foreach_sub_(params, updates);
}

// p *= decay (a 0-dim float32 tensor), computed in float32 and rounded once to p's kind.
// Multiplying a bfloat16 p in place would round the factor itself to bfloat16 first (ATen
// does so for a 0-dim tensor and, on CPU, for a Scalar too), decaying 0.99293 as 0.99219.
void decay_weights(std::vector<at::Tensor>& params, const at::Tensor& decay) {
  std::vector<at::Tensor> fp, other;
  for (const auto& t : params) (t.scalar_type() == at::kFloat ? fp : other).push_back(t);
  if (!fp.empty()) at::_foreach_mul_(fp, decay);
  if (!other.empty()) at::_foreach_copy_(other, at::_foreach_mul(as_float(other), decay));
}

}  // namespace

extern "C" {

// One Adafactor step (T5's: beta1 = 0, factored second moments for matrices, update
// clipping at RMS 1, optional parameter scaling). `nf` matrices with row and column moments
// (params[0..nf), rows, cols), then `nv` other tensors with full moments
// (params[nf..nf+nv), vs). `grads` follows `params`.
//
// The scalars that change with the step come as a float32 tensor on the parameters' device,
// `step_scalars` = [lr, beta2, 1 - beta2], and the kernels read them there: a CUDA graph
// that captured this call replays it with the values of the step it is replayed for.
int conveyor_adafactor_step(at::Tensor** params, at::Tensor** grads, at::Tensor** rows,
                            at::Tensor** cols, at::Tensor** vs, int64_t nf, int64_t nv,
                            at::Tensor* step_scalars, int scale_parameter, double eps1,
                            double eps2, double clip, char* err, int64_t err_len) {
  try {
    c10::NoGradGuard no_grad;
    const int64_t n = nf + nv;
    if (n == 0) return 0;
    const auto lr = step_scalars->select(0, 0);
    const auto beta2 = step_scalars->select(0, 1);
    const auto one_minus_beta2 = step_scalars->select(0, 2);
    auto p = list(params, n);
    auto g = as_float(list(grads, n));
    // u = g / sqrt(v_hat); g^2 + eps1 lives only while the moments take it in.
    std::vector<at::Tensor> u(n);
    {
      auto sq = at::_foreach_pow(g, 2);
      at::_foreach_add_(sq, eps1);
      if (nf > 0) {
        auto row = list(rows, nf);
        auto col = list(cols, nf);
        std::vector<at::Tensor> row_new, col_new;
        for (int64_t i = 0; i < nf; ++i) {
          row_new.push_back(sq[i].mean(-1, false, at::kFloat));
          col_new.push_back(sq[i].mean(-2, false, at::kFloat));
        }
        at::_foreach_mul_(row_new, one_minus_beta2);
        at::_foreach_mul_(col_new, one_minus_beta2);
        at::_foreach_mul_(row, beta2);
        at::_foreach_add_(row, row_new);
        at::_foreach_mul_(col, beta2);
        at::_foreach_add_(col, col_new);
        for (int64_t i = 0; i < nf; ++i) {
          sq[i].reset();
          auto r = (row[i] / row[i].mean(-1, true, at::kFloat)).rsqrt().unsqueeze(-1);
          auto c = col[i].unsqueeze(-2).rsqrt();
          u[i] = g[i] * r * c;
        }
      }
      if (nv > 0) {
        auto v = list(vs, nv);
        std::vector<at::Tensor> g_full(g.begin() + nf, g.end());
        std::vector<at::Tensor> sq_full(sq.begin() + nf, sq.end());
        sq.clear();
        at::_foreach_mul_(sq_full, one_minus_beta2);
        at::_foreach_mul_(v, beta2);
        at::_foreach_add_(v, sq_full);
        sq_full.clear();
        auto scaled = at::_foreach_mul(g_full, at::_foreach_rsqrt(v));
        for (int64_t i = 0; i < nv; ++i) u[nf + i] = scaled[i];
      }
    }
    g.clear();

    // factor = lr / max(1, RMS(u) / clip) [* max(eps2, RMS(p))], one 0-dim tensor per
    // parameter, kept on the device.
    auto factor = at::_foreach_norm(u, 2);
    at::_foreach_div_(factor, root_counts(u));
    at::_foreach_div_(factor, clip);
    at::_foreach_clamp_min_(factor, 1.0);
    at::_foreach_reciprocal_(factor);
    at::_foreach_mul_(factor, lr);
    if (scale_parameter) {
      auto scale = at::_foreach_norm(as_float(p), 2);
      at::_foreach_div_(scale, root_counts(p));
      at::_foreach_clamp_min_(scale, eps2);
      at::_foreach_mul_(factor, scale);
    }
    at::_foreach_mul_(u, factor);
    subtract(p, u);
    return 0;
  } catch (const std::exception& e) {
    conveyor::put_error(err, static_cast<size_t>(err_len), e.what());
    return -1;
  }
}

// One AdamW step (decoupled weight decay, bias-corrected moments). The scalars that change
// with the step are read from `step_scalars` on the device, as for Adafactor:
// [lr, 1 - beta1^t, 1 - beta2^t, 1 - lr * weight_decay] at step t (1-based).
int conveyor_adamw_step(at::Tensor** params, at::Tensor** grads, at::Tensor** ms,
                        at::Tensor** vs, int64_t n, at::Tensor* step_scalars, double beta1,
                        double beta2, double eps, char* err, int64_t err_len) {
  try {
    c10::NoGradGuard no_grad;
    if (n == 0) return 0;
    const auto lr = step_scalars->select(0, 0);
    const auto correction1 = step_scalars->select(0, 1);
    const auto correction2 = step_scalars->select(0, 2);
    const auto decay = step_scalars->select(0, 3);
    auto p = list(params, n);
    auto g = as_float(list(grads, n));
    auto m = list(ms, n);
    auto v = list(vs, n);
    at::_foreach_mul_(m, beta1);
    at::_foreach_add_(m, at::_foreach_mul(g, 1.0 - beta1));
    {
      auto sq = at::_foreach_pow(g, 2);
      at::_foreach_mul_(sq, 1.0 - beta2);
      at::_foreach_mul_(v, beta2);
      at::_foreach_add_(v, sq);
    }
    g.clear();
    // update = lr * m_hat / (sqrt(v_hat) + eps), built in place in two temporaries.
    auto denom = at::_foreach_div(v, correction2);
    at::_foreach_sqrt_(denom);
    at::_foreach_add_(denom, eps);
    auto update = at::_foreach_div(m, correction1);
    at::_foreach_div_(update, denom);
    denom.clear();
    at::_foreach_mul_(update, lr);
    decay_weights(p, decay);
    subtract(p, update);
    return 0;
  } catch (const std::exception& e) {
    conveyor::put_error(err, static_cast<size_t>(err_len), e.what());
    return -1;
  }
}

// The L2 norm of the `n` tensors together as a 0-dim float64 tensor on their device: each
// tensor's norm in float32 by the multi-tensor kernel, the norms combined in float64. No
// float64 copy of a gradient is made.
int conveyor_global_norm(at::Tensor** ts, int64_t n, at::Tensor** out, char* err,
                         int64_t err_len) {
  try {
    c10::NoGradGuard no_grad;
    if (n == 0) return -1;
    auto norms = at::_foreach_norm(list(ts, n), 2, at::kFloat);
    auto total = at::stack(norms).to(at::kDouble).square().sum().sqrt();
    *out = new at::Tensor(std::move(total));
    return 0;
  } catch (const std::exception& e) {
    conveyor::put_error(err, static_cast<size_t>(err_len), e.what());
    return -1;
  }
}

// For every i, op 0: dst[i].copy_(src[i]) (kinds may differ: float32 masters into the
// bfloat16 copy); op 1: dst[i] += src[i] (bfloat16 gradients into float32 sums).
int conveyor_pairwise(int op, at::Tensor** dst, at::Tensor** src, int64_t n, char* err,
                      int64_t err_len) {
  try {
    c10::NoGradGuard no_grad;
    if (n == 0) return 0;
    auto d = list(dst, n);
    if (op == 0) {
      at::_foreach_copy_(d, list(src, n));
    } else {
      at::_foreach_add_(d, list(src, n));
    }
    return 0;
  } catch (const std::exception& e) {
    conveyor::put_error(err, static_cast<size_t>(err_len), e.what());
    return -1;
  }
}

}  // extern "C"
