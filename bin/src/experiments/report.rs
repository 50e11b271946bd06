//! Reports: `conveyor report` (evaluations in the paper's Table 2 layout), the study's report
//! (that table over the best learning rate of each cell, the learning rates chosen, the speed
//! benchmark) and the loss curves of a study's runs as one PNG.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use conveyor_tasks::report::{report, Report};

use super::study_file::Study;

/// The plotting script, carried inside the binary so that a study run from any folder can
/// draw its figures.
const PLOT_STUDY: &str = include_str!("../../../scripts/plot_study.py");

/// `conveyor report EVALS [--out DIR]`.
pub fn run(evals: &[PathBuf], out: Option<PathBuf>) -> anyhow::Result<i32> {
    let r = report(evals)?;
    // Said, not an empty table and success (COGS evaluated on files of no category).
    anyhow::ensure!(
        r.rows.iter().any(|row| !row.scores.is_empty()),
        "none of the evaluations given has a score the table shows"
    );
    print!("{}", r.markdown);
    if let Some(dir) = out {
        refuse_foreign_report(&dir)?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        write_report(&dir, &r.markdown, &r)?;
    }
    Ok(0)
}

/// `report --out DIR` writes DIR/report.md and DIR/report.json over conveyor's own only:
/// a report.json that is not a report's (rows, gains, markdown), or a report.md with no
/// report.json of conveyor's beside it, is refused before anything is written.
fn refuse_foreign_report(dir: &Path) -> anyhow::Result<()> {
    let (json, md) = (dir.join("report.json"), dir.join("report.md"));
    let ours = std::fs::read(&json)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| {
            v["rows"].is_array() && v["gains"].is_object() && v["markdown"].is_string()
        });
    let stranger = [&json, &md].into_iter().find(|p| p.exists() && !ours);
    if let Some(p) = stranger {
        anyhow::bail!(
            "{} exists and is not a report conveyor wrote (no report.json of one beside it); --out writes report.md and report.json only over conveyor's own: choose another --out",
            p.display()
        );
    }
    Ok(())
}

/// The best learning rate of one (task, architecture, pre-training) cell.
pub struct Best {
    pub task: String,
    pub arch: String,
    pub pretrained: bool,
    pub lr: f64,
    pub seed: u64,
    /// Dev accuracy (a fraction).
    pub accuracy: f64,
    /// Its run folder and the final checkpoint's evaluation folder.
    pub run: PathBuf,
    pub eval: PathBuf,
    /// (step, dev accuracy) along the run, when the study evaluates it there.
    pub curve: Vec<(u64, f64)>,
    /// Set when the run's loss stopped being finite: it has no score.
    pub diverged: Option<conveyor_pipeline::run_info::Diverged>,
}

impl Best {
    /// The run's last checkpoint's dev score (its score unless the study scores the best).
    pub fn last_accuracy(&self) -> f64 {
        self.curve.last().map_or(self.accuracy, |c| c.1)
    }
}

/// A study's fine-tuning runs at the chosen rates: those that finished (each cell's seeds
/// one after another) and those that diverged.
pub struct Runs<'a> {
    pub best: &'a [Best],
    pub diverged: &'a [Best],
}

/// Writes OUT/report.md (returned), OUT/report.json and the figures for a study.
pub fn write_study_report(
    st: &Study,
    out: &Path,
    runs: &Runs,
    bench: Option<&Path>,
    reference: Option<&Path>,
) -> anyhow::Result<String> {
    let best = runs.best;
    let mut md = format!("# Study {}\n\n", st.name);
    let mut table = None;
    if !best.is_empty() {
        let evals: Vec<PathBuf> = best.iter().map(|b| b.eval.clone()).collect();
        let r = report(&evals)?;
        md += "## Results (best learning rate per cell, dev split, %)\n\n";
        if st.finetune.score == super::study_file::Score::Best {
            md += &format!(
                "Each run scores its best checkpoint among those at every 1/{} of its steps (the paper's best validation score); the scores per checkpoint are in figures.json.\n\n",
                st.finetune.curve.unwrap_or(1)
            );
        }
        md += &r.markdown;
        md += "\n## Best learning rate\n\n| task | model | learning rate | dev score (mean over seeds) | seeds |\n|---|---|---|---|---|\n";
        // One line per cell: its seeds follow each other in `best`.
        let mut i = 0;
        while i < best.len() {
            let b = &best[i];
            let same =
                |o: &Best| (&o.task, &o.arch, o.pretrained) == (&b.task, &b.arch, b.pretrained);
            let n = best[i..].iter().take_while(|o| same(o)).count();
            let mean = best[i..i + n].iter().map(|o| o.accuracy).sum::<f64>() / n as f64;
            let kind = if b.pretrained {
                "pre-trained"
            } else {
                "no pre-training"
            };
            md += &format!(
                "| {} | {}, {kind} | {} | {:.2} | {n} |\n",
                b.task,
                b.arch,
                b.lr,
                100.0 * mean
            );
            i += n;
        }
        table = Some(r);
    }
    md += &diverged_section(runs.diverged);
    if let Some(dir) = bench {
        md += "\n## Training speed and memory per input length\n\n";
        let table = dir.join("bench-train.md");
        let cap = conveyor_pipeline::regular::MAX_JSON_BYTES;
        md += &conveyor_pipeline::regular::read_to_string(&table, cap).unwrap_or_default();
        md += "\n![speed](bench/speed.png) ![memory](bench/memory.png)\n";
    }
    if let Some(json) = reference {
        md += &super::reference::section(json, best)?;
    }
    let figures = out.join("figures.json");
    std::fs::write(
        &figures,
        serde_json::to_string_pretty(&figures_data(st, out, best))?,
    )?;
    if plot(&figures, out) {
        md += "\n![training loss](loss-curves.png)\n";
        if out.join("accuracy-curves.png").exists() {
            md += "\n![dev accuracy against fine-tuning steps](accuracy-curves.png)\n";
        }
    } else {
        println!("(no figures: plotting needs Python with matplotlib; `make demo` sets it up)");
    }
    match &table {
        Some(r) => write_report(out, &md, r)?,
        None => std::fs::write(out.join("report.md"), &md)?,
    }
    Ok(md)
}

