//! Building blocks shared by every architecture: RMS norm, T5 attention with its relative
//! position bias, the feed-forward sublayer (ReLU, or T5 v1.1's gated GELU), and masks.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use crate::config::Ffn;

/// A large negative logit for masked attention positions (finite, so fully masked rows stay
/// numerically defined).
pub const MASKED: f64 = -1e9;

/// T5's RMS norm: no mean subtraction, no bias, variance in float32, eps 1e-6.
#[derive(Debug)]
pub struct RmsNorm {
    weight: Tensor,
}

/// T5's epsilon under the square root.
const RMS_EPS: f64 = 1e-6;

impl RmsNorm {
    pub fn new(p: nn::Path, d: usize) -> Self {
        Self {
            weight: p.ones("weight", &[d as i64]),
        }
    }

    /// ATen's `rms_norm`: on CUDA one fused kernel forward and one backward (instead of
    /// about six and ten launches for T5's formula, and no saved float32 copy of a bfloat16
    /// input); elsewhere ATen's composite of the same operations. In float32 it is T5's
    /// formula (`t5_rms_norm` in the tests); with bfloat16 ATen multiplies by the weight
    /// before rounding back (T5 rounds, then multiplies), so the two can differ by one
    /// bfloat16 step. The tests hold it to the formula, on CUDA too when there is one.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let d = *x.size().last().expect("RMS norm of a 0-dim tensor");
        x.rms_norm([d], Some(&self.weight), RMS_EPS)
    }
}

/// A dense layer initialised N(0, std).
pub fn dense(p: nn::Path, input: usize, output: usize, bias: bool, std: f64) -> nn::Linear {
    nn::linear(
        p,
        input as i64,
        output as i64,
        nn::LinearConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: std,
            },
            bs_init: bias.then_some(nn::Init::Const(0.0)),
            bias,
        },
    )
}

/// T5's relative position buckets for `relative = memory - query` positions.
pub fn relative_buckets(
    relative: &Tensor,
    bidirectional: bool,
    buckets: i64,
    max_distance: i64,
) -> Tensor {
    let mut n = -relative;
    let mut num = buckets;
    let mut ret = Tensor::zeros_like(relative);
    if bidirectional {
        num /= 2;
        ret += n.lt(0).to_kind(Kind::Int64) * num;
        n = n.abs();
    } else {
        n = n.clamp_min(0);
    }
    let max_exact = num / 2;
    let is_small = n.lt(max_exact);
    let large = (n.to_kind(Kind::Float) / max_exact as f64).log()
        / ((max_distance as f64) / (max_exact as f64)).ln()
        * (num - max_exact) as f64;
    let large = (large.to_kind(Kind::Int64) + max_exact).clamp_max(num - 1);
    ret + n.where_self(&is_small, &large)
}

/// Multi-head attention as in T5: no biases, no 1/sqrt(d_kv) scaling (folded into the query
/// initialisation), optional relative position bias.
#[derive(Debug)]
pub struct Attention {
    q: nn::Linear,
    k: nn::Linear,
    v: nn::Linear,
    o: nn::Linear,
    heads: i64,
    d_kv: i64,
    /// The relative position bias table (buckets x heads), in the first layer of a stack.
    relative: Option<Tensor>,
    bidirectional: bool,
    buckets: i64,
    max_distance: i64,
    /// Dropout on the attention weights after the softmax (HF T5's `dropout_rate`).
    dropout: f64,
    /// Through libtorch's scaled_dot_product_attention instead of explicit scores.
    sdpa: bool,
}

