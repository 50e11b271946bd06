//! `conveyor eval`: decodes a prepared task's examples with a checkpoint
//! (`conveyor_model::predict`, which knows no tasks) and scores them with the task's metric
//! (conveyor-tasks). A generation that is not one of a classification task's labels counts as
//! wrong. Writes `predictions.jsonl` (one line per example) and `metrics.json`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use conveyor_model::predict::{predict, PredictConfig, Prediction};
use conveyor_model::select_device;
use conveyor_pipeline::remote::sync::local_dataset;
use conveyor_pipeline::run_info::RunInfo;
use conveyor_pipeline::run_lock::{RunKind, RunLock};
use conveyor_tasks::EvalSummary;

use crate::train::DeviceArg;

#[derive(Args)]
pub struct EvalArgs {
    /// The task (checked against the data; default: the one the data was prepared for).
    #[arg(long)]
    task: Option<String>,
    /// A checkpoint folder (RUN/checkpoints/step-N).
    #[arg(long)]
    checkpoint: PathBuf,
    /// A directory written by `conveyor task prepare` (or its URL).
    #[arg(long)]
    data: PathBuf,
    /// Where predictions.jsonl and metrics.json go (default: CHECKPOINT/eval-TASK): a new or
    /// empty folder, or an earlier evaluation's (which is replaced).
    #[arg(long)]
    out: Option<PathBuf>,
    /// SentencePiece model (default: the one the data was prepared with).
    #[arg(long)]
    vocab: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Evaluate N examples only: the first rows of each shard (each input file), in
    /// proportion to its size.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
    /// The TOML file of a task that is not built in.
    #[arg(long)]
    task_file: Option<PathBuf>,
}

pub fn run(mut a: EvalArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        a.limit != Some(0),
        "--limit 0 evaluates nothing: give 1 or more, or leave it out for every example"
    );
    a.data = local_dataset(&a.data)?.0;
    let device = select_device(a.device.into())?;
    let (task_name, definition) = prepared_task(&a)?;
    let task = conveyor_tasks::resolve(&task_name, a.task_file.as_deref())?;
    same_definition(&a, task.as_ref(), definition.as_deref())?;
    // A mistyped checkpoint is named before anything is made (inside it, by default).
    conveyor_model::checkpoint::read_config(&a.checkpoint)?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| a.checkpoint.join(format!("eval-{task_name}")));
    // The output is checked and created first, so that a bad --out fails before the decoding;
    // then locked (a second eval on it is refused), and only then are a killed evaluation's
    // temporaries removed (not a running one's).
    anyhow::ensure!(
        !out.exists() || out.is_dir(),
        "--out {} is a file: eval writes a folder (metrics.json, predictions.jsonl); give a folder's path",
        out.display()
    );
    refuse_foreign_out(&out, false)?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let _lock = RunLock::take(&out, RunKind::Eval)?;
    if !_lock.held() {
        eprintln!(
            "note: {} is on a file system without file locks: nothing stops a second evaluation into it",
            out.display()
        );
    }
    refuse_foreign_out(&out, true)?;
    // Before the decoding: a run.json it cannot read fails the evaluation at once.
    let run = run_of(&a.checkpoint)?;
    let pred_path = out.join(PREDICTIONS);
    let (pred_tmp, file) = conveyor_pipeline::manifest::create_temporary(&pred_path)
        .with_context(|| format!("creating a temporary file for {}", pred_path.display()))?;
    let predictions = predict(&PredictConfig {
        checkpoint: a.checkpoint.clone(),
        data: a.data.clone(),
        vocab: a.vocab.clone(),
        batch_size: a.batch_size,
        limit: a.limit,
        device,
    })
    .inspect_err(|_| {
        let _ = std::fs::remove_file(&pred_tmp);
    })?;
    write_predictions(file, &predictions, &task.info().metric)?;
    // Scored as `task score` scores the file just written.
    let column = |f: fn(&Prediction) -> String| predictions.iter().map(f).collect::<Vec<_>>();
    let scores = conveyor_tasks::score::score(
        task.as_ref(),
        &conveyor_tasks::score::Predictions {
            predictions: column(|p| p.prediction.clone()),
            targets: column(|p| p.target.clone()),
            answers: predictions.iter().map(|p| p.answers.clone()).collect(),
            categories: predictions.iter().map(|p| p.category.clone()).collect(),
        },
    );
    let summary = EvalSummary {
        task: task_name,
        run,
        checkpoint: a.checkpoint,
        data: a.data,
        scores,
        predictions: pred_path.clone(),
    };
    // metrics.json (written whole) first: it marks the folder as an evaluation's.
    summary.write(&out)?;
    std::fs::rename(&pred_tmp, &pred_path)
        .with_context(|| format!("renaming {} to {}", pred_tmp.display(), pred_path.display()))?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(0)
}

