//! `conveyor report`: evaluation results collected into the paper's Table 2 layout — one row
//! per (architecture, pre-trained or not), one column per task score — and, per architecture,
//! the gain from pre-training. Each evaluation folder's `metrics.json` names its checkpoint;
//! the run folder's `run.json` says the architecture and whether it started from a
//! pre-trained checkpoint (`init`). Rows follow the order in which their architectures first
//! appear among the inputs (the study passes its own order), no pre-training first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use conveyor_pipeline::run_info::RunInfo;

use crate::{EvalSummary, Scores, TaskError};

/// Task columns in the paper's order: (task, score, header).
const COLUMNS: [(&str, &str, &str); 11] = [
    ("civil_comments", "accuracy", "Civil acc"),
    ("civil_comments", "f1", "Civil F1"),
    ("wiki_toxicity", "accuracy", "Wiki acc"),
    ("wiki_toxicity", "f1", "Wiki F1"),
    ("imdb", "accuracy", "IMDb"),
    ("sst2", "accuracy", "SST-2"),
    ("sentiment140", "accuracy", "S140"),
    ("trec", "accuracy", "TREC"),
    ("ag_news", "accuracy", "AG News"),
    ("cogs", "in_distribution", "COGS"),
    ("cogs", "gen", "COGS gen"),
];

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct ReportRow {
    pub arch: String,
    pub pretrained: bool,
    /// Scores in percent by column header.
    pub scores: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rows: Vec<ReportRow>,
    /// Per architecture: pre-trained minus no pre-training, by column.
    pub gains: BTreeMap<String, BTreeMap<String, f64>>,
    pub markdown: String,
}

/// Every `metrics.json` at or below `path` (an evaluation folder, a run folder holding
/// evaluations, or the file itself), in path order.
fn metrics_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut out = Vec::new();
    let mut stack = vec![(path.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        let m = d.join(EvalSummary::FILE);
        if m.is_file() {
            out.push(m);
            continue;
        }
        if depth < 4 {
            if let Ok(rd) = std::fs::read_dir(&d) {
                stack.extend(
                    rd.flatten()
                        .map(|e| e.path())
                        .filter(|p| p.is_dir())
                        .map(|p| (p, depth + 1)),
                );
            }
        }
    }
    out.sort();
    out
}

/// Every `metrics.json` the inputs hold, in input order.
fn metrics_of(paths: &[PathBuf]) -> Result<Vec<PathBuf>, TaskError> {
    let mut files = Vec::new();
    for p in paths {
        let found = metrics_files(p);
        if found.is_empty() {
            return Err(TaskError::Io {
                path: p.clone(),
                message: "holds no metrics.json: pass folders written by `conveyor eval`".into(),
            });
        }
        files.extend(found);
    }
    Ok(files)
}

/// The `run.json` of the run an evaluation's checkpoint belongs to.
fn run_info(m: &EvalSummary, metrics: &Path) -> Result<RunInfo, TaskError> {
    let run = m.run_dir();
    RunInfo::read(&run).map_err(|e| TaskError::Io {
        path: run.join(RunInfo::FILE),
        message: match e {
            conveyor_pipeline::Error::Io { .. } => format!(
                "missing: {} does not come from a conveyor run folder",
                metrics.display()
            ),
            e => e.to_string(),
        },
    })
}

/// One column's value from an evaluation's scores (a fraction), if it has it.
fn column_score(s: &Scores, score: &str) -> Option<f64> {
    match score {
        // COGS generalisation: the mean over the generalisation categories (every category
        // but in_distribution); COGS's gen set has the same number of examples in each, so
        // this equals the accuracy over the whole gen set.
        "gen" => {
            let v: Vec<f64> = s
                .per_category
                .iter()
                .filter(|(k, _)| k.as_str() != "in_distribution")
                .map(|(_, v)| *v)
                .collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        }
        // COGS in-distribution exact match: its category when the evaluated split has one
        // (dev.tsv, or dev + gen files together), else overall.
        "in_distribution" => Some(
            s.per_category
                .get("in_distribution")
                .copied()
                .unwrap_or(s.accuracy),
        ),
        "accuracy" => Some(s.accuracy),
        "f1" => s.f1,
        _ => None,
    }
}

