//! `conveyor study STUDY.toml`: the paper's grid from a declarative file — architectures x
//! {from scratch, pre-trained} x tasks x learning rates x seeds, plus the speed-vs-length
//! benchmark — run cell by cell. Every cell leaves its outputs in the study folder; a rerun
//! skips finished cells and continues interrupted runs from their checkpoints. The report
//! takes, per (architecture, pre-training, task), the learning rate with the best dev score,
//! as the paper does.

use std::path::{Path, PathBuf};

use anyhow::Context;
use conveyor_pipeline::ingest::{ingest, IngestConfig};
use conveyor_pipeline::progress::Silent;
use conveyor_pipeline::run_lock::RunLock;
use conveyor_pipeline::vocab::{train as train_vocab, VocabTrainConfig};
use conveyor_tasks::prepare::{prepare, PrepareConfig, PrepareError};
use conveyor_tasks::texts::{training_texts, write_jsonl};

use super::cell::{same_run, Cell};
use super::progress::{Progress, PRETRAIN};
use super::report::{write_study_report, Best, Runs};
use super::study_file::{Score, Study, TaskCell};
use crate::torch_handoff::run_torch;

/// Runs (or resumes) the study in `file`; its folder is `out` (default studies/out/NAME),
/// which must be new, empty, or this study's ([`super::folder`]).
pub fn run(file: &Path, out: Option<PathBuf>) -> anyhow::Result<i32> {
    run_in(file, out, None)
}

/// [`run`] in a folder the demo vouches for (it holds the demo's own files already) and
/// holds locked.
pub(super) fn run_owned(file: &Path, out: PathBuf, lock: RunLock) -> anyhow::Result<i32> {
    run_in(file, Some(out), Some(lock))
}

fn run_in(file: &Path, out: Option<PathBuf>, held: Option<RunLock>) -> anyhow::Result<i32> {
    let st = Study::read(file)?;
    super::precheck::check(&st, file)?;
    let out = out.unwrap_or_else(|| PathBuf::from("studies/out").join(&st.name));
    let _lock = super::folder::claim(&st, file, &out, held)?;
    let mut progress = Progress::new(&st);
    let vocab = vocabulary(&st, &out, &mut progress)?;
    let texts = task_texts(&st, &out, &mut progress)?;
    let tokens = ingest_corpus(&st, &vocab, &texts, &out, &mut progress)?;
    pretrain(&st, &tokens, &out, &mut progress)?;
    let mut best = Vec::new();
    for t in &st.tasks {
        let data = prepare_task(t, &vocab, &out, &mut progress)?;
        best.extend(finetune_task(&st, t, &data, &out, &mut progress)?);
    }
    let (best, diverged): (Vec<Best>, Vec<Best>) =
        best.into_iter().partition(|b| b.diverged.is_none());
    let reference = super::reference::run(&st, &out, &best, &mut progress)?;
    let bench = bench(&st, &out, &mut progress)?;
    let runs = Runs {
        best: &best,
        diverged: &diverged,
    };
    let md = write_study_report(&st, &out, &runs, bench.as_deref(), reference.as_deref())?;
    println!("\n{md}\nstudy folder: {}", out.display());
    Ok(0)
}

pub(super) fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A `conveyor-torch` command line, flag by flag.
pub(super) struct Cmd(pub Vec<String>);

impl Cmd {
    pub(super) fn new(words: &[&str]) -> Cmd {
        Cmd(words.iter().map(|w| w.to_string()).collect())
    }

    pub(super) fn arg(mut self, flag: &str, value: impl ToString) -> Cmd {
        self.0.extend([flag.to_string(), value.to_string()]);
        self
    }

    pub(super) fn path(self, flag: &str, value: &Path) -> Cmd {
        self.arg(flag, s(value))
    }

    pub(super) fn opt_path(self, flag: &str, value: Option<&Path>) -> Cmd {
        match value {
            Some(v) => self.path(flag, v),
            None => self,
        }
    }
}

/// RUN/checkpoints/step-N.
pub(super) fn checkpoint(run: &Path, steps: u64) -> PathBuf {
    run.join(format!("checkpoints/step-{steps:08}"))
}

