//! The convolution block that replaces self-attention in the conv models (the paper, after
//! Wu et al. 2019): GLU input projection, a depthwise convolution, output projection; with
//! `conv_pointwise`, a d x d map between the last two (the Mesh TensorFlow form).
//!
//! - Lightweight: H kernels of K taps, softmax over the taps, DropConnect while training;
//!   channel c uses kernel c / (d / H) (contiguous channel groups). Run as a band matrix
//!   up to 64 positions and one grouped `conv1d` (groups = d) above ([`LightImpl`]).
//! - Dynamic: the H x K kernels are predicted per position by a linear map of the GLU's
//!   output (the convolution's input), softmax over the taps; run by unfolding the K-wide windows (memory O(T d K)).
//! - Dilated: a plain depthwise kernel per channel (with bias) and a dilation rate, per-layer
//!   sizes from the config; one grouped `conv1d`.
//!
//! Encoder convolutions are centred (padding K//2 before, the rest after); decoder ones are
//! causal (all padding before), so position t never sees a later input.
//!
//! Packed rows (several examples per row, told apart by segment ids): a tap that reaches into
//! another segment reads zero, exactly as a tap past the end of an unpacked example reads the
//! zero padding, so each example's outputs equal those of the example alone. Every
//! implementation applies the tap mask: the band matrix is masked to same-segment pairs, the
//! unfolded windows and the dynamic kernels are multiplied by it; a grouped `conv1d` cannot
//! skip taps, so with segments the grouped path (lightweight and dilated) runs as masked
//! unfolded windows.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use crate::config::{Arch, ModelConfig};
use crate::layers::dense;

/// How a lightweight convolution is computed. All three give the same result; which is
/// fastest depends on the sequence length (see `conveyor bench conv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LightImpl {
    /// One grouped `conv1d` (groups = d): linear in length.
    Grouped,
    /// Unfolded K-wide windows times the kernels: linear in length, memory O(T d K).
    Unfold,
    /// A (T x T) band matrix per head and a batched matmul: quadratic, only for short inputs.
    Band,
}

impl LightImpl {
    pub const ALL: [LightImpl; 3] = [LightImpl::Grouped, LightImpl::Unfold, LightImpl::Band];

    /// The implementation used for inputs of `t` positions. Measured with `conveyor bench
    /// conv` (CPU, batch 8, d 512, forward + backward): the band matrix wins up to 64
    /// positions (0.46 vs 0.62 ms at 32), the grouped conv1d from 128 on (8.0 vs 20.2 ms at
    /// 512, 66 vs 429 ms at 2048); unfolding is never fastest here. So the quadratic path is
    /// only ever taken for short inputs.
    pub fn for_length(t: i64) -> Self {
        if t <= 64 {
            LightImpl::Band
        } else {
            LightImpl::Grouped
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LightImpl::Grouped => "grouped conv1d",
            LightImpl::Unfold => "unfold",
            LightImpl::Band => "band matrix",
        }
    }
}

#[derive(Debug)]
enum Kernel {
    Light {
        weight: Tensor,
    },
    Dynamic {
        proj: nn::Linear,
    },
    Dilated {
        weight: Tensor,
        bias: Tensor,
        dilation: i64,
    },
}

/// One convolution block.
#[derive(Debug)]
pub struct ConvBlock {
    glu: nn::Linear,
    /// `conv_pointwise`: a d x d map after the convolution (the Mesh TensorFlow block's).
    pointwise: Option<nn::Linear>,
    out: nn::Linear,
    kernel: Kernel,
    k: i64,
    heads: i64,
    d: i64,
    causal: bool,
    weight_dropout: f64,
}