/// Builds the report from evaluation folders, run folders holding evaluations, or
/// `metrics.json` files.
pub fn report(paths: &[PathBuf]) -> Result<Report, TaskError> {
    let mut rows: BTreeMap<(bool, usize, String), BTreeMap<String, f64>> = BTreeMap::new();
    let mut archs: Vec<String> = Vec::new();
    for metrics in metrics_of(paths)? {
        let m = EvalSummary::read(&metrics)?;
        let info = run_info(&m, &metrics)?;
        let order = match archs.iter().position(|a| *a == info.arch) {
            Some(i) => i,
            None => {
                archs.push(info.arch.clone());
                archs.len() - 1
            }
        };
        let row = rows
            .entry((info.init.is_some(), order, info.arch))
            .or_default();
        for (t, score, header) in COLUMNS {
            if t == m.task {
                if let Some(v) = column_score(&m.scores, score) {
                    row.insert(header.to_string(), 100.0 * v);
                }
            }
        }
    }
    let out: Vec<ReportRow> = rows
        .into_iter()
        .map(|((pretrained, _, arch), scores)| ReportRow {
            arch,
            pretrained,
            scores,
        })
        .collect();
    let mut gains = BTreeMap::new();
    for r in out.iter().filter(|r| r.pretrained) {
        if let Some(base) = out.iter().find(|b| !b.pretrained && b.arch == r.arch) {
            let g: BTreeMap<String, f64> = r
                .scores
                .iter()
                .filter_map(|(k, v)| base.scores.get(k).map(|b| (k.clone(), v - b)))
                .collect();
            gains.insert(r.arch.clone(), g);
        }
    }
    let used: Vec<&str> = COLUMNS
        .iter()
        .map(|c| c.2)
        .filter(|h| out.iter().any(|r| r.scores.contains_key(*h)))
        .collect();
    let mut md = format!(
        "| model | {} |\n|---|{}\n",
        used.join(" | "),
        "---|".repeat(used.len())
    );
    for r in &out {
        let cells: Vec<String> = used
            .iter()
            .map(|h| r.scores.get(*h).map_or("—".into(), |v| format!("{v:.2}")))
            .collect();
        let kind = if r.pretrained {
            "pre-trained"
        } else {
            "no pre-training"
        };
        md += &format!("| {}, {kind} | {} |\n", r.arch, cells.join(" | "));
    }
    if !gains.is_empty() {
        md += &format!(
            "\n| gain from pre-training | {} |\n|---|{}\n",
            used.join(" | "),
            "---|".repeat(used.len())
        );
        // In row order, as the table above.
        let ordered = out
            .iter()
            .filter(|r| r.pretrained)
            .filter_map(|r| gains.get(&r.arch).map(|g| (&r.arch, g)));
        for (arch, g) in ordered {
            let cells: Vec<String> = used
                .iter()
                .map(|h| g.get(*h).map_or("—".into(), |v| format!("{v:+.2}")))
                .collect();
            md += &format!("| {arch} | {} |\n", cells.join(" | "));
        }
    }
    Ok(Report {
        rows: out,
        gains,
        markdown: md,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval_dir(
        root: &Path,
        name: &str,
        arch: &str,
        init: bool,
        task: &str,
        scores: &str,
    ) -> PathBuf {
        let run = root.join(format!("run-{name}"));
        let ckpt = run.join("checkpoints/step-00000010");
        std::fs::create_dir_all(&ckpt).unwrap();
        // A run.json as early versions wrote it: the report needs no more.
        let init = if init { "\"pre/ckpt\"" } else { "null" };
        std::fs::write(
            run.join("run.json"),
            format!(r#"{{"arch": "{arch}", "init": {init}}}"#),
        )
        .unwrap();
        let e = root.join(format!("eval-{name}"));
        std::fs::create_dir_all(&e).unwrap();
        std::fs::write(
            e.join("metrics.json"),
            format!(
                r#"{{"task": "{task}", "checkpoint": "{}", "scores": {scores}}}"#,
                ckpt.display()
            ),
        )
        .unwrap();
        e
    }

    #[test]
    fn rows_columns_and_gains() {
        let root = std::env::temp_dir().join(format!("conveyor-report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let evals = vec![
            eval_dir(
                &root,
                "a",
                "lightconv",
                false,
                "civil_comments",
                r#"{"accuracy": 0.75, "f1": 0.5}"#,
            ),
            eval_dir(
                &root,
                "b",
                "lightconv",
                true,
                "civil_comments",
                r#"{"accuracy": 0.8, "f1": 0.625}"#,
            ),
            eval_dir(
                &root,
                "c",
                "transformer",
                true,
                "cogs",
                r#"{"accuracy": 0.5, "per_category": {"in_distribution": 0.9, "x": 0.2, "y": 0.4}}"#,
            ),
        ];
        let r = report(&evals).unwrap();
        assert_eq!(r.rows.len(), 3);
        // No pre-training first, then pre-trained; architectures in the order they first
        // appear among the inputs.
        let order: Vec<_> = r
            .rows
            .iter()
            .map(|r| (r.arch.as_str(), r.pretrained))
            .collect();
        assert_eq!(
            order,
            [
                ("lightconv", false),
                ("lightconv", true),
                ("transformer", true)
            ]
        );
        assert_eq!(r.rows[1].scores["Civil F1"], 62.5);
        assert!((r.rows[2].scores["COGS gen"] - 30.0).abs() < 1e-9);
        // The COGS column is the in-distribution category, not the mixed overall score.
        assert!((r.rows[2].scores["COGS"] - 90.0).abs() < 1e-9);
        // The other order of inputs puts the transformer first among the pre-trained rows.
        let mut reversed = evals.clone();
        reversed.reverse();
        let r2 = report(&reversed).unwrap();
        assert_eq!(
            (r2.rows[1].arch.as_str(), r2.rows[2].arch.as_str()),
            ("transformer", "lightconv")
        );
        assert!((r.gains["lightconv"]["Civil acc"] - 5.0).abs() < 1e-9);
        assert!((r.gains["lightconv"]["Civil F1"] - 12.5).abs() < 1e-9);
        assert!(
            r.markdown
                .contains("| lightconv, pre-trained | 80.00 | 62.50 | — | — |"),
            "{}",
            r.markdown
        );
        assert!(
            r.markdown.contains("| lightconv | +5.00 | +12.50 |"),
            "{}",
            r.markdown
        );
    }
}
