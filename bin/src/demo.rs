//! `conveyor demo`: the main job on the project's own fixtures, end to end, in a few minutes
//! on two CPU cores: generate an English-like corpus and a review-sentiment task (seeded, no
//! download) -> train a SentencePiece vocabulary -> ingest -> span-corrupt -> pre-train a tiny
//! lightconv and a tiny transformer -> fine-tune each, pre-trained and from scratch, on the
//! task -> evaluate -> a Table-2-style comparison, JSON, and PNG loss curves in one folder.
//! The libtorch steps run through `conveyor-torch`, as a user would run them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::torch_handoff::run_torch as torch;
use conveyor_pipeline::corrupt::{corrupt, CorruptConfig};
use conveyor_pipeline::ingest::{ingest, IngestConfig};
use conveyor_pipeline::progress::Silent;
use conveyor_pipeline::vocab::{train as train_vocab, VocabTrainConfig};
use conveyor_tasks::prepare::{prepare, PrepareConfig};

const ARCHS: [&str; 2] = ["lightconv", "transformer"];
const SEED: u64 = 0;

fn step(n: usize, what: &str) {
    println!("[{n}/9] {what}");
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

pub fn run(out: PathBuf, device: &str, config: Option<&Path>) -> anyhow::Result<i32> {
    // Config overrides go to pre-training and fine-tuning alike (--init needs equal configs).
    let config: Vec<String> = config
        .map(|c| vec!["--config".to_string(), s(c)])
        .unwrap_or_default();
    let started = std::time::Instant::now();
    std::fs::create_dir_all(&out)?;
    let fx = out.join("fixtures");
    step(
        1,
        "generating the fixture corpus and sentiment task (seeded)",
    );
    let corpus = conveyor_tasks::synth::write_corpus(&fx.join("corpus"), 3000, SEED)?;
    conveyor_tasks::synth::write_sentiment(&fx.join("sentiment"), 2000, 400, SEED)?;

    step(2, "training a SentencePiece vocabulary on it");
    let mut vcfg = VocabTrainConfig::new(vec![s(&corpus)], out.join("vocab/demo"), 250);
    vcfg.overwrite = true;
    let v = train_vocab(&vcfg).context("training the vocabulary")?;
    println!("      {} pieces -> {}", v.pieces, v.model.display());

    step(3, "ingesting the corpus into token shards");
    let tokens = out.join("tokens");
    let mut icfg = IngestConfig::new(vec![s(&corpus)], v.model.clone(), tokens.clone());
    icfg.overwrite = true;
    icfg.shard_tokens = Some(40_000);
    let i = ingest(icfg, &Silent).context("ingesting")?;
    println!(
        "      {} documents, {} tokens, {} shards",
        i.totals.documents, i.totals.tokens, i.shards
    );

    step(4, "span corruption (T5 settings, inputs of 64 tokens)");
    let examples = out.join("examples");
    let mut ccfg = CorruptConfig::new(tokens, examples.clone(), 64);
    ccfg.overwrite = true;
    let c = corrupt(&ccfg, &Silent).context("span corruption")?;
    println!(
        "      {} examples, lengths {}/{}/{}",
        c.examples, c.tokens_length, c.inputs_length, c.targets_length
    );

    step(
        5,
        "pre-training a tiny lightconv and a tiny transformer (400 steps each)",
    );
    let runs = out.join("runs");
    let mut pretrained = Vec::new();
    for arch in ARCHS {
        let run = runs.join(format!("pretrain-{arch}"));
        let _ = std::fs::remove_dir_all(&run);
        let mut args = vec![
            "train",
            "--data",
            &s(&examples),
            "--arch",
            arch,
            "--preset",
            "tiny",
            "--out",
            &s(&run),
            "--steps",
            "400",
            "--batch-size",
            "16",
            "--checkpoint-every",
            "400",
            "--device",
            device,
            "--seed",
            "0",
            "-q",
        ]
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
        args.extend(config.iter().cloned());
        torch(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        pretrained.push(run.join("checkpoints/step-00000400"));
        println!("      {arch}: {}", last_loss(&run)?);
    }

    step(6, "preparing the sentiment task (train and dev)");
    let task = conveyor_tasks::find("sst2")?;
    let mut prepared = Vec::new();
    for split in ["train", "dev"] {
        let dir = out.join(format!("task-{split}"));
        let p = prepare(
            task.as_ref(),
            &PrepareConfig {
                inputs: vec![fx.join(format!("sentiment/{split}.tsv"))],
                vocab: v.model.clone(),
                out: dir.clone(),
                split: split.into(),
                inputs_length: None,
                targets_length: None,
                extra_ids: 100,
                strict: true,
                overwrite: true,
                holdout: None,
                worker: None,
            },
        )?;
        println!("      {split}: {} examples", p.written);
        prepared.push(dir);
    }

    step(
        7,
        "fine-tuning each, pre-trained and from scratch (300 steps, lr 1e-3)",
    );
    let mut evals = Vec::new();
    let mut curves = Vec::new();
    for (arch, ckpt) in ARCHS.iter().zip(&pretrained) {
        for init in [false, true] {
            let name = format!(
                "finetune-{arch}-{}",
                if init { "pretrained" } else { "scratch" }
            );
            let run = runs.join(&name);
            let _ = std::fs::remove_dir_all(&run);
            let mut args = vec![
                "finetune",
                "--task",
                "sst2",
                "--data",
                prepared[0].to_str().unwrap_or(""),
                "--arch",
                arch,
                "--preset",
                "tiny",
                "--steps",
                "300",
                "--batch-size",
                "32",
                "--lr",
                "0.001",
                "--checkpoint-every",
                "300",
                "--device",
                device,
                "-q",
            ]
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>();
            args.extend(["--out".into(), s(&run)]);
            args.extend(config.iter().cloned());
            if init {
                args.extend(["--init".into(), s(ckpt)]);
            }
            torch(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
            println!("      {name}: {}", last_loss(&run)?);
            curves.push(run.clone());
            evals.push((name, run.join("checkpoints/step-00000300")));
        }
    }

    step(8, "evaluating on the dev split (greedy decoding)");
    let report_dir = out.join("report");
    std::fs::create_dir_all(&report_dir)?;
    let mut eval_dirs = Vec::new();
    for (name, ckpt) in &evals {
        let dir = report_dir.join(format!("eval-{name}"));
        let v: serde_json::Value = serde_json::from_str(&torch(&[
            "eval",
            "--checkpoint",
            &s(ckpt),
            "--data",
            &s(&prepared[1]),
            "--out",
            &s(&dir),
            "--device",
            device,
        ])?)?;
        println!(
            "      {name}: accuracy {:.3}",
            v["scores"]["accuracy"].as_f64().unwrap_or(0.0)
        );
        eval_dirs.push(dir);
    }

    step(9, "report");
    let r = conveyor_tasks::report::report(&eval_dirs)?;
    std::fs::write(report_dir.join("report.md"), &r.markdown)?;
    std::fs::write(
        report_dir.join("report.json"),
        serde_json::to_string_pretty(&r)? + "\n",
    )?;
    let mut all_runs: Vec<PathBuf> = ARCHS
        .iter()
        .map(|a| runs.join(format!("pretrain-{a}")))
        .collect();
    all_runs.extend(curves);
    let python = std::env::var("CONVEYOR_PYTHON").unwrap_or_else(|_| "python3".into());
    let png = report_dir.join("loss-curves.png");
    let plotted = Command::new(&python)
        .arg("scripts/plot_losses.py")
        .arg(&png)
        .args(&all_runs)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    println!("\n{}", r.markdown);
    println!(
        "(sentiment accuracy on the generated dev set is shown in the SST-2 column; tiny models, seconds of training: this checks the flow, not the paper's numbers)"
    );
    if !plotted {
        println!(
            "(no loss-curve PNG: scripts/plot_losses.py needs matplotlib; `make demo` sets it up)"
        );
    }
    println!(
        "\nreport, JSON and loss curves: {}  ({:.0} s)",
        report_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(0)
}

fn last_loss(run: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl"))?;
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap_or("{}"))?;
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap_or("{}"))?;
    Ok(format!(
        "loss {:.3} -> {:.3}",
        first["loss"].as_f64().unwrap_or(f64::NAN),
        last["loss"].as_f64().unwrap_or(f64::NAN)
    ))
}
