//! `conveyor report`: evaluation results collected into the paper's Table 2 layout — one row
//! per (architecture, pre-trained or not), one column per task score — and, per architecture,
//! the gain from pre-training. Each evaluation folder's `metrics.json` names its checkpoint;
//! the run folder's `run.json` says the architecture and whether it started from a
//! pre-trained checkpoint (`init`) and its seed. Rows follow the order in which their
//! architectures first appear among the inputs (the study passes its own order), no
//! pre-training first. Evaluations of several seeds in one cell give mean ± standard
//! deviation, and gains are paired by seed, marked "n.s." where mean ± sd spans zero; a
//! majority-class row shows what always answering the most frequent label scores.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use conveyor_pipeline::run_info::RunInfo;

use crate::spread::{ci95_half_width, mean_sd, overlaps_zero, paired_gains, SeedScore};
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
    /// Scores in percent by column header: the mean over the cell's seeds.
    pub scores: BTreeMap<String, f64>,
    /// Sample standard deviation over seeds, for cells of two or more.
    pub sd: BTreeMap<String, f64>,
    /// Every seed's score, by column header.
    pub per_seed: BTreeMap<String, Vec<SeedScore>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rows: Vec<ReportRow>,
    /// Per architecture: pre-trained minus no pre-training, by column (mean of the per-seed
    /// gains).
    pub gains: BTreeMap<String, BTreeMap<String, f64>>,
    /// Per architecture and column: the standard deviation of the per-seed gains.
    pub gain_sd: BTreeMap<String, BTreeMap<String, f64>>,
    /// Per architecture and column: half the width of the gain's 95% confidence interval
    /// (Student's t, seeds - 1 degrees of freedom).
    pub gain_ci95: BTreeMap<String, BTreeMap<String, f64>>,
    /// Per column: the majority-class accuracy of the evaluated split (percent).
    pub majority: BTreeMap<String, f64>,
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
            let message = match p.exists() {
                true => "holds no metrics.json: pass folders written by `conveyor eval`",
                false => "does not exist",
            };
            return Err(TaskError::Io {
                path: p.clone(),
                message: message.into(),
            });
        }
        files.extend(found);
    }
    Ok(files)
}

/// The run an evaluation's checkpoint belongs to: as the evaluation recorded it, or (for
/// evaluations from before it did) the `run.json` its checkpoint path leads to.
fn run_info(m: &EvalSummary, metrics: &Path) -> Result<RunInfo, TaskError> {
    if let Some(run) = &m.run {
        return Ok(run.clone());
    }
    let not_a_run = || {
        format!(
            "missing: {} does not come from a conveyor run folder",
            metrics.display()
        )
    };
    let Some(run) = m.run_dir() else {
        return Err(TaskError::Io {
            path: m.checkpoint.clone(),
            message: not_a_run(),
        });
    };
    RunInfo::read(&run).map_err(|e| TaskError::Io {
        path: run.join(RunInfo::FILE),
        message: match e {
            conveyor_pipeline::Error::Io { error, .. }
                if error.kind() == std::io::ErrorKind::NotFound =>
            {
                not_a_run()
            }
            e => e.to_string(),
        },
    })
}

/// What goes into the table is checked first: an architecture name that is a plain word (a
/// `|` or line break in a run.json forged rows) and scores that are fractions.
fn check_report_input(m: &EvalSummary, info: &RunInfo, metrics: &Path) -> Result<(), TaskError> {
    let bad = |message: String| {
        Err(TaskError::Io {
            path: metrics.to_path_buf(),
            message,
        })
    };
    let plain = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if !plain(&m.task) {
        return bad(format!(
            "names the task {:?}, not a plain name: not a metrics.json `conveyor eval` wrote",
            m.task
        ));
    }
    if !plain(&info.arch) {
        return bad(format!(
            "its run names the architecture {:?}, not a plain name: not a run conveyor wrote",
            info.arch
        ));
    }
    let s = &m.scores;
    let fractions = [Some(s.accuracy), s.f1, s.majority]
        .into_iter()
        .flatten()
        .chain(s.per_category.values().copied());
    if let Some(v) = fractions.into_iter().find(|v| !(0.0..=1.0).contains(v)) {
        return bad(format!(
            "holds the score {v}, not a fraction between 0 and 1: not a metrics.json `conveyor eval` wrote"
        ));
    }
    Ok(())
}

