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

/// Per-seed gains `pre - base`: where every score of both records its seed, one per seed the
/// two have in common (none when they share no seed: such scores are not pairs); scores of
/// runs from before run.json recorded seeds pair in the order given.
pub fn paired_gains(pre: &[SeedScore], base: &[SeedScore]) -> Vec<f64> {
    let seeded = pre.iter().chain(base).all(|s| s.seed.is_some());
    if seeded {
        return pre
            .iter()
            .filter_map(|p| {
                base.iter()
                    .find(|b| b.seed == p.seed)
                    .map(|b| p.score - b.score)
            })
            .collect();
    }
    pre.iter()
        .zip(base)
        .map(|(p, b)| p.score - b.score)
        .collect()
}

/// The 97.5% quantile of Student's t with `df` degrees of freedom: a 95% two-sided
/// confidence interval of a mean of `df + 1` values is mean ± t95(df) · sd / sqrt(df + 1).
/// Tabled to 30; beyond, 1.96 + 2.5 / df (within 0.003 of the exact value).
pub fn t95(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::INFINITY,
        1..=30 => T[df - 1],
        _ => 1.96 + 2.5 / df as f64,
    }
}

/// Half the width of the 95% confidence interval of the mean of `n` values with sample
/// deviation `sd`.
pub fn ci95_half_width(n: usize, sd: f64) -> f64 {
    t95(n.saturating_sub(1)) * sd / (n as f64).sqrt()
}

/// Whether mean ± sd spans zero: a difference the seeds do not separate from none.
pub fn overlaps_zero(mean: f64, sd: Option<f64>) -> bool {
    sd.is_some_and(|sd| mean - sd <= 0.0 && 0.0 <= mean + sd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_and_intervals() {
        assert_eq!(t95(2), 4.303);
        assert!((t95(60) - 2.000).abs() < 0.003 && (t95(120) - 1.980).abs() < 0.003);
        // Gains 10, 9, 11: sd 1, 95% CI 10 ± 4.303 / sqrt(3).
        assert!((ci95_half_width(3, 1.0) - 2.484).abs() < 1e-3);
        assert!(ci95_half_width(1, 1.0).is_infinite());
    }

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
        // Seeds in common only; none in common make no pairs (they were paired by position).
        let g = paired_gains(&[s(1, 80.0), s(2, 75.0)], &[s(0, 70.0), s(1, 71.0)]);
        assert_eq!(g, [9.0]);
        assert!(paired_gains(&[s(3, 80.0)], &[s(0, 70.0)]).is_empty());
        assert!(!overlaps_zero(7.0, Some(2.8)));
        assert!(overlaps_zero(1.0, Some(2.0)));
        assert!(!overlaps_zero(1.0, None));
    }
}