const PREDICTIONS: &str = "predictions.jsonl";

/// The run.json of the run a checkpoint (RUN/checkpoints/step-N) belongs to, if it is in
/// one; a run.json that is there but unreadable is an error naming it.
fn run_of(checkpoint: &std::path::Path) -> anyhow::Result<Option<RunInfo>> {
    let Some(run) = conveyor_tasks::evaluation::run_dir_of(checkpoint) else {
        return Ok(None);
    };
    if !run.join(RunInfo::FILE).exists() {
        return Ok(None);
    }
    Ok(Some(RunInfo::read(run)?))
}

/// An `--out` that holds anything is refused unless it is an evaluation of conveyor's (a
/// metrics.json of `conveyor eval`, its predictions.jsonl, its lock, the temporary files of
/// a killed evaluation): eval replaces those files, and may do that only to its own. With
/// `remove` (the lock held), the temporaries are removed.
fn refuse_foreign_out(out: &std::path::Path, remove: bool) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(());
    };
    let metrics = out.join(EvalSummary::FILE);
    let ours = EvalSummary::read(&metrics).is_ok();
    let mut leftovers = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let temporary = [PREDICTIONS, EvalSummary::FILE]
            .iter()
            .any(|of| conveyor_pipeline::manifest::is_temporary_of(&name, of));
        let finished = ours && [EvalSummary::FILE, PREDICTIONS].contains(&name.as_str());
        let lock = name == RunKind::Eval.lock_name();
        if !(entry.file_type().is_ok_and(|t| t.is_file()) && (temporary || finished || lock)) {
            anyhow::bail!(
                "{} holds {name}, and is not an evaluation conveyor wrote (a metrics.json of `conveyor eval` beside its predictions.jsonl); eval replaces only its own files: choose an empty or new --out",
                out.display()
            );
        }
        if temporary && remove {
            leftovers.push(entry.path());
        }
    }
    // A killed or failed evaluation's temporaries (full-size predictions, by their names).
    for p in leftovers {
        std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

/// The task the data was prepared for, checked against --task, and the sha256 of the task
/// file it was prepared with (if one was, and the data records it).
fn prepared_task(a: &EvalArgs) -> anyhow::Result<(String, Option<String>)> {
    let m = conveyor_pipeline::examples::ExamplesManifest::read(&a.data)?;
    let prepared = m.settings.objective.task().with_context(|| {
        format!(
            "{} holds {} examples, not a task's: prepare it with `conveyor task prepare`",
            a.data.display(),
            m.settings.objective
        )
    })?;
    if let Some(t) = &a.task {
        anyhow::ensure!(
            t == prepared,
            "{} was prepared for \"task:{prepared}\", not {t}",
            a.data.display()
        );
    }
    let definition = m.task.and_then(|t| t.definition_sha256);
    anyhow::ensure!(
        definition.is_none() || a.task_file.is_some(),
        "{} was prepared for {prepared}, a task defined in a task file: give that file with --task-file",
        a.data.display()
    );
    Ok((prepared.to_string(), definition))
}

/// Scores come from the labels and metric of the task file the data was prepared with, not
/// from an edited one (whose labels made every prediction "invalid" beside an accuracy of 1).
fn same_definition(
    a: &EvalArgs,
    task: &dyn conveyor_tasks::Task,
    prepared: Option<&str>,
) -> anyhow::Result<()> {
    let (Some(prepared), Some(file)) = (prepared, &a.task_file) else {
        return Ok(());
    };
    anyhow::ensure!(
        conveyor_tasks::definition_sha256(task).as_deref() == Some(prepared),
        "{}: its settings are not those {} was prepared with (the file was edited since, or is another one): evaluate with the task file the data was prepared with, or prepare the data again with this one",
        file.display(),
        a.data.display()
    );
    Ok(())
}

/// `OUT/predictions.jsonl`: one line per example with its input, target, prediction,
/// whether they match (for `squad`, its exact match: normalised, against any answer), and
/// its category.
fn write_predictions(
    file: std::fs::File,
    predictions: &[Prediction],
    metric: &conveyor_tasks::Metric,
) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(file);
    for p in predictions {
        let correct = match metric {
            conveyor_tasks::Metric::Squad => {
                let mut refs = vec![p.target.as_str()];
                refs.extend(p.answers.iter().map(String::as_str));
                conveyor_tasks::squad::best(&p.prediction, &refs).0
            }
            _ => p.prediction == p.target.trim(),
        };
        let mut line = serde_json::json!({
            "inputs": p.inputs, "target": p.target, "prediction": p.prediction,
            "correct": correct, "category": p.category,
        });
        // Only for tasks that have them: `task score` scores these as eval did.
        if !p.answers.is_empty() {
            line["answers"] = serde_json::json!(p.answers);
        }
        writeln!(f, "{line}")?;
    }
    f.flush()?;
    Ok(())
}
