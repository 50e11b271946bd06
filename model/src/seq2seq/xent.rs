//! The summed token cross-entropy of bfloat16 logits without a float32 copy of them.
//!
//! The plain way, `log_softmax(logits, Float)`, keeps a float32 (batch x targets x vocab)
//! tensor of log-probabilities for the backward pass and makes another for its gradient:
//! for the base model at 128 x 114 targets, 1.9 GB each beside the 0.94 GB of bfloat16
//! logits. Here the loss and its gradient with respect to the logits, softmax minus one-hot
//! times the mask, are computed together in float32 a chunk of rows at a time, the gradient
//! stored in bfloat16 (the logits' kind, which the plain way casts it to as well); autograd
//! then only multiplies that stored gradient back through the logits. The loss's divisor
//! (the trainer's target-token count) is applied here too, in float32 before the gradient is
//! rounded: divided afterwards, the incoming scale would reach the bfloat16 product rounded
//! to bfloat16 itself, every gradient off by the same up-to-0.4% factor.

use tch::{Kind, Tensor};

/// Float32 elements per chunk of rows (128 MB).
pub const CHUNK_ELEMENTS: i64 = 32 << 20;

/// The sum over rows of (logsumexp(logits) - logits[target]) * mask, for (batch, targets,
/// vocab) logits, (batch, targets) int64 targets and a (batch, targets) mask (float32,
/// without gradient), and, differentiable with respect to `logits`, that sum plus
/// `z_loss` times the masked sum of logsumexp² (Mesh TF's z-loss; 0 for none), divided by
/// `denom` (a 0-dim float32 tensor on the logits' device; undivided when `None`), its
/// gradient divided in float32 and rounded to the logits' kind once. Rows go `chunk`
/// elements at a time ([`CHUNK_ELEMENTS`]).
pub fn nll_over(
    logits: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
    chunk: i64,
    denom: Option<&Tensor>,
    z_loss: f64,
) -> (Tensor, Tensor) {
    let vocab = *logits.size().last().expect("logits have a vocabulary axis");
    let flat = logits.reshape([-1, vocab]);
    let rows = flat.size()[0];
    let targets = targets.reshape([-1, 1]);
    let mask = mask.to_kind(Kind::Float).reshape([-1, 1]);
    // The gradient's weights: the mask, divided by `denom` on these (rows x 1) values rather
    // than on every (rows x vocab) chunk.
    let gmask = match denom {
        Some(d) => &mask / d,
        None => mask.shallow_clone(),
    };
    let with_grad = logits.requires_grad();
    let step = (chunk / vocab.max(1)).max(1);
    let _guard = tch::no_grad_guard();
    let grad = with_grad.then(|| Tensor::empty_like(&flat));
    let mut total = Tensor::zeros([], (Kind::Float, logits.device()));
    let mut z_total = Tensor::zeros([], (Kind::Float, logits.device()));
    let mut start = 0;
    while start < rows {
        let len = step.min(rows - start);
        let x = flat.narrow(0, start, len).to_kind(Kind::Float);
        let t = targets.narrow(0, start, len);
        let m = mask.narrow(0, start, len);
        let lse = x.logsumexp([-1], true);
        let nll = &lse - x.gather(1, &t, false);
        total += (nll * &m).sum(Kind::Float);
        if z_loss != 0.0 {
            z_total += (lse.square() * &m).sum(Kind::Float);
        }
        if let Some(g) = &grad {
            // m * (softmax - onehot) / denom, right for any mask, not only 0/1; the z-loss
            // adds m * 2 z lse * softmax / denom.
            let gm = gmask.narrow(0, start, len);
            let mut p = (&x - &lse).exp_();
            match z_loss != 0.0 {
                true => {
                    let _ = p.g_mul_(&(&gm * (lse * (2.0 * z_loss) + 1.0)));
                }
                false => {
                    let _ = p.g_mul_(&gm);
                }
            }
            let _ = p.scatter_add_(1, &t, &gm.neg());
            g.narrow(0, start, len).copy_(&p);
        }
        start += len;
    }
    drop(_guard);
    let objective = match z_loss != 0.0 {
        true => &total + z_total * z_loss,
        false => total.shallow_clone(),
    };
    let value = match denom {
        Some(d) => &objective / d,
        None => objective,
    };
    let value = match grad {
        // Its value is `value` (plus an exact zero); its gradient with respect to the
        // logits is `g` times the incoming scalar: a plain backward brings 1, which
        // bfloat16 holds exactly.
        Some(g) => {
            let surrogate = surrogate(&flat, &g);
            value + (&surrogate - surrogate.detach())
        }
        None => value,
    };
    (total, value)
}