/// The columns an evaluation of `task` fills (score, header): the paper's for its tasks;
/// for another (a task file's) its accuracy under the task's name, and its F1 where scored.
fn columns_of(task: &str, s: &Scores) -> Vec<(&'static str, String)> {
    let paper: Vec<_> = COLUMNS
        .iter()
        .filter(|c| c.0 == task)
        .map(|c| (c.1, c.2.to_string()))
        .collect();
    if !paper.is_empty() {
        return paper;
    }
    // Never one of the paper's headers (a task file may name its task TREC or COGS).
    let header = match COLUMNS
        .iter()
        .any(|c| c.2 == task || c.2 == format!("{task} F1"))
    {
        true => format!("task {task}"),
        false => task.to_string(),
    };
    let f1 = s.f1.map(|_| ("f1", format!("{header} F1")));
    std::iter::once(("accuracy", header)).chain(f1).collect()
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
        // (dev.tsv, or dev + gen files together); none for an evaluation of the
        // generalisation set alone (its overall score is not in-distribution); overall for
        // one without categories.
        "in_distribution" => match s.per_category.get("in_distribution") {
            Some(&v) => Some(v),
            None if s.per_category.is_empty() => Some(s.accuracy),
            None => None,
        },
        "accuracy" => Some(s.accuracy),
        "f1" => s.f1,
        _ => None,
    }
}

/// What tells an evaluated split from another: its examples and, for a classification
/// task, its majority baseline (the share of its most frequent target).
type Split = (usize, Option<u64>);

/// Refuses an evaluation of another split than the others of its column (another dev set,
/// or another --limit): the table compares models on one set of examples, and its majority
/// row is one split's. What an older metrics.json lacks (no examples, no majority) is not
/// compared.
fn same_split(
    splits: &mut BTreeMap<String, (Split, PathBuf)>,
    column: &str,
    m: &EvalSummary,
    metrics: &std::path::Path,
) -> Result<(), TaskError> {
    let split = (m.scores.examples, m.scores.majority.map(f64::to_bits));
    let differ = |a: &Split, b: &Split| {
        (a.0 != b.0 && a.0 != 0 && b.0 != 0) || (a.1 != b.1 && a.1.is_some() && b.1.is_some())
    };
    match splits.get(column) {
        Some((other, path)) if differ(other, &split) => Err(TaskError::Io {
            path: metrics.to_path_buf(),
            message: format!(
                "scores {} examples of {} (majority {}), and {} scored {} examples (majority {}) of the same task: a report compares models on one split; evaluate them all on the same data with the same --limit",
                split.0,
                m.task,
                m.scores.majority.map_or("none".into(), |v| format!("{v:.4}")),
                path.display(),
                other.0,
                other.1.map_or("none".into(), |b| format!("{:.4}", f64::from_bits(b)))
            ),
        }),
        Some(_) => Ok(()),
        None => {
            splits.insert(column.to_string(), (split, metrics.to_path_buf()));
            Ok(())
        }
    }
}

/// A cell of the table and a seed: (architecture, pre-trained, column header, seed); each
/// has one evaluation (its metrics.json and checkpoint).
type CellKey = (String, bool, String, Option<u64>);

/// Scores by (pre-trained, order of first appearance, architecture), then column header.
type Cells = BTreeMap<(bool, usize, String), BTreeMap<String, Vec<SeedScore>>>;

