//! `conveyor bench corrupt`: span corruption on the token shards of the benchmark corpus —
//! the offline command end to end (child process, peak memory), the loader alone (on example
//! shards, and on token shards with corruption on the fly), and beside them, in the same run,
//! a vectorised numpy implementation of the same algorithm.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use conveyor_pipeline::corrupt::CorruptConfig;
use conveyor_pipeline::loader::{Loader, LoaderConfig, LoaderInput};

use super::{ensure_corpus, run_measured, CorruptBench};

pub fn run(a: CorruptBench) -> anyhow::Result<i32> {
    let (corpus, _) = ensure_corpus(&a.work, a.mb)?;
    let exe = std::env::current_exe()?;
    let tokens = a.work.join(format!("tokens-{}mb", a.mb));
    let input_tokens = ingest(&exe, &corpus, &a, &tokens)?;
    let examples = a.work.join(format!("examples-{}mb", a.mb));
    let e2e = offline(&exe, &tokens, &examples, input_tokens)?;
    loader(&tokens, &examples, input_tokens)?;
    if !a.no_python {
        numpy(&a, &tokens, e2e)?;
    }
    Ok(0)
}

/// The benchmark corpus as token shards (kept between runs); its token count.
fn ingest(exe: &Path, corpus: &Path, a: &CorruptBench, tokens: &Path) -> anyhow::Result<f64> {
    let mut ingest = Command::new(exe);
    ingest
        .arg("ingest")
        .arg(corpus)
        .arg("--vocab")
        .arg(&a.vocab)
        .arg("--out")
        .arg(tokens)
        .args(["--json", "-q"]);
    let (s, _, _) = run_measured(ingest)?;
    let input_tokens = s["totals"]["tokens"].as_f64().unwrap_or(0.0);
    println!(
        "token shards: {} ({:.1} M tokens, {} shards)",
        tokens.display(),
        input_tokens / 1e6,
        s["shards"]
    );
    Ok(input_tokens)
}

/// The offline command end to end (1.): read token shards, corrupt, write example shards;
/// its input tokens per second.
fn offline(exe: &Path, tokens: &Path, examples: &Path, input_tokens: f64) -> anyhow::Result<f64> {
    let mut cmd = Command::new(exe);
    cmd.arg("corrupt")
        .arg(tokens)
        .arg("--out")
        .arg(examples)
        .args(["--overwrite", "--json", "-q"]);
    let (s, secs, peak) = run_measured(cmd)?;
    let e2e = input_tokens / secs;
    println!(
        "conveyor corrupt, end to end: {:6.1} M input tokens/s, peak RSS {:.0} MB ({:.2} s, {} examples)",
        e2e / 1e6,
        peak,
        secs,
        s["examples"]
    );
    // The whole-file check corrupt makes of every token shard before reading it, timed
    // alone on one thread (corrupt spreads it over its threads with the shards).
    let t = Instant::now();
    let m = conveyor_pipeline::manifest::Manifest::read(tokens)?;
    for sh in &m.shards {
        conveyor_pipeline::shard::file_sha256(&tokens.join(&sh.file))?;
    }
    let hashed = t.elapsed().as_secs_f64();
    println!(
        "  of which the sha256 check of its input: {hashed:.2} s on one thread ({:.1}% of the end-to-end time)",
        100.0 * hashed / secs
    );
    Ok(e2e)
}

/// The loader alone (2.), one epoch, batches of 64 with a 10,000-example shuffle window: on
/// the example shards, and on the token shards corrupting on the fly.
fn loader(tokens: &Path, examples: &Path, input_tokens: f64) -> anyhow::Result<()> {
    let epoch = |input: LoaderInput| -> anyhow::Result<(f64, usize)> {
        let mut cfg = LoaderConfig::new(input, 64);
        cfg.epochs = Some(1);
        let t = Instant::now();
        let mut batches = 0;
        for b in Loader::new(cfg)? {
            b?;
            batches += 1;
        }
        Ok((t.elapsed().as_secs_f64(), batches))
    };
    let (secs, n) = epoch(LoaderInput::Examples(examples.to_path_buf()))?;
    println!(
        "loader on example shards:     {:6.1} M input tokens/s ({:.2} s, {n} batches of 64)",
        input_tokens / secs / 1e6,
        secs
    );
    let (secs, n) = epoch(LoaderInput::Tokens(CorruptConfig::new(
        tokens.to_path_buf(),
        Default::default(),
        512,
    )))?;
    println!(
        "loader, corrupting on the fly:{:6.1} M input tokens/s ({:.2} s, {n} batches of 64)",
        input_tokens / secs / 1e6,
        secs
    );
    Ok(())
}

/// numpy (3.), one process, the same algorithm on the same shards, beside `e2e`.
fn numpy(a: &CorruptBench, tokens: &Path, e2e: f64) -> anyhow::Result<()> {
    let out = a.work.join(format!("examples-numpy-{}mb", a.mb));
    let v = super::python_json(
        "scripts/numpy_span_corruption.py",
        &[tokens.as_os_str(), out.as_os_str()],
        "numpy baseline",
    )?;
    let np = v["tokens_per_s"].as_f64().unwrap_or(f64::NAN);
    println!(
        "numpy, 1 process, end to end: {:6.1} M input tokens/s (masking alone {:.1} M/s; numpy {})",
        np / 1e6,
        v["masking_tokens_per_s"].as_f64().unwrap_or(f64::NAN) / 1e6,
        v["numpy"]
    );
    println!("ratio conveyor end to end / numpy: {:.1}x", e2e / np);
    Ok(())
}