/// The study's SentencePiece model: the corpus's own, or one trained on it once.
fn vocabulary(st: &Study, out: &Path, progress: &mut Progress) -> anyhow::Result<PathBuf> {
    if let Some(v) = &st.corpus.vocab {
        progress.cell(&format!("vocabulary {}", v.display()), false);
        return Ok(v.clone());
    }
    let model = out.join("vocab/study.model");
    let ran = !model.exists();
    if ran {
        let size = st
            .corpus
            .vocab_size
            .context("corpus needs vocab or vocab_size")?;
        let cfg = VocabTrainConfig::new(st.corpus.inputs.clone(), out.join("vocab/study"), size);
        train_vocab(&cfg).context("training the vocabulary")?;
    }
    progress.cell("train the vocabulary", ran);
    Ok(model)
}

/// With `task_texts`, each task's training inputs as JSON lines (OUT/corpus/TASK.jsonl, or
/// TASK.train.jsonl for a task whose dev rows are held out of its train files): the rows its
/// dev split does not hold, by the same seeded split `prepare_task` makes. (The held-out
/// split was drawn otherwise before: a folder whose texts were drawn so has TASK.jsonl, and
/// its corpus, ingested from that, is not taken for this run's.)
fn task_texts(st: &Study, out: &Path, progress: &mut Progress) -> anyhow::Result<Vec<String>> {
    if !st.corpus.task_texts {
        return Ok(Vec::new());
    }
    let dir = out.join("corpus");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = Vec::new();
    let mut ran = false;
    for t in &st.tasks {
        let side = match t.dev.is_empty() {
            true => ".train",
            false => "",
        };
        let file = dir.join(format!("{}{side}.jsonl", t.name));
        if !file.exists() {
            let task = conveyor_tasks::resolve(&t.name, t.task_file.as_deref())?;
            let holdout = t.holdout(false);
            let texts = training_texts(task.as_ref(), &t.train, t.strict, holdout)?;
            write_jsonl(&texts, &file)?;
            ran = true;
        }
        files.push(s(&file));
    }
    progress.cell("the tasks' training texts for pre-training", ran);
    Ok(files)
}

/// The corpus (and the tasks' texts) as token shards (OUT/tokens); an ingest that finished
/// before is kept.
fn ingest_corpus(
    st: &Study,
    vocab: &Path,
    texts: &[String],
    out: &Path,
    progress: &mut Progress,
) -> anyhow::Result<PathBuf> {
    let tokens = out.join("tokens");
    let inputs = st.corpus.inputs.iter().chain(texts).cloned().collect();
    let cfg = IngestConfig::new(inputs, vocab.to_path_buf(), tokens.clone());
    let i = ingest(cfg, &Silent)
        .map_err(|e| ingested_otherwise(e, &tokens))
        .context("ingesting the corpus")?;
    for p in &i.modified_inputs {
        eprintln!("{}", crate::ingest::modified_warning(p, &tokens));
    }
    progress.cell(
        &format!(
            "ingest ({} documents, {} tokens)",
            i.totals.documents, i.totals.tokens
        ),
        !i.already_complete,
    );
    Ok(tokens)
}

/// Pre-trains every architecture and seed on the token shards, span-corrupted on the fly.
fn pretrain(st: &Study, tokens: &Path, out: &Path, progress: &mut Progress) -> anyhow::Result<()> {
    let p = &st.pretrain;
    for arch in &p.archs {
        for seed in st.pretrain_seeds() {
            let cmd = Cmd::new(&["train"])
                .path("--data", tokens)
                .arg("--arch", arch)
                .arg("--preset", &p.preset)
                .arg("--batch-size", p.batch_size)
                .arg("--inputs-length", p.inputs_length)
                .arg("--seed", seed)
                .arg("--checkpoint-every", (p.steps / 4).max(1))
                .arg("--device", &st.device)
                .opt_path("--config", p.config.as_deref());
            let run = out.join(format!("runs/pretrain-{arch}-s{seed}"));
            same_run(out, &run, arch, *seed, None, tokens)?;
            let what = format!("pre-train {arch} seed {seed}");
            if let Some(d) = progress.train(PRETRAIN, &what, &run, p.steps, cmd.0)? {
                anyhow::bail!(
                    "{}: pre-training diverged at step {} ({}); the fine-tuning cells need it. check the corpus and the model config ([pretrain] config), then move that run folder away and rerun",
                    run.display(),
                    d.step,
                    d.describe()
                );
            }
        }
    }
    Ok(())
}