/// Builds the report from evaluation folders, run folders holding evaluations, or
/// `metrics.json` files. Two evaluations of one cell with the same seed are refused (several
/// learning rates of a grid, say: pass one evaluation per seed).
pub fn report(paths: &[PathBuf]) -> Result<Report, TaskError> {
    let mut cells: Cells = BTreeMap::new();
    let mut majority = BTreeMap::new();
    let mut archs: Vec<String> = Vec::new();
    let mut seen: BTreeMap<CellKey, (PathBuf, PathBuf)> = BTreeMap::new();
    let mut splits: BTreeMap<String, (Split, PathBuf)> = BTreeMap::new();
    for metrics in metrics_of(paths)? {
        let m = EvalSummary::read(&metrics)?;
        let info = run_info(&m, &metrics)?;
        check_report_input(&m, &info, &metrics)?;
        let order = match archs.iter().position(|a| *a == info.arch) {
            Some(i) => i,
            None => {
                archs.push(info.arch.clone());
                archs.len() - 1
            }
        };
        let pretrained = info.init.is_some();
        let row = cells
            .entry((pretrained, order, info.arch.clone()))
            .or_default();
        for (score, header) in columns_of(&m.task, &m.scores) {
            if score == "accuracy" {
                if let Some(v) = m.scores.majority {
                    majority.insert(header.clone(), 100.0 * v);
                }
            }
            let Some(v) = column_score(&m.scores, score) else {
                continue;
            };
            same_split(&mut splits, &header, &m, &metrics)?;
            let key = (info.arch.clone(), pretrained, header.clone(), info.seed);
            if let Some((other, other_ckpt)) =
                seen.insert(key, (metrics.clone(), m.checkpoint.clone()))
            {
                // Checkpoints along one run (a study's curve) are not two cells.
                let one_run = crate::evaluation::run_dir_of(&other_ckpt)
                    .is_some_and(|r| Some(r) == m.run_dir().as_deref());
                let what = match one_run {
                    true if other_ckpt == m.checkpoint => format!(
                        "evaluates the checkpoint {} as {} does: pass one evaluation of it",
                        m.checkpoint.display(),
                        other.display()
                    ),
                    true => format!(
                        "evaluates another checkpoint of the run {} evaluates ({} and {}): pass the evaluation of one checkpoint per run",
                        other.display(),
                        other_ckpt.display(),
                        m.checkpoint.display()
                    ),
                    false => format!(
                        "evaluates the same cell ({}, {}, seed {}, {header}) as {}: pass one evaluation per seed (a study's report picks the learning rate)",
                        info.arch,
                        if pretrained { "pre-trained" } else { "no pre-training" },
                        info.seed.map_or("unrecorded".into(), |s| s.to_string()),
                        other.display()
                    ),
                };
                return Err(TaskError::Io {
                    path: metrics.clone(),
                    message: what,
                });
            }
            row.entry(header).or_default().push(SeedScore {
                seed: info.seed,
                score: 100.0 * v,
            });
        }
    }
    let rows = rows_of(cells);
    let (gains, gain_sd, gain_ci95) = gains_of(&rows);
    let markdown = markdown(&rows, &gains, &gain_sd, &gain_ci95, &majority);
    Ok(Report {
        rows,
        gains,
        gain_sd,
        gain_ci95,
        majority,
        markdown,
    })
}

fn rows_of(cells: Cells) -> Vec<ReportRow> {
    cells
        .into_iter()
        .map(|((pretrained, _, arch), per_seed)| {
            let (mut scores, mut sd) = (BTreeMap::new(), BTreeMap::new());
            for (h, v) in &per_seed {
                let values: Vec<f64> = v.iter().map(|s| s.score).collect();
                let (m, d) = mean_sd(&values);
                scores.insert(h.clone(), m);
                if let Some(d) = d {
                    sd.insert(h.clone(), d);
                }
            }
            ReportRow {
                arch,
                pretrained,
                scores,
                sd,
                per_seed,
            }
        })
        .collect()
}

type ByArch = BTreeMap<String, BTreeMap<String, f64>>;

/// Per architecture and column: the mean, the deviation and the 95% interval's half width
/// of the per-seed gains.
fn gains_of(rows: &[ReportRow]) -> (ByArch, ByArch, ByArch) {
    let (mut gains, mut spread, mut ci) = (ByArch::new(), ByArch::new(), ByArch::new());
    for r in rows.iter().filter(|r| r.pretrained) {
        let Some(base) = rows.iter().find(|b| !b.pretrained && b.arch == r.arch) else {
            continue;
        };
        for (h, pre) in &r.per_seed {
            let Some(b) = base.per_seed.get(h) else {
                continue;
            };
            let mut paired = paired_gains(pre, b);
            if paired.is_empty() {
                // No seed in common: the difference of the means, without a spread.
                let mean =
                    |s: &[SeedScore]| mean_sd(&s.iter().map(|x| x.score).collect::<Vec<_>>()).0;
                paired.push(mean(pre) - mean(b));
            }
            let (m, sd) = mean_sd(&paired);
            let put = |map: &mut ByArch, v: f64| {
                map.entry(r.arch.clone()).or_default().insert(h.clone(), v);
            };
            put(&mut gains, m);
            if let Some(sd) = sd {
                put(&mut spread, sd);
                put(&mut ci, ci95_half_width(paired.len(), sd));
            }
        }
    }
    (gains, spread, ci)
}

