//! `conveyor study STUDY.toml`: the paper's grid from a declarative file — architectures x
//! {from scratch, pre-trained} x tasks x learning rates x seeds, plus the speed-vs-length
//! benchmark — run cell by cell. Every cell leaves its outputs in the study folder; a rerun
//! skips finished cells and continues interrupted runs from their checkpoints. The report
//! takes, per (architecture, pre-training, task), the learning rate with the best dev score,
//! as the paper does. Progress: a line when each cell starts and ends, the trainer's own
//! progress (step, loss, ETA) in between, and an estimate of the training time left in the
//! whole study from the pace of the cells run so far.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::torch_handoff::{run_torch as torch, run_torch_live};
use conveyor_pipeline::ingest::{ingest, IngestConfig};
use conveyor_pipeline::progress::{human_duration, Silent};
use conveyor_pipeline::vocab::{train as train_vocab, VocabTrainConfig};
use conveyor_tasks::prepare::{prepare, PrepareConfig};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Study {
    pub name: String,
    pub corpus: Corpus,
    pub pretrain: Pretrain,
    pub finetune: Finetune,
    #[serde(default)]
    pub tasks: Vec<TaskCell>,
    #[serde(default = "one_seed")]
    pub seeds: Vec<u64>,
    #[serde(default)]
    pub bench: Option<Bench>,
    /// Where every model trains, evaluates and is benchmarked: auto (a GPU if libtorch sees
    /// one), cpu or cuda.
    #[serde(default = "auto")]
    pub device: String,
}

fn auto() -> String {
    "auto".into()
}

