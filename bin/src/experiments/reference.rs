//! A study's reference run: transformers' T5 trained on one task's prepared examples with the
//! recipe and learning rate chosen for conveyor's transformer from scratch, with every seed
//! (scripts/reference_finetune.py, carried in the binary, run with $CONVEYOR_PYTHON), and the
//! report section that puts the two side by side: dev accuracy and time per step.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use conveyor_tasks::spread::mean_sd;

use super::progress::Progress;
use super::report::Best;
use super::study_file::Study;
use crate::torch_handoff::run_torch;

const SCRIPT: &str = include_str!("../../../scripts/reference_finetune.py");

/// The runs of conveyor's cell the reference repeats: the transformer from scratch on `task`
/// at its chosen rate, one per seed.
fn cell<'a>(best: &'a [Best], task: &str) -> Vec<&'a Best> {
    best.iter()
        .filter(|b| b.task == task && b.arch == "transformer" && !b.pretrained)
        .collect()
}

/// Runs the reference unless OUT/reference/TASK.json exists; that file.
pub fn run(
    st: &Study,
    out: &Path,
    best: &[Best],
    progress: &mut Progress,
) -> anyhow::Result<Option<PathBuf>> {
    let Some(r) = &st.reference else {
        return Ok(None);
    };
    let task = st
        .tasks
        .iter()
        .find(|t| t.name == r.task)
        .context("[reference] task")?;
    let runs = cell(best, &r.task);
    let Some(first) = runs.first() else {
        // Every run of the cell diverged (the report lists them): nothing to compare with.
        progress.skip(&format!(
            "reference on {}: conveyor's transformer from scratch has no finished run",
            r.task
        ));
        return Ok(None);
    };
    let dir = out.join("reference");
    let json = dir.join(format!("{}.json", r.task));
    let ran = !json.exists();
    if ran {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // Only the model config is used: conveyor's mapping of it to transformers' T5. The
        // export writes through a temporary sibling, so the folder is whole or absent.
        let hf = dir.join("hf-config");
        if !hf.join("config.json").exists() {
            let ckpt = first
                .eval
                .parent()
                .context("an evaluation folder's checkpoint")?;
            run_torch(&[
                "model".as_ref(),
                "export-hf".as_ref(),
                ckpt.as_os_str(),
                "--out".as_ref(),
                hf.as_os_str(),
            ])?;
        }
        let script = dir.join("reference_finetune.py");
        std::fs::write(&script, SCRIPT)?;
        let tasks = out.join("tasks").join(&r.task);
        let seeds: Vec<String> = runs.iter().map(|b| b.seed.to_string()).collect();
        let partial = dir.join(format!("{}.json.partial", r.task));
        let python = std::env::var("CONVEYOR_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut cmd = Command::new(&python);
        cmd.arg(&script)
            .arg("--train")
            .arg(tasks.join("train"))
            .arg("--dev")
            .arg(tasks.join("dev"))
            .arg("--hf-config")
            .arg(hf.join("config.json"))
            .args(["--lr", &first.lr.to_string()])
            .args(["--steps", &st.steps(task).to_string()])
            .args(["--batch-size", &st.finetune.batch_size.to_string()])
            .args(["--seeds", &seeds.join(",")])
            .arg("--out")
            .arg(&partial);
        if let Some(n) = task.dev_limit {
            cmd.args(["--dev-limit", &n.to_string()]);
        }
        println!(
            "[reference] transformers' T5 on {}, seeds {}",
            r.task,
            seeds.join(",")
        );
        let status = cmd
            .status()
            .with_context(|| format!("running {} with {python}", script.display()))?;
        anyhow::ensure!(
            status.success(),
            "the reference run failed ({status}) with {python}; its messages are above (it needs torch, transformers and numpy: point CONVEYOR_PYTHON at a Python that has them, such as the one scripts/setup.sh makes, ~/.cache/conveyor/torch-2.11.0/bin/python, and rerun: finished cells are read back)"
        );
        std::fs::rename(&partial, &json)?;
    }
    progress.cell(&format!("reference run of {} (transformers)", r.task), ran);
    Ok(Some(json))
}

/// The median seconds between consecutive steps of a run (its metrics.jsonl): robust to a
/// pause or a checkpoint write.
fn median_step_seconds(run: &Path) -> Option<f64> {
    let text =
        conveyor_pipeline::regular::read_to_string(&run.join("metrics.jsonl"), 1 << 30).ok()?;
    let elapsed: Vec<f64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["elapsed_s"].as_f64())
        .collect();
    let mut d: Vec<f64> = elapsed.windows(2).map(|w| w[1] - w[0]).collect();
    d.sort_by(f64::total_cmp);
    d.get(d.len() / 2).copied()
}

