//! The encoder-decoder shared by every architecture: tied embeddings (logits scaled by
//! d_model^-0.5), pre-norm residual sublayers with RMS norm, a mixing sublayer (T5
//! self-attention with a shared relative position bias, or a convolution block), decoder
//! cross-attention, ReLU feed-forward, dropout, final norms, optional learned absolute
//! positions; plain padded rows or packed rows ([`Segments`]). Incremental decoding is in
//! `decode.rs`.
//!
//! Parameter names (the safetensors keys of a checkpoint) are documented in the README:
//! `shared.weight`, `encoder.layers.{i}.{mixer|ffn|norm_mix|norm_ffn}...`,
//! `decoder.layers.{i}.{mixer|cross|ffn|norm_mix|norm_cross|norm_ffn}...`,
//! `{encoder|decoder}.final_norm.weight`.

use tch::nn;
use tch::{Kind, Tensor};

use crate::config::{Arch, ConfigError, ModelConfig, PositionEmbedding};
use crate::conv::ConvBlock;
use crate::layers::{causal_mask, key_mask, segment_mask, Attention, FeedForward, RmsNorm};

mod decode;

pub use decode::DecodeState;

/// Packed rows: per position, the segment (example) it belongs to (1, 2, ...; 0 = padding)
/// and its position within that segment, for inputs and targets (all (batch, time) int64).
#[derive(Debug)]
pub struct Segments {
    pub inputs: Tensor,
    pub targets: Tensor,
    pub input_positions: Tensor,
    pub target_positions: Tensor,
}

#[derive(Debug)]
enum Mixer {
    Attention(Attention),
    Conv(ConvBlock),
}

#[derive(Debug)]
struct EncoderLayer {
    norm_mix: RmsNorm,
    mixer: Mixer,
    norm_ffn: RmsNorm,
    ffn: FeedForward,
}

#[derive(Debug)]
struct DecoderLayer {
    norm_mix: RmsNorm,
    mixer: Mixer,
    norm_cross: RmsNorm,
    cross: Attention,
    norm_ffn: RmsNorm,
    ffn: FeedForward,
}

/// A full encoder-decoder model.
#[derive(Debug)]
pub struct Seq2Seq {
    pub cfg: ModelConfig,
    shared: Tensor,
    encoder: Vec<EncoderLayer>,
    encoder_norm: RmsNorm,
    decoder: Vec<DecoderLayer>,
    decoder_norm: RmsNorm,
    /// Learned absolute positions (encoder, decoder), when the config asks for them.
    positions: Option<(Tensor, Tensor)>,
}

/// `x + h`, out of place: `x` is still needed by the backward pass of the sublayer's norm.
fn residual(x: &Tensor, h: Tensor) -> Tensor {
    x + h
}

fn mixer(p: nn::Path, cfg: &ModelConfig, layer: usize, decoder: bool) -> Mixer {
    match cfg.arch {
        Arch::Transformer => Mixer::Attention(
            Attention::new(
                p,
                cfg.d_model,
                cfg.num_heads,
                layer == 0,
                !decoder,
                cfg.relative_buckets,
                cfg.relative_max_distance,
            )
            .with_dropout(cfg.dropout),
        ),
        _ => Mixer::Conv(ConvBlock::new(p, cfg, layer, decoder)),
    }
}

