//! `conveyor demo`: the main job on the project's own fixtures, end to end, in a few minutes
//! on two CPU cores. It generates an English-like corpus and a review-sentiment task (seeded,
//! no download), writes a study file for them (OUT/demo.toml: a 250-piece vocabulary, a tiny
//! lightconv and a tiny transformer pre-trained with span corruption, then fine-tuned on the
//! task pre-trained and from scratch) and runs it with the study runner — the same flow as
//! `conveyor study`, so a rerun resumes — leaving a Table-2-style report, its JSON and the
//! loss curves in OUT.

use std::path::{Path, PathBuf};

use anyhow::Context;
use conveyor_pipeline::run_lock::{is_run_lock, RunKind, RunLock};

use super::study_file::{Corpus, Finetune, Pretrain, Study, TaskCell};

const SEED: u64 = 0;

/// Runs the demo into `out` on `device`, with optional model config overrides for both
/// architectures.
pub fn run(out: PathBuf, device: &str, config: Option<&Path>) -> anyhow::Result<i32> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // Absolute paths, so that the study file it writes runs from any folder.
    let out = std::fs::canonicalize(&out).with_context(|| format!("{}", out.display()))?;
    let config = config
        .map(|c| std::fs::canonicalize(c).with_context(|| format!("{}", c.display())))
        .transpose()?;
    let fx = out.join("fixtures");
    let study = demo_study(
        &fx.join("corpus/fixture-corpus.jsonl"),
        &fx.join("sentiment"),
        device,
        config.as_deref(),
    );
    let file = out.join("demo.toml");
    // Checked first (a user's folder gets nothing, not even a lock file), then locked from
    // before the fixtures are written (a second demo on the folder would rewrite the task
    // files a running one reads) to the end of the study, and checked again under the lock.
    check_resumable(&out, &file, &study)?;
    let lock = RunLock::take(&out, RunKind::Study)?;
    check_resumable(&out, &file, &study)?;
    println!("generating the fixture corpus and sentiment task (seeded)");
    let corpus = conveyor_tasks::synth::write_corpus(&fx.join("corpus"), 3000, SEED)?;
    anyhow::ensure!(
        study.corpus.inputs == [corpus.display().to_string()],
        "the fixture corpus was written to {}, not where the study file expects it",
        corpus.display()
    );
    conveyor_tasks::synth::write_sentiment(&fx.join("sentiment"), 2000, 400, SEED)?;
    study.write(&file)?;
    println!("study file: {}", file.display());
    super::study::run_owned(&file, out.clone(), lock)?;
    println!(
        "(sentiment accuracy on the generated dev set is shown in the SST-2 column; tiny models, seconds of training: this checks the flow, not the paper's numbers)"
    );
    println!(
        "report, JSON and loss curves: {}  ({:.0} s)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(0)
}

/// A demo resumes only the study it wrote: OUT must be empty, or hold a `demo.toml` with the
/// same settings (the runner does not compare a finished run with its cell's flags).
fn check_resumable(out: &Path, file: &Path, study: &Study) -> anyhow::Result<()> {
    if file.exists() {
        let before = conveyor_pipeline::regular::read_to_string(
            file,
            conveyor_pipeline::regular::MAX_JSON_BYTES,
        )
        .with_context(|| format!("reading {}", file.display()))?;
        let now = toml::to_string(study).context("serialising the study")?;
        anyhow::ensure!(
            before == now,
            "{} was written for other settings (--device or --config): give the demo another --out, or remove {}",
            file.display(),
            out.display()
        );
        return Ok(());
    }
    let empty = std::fs::read_dir(out)
        .with_context(|| format!("reading {}", out.display()))?
        .flatten()
        .all(|e| is_run_lock(&e.file_name().to_string_lossy()));
    anyhow::ensure!(
        empty,
        "{} is not empty and holds no demo.toml (a demo from an earlier version?): give the demo another --out, or remove it",
        out.display()
    );
    Ok(())
}

/// The demo's study: sizes that finish in minutes on two cores and still show pre-training
/// helping.
fn demo_study(corpus: &Path, sentiment: &Path, device: &str, config: Option<&Path>) -> Study {
    Study {
        name: "demo".into(),
        seeds: vec![SEED],
        device: device.into(),
        corpus: Corpus {
            inputs: vec![corpus.display().to_string()],
            vocab: None,
            vocab_size: Some(250),
            task_texts: false,
        },
        pretrain: Pretrain {
            archs: vec!["transformer".into(), "lightconv".into()],
            preset: "tiny".into(),
            // Config overrides go to pre-training and fine-tuning alike (--init needs equal
            // configs).
            config: config.map(Path::to_path_buf),
            config_sha256: config.and_then(|c| conveyor_pipeline::shard::file_sha256(c).ok()),
            seeds: None,
            steps: 400,
            batch_size: 16,
            inputs_length: 64,
        },
        finetune: Finetune {
            steps: 300,
            batch_size: 32,
            learning_rates: vec![1e-3],
            search_seeds: None,
            curve: None,
            score: Default::default(),
        },
        tasks: vec![TaskCell {
            name: "sst2".into(),
            train: vec![sentiment.join("train.tsv")],
            dev: vec![sentiment.join("dev.tsv")],
            dev_fraction: None,
            task_file: None,
            dev_limit: None,
            steps: None,
            strict: true,
        }],
        bench: None,
        reference: None,
    }
}