impl Attention {
    /// `heads` heads of width `d_kv` over a model of width `d`; the first layer of a stack
    /// holds the relative position bias table (`relative_bias`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        p: nn::Path,
        d: usize,
        heads: usize,
        d_kv: usize,
        relative_bias: bool,
        bidirectional: bool,
        buckets: usize,
        max_distance: usize,
    ) -> Self {
        let inner = heads * d_kv;
        let std = (d as f64).powf(-0.5);
        Self {
            q: dense(
                &p / "q",
                d,
                inner,
                false,
                (d as f64 * d_kv as f64).powf(-0.5),
            ),
            k: dense(&p / "k", d, inner, false, std),
            v: dense(&p / "v", d, inner, false, std),
            o: dense(&p / "o", inner, d, false, (inner as f64).powf(-0.5)),
            heads: heads as i64,
            d_kv: d_kv as i64,
            relative: relative_bias.then(|| {
                (&p / "relative_attention_bias").randn(
                    "weight",
                    &[buckets as i64, heads as i64],
                    0.0,
                    (d as f64).powf(-0.5),
                )
            }),
            bidirectional,
            buckets: buckets as i64,
            max_distance: max_distance as i64,
            dropout: 0.0,
            sdpa: false,
        }
    }

    /// Computes attention with `scaled_dot_product_attention` (`AttentionImpl::Sdpa`).
    pub fn with_impl(mut self, how: crate::AttentionImpl) -> Self {
        self.sdpa = how == crate::AttentionImpl::Sdpa;
        self
    }

    /// Drops attention weights with probability `p` while training, as HF's T5 does.
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }

    /// The position bias (1, heads, q_len, k_len) this layer's table gives.
    pub fn position_bias(&self, q_len: i64, k_len: i64) -> Option<Tensor> {
        let table = self.relative.as_ref()?;
        let dev = table.device();
        let ctx = Tensor::arange(q_len, (Kind::Int64, dev)).unsqueeze(1);
        let mem = Tensor::arange(k_len, (Kind::Int64, dev)).unsqueeze(0);
        let b = relative_buckets(
            &(mem - ctx),
            self.bidirectional,
            self.buckets,
            self.max_distance,
        );
        // (q, k, heads) -> (1, heads, q, k)
        Some(
            Tensor::embedding(table, &b, -1, false, false)
                .permute([2, 0, 1])
                .unsqueeze(0),
        )
    }

    /// The position bias (1, heads, 1, k_len) of the query at position `q_pos`.
    pub fn position_bias_at(&self, q_pos: i64, k_len: i64) -> Option<Tensor> {
        let table = self.relative.as_ref()?;
        let dev = table.device();
        let rel = Tensor::arange(k_len, (Kind::Int64, dev)) - q_pos;
        let b = relative_buckets(&rel, self.bidirectional, self.buckets, self.max_distance);
        // (k, heads) -> (1, heads, 1, k)
        Some(
            Tensor::embedding(table, &b, -1, false, false)
                .transpose(0, 1)
                .unsqueeze(0)
                .unsqueeze(2),
        )
    }

    fn split(&self, x: &Tensor) -> Tensor {
        let (b, t, _) = x.size3().expect("(batch, time, d)");
        x.view([b, t, self.heads, self.d_kv]).transpose(1, 2)
    }

    /// `x` attends to `kv` (itself for self-attention); `bias` is added to the logits
    /// (position bias and masks, broadcastable to (batch, heads, q, k)).
    pub fn forward(&self, x: &Tensor, kv: &Tensor, bias: Option<&Tensor>, train: bool) -> Tensor {
        let q = self.split(&self.q.forward(x));
        let (k, v) = (
            self.split(&self.k.forward(kv)),
            self.split(&self.v.forward(kv)),
        );
        self.attend(&q, &k, &v, bias, train)
    }

    /// Attention of queries `x` over precomputed keys and values (incremental decoding).
    pub fn attend_kv(&self, x: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>) -> Tensor {
        let q = self.split(&self.q.forward(x));
        self.attend(&q, k, v, bias, false)
    }

    /// Keys and values of `kv`, split into heads.
    pub fn keys_values(&self, kv: &Tensor) -> (Tensor, Tensor) {
        (
            self.split(&self.k.forward(kv)),
            self.split(&self.v.forward(kv)),
        )
    }

    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let attended = if self.sdpa {
            // The bias (position bias and masks) is the additive mask, in the queries' kind
            // as the kernels ask; T5 does not scale the scores.
            let mask = bias.map(|b| b.to_kind(q.kind()));
            let p = if train { self.dropout } else { 0.0 };
            Tensor::scaled_dot_product_attention(q, k, v, mask, p, false, 1.0, false)
        } else {
            let mut scores = q.matmul(&k.transpose(-2, -1));
            if let Some(b) = bias {
                scores += b;
            }
            scores
                .softmax(-1, Kind::Float)
                .to_kind(v.kind())
                .dropout(self.dropout, train)
                .matmul(v)
        };
        let (b, _, t, _) = q.size4().expect("(batch, heads, time, d_kv)");
        let out = attended
            .transpose(1, 2)
            .contiguous()
            .view([b, t, self.heads * self.d_kv]);
        self.o.forward(&out)
    }
}

