//! Whether span corruption's settings can make examples: at least one noise span each, and
//! no more spans than sentinels.

use crate::corrupt::lengths::{mask_counts, random_spans_helper, Lengths};
use crate::error::Error;

/// T5's lengths for `inputs_length`, refused (as [`check_spans`] refuses them) when they hold
/// no noise span or more spans than `extra_ids` sentinels.
pub fn usable_lengths(
    inputs_length: usize,
    density: f64,
    mean: f64,
    extra_ids: u32,
) -> Result<Lengths, Error> {
    let l = random_spans_helper(inputs_length, density, mean).map_err(|e| Error::Config(e.0))?;
    check_spans(inputs_length, density, mean, extra_ids, l)?;
    Ok(l)
}

/// Refuses a density of no noise, which span corruption cannot make: T5's mask would still
/// take one token of every piece (it avoids a degenerate mask).
pub fn check_density(density: f64) -> Result<(), Error> {
    if density <= 0.0 {
        return Err(Error::Config(format!(
            "noise density {density} asks for no noise, which span corruption cannot make (T5's mask would still take a token of every piece): give a density above 0 (T5's is 0.15)"
        )));
    }
    Ok(())
}

/// Refuses settings whose examples would hold no noise span, or more noise spans than there
/// are sentinels (extra ids): past them the sentinel ids would count down into real pieces.
/// `l` is `random_spans_helper(inputs_length, density, mean)`.
pub fn check_spans(
    inputs_length: usize,
    density: f64,
    mean: f64,
    extra_ids: u32,
    l: Lengths,
) -> Result<(), Error> {
    check_density(density)?;
    let noise = (l.tokens_length as f64 * density).round_ties_even();
    if noise < 1.0 || l.targets_length < 3 {
        let mut smallest = inputs_length + 1;
        while smallest < 1 << 20 {
            let ok = random_spans_helper(smallest, density, mean)
                .map(|x| {
                    (x.tokens_length as f64 * density).round_ties_even() >= 1.0
                        && x.targets_length >= 3
                })
                .unwrap_or(false);
            if ok {
                break;
            }
            smallest += 1;
        }
        return Err(Error::Config(format!(
            "inputs length {inputs_length} is too small to hold one noise span at density {density}; use at least {smallest}"
        )));
    }
    let (_, spans) = mask_counts(l.tokens_length, density as f32, mean as f32);
    if spans > extra_ids as usize {
        return Err(Error::Config(format!(
            "{} raw tokens per example make {spans} noise spans, but there are only {extra_ids} sentinels (extra ids); lower the inputs length or the noise density, raise the mean span length, or raise the extra ids",
            l.tokens_length
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn a_density_of_zero_is_refused_for_what_it_is() {
        let l = random_spans_helper(64, 0.0, 3.0).unwrap();
        let e = check_spans(64, 0.0, 3.0, 100, l).unwrap_err().to_string();
        assert!(e.contains("asks for no noise"), "{e}");
        let l = random_spans_helper(64, 0.15, 3.0).unwrap();
        assert!(check_spans(64, 0.15, 3.0, 100, l).is_ok());
    }
}