/// A scalar whose gradient with respect to `logits` is `g` times the incoming one (its value
/// only ever cancels). On CUDA a dot product (cuBLAS): no (batch x targets x vocab)
/// temporary. libtorch's CPU dot of bfloat16 is not vectorised (~10 ns an element: 139 ms for
/// the tiny model's 456 x 32,100 logits, more than the rest of the loss), so on the CPU the
/// elementwise product is summed in its own kind instead (17 ms), at the cost of one such
/// bfloat16 temporary (a float32 sum would first copy it to float32: 52 ms).
fn surrogate(logits: &Tensor, g: &Tensor) -> Tensor {
    match logits.device().is_cuda() {
        true => logits.reshape([-1]).dot(&g.reshape([-1])),
        false => (logits * g).sum(logits.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// The plain way: log_softmax to float32, gather, mask, sum.
    fn plain(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Tensor {
        let logp = logits.log_softmax(-1, Kind::Float);
        let nll = -logp
            .gather(-1, &targets.unsqueeze(-1), false)
            .squeeze_dim(-1);
        (nll * mask.to_kind(Kind::Float)).sum(Kind::Float)
    }

    #[test]
    fn loss_and_gradient_match_log_softmax_on_bf16_logits() {
        let _rng = crate::test_rng();
        tch::manual_seed(3);
        let (b, t, v) = (3, 5, 37);
        for chunk in [CHUNK_ELEMENTS, 2 * v, 1] {
            let base = (Tensor::randn([b, t, v], (Kind::Float, Device::Cpu)) * 4.0)
                .to_kind(Kind::BFloat16);
            let targets = Tensor::randint(v, [b, t], (Kind::Int64, Device::Cpu));
            // A fractional weight too: the gradient must be m * (softmax - onehot).
            let mask = Tensor::from_slice(&[
                1.0f32, 0.5, 1., 0., 0., 1., 1., 1., 1., 1., 1., 0., 0., 0., 0.,
            ])
            .view([b, t]);
            let a = base.copy().set_requires_grad(true);
            let p = base.copy().set_requires_grad(true);
            let la = nll_over(&a, &targets, &mask, chunk, None, 0.0).1;
            let lp = plain(&p, &targets, &mask);
            let (va, vp) = (la.double_value(&[]), lp.double_value(&[]));
            assert!(
                (va - vp).abs() <= 1e-5 * vp.abs(),
                "chunk {chunk}: {va} vs {vp}"
            );
            drop(la);
            // A divisor bfloat16 does not hold exactly, as the trainer's token count.
            let three = Tensor::from(3.0f32);
            let (sum, mean) = nll_over(&a, &targets, &mask, chunk, Some(&three), 0.0);
            assert_eq!(sum.double_value(&[]), va);
            assert!((mean.double_value(&[]) - vp / 3.0).abs() <= 1e-5 * vp.abs());
            mean.backward();
            (lp / 3.0).backward();
            let (ga, gp) = (a.grad().to_kind(Kind::Float), p.grad().to_kind(Kind::Float));
            assert_eq!(a.grad().kind(), Kind::BFloat16);
            // Both round the float32 gradient to bfloat16 once: within one bfloat16 step of
            // each element, and no common factor between them (1/3 rounded to bfloat16 first
            // would scale every element by 1.002).
            let step = gp.abs() / 128.0 + 1e-30;
            let worst = ((&ga - &gp).abs() - step).max().double_value(&[]);
            assert!(
                worst <= 0.0,
                "chunk {chunk}: an element differs by more than a step"
            );
            let factor = (&ga * &gp).sum(Kind::Double).double_value(&[])
                / (&gp * &gp).sum(Kind::Double).double_value(&[]);
            assert!(
                (factor - 1.0).abs() < 1e-5,
                "chunk {chunk}: gradients scaled by {factor}"
            );
            // Masked rows get no gradient; each kept row's gradient sums to zero.
            let rows = ga.sum_dim_intlist(&[-1i64][..], false, Kind::Float);
            assert!(rows.abs().max().double_value(&[]) < 1e-2);
            assert_eq!(
                ga.get(0).get(3).abs().sum(Kind::Float).double_value(&[]),
                0.0
            );
        }
    }

    /// The z-loss (Mesh TF's, T5's 1e-4): value and gradient those of autograd through the
    /// plain formula, cross-entropy plus z x logsumexp² per kept position, in float32.
    #[test]
    fn the_z_loss_matches_autograd_of_the_plain_formula() {
        let _rng = crate::test_rng();
        tch::manual_seed(11);
        let (b, t, v) = (2, 4, 23);
        let z = 0.05;
        let base =
            (Tensor::randn([b, t, v], (Kind::Float, Device::Cpu)) * 3.0).to_kind(Kind::BFloat16);
        let targets = Tensor::randint(v, [b, t], (Kind::Int64, Device::Cpu));
        let mask = Tensor::from_slice(&[1.0f32, 1., 0.5, 0., 1., 1., 1., 0.]).view([b, t]);
        for chunk in [CHUNK_ELEMENTS, v, 1] {
            let a = base.copy().set_requires_grad(true);
            let p = base.copy().set_requires_grad(true);
            let seven = Tensor::from(7.0f32);
            let (sum, mean) = nll_over(&a, &targets, &mask, chunk, Some(&seven), z);
            let lse = p.to_kind(Kind::Float).logsumexp([-1], false);
            let ce = plain(&p, &targets, &mask);
            let want = (&ce + (lse.square() * &mask).sum(Kind::Float) * z) / 7.0;
            // The sum returned is the cross-entropy alone (the logged loss).
            let ce_v = ce.double_value(&[]);
            assert!((sum.double_value(&[]) - ce_v).abs() <= 1e-5 * ce_v.abs());
            let (got, w) = (mean.double_value(&[]), want.double_value(&[]));
            assert!(
                (got - w).abs() <= 1e-5 * w.abs(),
                "chunk {chunk}: {got} vs {w}"
            );
            assert!(w > ce_v / 7.0 + 1e-3, "the z term is not negligible here");
            mean.backward();
            want.backward();
            let (ga, gp) = (a.grad().to_kind(Kind::Float), p.grad().to_kind(Kind::Float));
            let step = gp.abs() / 128.0 + 1e-30;
            let worst = ((&ga - &gp).abs() - step).max().double_value(&[]);
            assert!(
                worst <= 0.0,
                "chunk {chunk}: an element differs by more than a step"
            );
        }
    }

    /// Both forms of the surrogate (the CPU's product sum, CUDA's dot) are zero in the loss
    /// and pass the stored gradient through unchanged.
    #[test]
    fn both_surrogates_pass_the_stored_gradient_through() {
        let _rng = crate::test_rng();
        tch::manual_seed(5);
        let logits = Tensor::randn([6, 29], (Kind::Float, Device::Cpu)).to_kind(Kind::BFloat16);
        let g = Tensor::randn([6, 29], (Kind::Float, Device::Cpu)).to_kind(Kind::BFloat16);
        let forms: [fn(&Tensor, &Tensor) -> Tensor; 2] =
            [surrogate, |l, g| l.reshape([-1]).dot(&g.reshape([-1]))];
        for form in forms {
            let a = logits.copy().set_requires_grad(true);
            let s = form(&a, &g);
            let zero = &s - s.detach();
            assert_eq!(zero.double_value(&[]), 0.0);
            zero.backward();
            assert!(a.grad().equal(&g));
        }
    }

    #[test]
    fn without_gradients_it_is_the_loss_alone() {
        let _rng = crate::test_rng();
        let logits = Tensor::randn([2, 3, 11], (Kind::Float, Device::Cpu)).to_kind(Kind::BFloat16);
        let targets = Tensor::randint(11, [2, 3], (Kind::Int64, Device::Cpu));
        let mask = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
        let got = nll_over(&logits, &targets, &mask, 7, None, 0.0)
            .1
            .double_value(&[]);
        let want = plain(&logits, &targets, &mask).double_value(&[]);
        assert!((got - want).abs() <= 1e-5 * want.abs());
    }
}
