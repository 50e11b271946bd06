//! `conveyor task list|show|prepare|texts|score`: the text-to-text tasks, their formats,
//! labels and metrics, their datasets tokenized into example shards, their training inputs as
//! unlabeled text for pre-training, and their scores of predictions made anywhere.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use conveyor_pipeline::printable::one_line;
use conveyor_tasks::prepare::{prepare, PrepareConfig};
use conveyor_tasks::texts::{training_texts, write_jsonl};
use conveyor_tasks::{read_all, registry, resolve};

#[derive(Subcommand)]
pub enum TaskCommand {
    /// Every task with its description.
    List {
        /// Also list the task a TOML task file defines.
        #[arg(long)]
        task_file: Option<PathBuf>,
    },
    /// A task's formats, labels, metric, and (with --input) the first examples and counts.
    Show {
        task: String,
        /// A TOML task file defining the task.
        #[arg(long)]
        task_file: Option<PathBuf>,
        /// Files (or folders: their files in path order) of the task's dataset to read.
        #[arg(long)]
        input: Vec<PathBuf>,
        /// Examples to print.
        #[arg(short, default_value_t = 2)]
        n: usize,
    },
    /// Tokenize a task's files into an example shard + manifest for fine-tuning/eval.
    Prepare(PrepareArgs),
    /// The inputs of a task's training rows as JSON lines {"text": ...} for pre-training
    /// (`ingest` reads them): with --holdout, only the rows `prepare --holdout` keeps for
    /// train, so no dev row reaches the pre-training corpus.
    Texts(TextsArgs),
    /// Score predictions made anywhere (eval's predictions.jsonl, or another trainer's) with
    /// the task's metric: JSON lines with "prediction", "target" and optional "category" and "answers" (a list: other acceptable answers, scored by squad).
    Score {
        task: String,
        /// A TOML task file defining the task.
        #[arg(long)]
        task_file: Option<PathBuf>,
        /// The predictions file.
        #[arg(long)]
        predictions: PathBuf,
        /// Print the scores as JSON (metrics.json's "scores").
        #[arg(long)]
        json: bool,
    },
}

/// A task and its dataset files: what `prepare` and `texts` read.
#[derive(Args)]
pub struct TaskFiles {
    task: String,
    /// A TOML task file defining the task.
    #[arg(long)]
    task_file: Option<PathBuf>,
    /// The task's dataset files (or folders: their files in path order), or their URLs
    /// (downloaded into a local cache first); --input repeated for several. A held-out split
    /// is drawn by row position in this order.
    #[arg(long, required = true)]
    input: Vec<PathBuf>,
}

impl TaskFiles {
    /// The task, and local copies of its inputs.
    fn open(&self) -> anyhow::Result<(Box<dyn conveyor_tasks::Task>, Vec<PathBuf>)> {
        let t = resolve(&self.task, self.task_file.as_deref())?;
        let inputs = self
            .input
            .iter()
            .map(|p| conveyor_pipeline::remote::sync::local_input(p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut files = Vec::new();
        for p in inputs {
            files.extend(folder_files(&p)?);
        }
        Ok((t, files))
    }
}

/// A folder's files in path order, its subfolders' included (hidden ones left out, as a URL
/// prefix downloads nested keys into subfolders), or the path itself when it is not a folder
/// (a folder was opened as a file: "Is a directory").
fn folder_files(p: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(dir: &std::path::Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e.with_context(|| format!("reading {}", dir.display()))?;
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let kind = e
                .file_type()
                .with_context(|| format!("{}", e.path().display()))?;
            if kind.is_dir() {
                walk(&e.path(), files)?;
            } else if e.path().is_file() {
                files.push(e.path());
            }
        }
        Ok(())
    }
    if !p.is_dir() {
        return Ok(vec![p.to_path_buf()]);
    }
    let mut files = Vec::new();
    walk(p, &mut files)?;
    files.sort();
    anyhow::ensure!(!files.is_empty(), "{}: a folder without files", p.display());
    Ok(files)
}

/// A `--holdout` value: a fraction strictly between 0 and 1.
fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f < 1.0 => Ok(f),
        _ => Err(format!(
            "{s:?} is not a fraction between 0 and 1 (0.1 holds out a tenth of the rows)"
        )),
    }
}