impl Seq2Seq {
    /// Creates the model's variables under `p` (checked config).
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let d = cfg.d_model;
        let shared = (p / "shared").randn("weight", &[cfg.vocab_size as i64, d as i64], 0.0, 1.0);
        let enc = p / "encoder";
        let dec = p / "decoder";
        let encoder = (0..cfg.encoder_layers)
            .map(|i| {
                let l = &enc / "layers" / i;
                EncoderLayer {
                    norm_mix: RmsNorm::new(&l / "norm_mix", d),
                    mixer: mixer(&l / "mixer", cfg, i, false),
                    norm_ffn: RmsNorm::new(&l / "norm_ffn", d),
                    ffn: FeedForward::new(&l / "ffn", d, cfg.d_ff, cfg.dropout),
                }
            })
            .collect();
        let decoder = (0..cfg.decoder_layers)
            .map(|i| {
                let l = &dec / "layers" / i;
                DecoderLayer {
                    norm_mix: RmsNorm::new(&l / "norm_mix", d),
                    mixer: mixer(&l / "mixer", cfg, i, true),
                    norm_cross: RmsNorm::new(&l / "norm_cross", d),
                    cross: Attention::new(&l / "cross", d, cfg.num_heads, false, false, 0, 0)
                        .with_dropout(cfg.dropout),
                    norm_ffn: RmsNorm::new(&l / "norm_ffn", d),
                    ffn: FeedForward::new(&l / "ffn", d, cfg.d_ff, cfg.dropout),
                }
            })
            .collect();
        let positions = (cfg.position_embedding == PositionEmbedding::Learned).then(|| {
            let table =
                |p: nn::Path| p.randn("weight", &[cfg.max_positions as i64, d as i64], 0.0, 1.0);
            (
                table(&enc / "position_embedding"),
                table(&dec / "position_embedding"),
            )
        });
        Ok(Self {
            cfg: cfg.clone(),
            shared,
            encoder,
            encoder_norm: RmsNorm::new(&enc / "final_norm", d),
            decoder,
            decoder_norm: RmsNorm::new(&dec / "final_norm", d),
            positions,
        })
    }

    /// Token embeddings plus, with learned positions, the rows of `table` at `positions`
    /// (0, 1, ... per row when `None`; per segment in packed rows). Positions past the
    /// table's end use its last row (callers refuse longer data up front).
    fn embed(&self, ids: &Tensor, table: Option<&Tensor>, positions: Option<&Tensor>) -> Tensor {
        let x = Tensor::embedding(&self.shared, ids, -1, false, false);
        let Some(table) = table else { return x };
        let last = self.cfg.max_positions as i64 - 1;
        let pos = match positions {
            Some(p) => p.clamp_max(last),
            None => {
                let t = ids.size()[1];
                Tensor::arange(t, (Kind::Int64, ids.device()))
                    .clamp_max(last)
                    .unsqueeze(0)
            }
        };
        x + Tensor::embedding(table, &pos, -1, false, false)
    }

    /// Encodes `inputs` (batch, time) of ids; `mask` (batch, time) is 1 for real tokens.
    pub fn encode(&self, inputs: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        self.encode_segments(inputs, mask, None, train)
    }

    /// [`Seq2Seq::encode`] of packed rows: no position attends to or convolves over another
    /// segment, and positions restart per segment.
    pub fn encode_segments(
        &self,
        inputs: &Tensor,
        mask: &Tensor,
        seg: Option<&Segments>,
        train: bool,
    ) -> Tensor {
        let p = self.cfg.dropout;
        let table = self.positions.as_ref().map(|t| &t.0);
        let mut x = self
            .embed(inputs, table, seg.map(|s| &s.input_positions))
            .dropout(p, train);
        let t = inputs.size()[1];
        let keys = match seg {
            Some(s) => segment_mask(&s.inputs, &s.inputs),
            None => key_mask(mask),
        };
        let bias = match &self.encoder[0].mixer {
            Mixer::Attention(a) => a.position_bias(t, t).map(|b| b + &keys),
            Mixer::Conv(_) => None,
        };
        for l in &self.encoder {
            let h = l.norm_mix.forward(&x);
            let h = match &l.mixer {
                Mixer::Attention(a) => a.forward(&h, &h, bias.as_ref().or(Some(&keys)), train),
                Mixer::Conv(c) => c.forward_segments(&h, Some(mask), seg.map(|s| &s.inputs), train),
            };
            x = residual(&x, h.dropout(p, train));
            let h = l.ffn.forward(&l.norm_ffn.forward(&x), train);
            x = residual(&x, h.dropout(p, train));
        }
        self.encoder_norm.forward(&x).dropout(p, train)
    }

    /// Decoder hidden states for `decoder_inputs` (batch, time) attending to `encoded`.
    pub fn decode(
        &self,
        decoder_inputs: &Tensor,
        encoded: &Tensor,
        input_mask: &Tensor,
        train: bool,
    ) -> Tensor {
        self.decode_segments(decoder_inputs, encoded, input_mask, None, train)
    }

    /// [`Seq2Seq::decode`] of packed rows: each target position attends (causally) to its own
    /// segment's targets and to its own segment's inputs only.
    pub fn decode_segments(
        &self,
        decoder_inputs: &Tensor,
        encoded: &Tensor,
        input_mask: &Tensor,
        seg: Option<&Segments>,
        train: bool,
    ) -> Tensor {
        let p = self.cfg.dropout;
        let table = self.positions.as_ref().map(|t| &t.1);
        let mut y = self
            .embed(decoder_inputs, table, seg.map(|s| &s.target_positions))
            .dropout(p, train);
        let t = decoder_inputs.size()[1];
        let mut causal = causal_mask(t, y.device());
        let cross_keys = match seg {
            Some(s) => {
                causal = segment_mask(&s.targets, &s.targets) + &causal;
                segment_mask(&s.targets, &s.inputs)
            }
            None => key_mask(input_mask),
        };
        let self_bias = match &self.decoder[0].mixer {
            Mixer::Attention(a) => a.position_bias(t, t).map(|b| b + &causal),
            Mixer::Conv(_) => None,
        };
        for l in &self.decoder {
            let h = l.norm_mix.forward(&y);
            let h = match &l.mixer {
                Mixer::Attention(a) => {
                    a.forward(&h, &h, self_bias.as_ref().or(Some(&causal)), train)
                }
                Mixer::Conv(c) => c.forward_segments(&h, None, seg.map(|s| &s.targets), train),
            };
            y = residual(&y, h.dropout(p, train));
            let h = l.norm_cross.forward(&y);
            let h = l.cross.forward(&h, encoded, Some(&cross_keys), train);
            y = residual(&y, h.dropout(p, train));
            let h = l.ffn.forward(&l.norm_ffn.forward(&y), train);
            y = residual(&y, h.dropout(p, train));
        }
        self.decoder_norm.forward(&y).dropout(p, train)
    }

    /// Logits over the vocabulary from decoder hidden states (tied embeddings, scaled).
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        (hidden * (self.cfg.d_model as f64).powf(-0.5)).matmul(&self.shared.tr())
    }

    /// Teacher forcing: the decoder inputs are the targets shifted right, starting with
    /// `decoder_start_id` (and restarting at each segment start when `segments` is given).
    pub fn shift_right(&self, targets: &Tensor, segments: Option<&Tensor>) -> Tensor {
        let (b, _) = targets.size2().expect("(batch, time)");
        let start = Tensor::full(
            [b, 1],
            self.cfg.decoder_start_id,
            (Kind::Int64, targets.device()),
        );
        let t = targets.size()[1];
        let shifted = Tensor::cat(&[&start, &targets.narrow(1, 0, t - 1)], 1);
        match segments {
            None => shifted,
            Some(seg) => {
                let prev = Tensor::cat(
                    &[
                        &Tensor::zeros([b, 1], (Kind::Int64, seg.device())),
                        &seg.narrow(1, 0, t - 1),
                    ],
                    1,
                );
                let starts = seg.ne_tensor(&prev);
                shifted.masked_fill(&starts, self.cfg.decoder_start_id)
            }
        }
    }

    /// Mean token cross-entropy of `targets` (padding, where `target_mask` is 0, ignored).
    pub fn loss(
        &self,
        inputs: &Tensor,
        input_mask: &Tensor,
        targets: &Tensor,
        target_mask: &Tensor,
        train: bool,
    ) -> Tensor {
        let sum = self.loss_sum(inputs, input_mask, targets, target_mask, train);
        sum / target_mask
            .to_kind(Kind::Float)
            .sum(Kind::Float)
            .clamp_min(1.0)
    }

    /// Summed token cross-entropy of `targets` over the real (mask 1) target tokens: the
    /// trainer divides the sums of a whole step (all micro-batches, all ranks) by the step's
    /// target tokens, so every token weighs the same however the step is split.
    pub fn loss_sum(
        &self,
        inputs: &Tensor,
        input_mask: &Tensor,
        targets: &Tensor,
        target_mask: &Tensor,
        train: bool,
    ) -> Tensor {
        self.loss_sum_segments(inputs, input_mask, targets, target_mask, None, train)
    }

    /// [`Seq2Seq::loss_sum`] of packed rows (`seg`), or of plain padded rows (`None`).
    pub fn loss_sum_segments(
        &self,
        inputs: &Tensor,
        input_mask: &Tensor,
        targets: &Tensor,
        target_mask: &Tensor,
        seg: Option<&Segments>,
        train: bool,
    ) -> Tensor {
        let encoded = self.encode_segments(inputs, input_mask, seg, train);
        let dec_in = self.shift_right(targets, seg.map(|s| &s.targets));
        let hidden = self.decode_segments(&dec_in, &encoded, input_mask, seg, train);
        let logits = self.logits(&hidden).to_kind(Kind::Float);
        let logp = logits.log_softmax(-1, Kind::Float);
        let nll = -logp
            .gather(-1, &targets.unsqueeze(-1), false)
            .squeeze_dim(-1);
        (nll * target_mask.to_kind(Kind::Float)).sum(Kind::Float)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use tch::nn::OptimizerConfig;
    use tch::Device;

    pub(super) fn model(arch: Arch) -> (nn::VarStore, Seq2Seq) {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = ModelConfig::preset(arch, "tiny", 60).unwrap();
        let m = Seq2Seq::new(&vs.root(), &cfg).unwrap();
        (vs, m)
    }

    pub(super) fn ids(b: i64, t: i64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        Tensor::randint_low(3, 60, [b, t], (Kind::Int64, Device::Cpu))
    }

    #[test]
    fn variables_match_the_parameter_count() {
        let _rng = crate::test_rng();
        for arch in Arch::ALL {
            let (vs, m) = model(arch);
            let n: i64 = vs
                .trainable_variables()
                .iter()
                .map(|t| t.numel() as i64)
                .sum();
            assert_eq!(n as usize, m.cfg.parameter_count(), "{}", arch.name());
        }
    }

    #[test]
    fn decoder_position_t_ignores_later_targets() {
        let _rng = crate::test_rng();
        for arch in Arch::ALL {
            let (_vs, m) = model(arch);
            let x = ids(2, 9, 1);
            let mask = Tensor::ones([2, 9], (Kind::Float, Device::Cpu));
            let enc = m.encode(&x, &mask, false);
            let y = ids(2, 8, 2);
            let y2 = y.copy();
            let _ = y2.narrow(1, 5, 3).fill_(7);
            let a = m.logits(&m.decode(&y, &enc, &mask, false));
            let b = m.logits(&m.decode(&y2, &enc, &mask, false));
            assert_eq!(a.size(), vec![2, 8, 60]);
            assert!(
                a.narrow(1, 0, 5)
                    .allclose(&b.narrow(1, 0, 5), 1e-5, 1e-5, false),
                "{}",
                arch.name()
            );
            assert!(!a
                .narrow(1, 5, 3)
                .allclose(&b.narrow(1, 5, 3), 1e-5, 1e-5, false));
        }
    }

    #[test]
    fn encoder_outputs_ignore_padding() {
        let _rng = crate::test_rng();
        for arch in Arch::ALL {
            let (_vs, m) = model(arch);
            let x = ids(1, 6, 3);
            let mask = Tensor::ones([1, 6], (Kind::Float, Device::Cpu));
            let a = m.encode(&x, &mask, false);
            // The same sequence with 5 padding positions of junk after it.
            let padded = Tensor::cat(&[&x, &ids(1, 5, 4)], 1);
            let pmask = Tensor::cat(
                &[&mask, &Tensor::zeros([1, 5], (Kind::Float, Device::Cpu))],
                1,
            );
            let b = m.encode(&padded, &pmask, false).narrow(1, 0, 6);
            assert!(a.allclose(&b, 1e-5, 1e-5, false), "{}", arch.name());
        }
    }

    #[test]
    fn bfloat16_weights_train() {
        let _rng = crate::test_rng();
        for arch in Arch::ALL {
            let (mut vs, m) = model(arch);
            vs.bfloat16();
            let mut params = vs.trainable_variables();
            let mut opt = crate::optim::Optimizer::new(
                crate::optim::OptimizerKind::adafactor(),
                crate::optim::Schedule::Constant { lr: 0.01 },
                &params,
            );
            let x = ids(2, 8, 5);
            let y = ids(2, 5, 6);
            let mi = Tensor::ones([2, 8], (Kind::Float, Device::Cpu));
            let mt = Tensor::ones([2, 5], (Kind::Float, Device::Cpu));
            let first = m.loss(&x, &mi, &y, &mt, false).double_value(&[]);
            for _ in 0..30 {
                m.loss(&x, &mi, &y, &mt, true).backward();
                let grads: Vec<Tensor> = params.iter().map(|p| p.grad()).collect();
                opt.step(&mut params, &grads);
                params.iter().for_each(crate::cuda::clear_grad);
            }
            let last = m.loss(&x, &mi, &y, &mt, false).double_value(&[]);
            assert_eq!(params[0].kind(), Kind::BFloat16);
            assert!(
                last.is_finite() && last < first,
                "{}: {first} -> {last}",
                arch.name()
            );
        }
    }

    /// Examples (inputs, targets) of the given lengths, random ids.
    fn examples(lens: &[(i64, i64)], seed: i64) -> Vec<(Vec<i64>, Vec<i64>)> {
        lens.iter()
            .enumerate()
            .map(|(i, &(a, b))| {
                let v = |n, s| Vec::<i64>::try_from(ids(1, n, s).view([-1])).unwrap();
                (v(a, seed + 2 * i as i64), v(b, seed + 2 * i as i64 + 1))
            })
            .collect()
    }

    /// Rows of `groups` of examples packed end to end, padded to the widths: (ids, mask,
    /// segments, positions) for inputs and targets.
    fn packed(
        exs: &[(Vec<i64>, Vec<i64>)],
        groups: &[&[usize]],
        wi: i64,
        wt: i64,
    ) -> (Tensor, Tensor, Tensor, Tensor, Segments) {
        let mut cols: [Vec<i64>; 6] = Default::default();
        for g in groups {
            for (feature, width) in [(0usize, wi), (1, wt)] {
                let (mut ids, mut seg, mut pos) = (vec![], vec![], vec![]);
                for (k, &e) in g.iter().enumerate() {
                    let x = if feature == 0 { &exs[e].0 } else { &exs[e].1 };
                    ids.extend(x);
                    seg.extend(std::iter::repeat_n(k as i64 + 1, x.len()));
                    pos.extend(0..x.len() as i64);
                }
                for v in [&mut ids, &mut seg, &mut pos] {
                    v.resize(width as usize, 0);
                }
                cols[feature * 3].extend(ids);
                cols[feature * 3 + 1].extend(seg);
                cols[feature * 3 + 2].extend(pos);
            }
        }
        let rows = groups.len() as i64;
        let t = |v: &Vec<i64>, w: i64| Tensor::from_slice(v).view([rows, w]);
        let (si, st) = (t(&cols[1], wi), t(&cols[4], wt));
        (
            t(&cols[0], wi),
            si.ne(0).to_kind(Kind::Float),
            t(&cols[3], wt),
            st.ne(0).to_kind(Kind::Float),
            Segments {
                inputs: si,
                targets: st,
                input_positions: t(&cols[2], wi),
                target_positions: t(&cols[5], wt),
            },
        )
    }

    /// The property packing relies on: the summed loss of packed rows equals the summed loss
    /// of the same examples one per row, for every architecture (attention masks, relative
    /// and learned positions restarting per segment, convolutions that do not cross segments).
    #[test]
    fn a_packed_batch_has_the_loss_of_its_examples_unpacked() {
        let _rng = crate::test_rng();
        // Lengths around the lightweight implementations' switch (64) are covered in conv.rs;
        // here several kernels' worth of neighbours share a row.
        let lens = [(9, 3), (4, 6), (7, 2), (3, 5), (12, 4)];
        for arch in Arch::ALL {
            let (_vs, m) = model(arch);
            let _guard = tch::no_grad_guard();
            let exs = examples(&lens, 40);
            let (mut sum, mut tokens) = (0.0, 0.0);
            for (x, y) in &exs {
                let (xi, yi) = (
                    Tensor::from_slice(x).view([1, -1]),
                    Tensor::from_slice(y).view([1, -1]),
                );
                let mi = xi.ones_like().to_kind(Kind::Float);
                let mt = yi.ones_like().to_kind(Kind::Float);
                sum += m.loss_sum(&xi, &mi, &yi, &mt, false).double_value(&[]);
                tokens += y.len() as f64;
            }
            let (x, mi, y, mt, seg) = packed(&exs, &[&[0, 1, 2], &[3, 4]], 22, 12);
            let got = m
                .loss_sum_segments(&x, &mi, &y, &mt, Some(&seg), false)
                .double_value(&[]);
            let want = sum / tokens;
            let got = got / mt.sum(Kind::Float).double_value(&[]);
            assert!(
                (got - want).abs() <= 1e-5 * want,
                "{}: packed {got} vs unpacked {want}",
                arch.name()
            );
            // Without the segment ids the same rows give another loss: the test can fail.
            let mixed = m.loss_sum(&x, &mi, &y, &mt, false).double_value(&[])
                / mt.sum(Kind::Float).double_value(&[]);
            assert!((mixed - want).abs() > 1e-4, "{}", arch.name());
        }
    }

    #[test]
    fn shift_right_restarts_segments() {
        let _rng = crate::test_rng();
        let (_vs, m) = model(Arch::Transformer);
        let t = Tensor::from_slice(&[5i64, 6, 7, 8, 9]).view([1, 5]);
        let seg = Tensor::from_slice(&[1i64, 1, 2, 2, 0]).view([1, 5]);
        let s: Vec<i64> = Vec::try_from(m.shift_right(&t, Some(&seg)).view([-1])).unwrap();
        assert_eq!(s, vec![0, 5, 0, 7, 0]);
    }

    #[test]
    fn a_tiny_model_overfits_one_batch() {
        let _rng = crate::test_rng();
        for arch in Arch::ALL {
            let (vs, m) = model(arch);
            let mut opt = nn::Adam::default().build(&vs, 3e-3).unwrap();
            let x = ids(4, 10, 5);
            let y = ids(4, 6, 6);
            let mi = Tensor::ones([4, 10], (Kind::Float, Device::Cpu));
            let mt = Tensor::ones([4, 6], (Kind::Float, Device::Cpu));
            let first = m.loss(&x, &mi, &y, &mt, false).double_value(&[]);
            for _ in 0..150 {
                let l = m.loss(&x, &mi, &y, &mt, true);
                opt.backward_step(&l);
            }
            let last = m.loss(&x, &mi, &y, &mt, false).double_value(&[]);
            assert!(last < 0.1 * first, "{}: {first} -> {last}", arch.name());
        }
    }
}
