//! `conveyor demo`: the main job on the project's own fixtures. Today: train the fixture
//! vocabulary from the fixture corpus (checking it against the committed one), then ingest the
//! corpus with it. Later stages (corruption, training, evaluation) join as they land.

use std::path::PathBuf;

use anyhow::Context;
use conveyor_pipeline::ingest::{ingest, IngestConfig};
use conveyor_pipeline::vocab::{train, VocabTrainConfig};

use crate::progress::CliProgress;

/// The fixture vocabulary's size (see `make fixtures`).
const FIXTURE_VOCAB_SIZE: u32 = 400;

pub fn run(out: PathBuf, vocab: Option<PathBuf>) -> anyhow::Result<i32> {
    let corpus = PathBuf::from("fixtures/corpus");
    anyhow::ensure!(
        corpus.is_dir(),
        "fixtures/corpus not found: run the demo from the repository root (make demo)"
    );
    let vocab = match vocab {
        Some(v) => v,
        None => {
            println!("== vocabulary: SentencePiece unigram trained on the fixture corpus ==");
            let mut cfg = VocabTrainConfig::new(
                vec![corpus.display().to_string()],
                out.join("vocab/fixture"),
                FIXTURE_VOCAB_SIZE,
            );
            cfg.overwrite = true;
            let s = train(&cfg).context("training the fixture vocabulary")?;
            let same =
                std::fs::read(&s.model).ok() == std::fs::read("fixtures/vocab/fixture.model").ok();
            println!(
                "{} pieces from {} sentences -> {} ({})",
                s.pieces,
                s.sentences,
                s.model.display(),
                if same {
                    "identical to fixtures/vocab/fixture.model"
                } else {
                    "DIFFERS from fixtures/vocab/fixture.model: rerun `make fixtures`"
                }
            );
            s.model
        }
    };
    let mut cfg = IngestConfig::new(
        vec![corpus.display().to_string()],
        vocab,
        out.join("tokens"),
    );
    cfg.overwrite = true;
    cfg.shard_tokens = Some(2_000);
    let progress = CliProgress::new(false);
    let summary = ingest(cfg, &progress).context("ingesting the fixture corpus")?;
    println!("\n== ingest of the fixture corpus ==");
    crate::ingest::report(&summary, false)?;
    println!(
        "\ninspect it with: conveyor inspect {}",
        out.join("tokens").display()
    );
    Ok(0)
}