/// The feed-forward sublayer without biases: `wo(relu(wi(x)))`, or with the gated GELU
/// `wo(gelu_tanh(wi_0(x)) * wi_1(x))`; dropout on the hidden activations.
#[derive(Debug)]
pub struct FeedForward {
    /// `wi` (ReLU) or `wi_0` (gated: the GELU branch).
    wi: nn::Linear,
    /// `wi_1`: the linear branch of the gated form.
    gate: Option<nn::Linear>,
    wo: nn::Linear,
    dropout: f64,
}

impl FeedForward {
    pub fn new(p: nn::Path, d: usize, d_ff: usize, ffn: Ffn, dropout: f64) -> Self {
        let std = (d as f64).powf(-0.5);
        let (wi, gate) = match ffn {
            Ffn::Relu => (dense(&p / "wi", d, d_ff, false, std), None),
            Ffn::GatedGelu => (
                dense(&p / "wi_0", d, d_ff, false, std),
                Some(dense(&p / "wi_1", d, d_ff, false, std)),
            ),
        };
        Self {
            wi,
            gate,
            wo: dense(&p / "wo", d_ff, d, false, (d_ff as f64).powf(-0.5)),
            dropout,
        }
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let h = match &self.gate {
            None => self.wi.forward(x).relu(),
            Some(gate) => self.wi.forward(x).gelu("tanh") * gate.forward(x),
        };
        self.wo.forward(&h.dropout(self.dropout, train))
    }
}

/// An additive key mask (batch, 1, 1, k) from a (batch, k) mask of 1 = real, 0 = padding.
pub fn key_mask(mask: &Tensor) -> Tensor {
    ((mask.to_kind(Kind::Float).neg() + 1.0) * MASKED)
        .unsqueeze(1)
        .unsqueeze(1)
}

/// An additive mask (batch, 1, q, k) for packed rows: a query attends only to keys of its own
/// segment (segment ids 1, 2, ...; 0 marks padding, which no query attends to).
pub fn segment_mask(q_segments: &Tensor, k_segments: &Tensor) -> Tensor {
    let same = q_segments
        .unsqueeze(2)
        .eq_tensor(&k_segments.unsqueeze(1))
        .logical_and(&k_segments.ne(0).unsqueeze(1));
    ((same.to_kind(Kind::Float).neg() + 1.0) * MASKED).unsqueeze(1)
}

