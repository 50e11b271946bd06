//! The tasks' metrics: accuracy, binary F1, exact match overall and per category, SQuAD's
//! normalised exact match and word F1 (`squad.rs`). A
//! prediction that is not one of a classification task's labels counts as wrong: for F1, as
//! T5's `f1_score_with_invalid` counts it, the opposite of its target (a false positive on a
//! negative example, a false negative on a positive one).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a task is scored with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Metric {
    Accuracy,
    /// Accuracy and F1 of the `positive` label.
    AccuracyF1 {
        positive: String,
    },
    /// Exact match of the whole target, also per example category.
    ExactMatch,
    /// SQuAD's: exact match and word F1 after its normalisation, each the best over the
    /// target and the example's other answers (`accuracy` is the exact match).
    Squad,
}

/// Scores of a set of predictions (read back with defaults for what older files lack).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    #[serde(default)]
    pub examples: usize,
    pub accuracy: f64,
    /// F1 of the positive label (classification), or SQuAD's mean word F1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    /// Per-category exact match (categories in name order).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_category: BTreeMap<String, f64>,
    /// Predictions that are not a valid label (classification tasks).
    #[serde(default)]
    pub invalid: usize,
    /// The accuracy of always answering the most frequent reference (classification tasks):
    /// the majority-class baseline of the evaluated split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub majority: Option<f64>,
}

/// As a task file spells it: `accuracy`, `f1:LABEL` (accuracy too), `exact_match`, `squad`.
impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Metric::Accuracy => write!(f, "accuracy"),
            Metric::AccuracyF1 { positive } => write!(f, "f1:{positive} (and accuracy)"),
            Metric::ExactMatch => write!(f, "exact_match (overall and per category)"),
            Metric::Squad => write!(f, "squad (normalised exact match and word F1)"),
        }
    }
}

