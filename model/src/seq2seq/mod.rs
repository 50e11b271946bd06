//! The encoder-decoder shared by every architecture: token embeddings shared by both stacks,
//! logits from them scaled by d_model^-0.5 (tied, T5 v1.0) or from a separate `lm_head`
//! (T5 v1.1; `scale_logits` for the other two kinds), pre-norm residual sublayers with RMS
//! norm, a mixing sublayer (T5 self-attention with a shared relative position bias, or a
//! convolution block), decoder
//! cross-attention, ReLU or gated-GELU feed-forward, dropout, final norms, optional learned
//! absolute positions; plain padded rows or packed rows ([`Segments`]). Incremental decoding
//! is in `decode.rs`.
//!
//! Parameter names (the safetensors keys of a checkpoint) are documented in docs/formats.md:
//! `shared.weight`, `encoder.layers.{i}.{mixer|ffn|norm_mix|norm_ffn}...`,
//! `decoder.layers.{i}.{mixer|cross|ffn|norm_mix|norm_cross|norm_ffn}...`,
//! `{encoder|decoder}.final_norm.weight`, `lm_head.weight` (untied only).

use tch::nn;
use tch::{Kind, Tensor};

use crate::config::{Arch, ConfigError, ModelConfig, PositionEmbedding};
use crate::conv::ConvBlock;
use crate::layers::{causal_mask, key_mask, segment_mask, Attention, FeedForward, RmsNorm};

mod decode;
mod xent;

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
    /// The output projection (vocab, d_model) of untied models.
    lm_head: Option<Tensor>,
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
                cfg.d_kv(),
                layer == 0,
                !decoder,
                cfg.relative_buckets,
                cfg.relative_max_distance,
            )
            .with_dropout(cfg.dropout)
            .with_impl(cfg.attention),
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
                    ffn: FeedForward::new(&l / "ffn", d, cfg.d_ff, cfg.ffn, cfg.dropout),
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
                    cross: Attention::new(
                        &l / "cross",
                        d,
                        cfg.num_heads,
                        cfg.d_kv(),
                        false,
                        false,
                        0,
                        0,
                    )
                    .with_dropout(cfg.dropout)
                    .with_impl(cfg.attention),
                    norm_ffn: RmsNorm::new(&l / "norm_ffn", d),
                    ffn: FeedForward::new(&l / "ffn", d, cfg.d_ff, cfg.ffn, cfg.dropout),
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
        let lm_head = (!cfg.tie_embeddings)
            .then(|| (p / "lm_head").randn("weight", &[cfg.vocab_size as i64, d as i64], 0.0, 1.0));
        Ok(Self {
            cfg: cfg.clone(),
            lm_head,
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
            Mixer::Attention(a) => a.position_bias(t, t).map(|b| self.mask_kind(b + &keys, &x)),
            Mixer::Conv(_) => None,
        };
        let keys = self.mask_kind(keys, &x);
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
            Mixer::Attention(a) => a
                .position_bias(t, t)
                .map(|b| self.mask_kind(b + &causal, &y)),
            Mixer::Conv(_) => None,
        };
        let causal = self.mask_kind(causal, &y);
        let cross_keys = self.mask_kind(cross_keys, &y);
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

    /// An additive attention mask in the kind the attention layers will use it in: with
    /// `sdpa`, the activations' (libtorch's kernels ask for the queries' kind), converted
    /// here once for the whole stack rather than in every layer; float32 otherwise.
    pub(crate) fn mask_kind(&self, mask: Tensor, like: &Tensor) -> Tensor {
        match self.cfg.attention {
            crate::AttentionImpl::Sdpa => mask.to_kind(like.kind()),
            crate::AttentionImpl::Explicit => mask,
        }
    }

    /// Logits over the vocabulary from decoder hidden states: through the separate lm_head
    /// or the tied embeddings, scaled by d_model^-0.5 where the config says so.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        let head = self.lm_head.as_ref().unwrap_or(&self.shared);
        match self.cfg.scaled_logits() {
            true => (hidden * (self.cfg.d_model as f64).powf(-0.5)).matmul(&head.tr()),
            false => hidden.matmul(&head.tr()),
        }
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
        let count = target_mask
            .to_kind(Kind::Float)
            .sum(Kind::Float)
            .clamp_min(1.0);
        self.loss_parts(
            inputs,
            input_mask,
            targets,
            target_mask,
            None,
            train,
            Some(&count),
            0.0,
        )
        .1
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
        self.loss_parts(
            inputs,
            input_mask,
            targets,
            target_mask,
            None,
            train,
            None,
            0.0,
        )
        .1
    }

    /// The summed token cross-entropy (float32, without gradient) and, differentiable, that
    /// sum plus `z_loss` times the summed logsumexp² of the target positions' logits (Mesh
    /// TF's z-loss, which keeps the softmax normaliser near 1; 0 for none) divided by `denom`
    /// (a 0-dim float32 tensor on the model's device; undivided when `None`). With bfloat16
    /// logits the division happens before their gradient is rounded (xent.rs), so
    /// `backward()` of the second gives the same gradient as the float32 path rounded once.
    #[allow(clippy::too_many_arguments)]
    pub fn loss_parts(
        &self,
        inputs: &Tensor,
        input_mask: &Tensor,
        targets: &Tensor,
        target_mask: &Tensor,
        seg: Option<&Segments>,
        train: bool,
        denom: Option<&Tensor>,
        z_loss: f64,
    ) -> (Tensor, Tensor) {
        let encoded = self.encode_segments(inputs, input_mask, seg, train);
        let dec_in = self.shift_right(targets, seg.map(|s| &s.targets));
        let hidden = self.decode_segments(&dec_in, &encoded, input_mask, seg, train);
        let logits = self.logits(&hidden);
        if logits.kind() == Kind::BFloat16 {
            // Mixed precision: no float32 copy of the (batch x targets x vocab) logits.
            let chunk = xent::CHUNK_ELEMENTS;
            return xent::nll_over(&logits, targets, target_mask, chunk, denom, z_loss);
        }
        let logp = logits.log_softmax(-1, Kind::Float);
        let nll = -logp
            .gather(-1, &targets.unsqueeze(-1), false)
            .squeeze_dim(-1);
        let mask = target_mask.to_kind(Kind::Float);
        let sum = (nll * &mask).sum(Kind::Float);
        let objective = match z_loss != 0.0 {
            true => {
                let lse = logits.to_kind(Kind::Float).logsumexp([-1], false);
                &sum + (lse.square() * &mask).sum(Kind::Float) * z_loss
            }
            false => sum.shallow_clone(),
        };
        let value = match denom {
            Some(d) => &objective / d,
            None => objective,
        };
        (sum.detach(), value)
    }
}

#[cfg(test)]
pub(super) mod tests;
