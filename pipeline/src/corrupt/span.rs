//! T5's span corruption of one piece of tokens: the random-spans noise mask and the
//! sentinel rewriting of inputs and targets (`t5.data.preprocessors.span_corruption`).
//!
//! The mask is drawn as T5 draws it, statistically: the noise tokens and the non-noise
//! tokens are each split into the same number of spans, every split a uniformly random
//! composition, and the spans interleave starting with non-noise and ending with noise. The
//! counts use T5's float32 round-half-to-even. Sentinels count down from `vocab_size - 1`.

use super::lengths::mask_counts;
use crate::examples::{Example, Lengths};
use crate::rng::Rng;

/// Splits `total` items into `parts` positive parts, uniformly over all such compositions
/// (T5's `_random_segmentation`): `parts - 1` distinct cut points are drawn among the
/// `total - 1` gaps (Floyd's sampling), sorted, and differenced. `cuts` is scratch space.
pub fn random_segmentation(
    rng: &mut Rng,
    total: usize,
    parts: usize,
    cuts: &mut Vec<u32>,
    out: &mut Vec<u32>,
) {
    debug_assert!(parts >= 1 && total >= 1);
    out.clear();
    if parts >= total {
        // T5's segmentation then starts a segment at every item: `total` ones, then empty
        // segments (which merge neighbouring spans of the other kind).
        out.extend(std::iter::repeat_n(1, total));
        out.extend(std::iter::repeat_n(0, parts - total));
        return;
    }
    cuts.clear();
    let gaps = total - 1;
    let want = parts - 1;
    for j in (gaps - want + 1)..=gaps {
        let t = 1 + rng.below(j as u64) as u32;
        let pick = if cuts.contains(&t) { j as u32 } else { t };
        cuts.push(pick);
    }
    cuts.sort_unstable();
    let mut prev = 0u32;
    for &c in cuts.iter() {
        out.push(c - prev);
        prev = c;
    }
    out.push(total as u32 - prev);
}

/// The span-corruption settings that every example shares.
#[derive(Debug, Clone)]
pub struct SpanCorruption {
    pub lengths: Lengths,
    pub density: f32,
    pub mean: f32,
    /// SentencePiece pieces plus extra ids: sentinels are `vocab_size - 1`, `- 2`, ...
    pub vocab_size: u32,
    pub eos: u32,
}

/// Reusable buffers for [`SpanCorruption::corrupt`].
#[derive(Default)]
pub struct Scratch {
    cuts: Vec<u32>,
    noise: Vec<u32>,
    nonnoise: Vec<u32>,
}

impl SpanCorruption {
    /// The (noise span, non-noise span) lengths of a piece of `length` tokens, in order.
    fn spans(&self, length: usize, rng: &mut Rng, s: &mut Scratch) -> usize {
        let lifted = length.max(2);
        let (noise, spans) = mask_counts(lifted, self.density, self.mean);
        random_segmentation(rng, noise, spans, &mut s.cuts, &mut s.noise);
        random_segmentation(rng, lifted - noise, spans, &mut s.cuts, &mut s.nonnoise);
        spans
    }

    /// The noise mask T5 would draw for a piece of `length` tokens with this generator.
    pub fn noise_mask(&self, length: usize, rng: &mut Rng) -> Vec<bool> {
        let mut s = Scratch::default();
        let spans = self.spans(length, rng, &mut s);
        self.mask_of(&s, spans, length)
    }

    fn mask_of(&self, s: &Scratch, spans: usize, length: usize) -> Vec<bool> {
        let mut mask = Vec::with_capacity(length.max(2));
        for i in 0..spans {
            mask.extend(std::iter::repeat_n(false, s.nonnoise[i] as usize));
            mask.extend(std::iter::repeat_n(true, s.noise[i] as usize));
        }
        mask.truncate(length);
        mask
    }