impl Metric {
    /// Scores `predictions` against `references` (same order); `answers` are each example's
    /// other acceptable answers (SQuAD's; empty, or empty lists, elsewhere); `labels` are
    /// the valid targets of a classification task; `categories` group examples for exact
    /// match.
    pub fn score(
        &self,
        predictions: &[String],
        references: &[String],
        answers: &[Vec<String>],
        categories: &[Option<String>],
        labels: Option<&[String]>,
    ) -> Scores {
        let n = references.len();
        let norm = |s: &str| s.trim().to_string();
        let squad: Vec<(bool, f64)> = match self {
            Metric::Squad => (0..n)
                .map(|i| {
                    let mut refs = vec![references[i].as_str()];
                    refs.extend(answers.get(i).into_iter().flatten().map(String::as_str));
                    crate::squad::best(&predictions[i], &refs)
                })
                .collect(),
            _ => Vec::new(),
        };
        let correct: Vec<bool> = match self {
            Metric::Squad => squad.iter().map(|&(em, _)| em).collect(),
            _ => predictions
                .iter()
                .zip(references)
                .map(|(p, r)| norm(p) == norm(r))
                .collect(),
        };
        let invalid = labels.map_or(0, |ls| {
            predictions
                .iter()
                .filter(|p| !ls.iter().any(|l| norm(l) == norm(p)))
                .count()
        });
        let accuracy = correct.iter().filter(|&&c| c).count() as f64 / n.max(1) as f64;
        let f1 = match self {
            Metric::AccuracyF1 { positive } => {
                let pos = |s: &str| norm(s) == *positive;
                let valid = |s: &str| labels.is_none_or(|ls| ls.iter().any(|l| norm(l) == norm(s)));
                // What the prediction says of the positive class: an invalid one says the
                // opposite of its reference.
                let says_pos = |p: &str, r: &str| match valid(p) {
                    true => pos(p),
                    false => !pos(r),
                };
                let count = |f: &dyn Fn(bool, bool) -> bool| {
                    predictions
                        .iter()
                        .zip(references)
                        .filter(|(p, r)| f(says_pos(p, r), pos(r)))
                        .count() as f64
                };
                let tp = count(&|p, r| p && r);
                let fp = count(&|p, r| p && !r);
                let fn_ = count(&|p, r| !p && r);
                Some(if tp == 0.0 {
                    0.0
                } else {
                    2.0 * tp / (2.0 * tp + fp + fn_)
                })
            }
            Metric::Squad => Some(squad.iter().map(|&(_, f)| f).sum::<f64>() / n.max(1) as f64),
            _ => None,
        };
        let mut per_category = BTreeMap::new();
        if *self == Metric::ExactMatch {
            let mut tally: BTreeMap<String, (usize, usize)> = BTreeMap::new();
            for (c, ok) in categories.iter().zip(&correct) {
                if let Some(c) = c {
                    let e = tally.entry(c.clone()).or_default();
                    e.0 += *ok as usize;
                    e.1 += 1;
                }
            }
            per_category = tally
                .into_iter()
                .map(|(k, (ok, all))| (k, ok as f64 / all as f64))
                .collect();
        }
        let majority = labels.map(|_| {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for r in references {
                *counts.entry(norm(r)).or_default() += 1;
            }
            counts.values().max().copied().unwrap_or(0) as f64 / n.max(1) as f64
        });
        Scores {
            examples: n,
            accuracy,
            f1,
            per_category,
            invalid,
            majority,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn accuracy_and_f1_by_hand() {
        // 5 examples: tp = 2 (rows 0, 1), fp = 1 (row 2), fn = 1 (row 3), tn = 1 (row 4).
        let m = Metric::AccuracyF1 {
            positive: "toxic".into(),
        };
        let p = s(&["toxic", "toxic", "toxic", "non-toxic", "non-toxic"]);
        let r = s(&["toxic", "toxic", "non-toxic", "toxic", "non-toxic"]);
        let labels = s(&["toxic", "non-toxic"]);
        let sc = m.score(&p, &r, &[], &vec![None; 5], Some(&labels));
        assert_eq!(sc.accuracy, 0.6);
        assert_eq!(sc.f1, Some(2.0 * 2.0 / (4.0 + 1.0 + 1.0)));
        assert_eq!(sc.invalid, 0);
        // Always answering "toxic" (3 of the 5 references) scores 0.6.
        assert_eq!(sc.majority, Some(0.6));
        // A generation that is not a label is wrong and counted.
        let sc =
            Metric::Accuracy.score(&s(&["maybe"]), &s(&["toxic"]), &[], &[None], Some(&labels));
        assert_eq!((sc.accuracy, sc.invalid), (0.0, 1));
    }

    #[test]
    fn f1_counts_an_invalid_prediction_as_the_opposite_of_its_target_as_t5_does() {
        // T5's f1_score_with_invalid: an invalid prediction on a negative target is a false
        // positive (it was a true negative here), on a positive target a false negative.
        let m = Metric::AccuracyF1 {
            positive: "toxic".into(),
        };
        let labels = s(&["toxic", "non-toxic"]);
        let sc = m.score(
            &s(&["maybe", "toxic"]),
            &s(&["non-toxic", "toxic"]),
            &[],
            &[None, None],
            Some(&labels),
        );
        assert_eq!(sc.f1, Some(2.0 / 3.0));
        // tp 1 (row 2), fn 1 (row 0, invalid), fp 1 (row 1, invalid), tn 1 (row 3).
        let sc = m.score(
            &s(&["?", "", "toxic", "non-toxic"]),
            &s(&["toxic", "non-toxic", "toxic", "non-toxic"]),
            &[],
            &vec![None; 4],
            Some(&labels),
        );
        assert_eq!((sc.f1, sc.invalid, sc.accuracy), (Some(0.5), 2, 0.5));
    }

    #[test]
    fn exact_match_per_category() {
        let p = s(&["a", "b", "c", "x"]);
        let r = s(&["a", "b", "z", "y"]);
        let c = vec![
            Some("k".to_string()),
            Some("k".to_string()),
            Some("k".to_string()),
            Some("m".to_string()),
        ];
        let sc = Metric::ExactMatch.score(&p, &r, &[], &c, None);
        assert_eq!(sc.accuracy, 0.5);
        assert_eq!(sc.per_category["k"], 2.0 / 3.0);
        assert_eq!(sc.per_category["m"], 0.0);
    }

    #[test]
    fn squad_takes_the_best_answer_and_averages() {
        let p = s(&["The Louvre", "in Paris", "nothing"]);
        let r = s(&["Louvre museum", "Paris, France", "x"]);
        let answers = vec![s(&["louvre"]), vec![], s(&["y"])];
        let sc = Metric::Squad.score(&p, &r, &answers, &[None, None, None], None);
        // Row 0 matches its second answer; row 1 shares "paris" (F1 2·½·½/1 = 0.5).
        assert_eq!(sc.accuracy, 1.0 / 3.0);
        assert_eq!(sc.f1, Some((1.0 + 0.5) / 3.0));
        assert_eq!((sc.invalid, sc.majority), (0, None));
    }
}
