//! `conveyor bench ingest`: the full ingest's throughput and peak memory on a benchmark
//! corpus, beside — in the same run — the SentencePiece library's own encode speed on the
//! same text and the plain Python pipeline (json + sentencepiece + pyarrow, 2 processes).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use conveyor_pipeline::source::parse_json_line;
use conveyor_pipeline::tokenize::{load, TokenizerKind};

use super::{ensure_corpus, run_measured, IngestBench};

pub fn run(a: IngestBench) -> anyhow::Result<i32> {
    let (corpus, files) = ensure_corpus(&a.work, a.mb)?;
    println!("corpus: {} ({} files)", corpus.display(), files.len());
    let conveyor_mb_s = conveyor(&a, &corpus)?;
    tokenizers(&a.vocab, &files[0])?;
    if !a.no_python {
        python(&a, &files, conveyor_mb_s)?;
    }
    Ok(0)
}

/// conveyor ingest (1.), as a child process so its peak memory can be read; MB/s of text.
fn conveyor(a: &IngestBench, corpus: &Path) -> anyhow::Result<f64> {
    let out = a.work.join("out-conveyor");
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("ingest")
        .arg(corpus)
        .arg("--vocab")
        .arg(&a.vocab)
        .arg("--out")
        .arg(&out);
    cmd.args(["--overwrite", "--json", "-q"]);
    if let Some(t) = a.threads {
        cmd.args(["--threads", &t.to_string()]);
    }
    let (summary, secs, peak_mb) = run_measured(cmd)?;
    let text_bytes = summary["totals"]["text_bytes"].as_f64().unwrap_or(0.0);
    let tokens = summary["totals"]["tokens"].as_f64().unwrap_or(0.0);
    let conveyor_mb_s = text_bytes / 1e6 / secs;
    println!(
        "conveyor ingest:            {:7.1} MB/s of text, {:6.2} M tokens/s, peak RSS {:.0} MB ({:.1} s, {} shards)",
        conveyor_mb_s,
        tokens / 1e6 / secs,
        peak_mb,
        secs,
        summary["shards"]
    );
    Ok(conveyor_mb_s)
}

/// The tokenizers alone (2.), one core, on one file's text.
fn tokenizers(vocab: &Path, file: &Path) -> anyhow::Result<()> {
    let texts = read_texts(file)?;
    let bytes: usize = texts.iter().map(|t| t.len()).sum();
    for kind in [TokenizerKind::Native, TokenizerKind::Reference] {
        let tok = load(vocab, kind)?;
        let t = Instant::now();
        let mut n = 0usize;
        let mut ids = Vec::new();
        for text in &texts {
            ids.clear();
            tok.encode_into(text, &mut ids)?;
            n += ids.len();
        }
        let s = t.elapsed().as_secs_f64();
        let label = match kind {
            TokenizerKind::Native => "native encoder, 1 core:",
            TokenizerKind::Reference => "sentencepiece crate, 1 core:",
        };
        println!(
            "{label:28}{:7.1} MB/s of text, {:6.2} M tokens/s",
            bytes as f64 / 1e6 / s,
            n as f64 / 1e6 / s
        );
    }
    Ok(())
}

/// The plain Python pipeline (3.) on the same files, 2 processes, beside conveyor's MB/s.
fn python(a: &IngestBench, files: &[PathBuf], conveyor_mb_s: f64) -> anyhow::Result<()> {
    let out = a.work.join("out-python");
    let mut args: Vec<&std::ffi::OsStr> = vec![a.vocab.as_os_str(), out.as_os_str()];
    args.extend(files.iter().map(|f| f.as_os_str()));
    args.extend([std::ffi::OsStr::new("--procs"), std::ffi::OsStr::new("2")]);
    let v = super::python_json(
        "scripts/python_ingest_baseline.py",
        &args,
        "Python baseline",
    )?;
    let py = v["pipeline_mb_s"].as_f64().unwrap_or(f64::NAN);
    println!(
        "python pipeline, 2 procs:   {:7.1} MB/s of text, {:6.2} M tokens/s (sentencepiece {})",
        py,
        v["pipeline_tokens_s"].as_f64().unwrap_or(0.0) / 1e6,
        v["sentencepiece_version"]
    );
    println!(
        "sentencepiece python, 1 core:{:6.1} MB/s of text (batch encode)",
        v["spm_python_encode_mb_s_1core"]
            .as_f64()
            .unwrap_or(f64::NAN)
    );
    println!(
        "ratio conveyor / python pipeline: {:.2}x",
        conveyor_mb_s / py
    );
    Ok(())
}

/// The `text` of every JSON line of a gzipped file.
fn read_texts(path: &Path) -> anyhow::Result<Vec<String>> {
    let f = std::fs::File::open(path)?;
    let r = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(f));
    let mut out = Vec::new();
    for line in r.split(b'\n') {
        let line = line?;
        if let Ok(d) = parse_json_line(&line, "text") {
            out.push(d.text);
        }
    }
    Ok(out)
}
