//! `conveyor ingest`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use conveyor_pipeline::ingest::{ingest, IngestConfig, IngestSummary};
use conveyor_pipeline::printable::{one_line, text};
use conveyor_pipeline::source::{ProblemKind, TxtMode};
use conveyor_pipeline::tokenize::TokenizerKind;

use crate::progress::CliProgress;

#[derive(Clone, Copy, ValueEnum)]
pub enum TxtArg {
    /// One document per file.
    File,
    /// One document per line.
    Line,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum TokenizerArg {
    /// The native unigram encoder (fast; ids identical to SentencePiece).
    Native,
    /// The SentencePiece library itself (slow; the reference).
    Reference,
}

#[derive(Args)]
pub struct IngestArgs {
    /// Input files, directories or glob patterns (.json.gz, .jsonl.gz, .jsonl, .json.zst,
    /// .jsonl.zst, .parquet, .txt, .warc.wet[.gz|.zst]), or URLs of objects, prefixes or
    /// patterns (https://, s3://, gs://), read as streams.
    #[arg(required = true)]
    inputs: Vec<String>,
    /// SentencePiece model file.
    #[arg(long)]
    vocab: PathBuf,
    /// Output directory, or a URL (s3://, gs://, https://; written to a local stage folder
    /// and uploaded when the job is done).
    #[arg(long)]
    out: PathBuf,
    /// Split name used in shard names.
    #[arg(long, default_value = "train")]
    split: String,
    /// JSON field or Parquet column holding the text.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// How .txt inputs become documents.
    #[arg(long, value_enum, default_value = "file")]
    txt_mode: TxtArg,
    /// Append EOS (</s>) to every document.
    #[arg(long)]
    append_eos: bool,
    /// Target shard size in MB of Parquet.
    #[arg(long, default_value_t = 192.0)]
    shard_mb: f64,
    /// Target shard size in tokens (cuts at whichever target comes first).
    #[arg(long)]
    shard_tokens: Option<u64>,
    /// Skip and count (as too_long) any record above this many bytes, so one huge or
    /// hostile document cannot exhaust memory (default 16 MiB).
    #[arg(long, default_value_t = conveyor_pipeline::source::MAX_DOCUMENT_BYTES)]
    max_document_bytes: usize,
    /// Tokenizer implementation.
    #[arg(long, value_enum, default_value = "native")]
    tokenizer: TokenizerArg,
    /// Stop at the first bad record or file instead of skipping and counting it.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    job: crate::job_flags::JobFlags,
}

impl From<TxtArg> for TxtMode {
    fn from(t: TxtArg) -> Self {
        match t {
            TxtArg::File => TxtMode::File,
            TxtArg::Line => TxtMode::Line,
        }
    }
}

impl IngestArgs {
    fn into_config(self) -> anyhow::Result<IngestConfig> {
        anyhow::ensure!(self.shard_mb > 0.0, "--shard-mb must be positive");
        let mut cfg = IngestConfig::new(self.inputs, self.vocab, self.out);
        cfg.split = self.split;
        cfg.text_field = self.text_field;
        cfg.txt_mode = self.txt_mode.into();
        cfg.append_eos = self.append_eos;
        cfg.shard_bytes = (self.shard_mb * 1e6) as u64;
        cfg.shard_tokens = self.shard_tokens;
        cfg.max_document_bytes = self.max_document_bytes;
        cfg.tokenizer = match self.tokenizer {
            TokenizerArg::Native => TokenizerKind::Native,
            TokenizerArg::Reference => TokenizerKind::Reference,
        };
        cfg.threads = self.job.threads;
        cfg.strict = self.strict;
        cfg.overwrite = self.job.overwrite;
        cfg.worker = self.job.worker()?;
        Ok(cfg)
    }
}

pub fn run(args: IngestArgs) -> anyhow::Result<i32> {
    let (json, quiet) = (args.job.json, args.job.quiet);
    let mut cfg = args.into_config()?;
    let progress = CliProgress::new(quiet || json);
    let worker = cfg.worker;
    let out = cfg.out.clone();
    let target = crate::remote::Out::new(&out, worker, cfg.overwrite, quiet || json)?;
    let mirror = cfg.overwrite && worker.is_none();
    cfg.out = target.dir.clone();
    let mut summary = ingest(cfg, &progress)?;
    summary.out = target.shown();
    target.finish(mirror)?;
    match json {
        true => println!(
            "{}",
            crate::job_flags::json_summary(&summary, &out, worker)?
        ),
        false => report(&summary),
    }
    warn(&summary, worker.is_some());
    crate::job_flags::merge_hint(&out, worker, json);
    Ok(i32::from(
        !summary.failed_inputs.is_empty() || no_documents(&summary),
    ))
}

/// True (and said on stderr) when records were read but every one was skipped as a problem:
/// a wrong `--text-field` or input format, which an exit status of 0 would hide.
fn no_documents(s: &IngestSummary) -> bool {
    let t = &s.totals;
    let empty = t.skipped.get(&ProblemKind::Empty).copied().unwrap_or(0);
    if t.documents > 0 || t.records == empty {
        return false;
    }
    eprintln!(
        "error: none of the {} records read was a document ({}; manifest.json lists them by file and line); check --text-field and the input format",
        t.records,
        skipped_list(t)
    );
    true
}

fn skipped_list(t: &conveyor_pipeline::manifest::Counts) -> String {
    let parts: Vec<String> = t
        .skipped
        .iter()
        .map(|(k, v)| format!("{} {v}", k.name()))
        .collect();
    match parts.is_empty() {
        true => "none".into(),
        false => parts.join(", "),
    }
}

/// Prints the summary.
fn report(s: &IngestSummary) {
    let t = &s.totals;
    if s.already_complete {
        println!(
            "{} already holds this job's complete output; nothing to do.",
            s.out.display()
        );
    }
    println!("output:     {}", s.out.display());
    println!(
        "shards:     {} ({:.1} MB)",
        s.shards,
        s.output_bytes as f64 / 1e6
    );
    println!(
        "documents:  {} written of {} records",
        t.documents, t.records
    );
    println!("tokens:     {}", t.tokens);
    println!("skipped:    {}", skipped_list(t));
    if !s.already_complete {
        let secs = s.seconds.max(1e-9);
        println!(
            "speed:      {:.1} MB/s of text ({:.1} MB/s of files), {:.2} M tokens/s ({:.1} s{})",
            t.text_bytes as f64 / 1e6 / secs,
            s.input_bytes as f64 / 1e6 / secs,
            t.tokens as f64 / 1e6 / secs,
            s.seconds,
            if s.resumed { ", resumed" } else { "" }
        );
    }
    if s.problems_total > 0 {
        println!("problems:   {} (listed in manifest.json)", s.problems_total);
    }
}

/// On stderr, whatever the summary's form: inputs modified since, and failed inputs.
fn warn(s: &IngestSummary, worker: bool) {
    for p in &s.modified_inputs {
        eprintln!("{}", modified_warning(p, &s.out));
    }
    for f in &s.failed_inputs {
        eprintln!(
            "error: {}: {}",
            one_line(&f.path),
            text(f.error.as_deref().unwrap_or("failed"))
        );
    }
    if !s.failed_inputs.is_empty() && worker {
        eprintln!(
            "error: this worker's part holds its other inputs' documents and those read before each failure, and the merge will report the failures: to have the fixed inputs read, run the whole split job again into a new or emptied --out (a worker's --overwrite does not replace the merged output)"
        );
    } else if !s.failed_inputs.is_empty() {
        eprintln!(
            "error: {} holds the other inputs' documents and those read before each failure; the output is complete as it is, so a rerun reads nothing again: fix the inputs named above and rerun with --overwrite to make it with them",
            s.out.display()
        );
    }
}

/// The warning for an input modified since a complete output was made from it.
pub fn modified_warning(input: &str, out: &std::path::Path) -> String {
    format!(
        "warning: {} was modified since {} was made from it (same size, another modification time): if its contents changed, that output is stale; rerun with --overwrite to make it again",
        one_line(input),
        out.display()
    )
}
