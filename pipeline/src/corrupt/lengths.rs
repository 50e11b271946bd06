//! Feature lengths for span corruption, as T5's `random_spans_helper` computes them, and the
//! per-example noise counts of `random_spans_noise_mask`.
//!
//! Two roundings meet here, as in T5: the helper runs in Python (`round` on float64, ties to
//! even), the mask in TensorFlow (`tf.round` on float32, ties to even). They can disagree at
//! exact ties, which is why every feature is also trimmed to its length.

pub use crate::examples::Lengths;

/// Why a configuration cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LengthError(pub String);

/// (inputs, targets) lengths that `tokens` raw tokens turn into, by the helper's formula.
fn helper_lengths(tokens: usize, density: f64, mean: f64) -> (usize, usize) {
    let noise = (tokens as f64 * density).round_ties_even() as usize;
    let nonnoise = tokens - noise.min(tokens);
    let spans = (noise as f64 / mean).round_ties_even() as usize;
    (nonnoise + spans + 1, noise + spans + 1)
}

/// The longest inputs span corruption is asked for (2^24 tokens).
pub const MAX_INPUTS_LENGTH: usize = 1 << 24;

/// T5's `random_spans_helper(inputs_length, noise_density, mean_noise_span_length)`: the
/// largest raw length whose inputs fit `inputs_length`, and the targets length it implies.
pub fn random_spans_helper(
    inputs_length: usize,
    density: f64,
    mean: f64,
) -> Result<Lengths, LengthError> {
    if !(0.0..1.0).contains(&density) {
        return Err(LengthError(format!(
            "noise density {density} must be at least 0 and below 1"
        )));
    }
    if mean.is_nan() || mean < 1.0 {
        return Err(LengthError(format!(
            "mean span length {mean} must be at least 1"
        )));
    }
    if inputs_length < 2 {
        return Err(LengthError(format!(
            "inputs length {inputs_length} cannot hold a token and EOS"
        )));
    }
    // T5's search below walks one token at a time: past this it would run for hours.
    if inputs_length > MAX_INPUTS_LENGTH {
        return Err(LengthError(format!(
            "inputs length {inputs_length} is over {MAX_INPUTS_LENGTH} tokens, longer than any sequence model trains on"
        )));
    }
    let mut tokens = inputs_length - 1;
    while helper_lengths(tokens + 1, density, mean).0 <= inputs_length {
        tokens += 1;
    }
    let (inputs, mut targets) = helper_lengths(tokens, density, mean);
    // T5's adjustment so that targets match inputs when half the tokens are noise.
    if density == 0.5 && targets > inputs {
        tokens -= 1;
        targets -= 1;
    }
    Ok(Lengths {
        tokens_length: tokens,
        inputs_length: inputs,
        targets_length: targets,
    })
}

/// Noise tokens and noise spans that `random_spans_noise_mask` uses for a piece of `length`
/// tokens (after T5's lift of lengths below 2 to 2).
pub fn mask_counts(length: usize, density: f32, mean: f32) -> (usize, usize) {
    let length = length.max(2);
    let noise = ((length as f32) * density).round_ties_even() as usize;
    let noise = noise.clamp(1, length - 1);
    let spans = ((noise as f32) / mean).round_ties_even() as usize;
    (noise, spans.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An absurd length is refused at once instead of walked to (hours at 10^15).
    #[test]
    fn absurd_lengths_are_refused_at_once() {
        let e = random_spans_helper(1 << 50, 0.15, 3.0).unwrap_err();
        assert!(e.0.contains("longer than any"), "{}", e.0);
        assert!(random_spans_helper(MAX_INPUTS_LENGTH, 0.15, 3.0).is_ok());
    }

    fn l(i: usize, d: f64, m: f64) -> (usize, usize, usize) {
        let x = random_spans_helper(i, d, m).unwrap();
        (x.tokens_length, x.inputs_length, x.targets_length)
    }

    #[test]
    fn matches_t5_reference_values() {
        assert_eq!(l(512, 0.15, 3.0), (568, 512, 114));
        assert_eq!(l(128, 0.15, 3.0), (141, 128, 29));
        assert_eq!(l(256, 0.15, 3.0), (284, 256, 58));
        assert_eq!(l(1024, 0.15, 3.0), (1137, 1024, 229));
        // T5's own test vectors.
        assert_eq!(l(64, 0.2, 2.0), (70, 64, 22));
        assert_eq!(l(64, 0.2, 1.0), (63, 64, 27));
    }

    #[test]
    fn mask_counts_round_half_to_even_in_f32() {
        // 30 * 0.15 = 4.5 rounds to 4, not 5.
        assert_eq!(mask_counts(30, 0.15, 3.0).0, 4);
        assert_eq!(mask_counts(568, 0.15, 3.0), (85, 28));
        // Degenerate lengths still get one noise token and one span.
        assert_eq!(mask_counts(1, 0.15, 3.0), (1, 1));
        assert_eq!(mask_counts(3, 0.01, 3.0), (1, 1));
    }

    #[test]
    fn refuses_impossible_settings() {
        assert!(random_spans_helper(1, 0.15, 3.0).is_err());
        assert!(random_spans_helper(512, 1.0, 3.0).is_err());
        assert!(random_spans_helper(512, 0.15, 0.5).is_err());
    }
}