/// A task's train and dev splits, prepared once (OUT/tasks/NAME/{train,dev}); a
/// classification task's dev split uses the train split's lengths, a generation task's its
/// own longest (a dev example cut to train's lengths could never be predicted right).
fn prepare_task(
    t: &TaskCell,
    vocab: &Path,
    out: &Path,
    progress: &mut Progress,
) -> anyhow::Result<[PathBuf; 2]> {
    let task = conveyor_tasks::resolve(&t.name, t.task_file.as_deref())?;
    let dir = |split: &str| out.join(format!("tasks/{}/{split}", t.name));
    let held = t.dev.is_empty();
    let labelled = task.labels().is_some();
    let mut lengths = None;
    let mut ran = false;
    for (split, files) in [
        ("train", &t.train),
        ("dev", if held { &t.train } else { &t.dev }),
    ] {
        let holdout = t.holdout(split == "dev");
        let p = prepare(
            task.as_ref(),
            &PrepareConfig {
                inputs: files.clone(),
                vocab: vocab.to_path_buf(),
                out: dir(split),
                split: split.into(),
                inputs_length: lengths.filter(|_| labelled).map(|(i, _)| i),
                targets_length: lengths.filter(|_| labelled).map(|(_, t)| t),
                extra_ids: 100,
                strict: t.strict,
                overwrite: false,
                holdout,
                worker: None,
            },
        )
        .map_err(|e| prepared_otherwise(e, &t.name))
        .with_context(|| format!("preparing task {}", t.name))?;
        lengths.get_or_insert((p.inputs_length, p.targets_length));
        ran |= !p.already_complete;
    }
    progress.cell(&format!("prepare {}", t.name), ran);
    Ok([dir("train"), dir("dev")])
}

/// The study's corpus ingested (or begun) from other inputs than this run's: its `--overwrite`
/// advice is not the study's (which has none), and this folder's pre-training used it.
fn ingested_otherwise(e: conveyor_pipeline::Error, tokens: &Path) -> anyhow::Error {
    use conveyor_pipeline::Error::{OtherJob, OtherUnfinishedJob};
    match e {
        OtherJob { found, job, .. } | OtherUnfinishedJob { found, job, .. } => anyhow::anyhow!(
            "{}: holds a corpus ingested otherwise than this run ingests it (job {found}, now {job}): a corpus file or the vocabulary changed since, or an earlier conveyor ingested it. This study folder's runs are of that corpus, so the study cannot go on here: restore the files, or run it again with a new --out",
            tokens.display()
        ),
        e => e.into(),
    }
}

/// A task split the study prepared (or began to) under other settings than this run's
/// cannot be replaced in place: this folder's fine-tuning runs of the task used it, and
/// would pass for runs on the new data.
fn prepared_otherwise(e: PrepareError, task: &str) -> anyhow::Error {
    use conveyor_pipeline::Error::{OtherJob, OtherUnfinishedJob};
    match e {
        PrepareError::Pipeline(
            OtherJob { path, found, job } | OtherUnfinishedJob { path, found, job },
        ) => {
            anyhow::anyhow!(
                "{}: holds {task} data prepared otherwise than this run prepares it (job {found}, now {job}): the task's files or the vocabulary changed since, or an earlier conveyor prepared it (a later one changed the task's reader or default lengths: docs/reference.md). This study folder's fine-tuning runs of {task} used that data, so the study cannot go on here: run it again with a new --out",
                path.display()
            )
        }
        e => e.into(),
    }
}

