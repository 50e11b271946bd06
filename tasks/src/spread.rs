//! Scores over seeds: the mean, the sample standard deviation, and the gain from
//! pre-training per seed, for reports whose cells ran with several seeds.

use serde::Serialize;

/// One seed's score (percent) of a report cell.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SeedScore {
    /// The run's seed; `None` for runs from before run.json recorded it.
    pub seed: Option<u64>,
    pub score: f64,
}

/// Mean and sample standard deviation (n - 1) of `values`; no deviation below two values.
pub fn mean_sd(values: &[f64]) -> (f64, Option<f64>) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n.max(1.0);
    let sd = (values.len() > 1)
        .then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    (mean, sd)
}

/// Per-seed gains `pre - base`: paired by seed when every score of both has one and the
/// seeds match, else in the order given (the runner passes seeds in its order).
pub fn paired_gains(pre: &[SeedScore], base: &[SeedScore]) -> Vec<f64> {
    let seeded = pre.iter().chain(base).all(|s| s.seed.is_some());
    if seeded {
        let gains: Vec<f64> = pre
            .iter()
            .filter_map(|p| {
                base.iter()
                    .find(|b| b.seed == p.seed)
                    .map(|b| p.score - b.score)
            })
            .collect();
        if !gains.is_empty() {
            return gains;
        }
    }
    pre.iter()
        .zip(base)
        .map(|(p, b)| p.score - b.score)
        .collect()
}

/// Whether mean ± sd spans zero: a difference the seeds do not separate from none.
pub fn overlaps_zero(mean: f64, sd: Option<f64>) -> bool {
    sd.is_some_and(|sd| mean - sd <= 0.0 && 0.0 <= mean + sd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_deviations_and_paired_gains() {
        let (m, sd) = mean_sd(&[70.0, 74.0, 72.0]);
        assert!((m - 72.0).abs() < 1e-12 && (sd.unwrap() - 2.0).abs() < 1e-12);
        assert_eq!(mean_sd(&[5.0]), (5.0, None));
        let s = |seed, score| SeedScore {
            seed: Some(seed),
            score,
        };
        // Paired by seed, whatever the order.
        let g = paired_gains(&[s(1, 80.0), s(0, 75.0)], &[s(0, 70.0), s(1, 71.0)]);
        assert_eq!(g, [9.0, 5.0]);
        assert!(!overlaps_zero(7.0, Some(2.8)));
        assert!(overlaps_zero(1.0, Some(2.0)));
        assert!(!overlaps_zero(1.0, None));
    }
}