fn cell_line(name: &str, acc: &[f64], ms: &[f64]) -> String {
    let (m, sd) = mean_sd(acc);
    let per: Vec<String> = acc.iter().map(|a| format!("{a:.2}")).collect();
    let ms = mean_sd(ms).0;
    format!(
        "| {name} | {m:.2} ± {:.2} | {} | {ms:.1} |\n",
        sd.unwrap_or(0.0),
        per.join(", ")
    )
}

/// The report section: conveyor's cell and the reference, seed by seed.
pub fn section(json: &Path, best: &[Best]) -> anyhow::Result<String> {
    let text = conveyor_pipeline::regular::read_to_string(
        json,
        conveyor_pipeline::regular::MAX_JSON_BYTES,
    )
    .with_context(|| format!("reading {}", json.display()))?;
    let r: serde_json::Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a reference result (move it away to run the reference again)",
            json.display()
        )
    })?;
    let task = json.file_stem().unwrap_or_default().to_string_lossy();
    let runs = cell(best, &task);
    // The reference is scored at its last step: so is conveyor's run here.
    let conv: Vec<f64> = runs.iter().map(|b| 100.0 * b.last_accuracy()).collect();
    let conv_ms: Vec<f64> = runs
        .iter()
        .filter_map(|b| median_step_seconds(&b.run))
        .map(|s| 1000.0 * s)
        .collect();
    let mut refs = Vec::new();
    let mut ref_ms = Vec::new();
    for b in &runs {
        let run = &r["runs"][b.seed.to_string()];
        let accuracy = run["accuracy"].as_f64().with_context(|| {
            format!(
                "{}: no accuracy for seed {} (move it away to run the reference again)",
                json.display(),
                b.seed
            )
        })?;
        refs.push(100.0 * accuracy);
        ref_ms.push(1000.0 * run["median_step_s"].as_f64().unwrap_or(f64::NAN));
    }
    let diff = mean_sd(&conv).0 - mean_sd(&refs).0;
    Ok(format!(
        "\n## Reference: transformers' T5 on the same examples\n\n\
         The transformer from scratch on {task} (lr {}, {} steps, batch {}), trained by conveyor and by \
         transformers' T5ForConditionalGeneration (torch {}, {} threads) from the same example shards with \
         the same config and recipe, seeds {:?}; dev accuracy at the last step by greedy decoding; time per step is \
         the median over each run's steps (both padded to the prepared lengths), on this machine in the same study run.\n\n\
         | trainer | dev accuracy (mean ± sd) | per seed | ms per step |\n|---|---|---|---|\n{}{}\n\
         Difference of the means (conveyor − reference): {diff:+.2} points ({}).\n",
        r["lr"],
        r["steps"],
        r["batch_size"],
        r["torch"].as_str().unwrap_or("?"),
        r["threads"],
        runs.iter().map(|b| b.seed).collect::<Vec<_>>(),
        cell_line("conveyor (tch)", &conv, &conv_ms),
        cell_line("transformers (PyTorch)", &refs, &ref_ms),
        if diff.abs() <= 2.0 {
            "within the 2-point target"
        } else {
            "outside the 2-point target"
        },
    ))
}