fn one_seed() -> Vec<u64> {
    vec![0]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Corpus {
    /// Corpus files, folders or globs (the ingest's formats).
    pub inputs: Vec<String>,
    /// A SentencePiece model; without one a vocabulary of `vocab_size` is trained.
    pub vocab: Option<PathBuf>,
    pub vocab_size: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pretrain {
    pub archs: Vec<String>,
    pub preset: String,
    /// Optional model config overrides (JSON or TOML) for every architecture.
    pub config: Option<PathBuf>,
    pub steps: u64,
    pub batch_size: usize,
    pub inputs_length: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finetune {
    pub steps: u64,
    pub batch_size: usize,
    pub learning_rates: Vec<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskCell {
    pub name: String,
    pub train: Vec<PathBuf>,
    /// Dev files; without them, `dev_fraction` of the train rows is held out (seeded).
    #[serde(default)]
    pub dev: Vec<PathBuf>,
    pub dev_fraction: Option<f64>,
    pub task_file: Option<PathBuf>,
    /// Evaluate at most this many dev examples.
    pub dev_limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bench {
    pub preset: String,
    pub lengths: Vec<usize>,
    pub batch_size: usize,
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The step of a run folder's latest checkpoint, if any.
fn latest_step(run: &Path) -> Option<u64> {
    let name = std::fs::read_to_string(run.join("checkpoints/latest")).ok()?;
    name.trim().strip_prefix("step-")?.parse().ok()
}

/// Seconds spent and steps run by the training cells of one kind in this invocation.
#[derive(Default)]
struct Pace {
    secs: f64,
    steps: u64,
}

/// Counts cells, announces them, and estimates the training time left in the study.
struct Progress {
    n: usize,
    cells: usize,
    started: std::time::Instant,
    /// Pre-training and fine-tuning steps (their costs differ), run so far and still to run.
    pace: [Pace; 2],
    left: [u64; 2],
}

const PRETRAIN: usize = 0;
const FINETUNE: usize = 1;

impl Progress {
    /// A cell that is finished (`ran`: now, or else in an earlier invocation).
    fn cell(&mut self, what: &str, ran: bool) {
        self.n += 1;
        println!(
            "[cell {}/{}] {what}{}",
            self.n,
            self.cells,
            if ran { "" } else { " (done before)" }
        );
    }

    /// The estimate of the training left, from the measured seconds per step of each kind
    /// (fine-tuning steps are priced like pre-training ones until one has run).
    fn eta(&self) -> Option<f64> {
        let rate = |k: usize| {
            let p = &self.pace[k];
            (p.steps > 0).then(|| p.secs / p.steps as f64)
        };
        let pre = rate(PRETRAIN);
        let fine = rate(FINETUNE).or(pre)?;
        Some(pre.unwrap_or(fine) * self.left[PRETRAIN] as f64 + fine * self.left[FINETUNE] as f64)
    }

    /// Runs (or resumes) a training run until `steps`; `args` are the command and its
    /// options. The trainer shows its own progress; this prints the cell's start and end.
    fn train(
        &mut self,
        kind: usize,
        what: &str,
        run: &Path,
        steps: u64,
        mut args: Vec<String>,
    ) -> anyhow::Result<()> {
        let done = latest_step(run).unwrap_or(0).min(steps);
        if done >= steps {
            self.left[kind] = self.left[kind].saturating_sub(steps);
            self.cell(what, false);
            return Ok(());
        }
        if done > 0 {
            args.push("--resume".into());
        } else {
            let _ = std::fs::remove_dir_all(run);
        }
        args.extend(["--out".into(), s(run), "--steps".into(), steps.to_string()]);
        println!(
            "[cell {}/{}] {what}: steps {}..={steps} ...",
            self.n + 1,
            self.cells,
            done + 1
        );
        let t0 = std::time::Instant::now();
        run_torch_live(&args)?;
        self.pace[kind].secs += t0.elapsed().as_secs_f64();
        self.pace[kind].steps += steps - done;
        self.left[kind] = self.left[kind].saturating_sub(steps);
        let eta = self
            .eta()
            .map(|e| format!(", about {} of training left", human_duration(e)))
            .unwrap_or_default();
        self.cell(
            &format!(
                "{what} ({} elapsed in this study run{eta})",
                human_duration(self.started.elapsed().as_secs_f64())
            ),
            true,
        );
        Ok(())
    }
}

fn checkpoint(run: &Path, steps: u64) -> PathBuf {
    run.join(format!("checkpoints/step-{steps:08}"))
}

pub fn run(file: &Path, out: Option<PathBuf>) -> anyhow::Result<i32> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let st: Study = toml::from_str(&text).with_context(|| format!("{}", file.display()))?;
    // The study's name and architectures become folder names: plain names only.
    conveyor_pipeline::contain::check_name(&st.name, file)?;
    for arch in &st.pretrain.archs {
        conveyor_pipeline::contain::check_name(arch, file)?;
    }
    let out = out.unwrap_or_else(|| PathBuf::from("studies/out").join(&st.name));
    std::fs::create_dir_all(&out)?;
    let cells = 2
        + st.pretrain.archs.len() * st.seeds.len()
        + st.tasks.len()
        + st.pretrain.archs.len()
            * 2
            * st.tasks.len()
            * st.finetune.learning_rates.len()
            * st.seeds.len()
            * 2
        + usize::from(st.bench.is_some());
    let runs = (st.pretrain.archs.len() * st.seeds.len()) as u64;
    let mut progress = Progress {
        n: 0,
        cells,
        started: std::time::Instant::now(),
        pace: Default::default(),
        left: [
            runs * st.pretrain.steps,
            runs * 2
                * (st.tasks.len() * st.finetune.learning_rates.len()) as u64
                * st.finetune.steps,
        ],
    };
    let device = st.device.clone();

    // Vocabulary and token shards.
    let vocab = match &st.corpus.vocab {
        Some(v) => {
            progress.cell(&format!("vocabulary {}", v.display()), false);
            v.clone()
        }
        None => {
            let prefix = out.join("vocab/study");
            let model = out.join("vocab/study.model");
            let ran = !model.exists();
            if ran {
                let size = st
                    .corpus
                    .vocab_size
                    .context("corpus needs vocab or vocab_size")?;
                train_vocab(&VocabTrainConfig::new(
                    st.corpus.inputs.clone(),
                    prefix,
                    size,
                ))?;
            }
            progress.cell("train the vocabulary", ran);
            model
        }
    };
    let tokens = out.join("tokens");
    let i = ingest(
        IngestConfig::new(st.corpus.inputs.clone(), vocab.clone(), tokens.clone()),
        &Silent,
    )?;
    progress.cell(
        &format!("ingest ({} tokens)", i.totals.tokens),
        !i.already_complete,
    );

    // Pre-training, token shards corrupted on the fly.
    for arch in &st.pretrain.archs {
        for seed in &st.seeds {
            let run = out.join(format!("runs/pretrain-{arch}-s{seed}"));
            let mut args: Vec<String> = [
                "train",
                "--data",
                &s(&tokens),
                "--arch",
                arch,
                "--preset",
                &st.pretrain.preset,
                "--batch-size",
                &st.pretrain.batch_size.to_string(),
                "--inputs-length",
                &st.pretrain.inputs_length.to_string(),
                "--seed",
                &seed.to_string(),
                "--checkpoint-every",
                &(st.pretrain.steps / 4).max(1).to_string(),
                "--device",
                &device,
            ]
            .iter()
            .map(|x| x.to_string())
            .collect();
            if let Some(c) = &st.pretrain.config {
                args.extend(["--config".into(), s(c)]);
            }
            let what = format!("pre-train {arch} seed {seed}");
            progress.train(PRETRAIN, &what, &run, st.pretrain.steps, args)?;
        }
    }

    // Tasks: prepared once per split.
    let mut evals = Vec::new();
    let mut best: Vec<String> = Vec::new();
    for t in &st.tasks {
        let task = conveyor_tasks::resolve(&t.name, t.task_file.as_deref())?;
        let dir = |split: &str| out.join(format!("tasks/{}/{split}", t.name));
        let mut prepared_len = None;
        let held = t.dev.is_empty();
        if held && t.dev_fraction.is_none() {
            anyhow::bail!("task {}: give dev files or a dev_fraction", t.name);
        }
        for (split, files) in [
            ("train", &t.train),
            ("dev", if held { &t.train } else { &t.dev }),
        ] {
            let holdout = held.then(|| conveyor_tasks::prepare::Holdout {
                fraction: t.dev_fraction.unwrap_or(0.1),
                seed: 0,
                keep_held_out: split == "dev",
            });
            let p = prepare(
                task.as_ref(),
                &PrepareConfig {
                    inputs: files.clone(),
                    vocab: vocab.clone(),
                    out: dir(split),
                    split: split.into(),
                    inputs_length: prepared_len.map(|(i, _)| i),
                    targets_length: prepared_len.map(|(_, t)| t),
                    extra_ids: 100,
                    strict: false,
                    overwrite: false,
                    holdout,
                    worker: None,
                },
            )?;
            // The dev split uses the train split's lengths.
            prepared_len.get_or_insert((p.inputs_length, p.targets_length));
        }
        progress.cell(&format!("prepare {}", t.name), true);

        for arch in &st.pretrain.archs {
            for pretrained in [false, true] {
                let mut scores: Vec<(f64, f64, PathBuf)> = Vec::new();
                for lr in &st.finetune.learning_rates {
                    for seed in &st.seeds {
                        let kind = if pretrained { "pretrained" } else { "scratch" };
                        let run = out.join(format!("runs/{}-{arch}-{kind}-lr{lr}-s{seed}", t.name));
                        let mut args: Vec<String> = [
                            "finetune",
                            "--task",
                            &t.name,
                            "--data",
                            &s(&dir("train")),
                            "--arch",
                            arch,
                            "--preset",
                            &st.pretrain.preset,
                            "--batch-size",
                            &st.finetune.batch_size.to_string(),
                            "--lr",
                            &lr.to_string(),
                            "--seed",
                            &seed.to_string(),
                            "--checkpoint-every",
                            &st.finetune.steps.to_string(),
                            "--device",
                            &device,
                        ]
                        .iter()
                        .map(|x| x.to_string())
                        .collect();
                        if let Some(c) = &st.pretrain.config {
                            args.extend(["--config".into(), s(c)]);
                        }
                        if pretrained {
                            let pre = out.join(format!("runs/pretrain-{arch}-s{seed}"));
                            args.extend(["--init".into(), s(&checkpoint(&pre, st.pretrain.steps))]);
                        }
                        let what =
                            format!("fine-tune {} {arch} {kind} lr {lr} seed {seed}", t.name);
                        progress.train(FINETUNE, &what, &run, st.finetune.steps, args)?;
                        let ckpt = checkpoint(&run, st.finetune.steps);
                        let eval = ckpt.join(format!("eval-{}", t.name));
                        let ran = !eval.join("metrics.json").exists();
                        if ran {
                            let mut e: Vec<String> = [
                                "eval",
                                "--checkpoint",
                                &s(&ckpt),
                                "--data",
                                &s(&dir("dev")),
                                "--out",
                                &s(&eval),
                                "--device",
                                &device,
                            ]
                            .iter()
                            .map(|x| x.to_string())
                            .collect();
                            if let Some(n) = t.dev_limit {
                                e.extend(["--limit".into(), n.to_string()]);
                            }
                            if let Some(f) = &t.task_file {
                                e.extend(["--task-file".into(), s(f)]);
                            }
                            torch(&e)?;
                        }
                        progress.cell(
                            &format!("evaluate {} {arch} {kind} lr {lr} seed {seed}", t.name),
                            ran,
                        );
                        let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
                            eval.join("metrics.json"),
                        )?)?;
                        scores.push((m["scores"]["accuracy"].as_f64().unwrap_or(0.0), *lr, eval));
                    }
                }
                // The paper reports the best dev score over the learning-rate grid.
                if let Some((acc, lr, eval)) = scores
                    .into_iter()
                    .max_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal))
                {
                    let kind = if pretrained {
                        "pre-trained"
                    } else {
                        "no pre-training"
                    };
                    best.push(format!(
                        "| {} | {arch}, {kind} | {lr} | {:.2} |",
                        t.name,
                        100.0 * acc
                    ));
                    evals.push(eval);
                }
            }
        }
    }

    let mut md = format!("# Study {}\n\n", st.name);
    if !evals.is_empty() {
        let r = conveyor_tasks::report::report(&evals)?;
        md += "## Results (best learning rate per cell, dev split, %)\n\n";
        md += &r.markdown;
        md += "\n## Best learning rate\n\n| task | model | learning rate | dev score |\n|---|---|---|---|\n";
        md += &best.join("\n");
        md += "\n";
        std::fs::write(
            out.join("report.json"),
            serde_json::to_string_pretty(&r)? + "\n",
        )?;
    }
    if let Some(b) = &st.bench {
        let dir = out.join("bench");
        let ran = !dir.join("bench-train.json").exists();
        if ran {
            let mut args: Vec<String> = [
                "bench",
                "train",
                "--preset",
                &b.preset,
                "--batch-size",
                &b.batch_size.to_string(),
                "--device",
                &device,
                "--out",
                &s(&dir),
                "--lengths",
            ]
            .iter()
            .map(|x| x.to_string())
            .collect();
            args.push(
                b.lengths
                    .iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            );
            torch(&args)?;
        }
        progress.cell("speed and memory per length", ran);
        md += "\n## Training speed and memory per input length\n\n";
        md += &std::fs::read_to_string(dir.join("bench-train.md")).unwrap_or_default();
        md += "\n![speed](bench/speed.png) ![memory](bench/memory.png)\n";
    }
    std::fs::write(out.join("report.md"), &md)?;
    println!("\n{md}\nstudy folder: {}", out.display());
    Ok(0)
}