#[derive(Args)]
pub struct TextsArgs {
    #[command(flatten)]
    files: TaskFiles,
    /// The FRACTION `task prepare --holdout` holds out for dev; those rows are left out.
    #[arg(long, value_parser = fraction)]
    holdout: Option<f64>,
    /// The JSON lines file to write (refused if it exists, unless --overwrite).
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    strict: bool,
    #[arg(long)]
    overwrite: bool,
}

#[derive(Args)]
pub struct PrepareArgs {
    #[command(flatten)]
    files: TaskFiles,
    /// SentencePiece model (the pre-training vocabulary).
    #[arg(long)]
    vocab: PathBuf,
    /// Output folder: the example shard and its manifest.json (or a URL).
    #[arg(long)]
    out: PathBuf,
    /// The split name the shard is written under (train, dev, test, ...).
    #[arg(long, default_value = "train")]
    split: String,
    /// Input length (EOS included); default: the 90th percentile of the task's (a generation
    /// task's: the longest).
    #[arg(long)]
    inputs_length: Option<usize>,
    /// Target length (EOS included); default: the longest target (a target cut short can
    /// never be predicted right).
    #[arg(long)]
    targets_length: Option<usize>,
    /// Sentinel ids the vocabulary gets (T5's 100), as in pre-training.
    #[arg(long, default_value_t = 100)]
    extra_ids: u32,
    /// Keep one side of a seeded split: with --split dev the held-out FRACTION of the
    /// rows (exactly, rounded), with --split train the rest (for tasks shipped without a
    /// dev file).
    #[arg(long, value_parser = fraction)]
    holdout: Option<f64>,
    /// Stop at the first bad row instead of skipping and counting it.
    #[arg(long)]
    strict: bool,
    /// Replace what an earlier, different job left in --out (only files its manifest lists;
    /// see docs/safety.md).
    #[arg(long)]
    overwrite: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// No notes on stderr (a split taken from the environment is still said).
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    workers: crate::job_flags::WorkerArgs,
}

pub fn run(c: TaskCommand) -> anyhow::Result<i32> {
    match c {
        TaskCommand::List { task_file } => list(task_file)?,
        TaskCommand::Show {
            task,
            task_file,
            input,
            n,
        } => show(&task, task_file, &input, n)?,
        TaskCommand::Prepare(a) => prepare_task(a)?,
        TaskCommand::Texts(a) => texts(a)?,
        TaskCommand::Score {
            task,
            task_file,
            predictions,
            json,
        } => score(&task, task_file, &predictions, json)?,
    }
    Ok(0)
}

/// `task list`.
fn list(task_file: Option<PathBuf>) -> anyhow::Result<()> {
    let mut all = registry();
    if let Some(f) = task_file {
        all.push(conveyor_tasks::spec::load(&f)?);
    }
    for t in all {
        let i = t.info();
        println!("{:16} {}", one_line(&i.name), one_line(&i.description));
    }
    Ok(())
}

/// `task show`: the task, and with inputs its first `n` examples and what was skipped.
fn show(task: &str, task_file: Option<PathBuf>, input: &[PathBuf], n: usize) -> anyhow::Result<()> {
    let t = resolve(task, task_file.as_deref())?;
    let i = t.info();
    println!("task:    {}", one_line(&i.name));
    println!("about:   {}", one_line(&i.description));
    println!("formats: {}", one_line(&i.formats));
    println!("metric:  {}", i.metric);
    match t.labels() {
        Some(l) => println!("labels:  {}", one_line(&l.join(", "))),
        None => println!("labels:  (generation: the target text itself)"),
    }
    if input.is_empty() {
        return Ok(());
    }
    let mut files = Vec::new();
    for p in input {
        files.extend(folder_files(p)?);
    }
    let d = read_all(t.as_ref(), &files, false)?;
    println!(
        "read {} rows: {} examples, {} skipped{}",
        d.read,
        d.examples.len(),
        d.skipped.len(),
        left_out(&d.excluded)
    );
    for s in d.skipped.iter().take(5) {
        println!(
            "  skipped {}:{}: {}",
            one_line(&s.file),
            s.line,
            one_line(&s.reason)
        );
    }
    for e in d.examples.iter().take(n) {
        println!("--- {}:{}", one_line(&e.file), e.line);
        println!("inputs:  {}", one_line(&e.inputs));
        println!("targets: {}", one_line(&e.targets));
    }
    Ok(())
}