/// Fine-tunes every architecture, from scratch and pre-trained, over the learning rates with
/// the search seeds, evaluates each on the dev split, keeps the best learning rate of each
/// cell, and runs the other seeds at it.
fn finetune_task(
    st: &Study,
    t: &TaskCell,
    data: &[PathBuf; 2],
    out: &Path,
    progress: &mut Progress,
) -> anyhow::Result<Vec<Best>> {
    let mut best = Vec::new();
    for arch in &st.pretrain.archs {
        for pretrained in [false, true] {
            let mut run = |lr: f64, seed: u64| {
                let cell = Cell {
                    task: t,
                    arch,
                    pretrained,
                    lr,
                    seed,
                };
                match cell.finetune(st, &data[0], out, progress)? {
                    Ok(_) if st.finetune.score == Score::Best => {
                        cell.evaluate_best(st, out, &data[1], progress)
                    }
                    Ok(ckpt) => cell.evaluate(st, &ckpt, &data[1], progress),
                    Err(d) => Ok(cell.diverged(st, out, d, progress)),
                }
            };
            let mut scores: Vec<Best> = Vec::new();
            for lr in &st.finetune.learning_rates {
                for seed in st.search_seeds() {
                    scores.push(run(*lr, *seed)?);
                }
            }
            let (mut chosen, others) = best_learning_rate(scores);
            match chosen.first().map(|b| b.lr) {
                Some(lr) => {
                    for seed in st.other_seeds() {
                        chosen.push(run(lr, seed)?);
                    }
                }
                // Every rate diverged: the other seeds have no rate to run at.
                None => {
                    for seed in st.other_seeds() {
                        let what = format!("{} {arch} seed {seed}", t.name);
                        progress.skip(&format!("fine-tune {what}: every rate diverged"));
                        progress.skip(&format!("evaluate {what}"));
                        if st.finetune.score == Score::Best {
                            for step in st.curve_steps(t) {
                                progress.skip(&format!("evaluate {what} at step {step}"));
                            }
                        }
                    }
                }
            }
            for b in &mut chosen {
                along_the_run(st, t, b, &data[1], progress)?;
            }
            if chosen.is_empty() && st.finetune.score == Score::Last {
                for seed in &st.seeds {
                    for step in st.curve_steps(t) {
                        let what = format!("{} {arch} seed {seed} at step {step}", t.name);
                        progress.skip(&format!("evaluate {what}"));
                    }
                }
            }
            best.extend(chosen);
            // The other rates' runs that diverged are reported too.
            best.extend(others.into_iter().filter(|b| b.diverged.is_some()));
        }
    }
    Ok(best)
}

/// Evaluates a run at the chosen rate at each 1/curve of its steps (the last is done), for the
/// accuracy-against-steps figure: `b.curve` gets (step, accuracy) in step order.
fn along_the_run(
    st: &Study,
    t: &TaskCell,
    b: &mut Best,
    dev: &Path,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    let cell = Cell {
        task: t,
        arch: &b.arch,
        pretrained: b.pretrained,
        lr: b.lr,
        seed: b.seed,
    };
    if st.finetune.score == Score::Best {
        // Every run was evaluated along the way already (or skipped there, diverged).
        return Ok(());
    }
    let mut curve = Vec::new();
    if b.diverged.is_some() {
        for step in st.curve_steps(t) {
            progress.skip(&format!("evaluate {} at step {step}", cell.what()));
        }
        return Ok(());
    }
    for step in st.curve_steps(t) {
        let e = cell.evaluate(st, &checkpoint(&b.run, step), dev, progress)?;
        curve.push((step, e.accuracy));
    }
    curve.push((st.steps(t), b.accuracy));
    b.curve = curve;
    Ok(())
}

