//! `conveyor corrupt`: token shards -> T5 span-corruption example shards.

use std::path::PathBuf;

use clap::Args;
use conveyor_pipeline::corrupt::{corrupt, CorruptConfig, CorruptSummary};

use crate::progress::CliProgress;

#[derive(Args)]
pub struct CorruptArgs {
    /// A token directory written by `conveyor ingest`.
    tokens: PathBuf,
    /// Output directory for the example shards and manifest.
    #[arg(long)]
    out: PathBuf,
    /// Input feature length (T5: 512); the raw length and the targets length follow from it
    /// as in T5's random_spans_helper.
    #[arg(long, default_value_t = 512)]
    inputs_length: usize,
    /// Fraction of tokens masked.
    #[arg(long, default_value_t = 0.15)]
    noise_density: f64,
    /// Mean length of a masked span.
    #[arg(long, default_value_t = 3.0)]
    mean_span_length: f64,
    /// Seed of every random draw (chunks and masks).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Epoch: each epoch draws new masks from the same seed.
    #[arg(long, default_value_t = 0)]
    epoch: u64,
    /// Pack examples into rows of the feature lengths (seqio-style, with segment ids and
    /// positions).
    #[arg(long)]
    pack: bool,
    /// Split name in the shard names (default: the token directory's).
    #[arg(long)]
    split: Option<String>,
    /// Extra ids (sentinels) after the SentencePiece pieces.
    #[arg(long, default_value_t = 100)]
    extra_ids: u32,
    /// Check that the tokens were made with this SentencePiece model.
    #[arg(long)]
    vocab: Option<PathBuf>,
    #[command(flatten)]
    job: crate::job_flags::JobFlags,
}

pub fn run(a: CorruptArgs) -> anyhow::Result<i32> {
    let worker = a.job.worker()?;
    let tokens = crate::remote::dataset(&a.tokens, a.job.silent())?;
    let target = crate::remote::Out::new(&a.out, worker, a.job.overwrite, a.job.silent())?;
    let mut cfg = CorruptConfig::new(tokens, target.dir.clone(), a.inputs_length);
    cfg.source_name = crate::remote::url_of(&a.tokens);
    cfg.noise_density = a.noise_density;
    cfg.mean_span_length = a.mean_span_length;
    cfg.seed = a.seed;
    cfg.epoch = a.epoch;
    cfg.pack = a.pack;
    cfg.split = a.split;
    cfg.extra_ids = a.extra_ids;
    cfg.vocab = a.vocab;
    cfg.threads = a.job.threads;
    cfg.overwrite = a.job.overwrite;
    cfg.worker = worker;
    let progress = CliProgress::new(a.job.silent());
    let mut s = corrupt(&cfg, &progress)?;
    s.out = target.shown();
    target.finish(a.job.mirror(worker))?;
    match a.job.json {
        true => println!(
            "{}",
            crate::job_flags::json_summary(&s, &a.out, cfg.worker)?
        ),
        false => report(&s),
    }
    crate::job_flags::merge_hint(&a.out, cfg.worker, a.job.json);
    Ok(0)
}

/// Prints the summary.
fn report(s: &CorruptSummary) {
    if s.already_complete {
        println!(
            "{} already holds this job's complete output; nothing to do.",
            s.out.display()
        );
    }
    println!("output:     {}", s.out.display());
    println!(
        "lengths:    tokens_length {}, inputs_length {}, targets_length {}",
        s.tokens_length, s.inputs_length, s.targets_length
    );
    println!(
        "shards:     {} ({:.1} MB)",
        s.shards,
        s.output_bytes as f64 / 1e6
    );
    println!(
        "examples:   {} in {} rows, {} tokens from {} input tokens",
        s.examples, s.rows, s.tokens, s.source_tokens
    );
    if !s.already_complete {
        let secs = s.seconds.max(1e-9);
        println!(
            "speed:      {:.1} M input tokens/s ({:.1} s{})",
            s.source_tokens as f64 / 1e6 / secs,
            s.seconds,
            if s.resumed { ", resumed" } else { "" }
        );
    }
}