/// The runs left out of the means because their loss stopped being finite (a rate too high
/// for that cell); empty when there are none.
fn diverged_section(diverged: &[Best]) -> String {
    if diverged.is_empty() {
        return String::new();
    }
    let mut md = "\n## Runs that diverged\n\nLeft out of the tables above; a rate with a diverged search run is never chosen. To train one again with the same study (on another device, say), move its run folder away and rerun it; another rate grid is another study: give it another --out.\n\n| task | model | learning rate | seed | step | what went non-finite |\n|---|---|---|---|---|---|\n".to_string();
    for b in diverged {
        let d = b.diverged.as_ref().expect("a diverged run");
        let kind = if b.pretrained {
            "pre-trained"
        } else {
            "no pre-training"
        };
        md += &format!(
            "| {} | {}, {kind} | {} | {} | {} | {} |\n",
            b.task,
            b.arch,
            b.lr,
            b.seed,
            d.step,
            d.describe()
        );
    }
    md
}

/// DIR/report.json, then DIR/report.md (report.json, written whole first, is what marks
/// the folder's report as conveyor's).
fn write_report(dir: &Path, markdown: &str, r: &Report) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(r)? + "\n";
    conveyor_pipeline::manifest::write_atomic(&dir.join("report.json"), json.as_bytes())?;
    std::fs::write(dir.join("report.md"), markdown)
        .with_context(|| format!("writing {}", dir.join("report.md").display()))?;
    Ok(())
}

/// What the figures show: the pre-training runs per architecture and, per task, each cell's
/// runs at its chosen rate with their accuracy along the way. Run folders are relative to
/// `out`, where figures.json is written, so the file can be plotted from anywhere.
fn figures_data(st: &Study, out: &Path, best: &[Best]) -> serde_json::Value {
    use serde_json::json;
    let pretrain: Vec<_> = st
        .pretrain
        .archs
        .iter()
        .map(|a| {
            let runs: Vec<PathBuf> = st
                .pretrain_seeds()
                .iter()
                .map(|s| PathBuf::from(format!("runs/pretrain-{a}-s{s}")))
                .collect();
            json!({ "label": a, "runs": runs })
        })
        .collect();
    let mut tasks = Vec::new();
    for t in &st.tasks {
        let mine: Vec<&Best> = best.iter().filter(|b| b.task == t.name).collect();
        let mut cells = Vec::new();
        for arch in &st.pretrain.archs {
            for pretrained in [false, true] {
                let runs: Vec<&&Best> = mine
                    .iter()
                    .filter(|b| &b.arch == arch && b.pretrained == pretrained)
                    .collect();
                let Some(first) = runs.first() else { continue };
                let curve: Vec<_> = (0..first.curve.len())
                    .map(|i| {
                        let accs: Vec<f64> = runs
                            .iter()
                            .filter_map(|b| b.curve.get(i).map(|c| c.1))
                            .collect();
                        json!([first.curve[i].0, accs])
                    })
                    .collect();
                let kind = if pretrained { "pre-trained" } else { "scratch" };
                cells.push(json!({
                    "label": format!("{arch}, {kind}"), "arch": arch, "pretrained": pretrained,
                    "runs": runs.iter().map(|b| b.run.strip_prefix(out).unwrap_or(&b.run)).collect::<Vec<_>>(),
                    "curve": curve,
                }));
            }
        }
        let majority = mine
            .first()
            .and_then(|b| {
                conveyor_tasks::EvalSummary::read(&b.eval.join(conveyor_tasks::EvalSummary::FILE))
                    .ok()
            })
            .and_then(|m| m.scores.majority);
        tasks.push(json!({ "task": t.name, "cells": cells, "majority": majority }));
    }
    json!({ "pretrain": pretrain, "tasks": tasks })
}

/// Draws the figures of `figures` (figures.json) into `out` with Python and matplotlib
/// ($CONVEYOR_PYTHON, else python3); false when they are missing or it fails.
fn plot(figures: &Path, out: &Path) -> bool {
    let python = std::env::var("CONVEYOR_PYTHON").unwrap_or_else(|_| "python3".into());
    Command::new(&python)
        .arg("-c")
        .arg(PLOT_STUDY)
        .arg(figures)
        .arg(out)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
