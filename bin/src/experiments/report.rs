//! Reports: `conveyor report` (evaluations in the paper's Table 2 layout), the study's report
//! (that table over the best learning rate of each cell, the learning rates chosen, the speed
//! benchmark) and the loss curves of a study's runs as one PNG.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use conveyor_tasks::report::{report, Report};

use super::study_file::Study;

/// The plotting script, carried inside the binary so that a study run from any folder can
/// draw its curves.
const PLOT_LOSSES: &str = include_str!("../../../scripts/plot_losses.py");

/// `conveyor report EVALS [--out DIR]`.
pub fn run(evals: &[PathBuf], out: Option<PathBuf>) -> anyhow::Result<i32> {
    let r = report(evals)?;
    print!("{}", r.markdown);
    if let Some(dir) = out {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        write_report(&dir, &r.markdown, &r)?;
    }
    Ok(0)
}

/// The best learning rate of one (task, architecture, pre-training) cell.
pub struct Best {
    pub task: String,
    pub arch: String,
    pub pretrained: bool,
    pub lr: f64,
    /// Dev accuracy (a fraction).
    pub accuracy: f64,
    /// Its evaluation folder.
    pub eval: PathBuf,
}

/// Writes OUT/report.md (returned), OUT/report.json and OUT/loss-curves.png for a study.
pub fn write_study_report(
    st: &Study,
    out: &Path,
    best: &[Best],
    bench: Option<&Path>,
) -> anyhow::Result<String> {
    let mut md = format!("# Study {}\n\n", st.name);
    let mut table = None;
    if !best.is_empty() {
        let evals: Vec<PathBuf> = best.iter().map(|b| b.eval.clone()).collect();
        let r = report(&evals)?;
        md += "## Results (best learning rate per cell, dev split, %)\n\n";
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
    if let Some(dir) = bench {
        md += "\n## Training speed and memory per input length\n\n";
        md += &std::fs::read_to_string(dir.join("bench-train.md")).unwrap_or_default();
        md += "\n![speed](bench/speed.png) ![memory](bench/memory.png)\n";
    }
    if plot_losses(
        &out.join("loss-curves.png"),
        &run_folders(&out.join("runs")),
    ) {
        md += "\n![training loss](loss-curves.png)\n";
    } else {
        println!(
            "(no loss-curve PNG: plotting needs Python with matplotlib; `make demo` sets it up)"
        );
    }
    match &table {
        Some(r) => write_report(out, &md, r)?,
        None => std::fs::write(out.join("report.md"), &md)?,
    }
    Ok(md)
}

/// DIR/report.md and DIR/report.json.
fn write_report(dir: &Path, markdown: &str, r: &Report) -> anyhow::Result<()> {
    std::fs::write(dir.join("report.md"), markdown)
        .with_context(|| format!("writing {}", dir.join("report.md").display()))?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(r)? + "\n",
    )?;
    Ok(())
}

/// The run folders (those with a metrics.jsonl) under `runs`, in name order.
fn run_folders(runs: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(runs)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.join("metrics.jsonl").is_file());
    v.sort();
    v
}

/// Draws the training loss of `runs` into `png` with Python and matplotlib
/// ($CONVEYOR_PYTHON, else python3); false when they are missing or it fails.
fn plot_losses(png: &Path, runs: &[PathBuf]) -> bool {
    if runs.is_empty() {
        return false;
    }
    let python = std::env::var("CONVEYOR_PYTHON").unwrap_or_else(|_| "python3".into());
    Command::new(&python)
        .arg("-c")
        .arg(PLOT_LOSSES)
        .arg(png)
        .args(runs)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
