//! `conveyor report`: evaluation results collected into the paper's Table 2 layout — one row
//! per (architecture, pre-trained or not), one column per task score — and, per architecture,
//! the gain from pre-training. Each evaluation folder's `metrics.json` names its checkpoint;
//! the run folder's `run.json` says the architecture and whether it started from a
//! pre-trained checkpoint (`init`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use conveyor_pipeline::run_info::RunInfo;

use crate::TaskError;

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

const ARCH_ORDER: [&str; 4] = ["transformer", "lightconv", "dilatedconv", "dynamicconv"];

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

fn read_json(path: &Path) -> Result<serde_json::Value, TaskError> {
    let text = std::fs::read_to_string(path).map_err(|e| crate::read::io_error(path, e))?;
    serde_json::from_str(&text).map_err(|e| crate::read::io_error(path, e))
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
        let m = d.join("metrics.json");
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

/// Builds the report from evaluation folders, run folders holding evaluations, or
/// `metrics.json` files.
pub fn report(paths: &[PathBuf]) -> Result<Report, TaskError> {
    let mut rows: BTreeMap<(usize, String, bool), BTreeMap<String, f64>> = BTreeMap::new();
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
    for metrics in files {
        let m = read_json(&metrics)?;
        let task = m["task"].as_str().unwrap_or_default().to_string();
        let ckpt = PathBuf::from(m["checkpoint"].as_str().unwrap_or_default());
        let run = ckpt
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let info = RunInfo::read(&run).map_err(|e| TaskError::Io {
            path: run.join(RunInfo::FILE),
            message: match e {
                conveyor_pipeline::Error::Io { .. } => format!(
                    "missing: {} does not come from a conveyor run folder",
                    metrics.display()
                ),
                e => e.to_string(),
            },
        })?;
        let arch = info.arch;
        let pretrained = info.init.is_some();
        let order = ARCH_ORDER.iter().position(|a| *a == arch).unwrap_or(99);
        let row = rows.entry((order, arch, pretrained)).or_default();
        let s = &m["scores"];
        for (t, score, header) in COLUMNS {
            if t != task {
                continue;
            }
            let value = match score {
                "gen" => {
                    // COGS generalisation: the mean over the generalisation categories (every
                    // category but in_distribution); COGS's gen set has the same number of
                    // examples in each, so this equals the accuracy over the whole gen set.
                    let cats = s["per_category"].as_object();
                    cats.and_then(|c| {
                        let v: Vec<f64> = c
                            .iter()
                            .filter(|(k, _)| k.as_str() != "in_distribution")
                            .filter_map(|(_, v)| v.as_f64())
                            .collect();
                        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
                    })
                }
                "in_distribution" => {
                    // COGS in-distribution exact match: its category when the evaluated
                    // split has one (dev.tsv, or dev + gen files together), else overall.
                    s["per_category"]["in_distribution"]
                        .as_f64()
                        .or(s["accuracy"].as_f64())
                }
                k => s[k].as_f64(),
            };
            if let Some(v) = value {
                row.insert(header.to_string(), 100.0 * v);
            }
        }
    }
    let mut out: Vec<ReportRow> = rows
        .into_iter()
        .map(|((_, arch, pretrained), scores)| ReportRow {
            arch,
            pretrained,
            scores,
        })
        .collect();
    out.sort_by_key(|r| (r.pretrained, ARCH_ORDER.iter().position(|a| *a == r.arch)));
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
        for (arch, g) in &gains {
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
        // No pre-training first, then pre-trained; transformer before the convolutions.
        assert_eq!(
            (r.rows[0].arch.as_str(), r.rows[0].pretrained),
            ("lightconv", false)
        );
        assert_eq!(
            (r.rows[1].arch.as_str(), r.rows[1].pretrained),
            ("transformer", true)
        );
        assert_eq!(r.rows[2].scores["Civil F1"], 62.5);
        assert!((r.rows[1].scores["COGS gen"] - 30.0).abs() < 1e-9);
        // The COGS column is the in-distribution category, not the mixed overall score.
        assert!((r.rows[1].scores["COGS"] - 90.0).abs() < 1e-9);
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