/// `task score`: the task's scores of a predictions file, as `eval` computes them.
fn score(task: &str, task_file: Option<PathBuf>, file: &Path, json: bool) -> anyhow::Result<()> {
    let t = resolve(task, task_file.as_deref())?;
    let squad = t.info().metric == conveyor_tasks::Metric::Squad;
    let p = conveyor_tasks::score::read_predictions(file, squad)?;
    let s = conveyor_tasks::score::score(t.as_ref(), &p);
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("{} examples scored with {}", s.examples, t.info().metric);
    println!("accuracy: {:.4}", s.accuracy);
    if let Some(f1) = s.f1 {
        println!("f1:       {f1:.4}");
    }
    if t.labels().is_some() {
        println!("invalid:  {} (outputs that are no label)", s.invalid);
    }
    if let Some(m) = s.majority {
        println!("majority: {m:.4} (always the most frequent target)");
    }
    for (c, em) in &s.per_category {
        println!("  {}: {em:.4}", one_line(c));
    }
    Ok(())
}

/// ", N REASON left out" for each kind of row a task leaves out.
fn left_out<V: std::fmt::Display>(excluded: &std::collections::BTreeMap<String, V>) -> String {
    excluded
        .iter()
        .map(|(k, v)| format!(", {v} {k} left out"))
        .collect()
}

/// `task prepare`: local copies of remote inputs, the prepared shard in OUT (or a worker's
/// part of it), the summary.
fn prepare_task(a: PrepareArgs) -> anyhow::Result<()> {
    // Which side of the split a name means is known for these two only: `--split validation
    // --holdout` kept the training side, so the "dev" set was training data.
    anyhow::ensure!(
        a.holdout.is_none() || ["train", "dev"].contains(&a.split.as_str()),
        "--holdout with --split {:?}: say --split dev for the held-out rows or --split train for the rest",
        a.split
    );
    let quiet = a.json || a.quiet;
    let worker = a.workers.resolve(quiet)?;
    let target = crate::remote::Out::new(&a.out, worker, a.overwrite, quiet)?;
    let (t, inputs) = a.files.open()?;
    let cfg = PrepareConfig {
        inputs,
        vocab: a.vocab,
        out: target.dir.clone(),
        holdout: a
            .holdout
            .map(|f| conveyor_tasks::prepare::Holdout::of(f, a.split == "dev")),
        split: a.split,
        inputs_length: a.inputs_length,
        targets_length: a.targets_length,
        extra_ids: a.extra_ids,
        strict: a.strict,
        overwrite: a.overwrite,
        worker,
    };
    let mut s = prepare(t.as_ref(), &cfg)?;
    s.out = target.shown();
    target.finish(a.overwrite && worker.is_none())?;
    if a.json {
        println!("{}", crate::job_flags::json_summary(&s, &a.out, worker)?);
    } else {
        println!(
            "{}: {} rows read, {} examples written, {} skipped{} -> {}",
            s.task,
            s.read,
            s.written,
            s.skipped,
            left_out(&s.excluded),
            s.out.display()
        );
        println!(
            "lengths: inputs {} ({} truncated), targets {} ({} truncated)",
            s.inputs_length, s.truncated_inputs, s.targets_length, s.truncated_targets
        );
    }
    if s.unreachable_targets > 0 {
        eprintln!(
            "warning: {} of {} examples have a target this vocabulary cannot give back (first: {}): they can never be predicted right; a vocabulary with their characters (a larger or the T5 one) avoids it",
            s.unreachable_targets,
            s.written,
            conveyor_pipeline::printable::one_line(s.unreachable_example.as_deref().unwrap_or(""))
        );
    }
    crate::job_flags::merge_hint(&a.out, worker, a.json);
    Ok(())
}

/// `task texts`: the training side's inputs, written as JSON lines.
fn texts(a: TextsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.overwrite || !a.out.exists(),
        "{} exists; give --overwrite to replace it",
        a.out.display()
    );
    let (t, inputs) = a.files.open()?;
    let holdout = a
        .holdout
        .map(|f| conveyor_tasks::prepare::Holdout::of(f, false));
    let texts = training_texts(t.as_ref(), &inputs, a.strict, holdout)?;
    write_jsonl(&texts, &a.out)?;
    println!(
        "{}: {} training texts{} -> {}",
        t.name(),
        texts.len(),
        a.holdout
            .map(|f| format!(" (the {f} held out for dev left out)"))
            .unwrap_or_default(),
        a.out.display()
    );
    Ok(())
}
