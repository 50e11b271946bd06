//! `conveyor inspect DIR`: the manifest in brief, the first documents decoded, and with
//! `--verify` every shard's checksum and row count.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use conveyor_pipeline::manifest::Manifest;
use conveyor_pipeline::printable::{one_line, text as printable_text};
use conveyor_pipeline::shard::{read_shard_head, verify_shard};
use conveyor_pipeline::tokenize::{load, TokenizerKind};

#[derive(Args)]
pub struct InspectArgs {
    /// A token directory written by `conveyor ingest`.
    dir: PathBuf,
    /// Documents to decode and show.
    #[arg(long, short = 'n', default_value_t = 3)]
    docs: usize,
    /// The vocabulary to decode with (default: the path in the manifest).
    #[arg(long)]
    vocab: Option<PathBuf>,
    /// Check every shard's sha256 and row count against the manifest.
    #[arg(long)]
    verify: bool,
}

pub fn run(a: InspectArgs) -> anyhow::Result<i32> {
    let m = Manifest::read(&a.dir)?;
    summarise(&m);
    if a.docs > 0 && !m.shards.is_empty() {
        decode_head(&a, &m)?;
    }
    if a.verify && verify(&a.dir, &m) > 0 {
        return Ok(1);
    }
    Ok(0)
}

/// The manifest: format, vocabulary, totals and one line per shard.
fn summarise(m: &Manifest) {
    println!(
        "{} v{} ({}), job {}",
        one_line(&m.format),
        m.version,
        one_line(&m.created_by),
        one_line(&m.job)
    );
    println!(
        "vocabulary: {} ({} pieces, sha256 {}…)",
        one_line(&m.vocab.path),
        m.vocab.size,
        one_line(m.vocab.sha256.get(..12).unwrap_or(&m.vocab.sha256))
    );
    println!(
        "split {}: {} shards, {} documents, {} tokens from {} inputs ({} failed), {} records skipped",
        m.settings.split,
        m.shards.len(),
        m.totals.documents,
        m.totals.tokens,
        m.inputs.len(),
        m.failed_inputs,
        m.totals.skipped_total()
    );
    for s in &m.shards {
        println!(
            "  {}  {} rows  {} tokens  {:.1} MB",
            one_line(&s.file),
            s.rows,
            s.tokens,
            s.bytes as f64 / 1e6
        );
    }
}

/// The first documents of the first shard, decoded with the vocabulary they were made with.
fn decode_head(a: &InspectArgs, m: &Manifest) -> anyhow::Result<()> {
    let vocab_path = a
        .vocab
        .clone()
        .unwrap_or_else(|| PathBuf::from(&m.vocab.path));
    let tok = load(&vocab_path, TokenizerKind::Native).with_context(|| {
        "loading the vocabulary to decode with (pass --vocab to choose another)"
    })?;
    anyhow::ensure!(
        tok.vocab().sha256 == m.vocab.sha256,
        "{} is not the vocabulary these shards were made with (sha256 differs)",
        vocab_path.display()
    );
    let rows = read_shard_head(
        &conveyor_pipeline::manifest::shard_path(&a.dir, &m.shards[0].file)?,
        a.docs,
    )?;
    for r in rows {
        let text = tok.vocab().decode(&r.tokens);
        let shown: String = text.chars().take(300).collect();
        println!(
            "\n--- {}:{} ({} tokens){}\n{}{}",
            one_line(&r.source),
            r.source_index + 1,
            r.tokens.len(),
            r.url
                .map(|u| format!(" {}", one_line(&u)))
                .unwrap_or_default(),
            printable_text(&shown),
            if shown.len() < text.len() { " …" } else { "" }
        );
    }
    Ok(())
}

/// Checks every shard's sha256 and row count, printing each failure; how many failed.
fn verify(dir: &std::path::Path, m: &Manifest) -> usize {
    let mut bad = 0;
    for s in &m.shards {
        let checked = conveyor_pipeline::manifest::shard_path(dir, &s.file)
            .and_then(|path| verify_shard(&path, &s.sha256, s.rows));
        if let Err(e) = checked {
            bad += 1;
            eprintln!("error: {}", printable_text(&e.to_string()));
        }
    }
    println!(
        "\nverify: {} of {} shards ok",
        m.shards.len() - bad,
        m.shards.len()
    );
    bad
}
