//! `conveyor vocab train`: a SentencePiece model from corpus files, trained in-process.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use conveyor_pipeline::source::SourceOptions;
use conveyor_pipeline::vocab::{train, ModelKind, SpecialLayout, VocabTrainConfig};

use crate::ingest::TxtArg;

#[derive(Subcommand)]
pub enum VocabCommand {
    /// Train a SentencePiece model (unigram by default, like T5's) on corpus files.
    Train(TrainArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LayoutArg {
    /// <pad>=0, </s>=1, <unk>=2, no <s> (T5).
    T5,
    /// <unk>=0, <s>=1, </s>=2, no <pad> (SentencePiece's defaults).
    Spm,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ModelArg {
    Unigram,
    Bpe,
}

#[derive(Args)]
pub struct TrainArgs {
    /// Input files, directories or glob patterns (the ingest's formats).
    #[arg(required = true)]
    inputs: Vec<String>,
    /// Output prefix: PREFIX.model and PREFIX.vocab are written.
    #[arg(long)]
    out: PathBuf,
    /// Number of pieces.
    #[arg(long)]
    vocab_size: u32,
    #[arg(long, value_enum, default_value = "unigram")]
    model_type: ModelArg,
    /// Ids of the special pieces.
    #[arg(long, value_enum, default_value = "t5")]
    layout: LayoutArg,
    /// Share of characters the model covers (rarer ones become <unk>).
    #[arg(long, default_value_t = 0.9995)]
    character_coverage: f64,
    /// Sentences (non-blank lines) the trainer samples from everything read.
    #[arg(long, default_value_t = 10_000_000)]
    max_sentences: u64,
    /// Read at most this many documents, in input order.
    #[arg(long)]
    max_documents: Option<u64>,
    /// JSON field or Parquet column holding the text.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// How .txt inputs become documents.
    #[arg(long, value_enum, default_value = "file")]
    txt_mode: TxtArg,
    /// Seed of the trainer's sampling.
    #[arg(long, default_value_t = 0)]
    seed: u32,
    /// Not taken: the trainer always runs 16 threads (SentencePiece's default), because
    /// its model depends on the number; refused with a message saying so.
    #[arg(long, hide = true)]
    threads: Option<u32>,
    /// Any other SentencePiece trainer flag, as NAME=VALUE (repeatable), e.g.
    /// --option split_digits=true.
    #[arg(long = "option")]
    options: Vec<String>,
    /// Replace an existing PREFIX.model / PREFIX.vocab.
    #[arg(long)]
    overwrite: bool,
    /// Show the trainer's own log.
    #[arg(long)]
    verbose: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(c: VocabCommand) -> anyhow::Result<i32> {
    let VocabCommand::Train(a) = c;
    // Earlier versions took --threads (default 1): the model depended on it.
    anyhow::ensure!(
        a.threads.is_none(),
        "vocab train takes no --threads: the trainer always runs {} threads, whatever the machine, because its model depends on that number (a model made before with --threads N is made again by the SentencePiece library with num_threads=N); leave the flag out",
        conveyor_pipeline::vocab::TRAINER_THREADS
    );
    // A URL would be made a local folder of its spelling ("s3:/bucket/..."), nothing uploaded.
    anyhow::ensure!(
        !a.out.to_str().is_some_and(conveyor_pipeline::remote::is_url),
        "--out {}: vocab train writes a local model (vocabularies are local paths): write it here and copy it to the store",
        a.out.display()
    );
    for o in &a.options {
        anyhow::ensure!(
            o.contains('='),
            "--option {o}: expected NAME=VALUE, e.g. split_digits=true"
        );
    }
    let mut cfg = VocabTrainConfig::new(a.inputs, a.out, a.vocab_size);
    cfg.source = SourceOptions {
        text_field: a.text_field,
        txt_mode: a.txt_mode.into(),
        max_document_bytes: conveyor_pipeline::source::MAX_DOCUMENT_BYTES,
    };
    cfg.model = match a.model_type {
        ModelArg::Unigram => ModelKind::Unigram,
        ModelArg::Bpe => ModelKind::Bpe,
    };
    cfg.layout = match a.layout {
        LayoutArg::T5 => SpecialLayout::T5,
        LayoutArg::Spm => SpecialLayout::Spm,
    };
    cfg.character_coverage = a.character_coverage;
    cfg.max_sentences = a.max_sentences;
    cfg.max_documents = a.max_documents;
    cfg.seed = a.seed;
    cfg.extra = a.options;
    cfg.overwrite = a.overwrite;
    cfg.verbose = a.verbose;
    let s = train(&cfg)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!(
            "wrote {} ({} pieces, sha256 {}) and {}",
            s.model.display(),
            s.pieces,
            &s.sha256[..16],
            s.vocab.display()
        );
        println!(
            "trained on {} sentences from {} documents ({:.1} MB of text) in {:.1} s",
            s.sentences,
            s.documents,
            s.text_bytes as f64 / 1e6,
            s.seconds
        );
        for (kind, n) in &s.skipped {
            println!("skipped {n} record(s): {}", kind.name());
        }
    }
    Ok(0)
}