    /// Corrupts `piece` into `out` (cleared first): inputs keep the non-noise tokens with one
    /// sentinel per noise span, targets hold one sentinel per non-noise span followed by the
    /// noise tokens; each is trimmed to its feature length - 1 and gets EOS.
    pub fn corrupt(&self, piece: &[u32], rng: &mut Rng, s: &mut Scratch, out: &mut Example) {
        out.inputs.clear();
        out.targets.clear();
        let len = piece.len();
        let spans = self.spans(len, rng, s);
        if s.nonnoise[..spans].contains(&0) {
            // More spans than non-noise tokens (high densities): noise spans touch and merge,
            // so rewrite from the mask itself, as T5 does.
            let mut mask = self.mask_of(s, spans, len);
            out.inputs = noise_span_to_unique_sentinel(piece, &mask, self.vocab_size);
            mask.iter_mut().for_each(|m| *m = !*m);
            out.targets = noise_span_to_unique_sentinel(piece, &mask, self.vocab_size);
            finish(&mut out.inputs, self.lengths.inputs_length, self.eos);
            finish(&mut out.targets, self.lengths.targets_length, self.eos);
            return;
        }
        let mut pos = 0usize;
        for i in 0..spans {
            if pos >= len {
                break;
            }
            let sentinel = self.vocab_size - 1 - i as u32;
            let keep = s.nonnoise[i] as usize;
            out.inputs
                .extend_from_slice(&piece[pos..(pos + keep).min(len)]);
            out.targets.push(sentinel);
            pos += keep;
            if pos >= len {
                break;
            }
            let drop = s.noise[i] as usize;
            out.inputs.push(sentinel);
            out.targets
                .extend_from_slice(&piece[pos..(pos + drop).min(len)]);
            pos += drop;
        }
        finish(&mut out.inputs, self.lengths.inputs_length, self.eos);
        finish(&mut out.targets, self.lengths.targets_length, self.eos);
    }
}

/// T5's `append_eos_after_trim`.
fn finish(v: &mut Vec<u32>, length: usize, eos: u32) {
    v.truncate(length - 1);
    v.push(eos);
}