impl ConvBlock {
    pub fn new(p: nn::Path, cfg: &ModelConfig, layer: usize, causal: bool) -> Self {
        let d = cfg.d_model;
        let std = (d as f64).powf(-0.5);
        let (k, kernel) = match cfg.arch {
            Arch::Lightconv => (
                cfg.kernel_size,
                Kernel::Light {
                    weight: p.randn(
                        "conv_weight",
                        &[cfg.conv_heads as i64, cfg.kernel_size as i64],
                        0.0,
                        1.0,
                    ),
                },
            ),
            Arch::Dynamicconv => (
                cfg.kernel_size,
                Kernel::Dynamic {
                    proj: dense(
                        &p / "conv_proj",
                        d,
                        cfg.conv_heads * cfg.kernel_size,
                        true,
                        std,
                    ),
                },
            ),
            Arch::Dilatedconv => {
                let (k, dilation) = cfg.dilated_layer(layer);
                (
                    k,
                    Kernel::Dilated {
                        weight: p.randn(
                            "conv_weight",
                            &[d as i64, 1, k as i64],
                            0.0,
                            (k as f64).powf(-0.5),
                        ),
                        bias: p.zeros("conv_bias", &[d as i64]),
                        dilation: dilation as i64,
                    },
                )
            }
            Arch::Transformer => unreachable!("the transformer has no convolution block"),
        };
        Self {
            glu: dense(&p / "glu", d, 2 * d, true, std),
            pointwise: cfg
                .conv_pointwise
                .then(|| dense(&p / "pointwise", d, d, true, std)),
            out: dense(&p / "out", d, d, true, std),
            kernel,
            k: k as i64,
            heads: cfg.conv_heads as i64,
            d: d as i64,
            causal,
            weight_dropout: cfg.weight_dropout,
        }
    }

    /// Padding (before, after) along time for a receptive field of `span` positions.
    fn padding(&self, span: i64) -> (i64, i64) {
        if self.causal {
            (span - 1, 0)
        } else {
            let before = span / 2;
            (before, span - 1 - before)
        }
    }

