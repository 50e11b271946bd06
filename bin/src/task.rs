//! `conveyor task list|show`: the text-to-text tasks, their formats, labels and metrics.

use std::path::PathBuf;

use clap::Subcommand;
use conveyor_tasks::prepare::{prepare, PrepareConfig};
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
        /// Files (or folders) of the task's dataset to read.
        #[arg(long)]
        input: Vec<PathBuf>,
        /// Examples to print.
        #[arg(short, default_value_t = 2)]
        n: usize,
    },
    /// Tokenize a task's files into an example shard + manifest for fine-tuning/eval.
    Prepare {
        task: String,
        /// A TOML task file defining the task.
        #[arg(long)]
        task_file: Option<PathBuf>,
        /// The task's dataset files (or folders), or their URLs (downloaded into a local
        /// cache first).
        #[arg(long, required = true)]
        input: Vec<PathBuf>,
        /// SentencePiece model (the pre-training vocabulary).
        #[arg(long)]
        vocab: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "train")]
        split: String,
        /// Input length (EOS included); default: the 90th percentile of the task's.
        #[arg(long)]
        inputs_length: Option<usize>,
        /// Target length (EOS included); default: the 90th percentile of the task's.
        #[arg(long)]
        targets_length: Option<usize>,
        #[arg(long, default_value_t = 100)]
        extra_ids: u32,
        /// Keep one side of a seeded split: with --split dev the held-out FRACTION of the
        /// rows, otherwise the rest (for tasks shipped without a dev file).
        #[arg(long)]
        holdout: Option<f64>,
        /// Stop at the first bad row instead of skipping and counting it.
        #[arg(long)]
        strict: bool,
        #[arg(long)]
        overwrite: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        workers: crate::job_flags::WorkerArgs,
    },
}

pub fn run(c: TaskCommand) -> anyhow::Result<i32> {
    match c {
        TaskCommand::List { task_file } => {
            let mut all = registry();
            if let Some(f) = task_file {
                all.push(conveyor_tasks::spec::load(&f)?);
            }
            for t in all {
                let i = t.info();
                println!("{:16} {}", i.name, i.description);
            }
        }
        TaskCommand::Show {
            task,
            task_file,
            input,
            n,
        } => {
            let t = resolve(&task, task_file.as_deref())?;
            let i = t.info();
            println!("task:    {}", i.name);
            println!("about:   {}", i.description);
            println!("formats: {}", i.formats);
            println!("metric:  {:?}", i.metric);
            match t.labels() {
                Some(l) => println!("labels:  {}", l.join(", ")),
                None => println!("labels:  (generation: the target text itself)"),
            }
            if !input.is_empty() {
                let d = read_all(t.as_ref(), &input, false)?;
                println!(
                    "read {} rows: {} examples, {} skipped{}",
                    d.read,
                    d.examples.len(),
                    d.skipped.len(),
                    d.excluded
                        .iter()
                        .map(|(k, v)| format!(", {v} {k} left out"))
                        .collect::<String>()
                );
                for s in d.skipped.iter().take(5) {
                    println!("  skipped {}:{}: {}", s.file, s.line, s.reason);
                }
                for e in d.examples.iter().take(n) {
                    println!("--- {}:{}", e.file, e.line);
                    println!("inputs:  {}", e.inputs);
                    println!("targets: {}", e.targets);
                }
            }
        }
        TaskCommand::Prepare {
            task,
            task_file,
            input,
            vocab,
            out,
            split,
            inputs_length,
            targets_length,
            extra_ids,
            holdout,
            strict,
            overwrite,
            json,
            workers,
        } => {
            let keep_held_out = split == "dev";
            let worker = workers.resolve(json)?;
            let out_dir = out.clone();
            let t = resolve(&task, task_file.as_deref())?;
            let target = crate::remote::Out::new(&out, worker, overwrite, json)?;
            let input = input
                .iter()
                .map(|p| conveyor_pipeline::remote::sync::local_input(p))
                .collect::<Result<Vec<_>, _>>()?;
            let cfg = PrepareConfig {
                inputs: input,
                vocab,
                out: target.dir.clone(),
                split,
                inputs_length,
                targets_length,
                extra_ids,
                strict,
                overwrite,
                holdout: holdout.map(|f| conveyor_tasks::prepare::Holdout {
                    fraction: f,
                    seed: 0,
                    keep_held_out,
                }),
                worker,
            };
            let mut s = prepare(t.as_ref(), &cfg)?;
            s.out = target.shown();
            target.finish(overwrite && worker.is_none())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!(
                    "{}: {} rows read, {} examples written, {} skipped{} -> {}",
                    s.task,
                    s.read,
                    s.written,
                    s.skipped,
                    s.excluded
                        .iter()
                        .map(|(k, v)| format!(", {v} {k} left out"))
                        .collect::<String>(),
                    s.out.display()
                );
                println!(
                    "lengths: inputs {} ({} truncated), targets {} ({} truncated)",
                    s.inputs_length, s.truncated_inputs, s.targets_length, s.truncated_targets
                );
            }
            crate::job_flags::merge_hint(&out_dir, worker, json);
        }
    }
    Ok(0)
}

/// `conveyor report`.
pub fn report(evals: &[PathBuf], out: Option<PathBuf>) -> anyhow::Result<i32> {
    let r = conveyor_tasks::report::report(evals)?;
    print!("{}", r.markdown);
    if let Some(dir) = out {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("report.md"), &r.markdown)?;
        std::fs::write(
            dir.join("report.json"),
            serde_json::to_string_pretty(&r)? + "\n",
        )?;
    }
    Ok(0)
}
