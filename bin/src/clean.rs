//! `conveyor clean`: C4's cleaning rules over raw crawl text (see conveyor_pipeline::clean).

use std::path::PathBuf;

use clap::Args;
use conveyor_pipeline::clean::{clean, CleanConfig, Rules};

use crate::progress::CliProgress;

#[derive(Args)]
pub struct CleanArgs {
    /// WARC/WET files (.warc.wet.gz) or JSON lines, folders or glob patterns.
    #[arg(required = true)]
    inputs: Vec<String>,
    /// Output folder: C4-format .json.gz files and manifest.json.
    #[arg(long)]
    out: PathBuf,
    /// TOML file overriding rule thresholds (fields of the `rules` object in manifest.json,
    /// e.g. `min_sentences = 2`, `curly_brace = false`).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Words and phrases that drop a page, one per line (C4 used the LDNOOBW English list).
    #[arg(long)]
    badwords: Option<PathBuf>,
    /// Keep pages identified as English with at least this confidence.
    #[arg(long, default_value_t = 0.99)]
    min_english: f64,
    /// Keep pages in any language.
    #[arg(long, conflicts_with = "min_english")]
    any_language: bool,
    /// Do not deduplicate lines across the corpus.
    #[arg(long)]
    no_dedup: bool,
    /// JSON field holding the text (JSON lines inputs).
    #[arg(long, default_value = "text")]
    text_field: String,
    #[command(flatten)]
    job: crate::job_flags::JobFlags,
}

pub fn run(a: CleanArgs) -> anyhow::Result<i32> {
    let worker = a.job.worker()?;
    let target = crate::remote::Out::new(&a.out, worker, a.job.overwrite, a.job.silent())?;
    let mut cfg = CleanConfig::new(a.inputs, target.dir.clone());
    if let Some(p) = &a.rules {
        let text = conveyor_pipeline::regular::read_to_string(
            p,
            conveyor_pipeline::regular::MAX_JSON_BYTES,
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        cfg.rules =
            toml::from_str::<Rules>(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    }
    cfg.badwords = a.badwords;
    cfg.min_english = (!a.any_language).then_some(a.min_english);
    cfg.dedup = !a.no_dedup;
    cfg.text_field = a.text_field;
    cfg.threads = a.job.threads;
    cfg.overwrite = a.job.overwrite;
    cfg.worker = worker;
    let progress = CliProgress::new(a.job.silent());
    let mut s = clean(&cfg, &progress)?;
    s.out = target.shown();
    target.finish(a.job.mirror(worker))?;
    if a.job.json {
        let json = crate::job_flags::json_summary(&s, &cfg.out, cfg.worker)?;
        println!("{json}");
        return Ok(failed(&s));
    }
    if cfg.worker.is_some() {
        println!(
            "(the filter pass of a split job: line dedup and the kept counts come with the merge)"
        );
    }
    if s.already_complete {
        println!(
            "{} already holds this job's output; nothing to do.",
            s.out.display()
        );
    }
    let t = &s.totals;
    println!("output:  {} ({} files)", s.out.display(), s.files);
    println!(
        "pages:   {} kept of {}; lines: {} kept of {}",
        t.pages_out, t.pages_in, t.lines_out, t.lines_in
    );
    let list = |m: Vec<(String, u64)>| {
        m.into_iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let name = |v: serde_json::Value| v.as_str().unwrap_or("?").to_string();
    println!(
        "dropped pages: {}",
        list(
            t.pages_dropped
                .iter()
                .map(|(k, v)| (name(serde_json::json!(k)), *v))
                .collect()
        )
    );
    println!(
        "dropped lines: {}",
        list(
            t.lines_dropped
                .iter()
                .map(|(k, v)| (name(serde_json::json!(k)), *v))
                .collect()
        )
    );
    if !s.already_complete {
        let secs = s.seconds.max(1e-9);
        println!(
            "text:    {:.1} MB in, {:.1} MB out; {:.1} MB/s of text in ({:.1} s)",
            s.text_bytes_in as f64 / 1e6,
            s.text_bytes_out as f64 / 1e6,
            s.text_bytes_in as f64 / 1e6 / secs,
            s.seconds
        );
    }
    crate::job_flags::merge_hint(&cfg.out, cfg.worker, a.job.json);
    Ok(failed(&s))
}

/// Lists the inputs that could not be read to their end on stderr, and the records that were
/// not documents; the exit status: 1 when an input failed (its readable part is cleaned and
/// kept), as for ingest, or when no record of a worker's share was a document (a wrong
/// --text-field; one process fails then, writing nothing).
fn failed(s: &conveyor_pipeline::clean::CleanSummary) -> i32 {
    for f in &s.failed_inputs {
        eprintln!(
            "error: {}: {}",
            conveyor_pipeline::printable::one_line(&f.input),
            conveyor_pipeline::printable::text(&f.error)
        );
    }
    let first = s.problems.first().map(String::as_str).unwrap_or("");
    if s.unreadable > 0 && s.totals.pages_in == 0 {
        eprintln!(
            "error: none of the {} records read was a document (first: {first}); check --text-field and the input format (a record over the size limit is not one either)",
            s.unreadable
        );
        return 1;
    }
    if s.unreadable > 0 {
        eprintln!(
            "note: {} records were not documents and were skipped (first: {first}; manifest.json lists up to 10 per input)",
            s.unreadable
        );
    }
    i32::from(!s.failed_inputs.is_empty())
}
