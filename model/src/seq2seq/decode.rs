//! Incremental decoding: the encoder runs once, each decoder step reuses the cross-attention
//! keys and values, the self-attention keys and values so far (transformer) or the last
//! convolution inputs (conv archs); greedy decoding on top.

use tch::{Kind, Tensor};

use super::{residual, Mixer, Seq2Seq};
use crate::layers::key_mask;

/// What incremental decoding keeps between steps.
pub struct DecodeState {
    /// Positions decoded so far.
    step: i64,
    cross_bias: Tensor,
    /// Encoder keys and values per decoder layer.
    cross: Vec<(Tensor, Tensor)>,
    /// Self-attention keys and values so far (transformer), per layer.
    self_kv: Vec<Option<(Tensor, Tensor)>>,
    /// The last convolution inputs (conv archs), per layer.
    conv_past: Vec<Option<Tensor>>,
}

impl Seq2Seq {
    /// Encodes `inputs` once and prepares the per-layer caches.
    pub fn start_decoding(&self, inputs: &Tensor, input_mask: &Tensor) -> DecodeState {
        let encoded = self.encode(inputs, input_mask, false);
        let b = inputs.size()[0];
        let d = self.cfg.d_model as i64;
        DecodeState {
            step: 0,
            cross_bias: self.mask_kind(key_mask(input_mask), &encoded),
            cross: self
                .decoder
                .iter()
                .map(|l| l.cross.keys_values(&encoded))
                .collect(),
            self_kv: self.decoder.iter().map(|_| None).collect(),
            conv_past: self
                .decoder
                .iter()
                .map(|l| match &l.mixer {
                    Mixer::Conv(c) => Some(Tensor::zeros(
                        [b, c.history(), d],
                        (encoded.kind(), encoded.device()),
                    )),
                    Mixer::Attention(_) => None,
                })
                .collect(),
        }
    }

    /// Feeds the next decoder input `tokens` (batch,) and returns the logits (batch, vocab)
    /// for the following position: equal to the full forward pass at that position.
    pub fn decode_step(&self, st: &mut DecodeState, tokens: &Tensor) -> Tensor {
        let t = st.step;
        let position = Tensor::full([1, 1], t, (Kind::Int64, tokens.device()));
        let table = self.positions.as_ref().map(|p| &p.1);
        let mut y = self.embed(&tokens.unsqueeze(1), table, Some(&position));
        let bias = match &self.decoder[0].mixer {
            Mixer::Attention(a) => a.position_bias_at(t, t + 1).map(|b| self.mask_kind(b, &y)),
            Mixer::Conv(_) => None,
        };
        for (i, l) in self.decoder.iter().enumerate() {
            let h = l.norm_mix.forward(&y);
            let h = match &l.mixer {
                Mixer::Attention(a) => {
                    let (k, v) = a.keys_values(&h);
                    let (k, v) = match st.self_kv[i].take() {
                        Some((pk, pv)) => (Tensor::cat(&[pk, k], 2), Tensor::cat(&[pv, v], 2)),
                        None => (k, v),
                    };
                    let out = a.attend_kv(&h, &k, &v, bias.as_ref());
                    st.self_kv[i] = Some((k, v));
                    out
                }
                Mixer::Conv(c) => c.step(&h, st.conv_past[i].as_mut().expect("conv cache")),
            };
            y = residual(&y, h);
            let h = l.norm_cross.forward(&y);
            let (k, v) = &st.cross[i];
            y = residual(&y, l.cross.attend_kv(&h, k, v, Some(&st.cross_bias)));
            let h = l.ffn.forward(&l.norm_ffn.forward(&y), false);
            y = residual(&y, h);
        }
        st.step += 1;
        self.logits(&self.decoder_norm.forward(&y)).squeeze_dim(1)
    }

    /// Greedy decoding of up to `max_len` tokens per row, stopping a row at `eos`.
    pub fn greedy(
        &self,
        inputs: &Tensor,
        input_mask: &Tensor,
        max_len: usize,
        eos: i64,
    ) -> Vec<Vec<i64>> {
        let _guard = tch::no_grad_guard();
        let b = inputs.size()[0];
        let mut st = self.start_decoding(inputs, input_mask);
        let mut tokens = Tensor::full(
            [b],
            self.cfg.decoder_start_id,
            (Kind::Int64, inputs.device()),
        );
        let mut out: Vec<Vec<i64>> = vec![Vec::new(); b as usize];
        let mut done = vec![false; b as usize];
        for _ in 0..max_len {
            let logits = self.decode_step(&mut st, &tokens);
            tokens = logits.argmax(-1, false);
            let next: Vec<i64> = Vec::try_from(&tokens).expect("ids");
            for (r, &id) in next.iter().enumerate() {
                if !done[r] {
                    out[r].push(id);
                    done[r] = id == eos;
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{every_form, ids};
    use crate::config::Arch;
    use tch::Tensor;

    #[test]
    fn incremental_decoding_equals_the_full_forward_pass() {
        let _rng = crate::test_rng();
        for (_vs, m) in every_form() {
            let arch = m.cfg.arch;
            let _guard = tch::no_grad_guard();
            let x = ids(2, 7, 8);
            let mask =
                Tensor::from_slice(&[1f32, 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 0., 0., 0.])
                    .view([2, 7]);
            let y = ids(2, 9, 9);
            let dec_in = m.shift_right(&y, None);
            let enc = m.encode(&x, &mask, false);
            let full = m.logits(&m.decode(&dec_in, &enc, &mask, false));
            let mut st = m.start_decoding(&x, &mask);
            for t in 0..9 {
                let step = m.decode_step(&mut st, &dec_in.select(1, t));
                assert!(
                    step.allclose(&full.select(1, t), 1e-4, 1e-4, false),
                    "{} (conv_pointwise {}): position {t}",
                    arch.name(),
                    m.cfg.conv_pointwise
                );
            }
            let out = m.greedy(&x, &mask, 5, 1);
            assert_eq!(out.len(), 2);
            assert!(out.iter().all(|r| !r.is_empty() && r.len() <= 5));
        }
    }

    /// Incremental decoding with `attention = "sdpa"` gives the explicit model's full-pass
    /// logits (same weights), masks and position bias included.
    #[test]
    fn sdpa_incremental_decoding_equals_the_explicit_full_pass() {
        let _rng = crate::test_rng();
        let build = |how: crate::AttentionImpl| {
            tch::manual_seed(1);
            let vs = tch::nn::VarStore::new(tch::Device::Cpu);
            let mut cfg = crate::ModelConfig::preset(Arch::Transformer, "tiny", 60).unwrap();
            cfg.attention = how;
            let m = crate::Seq2Seq::new(&vs.root(), &cfg).unwrap();
            (vs, m)
        };
        let (_a, explicit) = build(crate::AttentionImpl::Explicit);
        let (_b, sdpa) = build(crate::AttentionImpl::Sdpa);
        let _guard = tch::no_grad_guard();
        let x = ids(2, 7, 8);
        let mask = Tensor::from_slice(&[1f32, 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 0., 0., 0.])
            .view([2, 7]);
        let dec_in = explicit.shift_right(&ids(2, 9, 9), None);
        let enc = explicit.encode(&x, &mask, false);
        let full = explicit.logits(&explicit.decode(&dec_in, &enc, &mask, false));
        let mut st = sdpa.start_decoding(&x, &mask);
        for t in 0..9 {
            let step = sdpa.decode_step(&mut st, &dec_in.select(1, t));
            assert!(
                step.allclose(&full.select(1, t), 1e-4, 1e-4, false),
                "position {t}"
            );
        }
    }
}