/// The paper reports the best dev score over the learning-rate grid: with several seeds, the
/// learning rate of the best mean over seeds, and every seed's run at it (a maximum over
/// seeds would pick the luckiest seed). A rate with a run that diverged scores below every
/// other, and is never chosen; on a tie the later rate in the grid wins. Returns the runs at
/// the chosen rate (none when every rate diverged) and the others.
fn best_learning_rate(scores: Vec<Best>) -> (Vec<Best>, Vec<Best>) {
    let mean = |lr: f64| {
        let v: Vec<f64> = scores
            .iter()
            .filter(|b| b.lr == lr)
            .map(|b| match b.diverged {
                Some(_) => f64::NEG_INFINITY,
                None => b.accuracy,
            })
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let Some(lr) = scores
        .iter()
        .map(|b| b.lr)
        .max_by(|a, b| mean(*a).total_cmp(&mean(*b)))
    else {
        return (Vec::new(), Vec::new());
    };
    if mean(lr) == f64::NEG_INFINITY {
        return (Vec::new(), scores);
    }
    scores.into_iter().partition(|b| b.lr == lr)
}

/// The speed and memory benchmark over input lengths (OUT/bench), run once; its folder.
fn bench(st: &Study, out: &Path, progress: &mut Progress) -> anyhow::Result<Option<PathBuf>> {
    let Some(b) = &st.bench else {
        return Ok(None);
    };
    let dir = out.join("bench");
    // bench-train.json grows point by point; bench-train.md is written once all are in.
    let ran = !dir.join("bench-train.md").exists();
    if ran {
        let lengths: Vec<String> = b.lengths.iter().map(|l| l.to_string()).collect();
        let cmd = Cmd::new(&["bench", "train"])
            .arg("--preset", &b.preset)
            .arg("--batch-size", b.batch_size)
            .arg("--device", &st.device)
            .path("--out", &dir)
            .arg("--lengths", lengths.join(","));
        run_torch(&cmd.0)?;
    }
    progress.cell("speed and memory per length", ran);
    Ok(Some(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use conveyor_pipeline::run_info::Diverged;

    fn score(lr: f64, seed: u64, accuracy: f64) -> Best {
        Best {
            task: "t".into(),
            arch: "a".into(),
            pretrained: false,
            lr,
            seed,
            accuracy,
            run: PathBuf::new(),
            eval: PathBuf::new(),
            curve: Vec::new(),
            diverged: None,
        }
    }

    /// The rate of the best mean over seeds wins, not the rate of the luckiest seed; every
    /// seed's run at it is kept.
    #[test]
    fn the_best_mean_over_seeds_chooses_the_rate() {
        let scores = vec![
            score(1e-3, 0, 0.90),
            score(1e-3, 1, 0.50),
            score(5e-4, 0, 0.80),
            score(5e-4, 1, 0.75),
        ];
        let (chosen, others) = best_learning_rate(scores);
        assert_eq!(chosen.len(), 2);
        assert!(chosen.iter().all(|b| b.lr == 5e-4));
        assert!(others.iter().all(|b| b.lr == 1e-3) && others.len() == 2);
        assert!(best_learning_rate(Vec::new()).0.is_empty());
    }

    /// A rate with a diverged run loses to any rate whose runs finished, however poor; on a
    /// tie the later rate in the grid wins.
    #[test]
    fn a_diverged_run_rules_its_rate_out_and_ties_go_to_the_later_rate() {
        let blown_at = |step| {
            Some(Diverged {
                step,
                loss: "NaN".into(),
                weights: None,
            })
        };
        let mut blown = score(1e-2, 1, 0.0);
        blown.diverged = blown_at(3);
        let scores = vec![
            score(1e-2, 0, 0.95),
            blown,
            score(1e-4, 0, 0.1),
            score(1e-4, 1, 0.1),
        ];
        let (chosen, _) = best_learning_rate(scores);
        assert!(
            chosen.iter().all(|b| b.lr == 1e-4),
            "chose {}",
            chosen[0].lr
        );
        let tie = vec![score(1e-3, 0, 0.5), score(5e-4, 0, 0.5)];
        assert_eq!(best_learning_rate(tie).0[0].lr, 5e-4);
        // Every rate diverged: none is chosen, every run is handed back.
        let mut a = score(1e-2, 0, 0.0);
        a.diverged = blown_at(2);
        let mut b = score(1e-3, 0, 0.0);
        b.diverged = blown_at(5);
        let (chosen, others) = best_learning_rate(vec![a, b]);
        assert!(chosen.is_empty());
        assert_eq!(others.len(), 2);
    }
}