/// A cell: `mean`, or `mean ± sd` over seeds.
fn cell(mean: f64, sd: Option<&f64>, signed: bool) -> String {
    let m = if signed {
        format!("{mean:+.2}")
    } else {
        format!("{mean:.2}")
    };
    match sd {
        Some(sd) => format!("{m} ± {sd:.2}"),
        None => m,
    }
}

fn markdown(
    rows: &[ReportRow],
    gains: &ByArch,
    gain_sd: &ByArch,
    gain_ci: &ByArch,
    majority: &BTreeMap<String, f64>,
) -> String {
    // The paper's columns in its order, then other tasks' by name.
    let mut used: Vec<&str> = COLUMNS
        .iter()
        .map(|c| c.2)
        .filter(|h| rows.iter().any(|r| r.scores.contains_key(*h)))
        .collect();
    let others: std::collections::BTreeSet<&str> = rows
        .iter()
        .flat_map(|r| r.scores.keys().map(String::as_str))
        .filter(|h| !COLUMNS.iter().any(|c| c.2 == *h))
        .collect();
    used.extend(others);
    let mut md = format!(
        "| model | {} |\n|---|{}\n",
        used.join(" | "),
        "---|".repeat(used.len())
    );
    if used.iter().any(|h| majority.contains_key(*h)) {
        let cells: Vec<String> = used
            .iter()
            .map(|h| majority.get(*h).map_or("—".into(), |v| format!("{v:.2}")))
            .collect();
        md += &format!("| majority class | {} |\n", cells.join(" | "));
    }
    for r in rows {
        let cells: Vec<String> = used
            .iter()
            .map(|h| {
                r.scores
                    .get(*h)
                    .map_or("—".into(), |v| cell(*v, r.sd.get(*h), false))
            })
            .collect();
        let kind = if r.pretrained {
            "pre-trained"
        } else {
            "no pre-training"
        };
        md += &format!("| {}, {kind} | {} |\n", r.arch, cells.join(" | "));
    }
    if gains.is_empty() {
        return md;
    }
    md += &format!(
        "\n| gain from pre-training | {} |\n|---|{}\n",
        used.join(" | "),
        "---|".repeat(used.len())
    );
    // In row order, as the table above.
    for r in rows.iter().filter(|r| r.pretrained) {
        let Some(g) = gains.get(&r.arch) else {
            continue;
        };
        let sds = gain_sd.get(&r.arch);
        let cells: Vec<String> = used
            .iter()
            .map(|h| {
                g.get(*h).map_or("—".into(), |v| {
                    let sd = sds.and_then(|s| s.get(*h));
                    let ns = if overlaps_zero(*v, sd.copied()) {
                        " (n.s.)"
                    } else {
                        ""
                    };
                    let ci = gain_ci
                        .get(&r.arch)
                        .and_then(|c| c.get(*h))
                        .map_or(String::new(), |w| {
                            format!(" [{:+.2}, {:+.2}]", v - w, v + w)
                        });
                    format!("{}{ci}{ns}", cell(*v, sd, true))
                })
            })
            .collect();
        md += &format!("| {} | {} |\n", r.arch, cells.join(" | "));
    }
    if gain_sd.values().any(|g| !g.is_empty()) {
        md += "\nmean ± sample standard deviation over seeds; gains are paired by seed (over the seeds both rows have; a gain without ± comes from one shared seed, or is the difference of the means where they share none), [a, b] their 95% confidence interval (Student's t, seeds - 1 degrees of freedom); n.s.: mean ± sd spans zero.\n";
    }
    md
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
