//! `conveyor inspect DIR`: the manifest in brief, the first documents decoded (token
//! folders), and with `--verify` every shard's checksum and row count (token and example
//! folders: span corruption's and prepared tasks').

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use conveyor_pipeline::examples::{ExamplesManifest, Objective, EXAMPLES_FORMAT};
use conveyor_pipeline::manifest::Manifest;
use conveyor_pipeline::printable::{one_line, text as printable_text};
use conveyor_pipeline::shard::{read_shard_head, verify_shard};
use conveyor_pipeline::tokenize::{load, TokenizerKind};

#[derive(Args)]
pub struct InspectArgs {
    /// A token folder (`conveyor ingest`) or an example folder (`corrupt`, `task prepare`).
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
    match format_of(&a.dir).as_deref() {
        Some(EXAMPLES_FORMAT) => return examples(&a),
        // Another kind of conveyor folder (a clean output, a worker's part): inspect reads
        // token and example folders.
        Some(f) if f != conveyor_pipeline::manifest::TOKENS_FORMAT && f.starts_with("conveyor") => {
            anyhow::bail!(
                "{}: is a {f} folder; inspect reads token folders (ingest) and example folders (corrupt, task prepare)",
                a.dir.display()
            )
        }
        _ => {}
    }
    let m = Manifest::read(&a.dir)?;
    summarise(&m);
    if a.docs > 0 && !m.shards.is_empty() {
        decode_head(&a, &m)?;
    }
    let shards = m
        .shards
        .iter()
        .map(|s| (s.file.as_str(), s.sha256.as_str(), s.rows));
    Ok(verified(&a, shards.collect()))
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
        shard_line(&s.file, s.rows, s.tokens, s.bytes);
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

/// The `format` a folder's manifest names, if it can be read as JSON.
fn format_of(dir: &std::path::Path) -> Option<String> {
    let path = dir.join("manifest.json");
    let text = conveyor_pipeline::regular::read_to_string(
        &path,
        conveyor_pipeline::regular::MAX_JSON_BYTES,
    )
    .ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["format"].as_str().map(str::to_string)
}

/// An example folder: its manifest in brief and, with `--verify`, its shards checked.
fn examples(a: &InspectArgs) -> anyhow::Result<i32> {
    let m = ExamplesManifest::read(&a.dir)?;
    let what = match &m.settings.objective {
        Objective::SpanCorruption => "span corruption".to_string(),
        Objective::Task(t) => format!("task {}", one_line(t)),
    };
    let l = m.settings.lengths;
    println!(
        "{} v{} ({}), job {}: {what}, split {}",
        one_line(&m.format),
        m.version,
        one_line(&m.created_by),
        one_line(&m.job),
        one_line(&m.settings.split)
    );
    println!(
        "{} shards, {} examples in {} rows{}, inputs {} / targets {} tokens, vocabulary {} ({} ids)",
        m.shards.len(),
        m.examples,
        m.rows,
        if m.settings.pack { " (packed)" } else { "" },
        l.inputs_length,
        l.targets_length,
        one_line(&m.vocab.path),
        m.settings.vocab_size
    );
    for s in &m.shards {
        shard_line(&s.file, s.rows, s.tokens, s.bytes);
    }
    let shards = m
        .shards
        .iter()
        .map(|s| (s.file.as_str(), s.sha256.as_str(), s.rows));
    Ok(verified(a, shards.collect()))
}

/// One shard in a manifest's summary.
fn shard_line(file: &str, rows: u64, tokens: u64, bytes: u64) {
    println!(
        "  {}  {rows} rows  {tokens} tokens  {:.1} MB",
        one_line(file),
        bytes as f64 / 1e6
    );
}

/// The exit status: 1 when `--verify` found a damaged shard among `shards` (file, sha256,
/// rows), else 0.
fn verified(a: &InspectArgs, shards: Vec<(&str, &str, u64)>) -> i32 {
    i32::from(a.verify && verify(&a.dir, &shards) > 0)
}

/// Checks every shard's sha256 and row count, printing each failure; how many failed.
fn verify(dir: &std::path::Path, shards: &[(&str, &str, u64)]) -> usize {
    let mut bad = 0;
    for (file, sha256, rows) in shards {
        let path = conveyor_pipeline::manifest::shard_path(dir, file);
        if let Some(p) = path.as_ref().ok().filter(|p| !p.exists()) {
            bad += 1;
            eprintln!(
                "error: {}: missing, though the manifest lists it: the dataset is incomplete; make it again (the command that wrote it, with --overwrite)",
                printable_text(&p.display().to_string())
            );
            continue;
        }
        if let Err(e) = path.and_then(|path| verify_shard(&path, sha256, *rows)) {
            bad += 1;
            eprintln!("error: {}", printable_text(&e.to_string()));
        }
    }
    println!(
        "\nverify: {} of {} shards ok",
        shards.len() - bad,
        shards.len()
    );
    bad
}