    /// `x`: (batch, time, d); `mask`: (batch, time) with 1 for real positions, 0 for padding
    /// (padding is zeroed before the convolution so it cannot leak into real positions).
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>, train: bool) -> Tensor {
        self.forward_segments(x, mask, None, train)
    }

    /// [`ConvBlock::forward`] over packed rows: `segments` (batch, time) holds each
    /// position's segment id; no tap reads another segment.
    pub fn forward_segments(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        segments: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let mut h = self.glu.forward(x).glu(-1);
        if let Some(m) = mask {
            h *= m.unsqueeze(-1).to_kind(h.kind());
        }
        let y = match &self.kernel {
            Kernel::Light { weight } => {
                let w = weight
                    .softmax(-1, Kind::Float)
                    .to_kind(h.kind())
                    .dropout(self.weight_dropout, train);
                let how = LightImpl::for_length(h.size()[1]);
                match segments {
                    None => self.lightweight(&h, &w, how),
                    Some(s) => self.lightweight_segments(&h, &w, s, how),
                }
            }
            Kernel::Dilated {
                weight,
                bias,
                dilation,
            } => match segments {
                None => self.depthwise(&h, weight, Some(bias), *dilation),
                Some(s) => self.dilated_segments(&h, weight, bias, *dilation, s),
            },
            Kernel::Dynamic { proj } => self.dynamic(&h, proj, segments, train),
        };
        self.project(&y)
    }

    /// The convolution's output through the pointwise map, if any, and the output
    /// projection.
    fn project(&self, y: &Tensor) -> Tensor {
        match &self.pointwise {
            Some(p) => self.out.forward(&p.forward(y)),
            None => self.out.forward(y),
        }
    }

    /// (batch, time, K): 1 where tap `o` of position `i` reads position
    /// `i - before + o * dilation` of the same segment, 0 where it reads another segment or
    /// falls outside the row (zero padding there anyway).
    fn tap_mask(&self, segments: &Tensor, dilation: i64, kind: Kind) -> Tensor {
        let span = (self.k - 1) * dilation + 1;
        let (before, after) = self.padding(span);
        segments
            .constant_pad_nd([before, after])
            .unfold(1, span, 1)
            .slice(2, 0, span, dilation)
            .eq_tensor(&segments.unsqueeze(2))
            .to_kind(kind)
    }

    /// K-wide windows of `h` (batch, time, d), taps `dilation` apart: (batch, time, d, K).
    fn windows(&self, h: &Tensor, dilation: i64) -> Tensor {
        let span = (self.k - 1) * dilation + 1;
        let (before, after) = self.padding(span);
        h.constant_pad_nd([0, 0, before, after])
            .unfold(1, span, 1)
            .slice(3, 0, span, dilation)
    }

    /// The lightweight convolution over packed rows, by implementation `how` (a grouped
    /// conv1d cannot mask taps: with segments it runs as masked windows).
    pub fn lightweight_segments(
        &self,
        h: &Tensor,
        w: &Tensor,
        segments: &Tensor,
        how: LightImpl,
    ) -> Tensor {
        let (b, t, d) = h.size3().expect("(batch, time, d)");
        match how {
            LightImpl::Grouped | LightImpl::Unfold => {
                let valid = self.tap_mask(segments, 1, h.kind());
                let win = self
                    .windows(h, 1)
                    .view([b, t, self.heads, d / self.heads, self.k]);
                (win * w.view([1, 1, self.heads, 1, self.k]) * valid.view([b, t, 1, 1, self.k]))
                    .sum_dim_intlist(-1, false, None)
                    .view([b, t, d])
            }
            LightImpl::Band => {
                let band = self.band(w, t, h.device());
                let same = segments
                    .unsqueeze(2)
                    .eq_tensor(&segments.unsqueeze(1))
                    .to_kind(h.kind())
                    .unsqueeze(1);
                let x = h
                    .view([b, t, self.heads, d / self.heads])
                    .permute([0, 2, 1, 3]);
                (band.unsqueeze(0) * same)
                    .matmul(&x)
                    .permute([0, 2, 1, 3])
                    .contiguous()
                    .view([b, t, d])
            }
        }
    }

    /// The dilated convolution over packed rows: masked windows, taps `dilation` apart.
    fn dilated_segments(
        &self,
        h: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        dilation: i64,
        segments: &Tensor,
    ) -> Tensor {
        let (b, t, d) = h.size3().expect("(batch, time, d)");
        let valid = self.tap_mask(segments, dilation, h.kind());
        (self.windows(h, dilation) * weight.view([1, 1, d, self.k]) * valid.view([b, t, 1, self.k]))
            .sum_dim_intlist(-1, false, None)
            + bias
    }

    /// The (heads, t, t) band matrix of kernels `w`: entry (i, j) is tap j - i + before.
    fn band(&self, w: &Tensor, t: i64, dev: tch::Device) -> Tensor {
        let (before, _) = self.padding(self.k);
        let i = Tensor::arange(t, (Kind::Int64, dev)).unsqueeze(1);
        let j = Tensor::arange(t, (Kind::Int64, dev)).unsqueeze(0);
        let tap = j - i + before;
        let valid = tap.ge(0).logical_and(&tap.lt(self.k));
        let tap = tap.where_scalarother(&valid, self.k);
        let padded = Tensor::cat(&[w, &w.zeros_like().narrow(1, 0, 1)], 1);
        padded
            .index_select(1, &tap.view([-1]))
            .view([self.heads, t, t])
    }

    /// The lightweight convolution of `h` (batch, time, d) with the normalised kernels `w`
    /// (heads, K), by one of three equivalent implementations.
    pub fn lightweight(&self, h: &Tensor, w: &Tensor, how: LightImpl) -> Tensor {
        let (b, t, d) = h.size3().expect("(batch, time, d)");
        let (before, after) = self.padding(self.k);
        match how {
            LightImpl::Grouped => {
                let full = w
                    .repeat_interleave_self_int(self.d / self.heads, 0, None)
                    .unsqueeze(1);
                self.depthwise(h, &full, None, 1)
            }
            LightImpl::Unfold => {
                let windows = h
                    .constant_pad_nd([0, 0, before, after])
                    .unfold(1, self.k, 1)
                    .view([b, t, self.heads, d / self.heads, self.k]);
                (windows * w.view([1, 1, self.heads, 1, self.k]))
                    .sum_dim_intlist(-1, false, None)
                    .view([b, t, d])
            }
            LightImpl::Band => {
                // (t, t) tap index j - i + before; outside the band it points at a zero tap.
                let band = self.band(w, t, h.device());
                let x = h
                    .view([b, t, self.heads, d / self.heads])
                    .permute([0, 2, 1, 3]);
                band.unsqueeze(0)
                    .matmul(&x)
                    .permute([0, 2, 1, 3])
                    .contiguous()
                    .view([b, t, d])
            }
        }
    }

    /// Positions of past inputs a causal block needs to produce the next output.
    pub fn history(&self) -> i64 {
        let dilation = match &self.kernel {
            Kernel::Dilated { dilation, .. } => *dilation,
            _ => 1,
        };
        (self.k - 1) * dilation
    }

    /// One decoding step of a causal block: `x` is (batch, 1, d); `past` holds the block's
    /// last [`ConvBlock::history`] convolution inputs (zeros at the start, as the causal
    /// padding) and is advanced. Equals the full forward pass at that position.
    pub fn step(&self, x: &Tensor, past: &mut Tensor) -> Tensor {
        let h = self.glu.forward(x).glu(-1);
        let window = Tensor::cat(&[&*past, &h], 1);
        let y = match &self.kernel {
            Kernel::Light { weight } => {
                let w = weight
                    .softmax(-1, Kind::Float)
                    .to_kind(h.kind())
                    .repeat_interleave_self_int(self.d / self.heads, 0, None)
                    .unsqueeze(1);
                window
                    .transpose(1, 2)
                    .conv1d(&w, None::<Tensor>, [1], [0], [1], self.d)
                    .transpose(1, 2)
            }
            Kernel::Dilated {
                weight,
                bias,
                dilation,
            } => window
                .transpose(1, 2)
                .conv1d(weight, Some(bias), [1], [0], [*dilation], self.d)
                .transpose(1, 2),
            Kernel::Dynamic { proj } => {
                let (b, _, d) = h.size3().expect("(batch, 1, d)");
                let w = proj
                    .forward(&h)
                    .view([b, 1, self.heads, self.k])
                    .softmax(-1, Kind::Float)
                    .to_kind(h.kind());
                // (batch, K, d) -> (batch, 1, heads, d / heads, K)
                let win = window
                    .transpose(1, 2)
                    .view([b, 1, self.heads, d / self.heads, self.k]);
                (win * w.unsqueeze(3))
                    .sum_dim_intlist(-1, false, None)
                    .view([b, 1, d])
            }
        };
        *past = window.narrow(1, 1, self.history());
        self.project(&y)
    }

    /// Depthwise conv of (batch, time, d) with a (d, 1, K) kernel as one grouped conv1d.
    fn depthwise(&self, h: &Tensor, w: &Tensor, bias: Option<&Tensor>, dilation: i64) -> Tensor {
        let (before, after) = self.padding((self.k - 1) * dilation + 1);
        let xt = h.transpose(1, 2).constant_pad_nd([before, after]);
        xt.conv1d(w, bias, [1], [0], [dilation], self.d)
            .transpose(1, 2)
    }

    /// Dynamic convolution: per-position softmax kernels over unfolded windows (taps into
    /// another segment masked out after the softmax).
    fn dynamic(
        &self,
        h: &Tensor,
        proj: &nn::Linear,
        segments: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let (b, t, d) = h.size3().expect("(batch, time, d)");
        let mut w = proj
            .forward(h)
            .view([b, t, self.heads, self.k])
            .softmax(-1, Kind::Float)
            .to_kind(h.kind())
            .dropout(self.weight_dropout, train);
        if let Some(s) = segments {
            w *= self.tap_mask(s, 1, h.kind()).unsqueeze(2);
        }
        let (before, after) = self.padding(self.k);
        let windows = h
            .constant_pad_nd([0, 0, before, after])
            .unfold(1, self.k, 1)
            .view([b, t, self.heads, d / self.heads, self.k]);
        (windows * w.unsqueeze(3))
            .sum_dim_intlist(-1, false, None)
            .view([b, t, d])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn block(arch: Arch, causal: bool) -> (nn::VarStore, ConvBlock) {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut cfg = ModelConfig::preset(arch, "tiny", 50).unwrap();
        cfg.dilated_kernels = vec![4];
        let b = ConvBlock::new(vs.root(), &cfg, 0, causal);
        (vs, b)
    }

    #[test]
    fn causal_blocks_never_look_ahead_and_centred_ones_do() {
        let _rng = crate::test_rng();
        tch::manual_seed(0);
        for arch in [Arch::Lightconv, Arch::Dynamicconv, Arch::Dilatedconv] {
            for causal in [true, false] {
                let (_vs, b) = block(arch, causal);
                let x = Tensor::randn([2, 12, 64], (Kind::Float, Device::Cpu));
                let y = b.forward(&x, None, false);
                assert_eq!(y.size(), vec![2, 12, 64]);
                // Change the input after position 5: outputs up to 5 stay for causal blocks.
                let x2 = x.copy();
                let _ = x2.narrow(1, 6, 6).fill_(3.0);
                let y2 = b.forward(&x2, None, false);
                let same = y
                    .narrow(1, 0, 6)
                    .allclose(&y2.narrow(1, 0, 6), 1e-6, 1e-6, false);
                assert_eq!(same, causal, "{arch:?} causal={causal}");
            }
        }
    }

    #[test]
    fn lightweight_implementations_agree() {
        let _rng = crate::test_rng();
        for causal in [false, true] {
            let (_vs, b) = block(Arch::Lightconv, causal);
            let Kernel::Light { weight } = &b.kernel else {
                unreachable!()
            };
            let w = weight.softmax(-1, Kind::Float);
            let h = Tensor::randn([3, 11, 64], (Kind::Float, Device::Cpu));
            let want = b.lightweight(&h, &w, LightImpl::Grouped);
            for how in LightImpl::ALL {
                let got = b.lightweight(&h, &w, how);
                assert!(
                    got.allclose(&want, 1e-5, 1e-5, false),
                    "{} causal={causal}",
                    how.name()
                );
            }
        }
    }

    #[test]
    fn lightweight_kernels_are_softmaxed_and_shared_by_channel_groups() {
        let _rng = crate::test_rng();
        let (_vs, b) = block(Arch::Lightconv, false);
        let Kernel::Light { weight } = &b.kernel else {
            unreachable!()
        };
        let w = weight
            .softmax(-1, Kind::Float)
            .repeat_interleave_self_int(32, 0, None)
            .unsqueeze(1);
        // An impulse at position 4 in every channel traces each channel's kernel.
        let x = Tensor::zeros([1, 9, 64], (Kind::Float, Device::Cpu));
        let _ = x.narrow(1, 4, 1).fill_(1.0);
        let y = b.depthwise(&x, &w, None, 1).squeeze_dim(0);
        let col = |c: i64| y.select(1, c);
        assert!(col(0).allclose(&col(31), 1e-7, 1e-7, false));
        assert!(!col(0).allclose(&col(32), 1e-3, 1e-3, false));
        // The 7 taps of a softmax kernel sum to one.
        let total = col(0).sum(Kind::Float).double_value(&[]);
        assert!((total - 1.0).abs() < 1e-6, "{total}");
        // y[t] = w[3 + 4 - t]: the kernel, reversed, centred on the impulse.
        let k0: Vec<f32> = Vec::try_from(weight.softmax(-1, Kind::Float).get(0)).unwrap();
        let got: Vec<f32> = Vec::try_from(col(0)).unwrap();
        for t in 1..8 {
            assert!((got[t] - k0[7 - t]).abs() < 1e-6, "t={t}");
        }
    }

    /// Every conv type and every lightweight implementation, causal and centred: the outputs
    /// of a packed row equal those of each segment run alone (taps into a neighbouring
    /// segment read zero, as taps past an example's end read padding).
    #[test]
    fn packed_rows_do_not_mix_segments() {
        let _rng = crate::test_rng();
        tch::manual_seed(5);
        let lens = [5i64, 9, 3, 11];
        let t: i64 = lens.iter().sum::<i64>() + 2; // two padding positions at the end
        let seg: Vec<i64> = lens
            .iter()
            .enumerate()
            .flat_map(|(i, &n)| std::iter::repeat_n(i as i64 + 1, n as usize))
            .chain([0, 0])
            .collect();
        let seg = Tensor::from_slice(&seg).view([1, t]);
        for arch in [Arch::Lightconv, Arch::Dynamicconv, Arch::Dilatedconv] {
            for causal in [false, true] {
                let (_vs, b) = block(arch, causal);
                let x = Tensor::randn([1, t, 64], (Kind::Float, Device::Cpu));
                let alone = |start: i64, n: i64| b.forward(&x.narrow(1, start, n), None, false);
                let mut outputs =
                    vec![("forward", b.forward_segments(&x, None, Some(&seg), false))];
                if let Kernel::Light { weight } = &b.kernel {
                    let w = weight.softmax(-1, Kind::Float);
                    let h = b.glu.forward(&x).glu(-1);
                    for how in LightImpl::ALL {
                        outputs.push((
                            how.name(),
                            b.out.forward(&b.lightweight_segments(&h, &w, &seg, how)),
                        ));
                    }
                }
                for (what, y) in outputs {
                    let mut start = 0;
                    for &n in &lens {
                        let got = y.narrow(1, start, n);
                        assert!(
                            got.allclose(&alone(start, n), 1e-5, 1e-5, false),
                            "{arch:?} causal={causal} {what}: segment at {start}"
                        );
                        start += n;
                    }
                    // And without segment ids the outputs do mix (the test can fail).
                    let mixed = b.forward(&x, None, false).narrow(1, 5, 9);
                    assert!(!mixed.allclose(&alone(5, 9), 1e-5, 1e-5, false));
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "conv_reference_tests.rs"]
mod reference_tests;