/// T5's `noise_span_to_unique_sentinel` for any mask: each run of noise becomes one sentinel
/// (`vocab_size - 1` for the first run, then counting down). Targets are this function of the
/// inverted mask.
pub fn noise_span_to_unique_sentinel(tokens: &[u32], mask: &[bool], vocab_size: u32) -> Vec<u32> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut prev = false;
    let mut runs = 0;
    for (&t, &m) in tokens.iter().zip(mask) {
        if m {
            if !prev {
                runs += 1;
                out.push(vocab_size - runs);
            }
        } else {
            out.push(t);
        }
        prev = m;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corrupt::lengths::random_spans_helper;
    use crate::rng::Stream;
    use proptest::prelude::{any, prop_assert, prop_assert_eq, proptest};

    fn t5(inputs: usize, density: f64, mean: f64) -> SpanCorruption {
        SpanCorruption {
            lengths: random_spans_helper(inputs, density, mean).unwrap(),
            density: density as f32,
            mean: mean as f32,
            vocab_size: 32_100,
            eos: 1,
        }
    }

    #[test]
    fn reference_sentinel_example() {
        let tokens: Vec<u32> = (10..16).collect();
        let mask = [true, true, false, false, true, false];
        assert_eq!(
            noise_span_to_unique_sentinel(&tokens, &mask, 1000),
            vec![999, 12, 13, 998, 15]
        );
        let inv: Vec<bool> = mask.iter().map(|m| !m).collect();
        assert_eq!(
            noise_span_to_unique_sentinel(&tokens, &inv, 1000),
            vec![10, 11, 999, 14, 998]
        );
    }

    #[test]
    fn a_full_piece_fills_both_features_exactly() {
        let c = t5(512, 0.15, 3.0);
        let piece: Vec<u32> = (100..668).collect();
        let mut out = Example::default();
        let mut rng = Rng::for_item(0, 0, Stream::Mask, 0, 0);
        c.corrupt(&piece, &mut rng, &mut Scratch::default(), &mut out);
        assert_eq!(out.inputs.len(), 512);
        assert_eq!(out.targets.len(), 114);
        assert_eq!(out.targets[0], 32_099);
        assert_eq!(*out.inputs.last().unwrap(), 1);
    }

    #[test]
    fn a_one_token_piece_keeps_its_token() {
        let c = t5(512, 0.15, 3.0);
        let mut out = Example::default();
        let mut rng = Rng::for_item(0, 0, Stream::Mask, 0, 0);
        c.corrupt(&[42], &mut rng, &mut Scratch::default(), &mut out);
        assert_eq!(out.inputs, vec![42, 1]);
        assert_eq!(out.targets, vec![32_099, 1]);
    }

    #[test]
    fn noise_fraction_and_span_length_match_the_settings() {
        let c = t5(512, 0.15, 3.0);
        let (mut noise, mut spans, mut total) = (0usize, 0usize, 0usize);
        for i in 0..2000 {
            let mut rng = Rng::for_item(3, 0, Stream::Mask, 0, i);
            let mask = c.noise_mask(568, &mut rng);
            noise += mask.iter().filter(|&&m| m).count();
            spans += mask.windows(2).filter(|w| !w[0] && w[1]).count();
            total += mask.len();
        }
        let frac = noise as f64 / total as f64;
        let mean = noise as f64 / spans as f64;
        assert!((frac - 0.15).abs() < 0.001, "{frac}");
        assert!((mean - 3.0).abs() < 0.05, "{mean}");
        // Span lengths are spread, not constant: the uniform composition of 85 into 28 parts
        // has many spans of length 1.
        let mut rng = Rng::for_item(3, 0, Stream::Mask, 0, 0);
        let mut s = Scratch::default();
        let mut ones = 0;
        for _ in 0..200 {
            c.spans(568, &mut rng, &mut s);
            ones += s.noise.iter().filter(|&&n| n == 1).count();
        }
        assert!(ones > 200 * 28 / 5, "{ones}");
    }

    proptest! {
        #[test]
        fn inputs_and_targets_merge_back_into_the_piece(
            len in 1usize..700,
            density in 0.01f64..0.9,
            mean in 1.0f64..8.0,
            seed in any::<u64>(),
        ) {
            let mut c = t5(1024, density, mean);
            // Generous feature lengths so nothing is trimmed: the merge must be exact.
            c.lengths.inputs_length = 2 * len + 2;
            c.lengths.targets_length = 2 * len + 2;
            c.vocab_size = 100_000;
            let piece: Vec<u32> = (0..len as u32).map(|i| 1000 + i).collect();
            let mut rng = Rng::for_item(seed, 0, Stream::Mask, 0, 0);
            let mask = c.noise_mask(len, &mut rng.clone());
            let mut out = Example::default();
            c.corrupt(&piece, &mut rng, &mut Scratch::default(), &mut out);
            // Same as T5's general rewriting of the same mask.
            let inv: Vec<bool> = mask.iter().map(|m| !m).collect();
            let mut want_in = noise_span_to_unique_sentinel(&piece, &mask, c.vocab_size);
            let mut want_tg = noise_span_to_unique_sentinel(&piece, &inv, c.vocab_size);
            want_in.push(1);
            want_tg.push(1);
            prop_assert_eq!(&out.inputs, &want_in);
            prop_assert_eq!(&out.targets, &want_tg);
            // The mask starts with non-noise, ends with noise (before the lift's trim).
            prop_assert!(!mask[0]);
            if len >= 2 {
                prop_assert!(mask[len - 1]);
                let (noise, spans) = mask_counts(len, density as f32, mean as f32);
                prop_assert_eq!(mask.iter().filter(|&&m| m).count(), noise);
                let runs = mask.windows(2).filter(|w| !w[0] && w[1]).count();
                if spans <= len - noise {
                    prop_assert_eq!(runs, spans);
                } else {
                    // Degenerate: touching noise spans merge.
                    prop_assert_eq!(runs, len - noise);
                }
            }
            // Merge: replace each sentinel of the inputs by the targets' tokens after it.
            let mut merged = Vec::new();
            let body_in = &out.inputs[..out.inputs.len() - 1];
            let body_tg = &out.targets[..out.targets.len() - 1];
            let mut spans_of_targets = std::collections::HashMap::new();
            let mut cur = None;
            for &t in body_tg {
                if t >= 50_000 { cur = Some(t); spans_of_targets.insert(t, Vec::new()); }
                else if let Some(s) = cur { spans_of_targets.get_mut(&s).unwrap().push(t); }
            }
            for &t in body_in {
                if t >= 50_000 { merged.extend(&spans_of_targets[&t]); }
                else { merged.push(t); }
            }
            prop_assert_eq!(merged, piece);
        }

        #[test]
        fn features_never_exceed_their_lengths(
            inputs in 8usize..600,
            len in 1usize..1200,
            seed in any::<u64>(),
        ) {
            let c = t5(inputs, 0.15, 3.0);
            let piece = vec![7u32; len.min(c.lengths.tokens_length)];
            let mut out = Example::default();
            let mut rng = Rng::for_item(seed, 0, Stream::Mask, 0, 0);
            c.corrupt(&piece, &mut rng, &mut Scratch::default(), &mut out);
            prop_assert!(out.inputs.len() <= c.lengths.inputs_length);
            prop_assert!(out.targets.len() <= c.lengths.targets_length);
            prop_assert_eq!(*out.inputs.last().unwrap(), 1);
        }
    }
}