/// An additive causal mask (1, 1, t, t).
pub fn causal_mask(t: i64, device: tch::Device) -> Tensor {
    (Tensor::ones([t, t], (Kind::Float, device)).triu(1) * MASKED)
        .unsqueeze(0)
        .unsqueeze(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_buckets_match_t5() {
        // Values from T5's _relative_position_bucket as PyTorch computes it (float32 log), for
        // 32 buckets and max distance 128.
        let rel = Tensor::from_slice(&[-200i64, -64, -10, -1, 0, 1, 10, 64, 200]);
        let b: Vec<i64> = Vec::try_from(relative_buckets(&rel, true, 32, 128)).unwrap();
        assert_eq!(b, vec![15, 14, 8, 1, 0, 17, 24, 30, 31]);
        let c: Vec<i64> = Vec::try_from(relative_buckets(&rel, false, 32, 128)).unwrap();
        assert_eq!(c, vec![31, 26, 10, 1, 0, 0, 0, 0, 0]);
    }

    /// T5's formula written out: x / sqrt(mean(x^2) + eps) in float32, cast back to x's
    /// kind, then scaled by the weight (the reference for [`RmsNorm::forward`]).
    fn t5_rms_norm(x: &Tensor, weight: &Tensor) -> Tensor {
        let kind = x.kind();
        let xf = x.to_kind(Kind::Float);
        let var = xf.square().mean_dim(-1, true, Kind::Float);
        let y = xf * (var + RMS_EPS).rsqrt();
        y.to_kind(kind) * weight
    }

    /// ATen's rms_norm against T5's formula, forward and gradients (input and weight), on
    /// random inputs of several shapes and scales, float32 and bfloat16, on the CPU and on
    /// CUDA (its fused kernels) when there is one.
    #[test]
    fn rms_norm_matches_t5_formula() {
        let _rng = crate::test_rng();
        let mut devices = vec![tch::Device::Cpu];
        if tch::Cuda::is_available() {
            devices.push(tch::Device::Cuda(0));
        }
        let cases = [
            (vec![3i64, 5, 16], 1.0),
            (vec![2, 7, 64], 1e-3),
            (vec![4, 33], 50.0),
        ];
        for (device, (shape, scale)) in devices
            .iter()
            .flat_map(|&d| cases.iter().map(move |c| (d, c)))
        {
            for kind in [Kind::Float, Kind::BFloat16] {
                let d = *shape.last().unwrap();
                let weight = (Tensor::randn([d], (Kind::Float, device)) + 1.0)
                    .to_kind(kind)
                    .set_requires_grad(true);
                let norm = RmsNorm {
                    weight: weight.shallow_clone(),
                };
                let x0 = (Tensor::randn(&shape[..], (Kind::Float, device)) * *scale).to_kind(kind);
                let up = Tensor::randn(&shape[..], (Kind::Float, device)).to_kind(kind);
                let run = |f: &dyn Fn(&Tensor) -> Tensor| {
                    let x = x0.detach().set_requires_grad(true);
                    let y = f(&x);
                    crate::cuda::clear_grad(&weight);
                    (&y * &up).sum(Kind::Float).backward();
                    (
                        y.to_kind(Kind::Float),
                        x.grad().to_kind(Kind::Float),
                        weight.grad().to_kind(Kind::Float),
                    )
                };
                let (ya, gxa, gwa) = run(&|x| norm.forward(x));
                let (yb, gxb, gwb) = run(&|x| t5_rms_norm(x, &weight));
                // Relative to the largest value. float32: rounding order only; bfloat16: each side
                // rounds its intermediates to 8 bits in its own order.
                let tol = if kind == Kind::Float { 1e-5 } else { 1e-2 };
                for (name, a, b) in [
                    ("output", ya, yb),
                    ("input grad", gxa, gxb),
                    ("weight grad", gwa, gwb),
                ] {
                    let err = ((&a - &b).abs().max() / b.abs().max()).double_value(&[]);
                    assert!(
                        err < tol,
                        "{name}, {shape:?} x {scale}, {kind:?} on {device:?}: relative error {err}"
                    );
                }
            }
        }
    }

    /// HF's T5 drops attention weights after the softmax while training: the weights of a
    /// query then no longer sum to one, so even keys with identical values give an output
    /// that moves with the mask; without training, or at rate 0, nothing is dropped.
    #[test]
    fn attention_weights_are_dropped_while_training_only() {
        for how in [crate::AttentionImpl::Explicit, crate::AttentionImpl::Sdpa] {
            dropped_while_training_only(how);
        }
    }

    fn dropped_while_training_only(how: crate::AttentionImpl) {
        let _rng = crate::test_rng();
        tch::manual_seed(4);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let a = Attention::new(vs.root() / "a", 16, 2, 8, false, true, 8, 16)
            .with_dropout(0.5)
            .with_impl(how);
        let q = Tensor::randn([1, 6, 16], (Kind::Float, tch::Device::Cpu));
        // Every key/value position holds the same vector: without dropout each output row
        // is o(v(kv)) whatever the attention weights are.
        let kv = Tensor::randn([1, 1, 16], (Kind::Float, tch::Device::Cpu)).repeat([1, 5, 1]);
        let eval = a.forward(&q, &kv, None, false);
        let first = eval.narrow(1, 0, 1);
        assert!(eval.allclose(&first.expand_as(&eval), 1e-5, 1e-5, false));
        let train = a.forward(&q, &kv, None, true);
        assert!(!train.allclose(&eval, 1e-3, 1e-3, false));
        // Scaled by 1 / (1 - p): each output row is o(v) times the kept weights' sum / 0.5.
        let none = Attention::new(vs.root() / "b", 16, 2, 8, false, true, 8, 16).with_impl(how);
        let x = none.forward(&q, &kv, None, true);
        assert!(x.allclose(&none.forward(&q, &kv, None, false), 1e-6, 1e-6, false));
    }
}
