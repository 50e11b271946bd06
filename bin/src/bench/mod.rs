//! `conveyor bench ingest`: the full ingest's throughput and peak memory on a benchmark
//! corpus, beside — in the same run — the SentencePiece library's own encode speed on the
//! same text and the plain Python pipeline (json + sentencepiece + pyarrow, 2 processes).
//! Ratios from one run are what to trust on a noisy machine. `bench corrupt` is [`corrupt`].

mod corrupt;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use conveyor_pipeline::source::parse_json_line;
use conveyor_pipeline::tokenize::{load, TokenizerKind};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Benchmark the ingest against SentencePiece and the plain Python pipeline.
    Ingest(IngestBench),
    /// Benchmark span corruption (offline command and loader) against a numpy version.
    Corrupt(CorruptBench),
    /// Training speed and memory per architecture and length (libtorch; Figures 1 and 2).
    #[command(disable_help_flag = true)]
    Train(crate::torch_handoff::Handoff),
    /// The lightweight convolution's implementations per length (libtorch).
    #[command(disable_help_flag = true)]
    Conv(crate::torch_handoff::Handoff),
    /// One transformer training step in tch beside the same model in PyTorch (libtorch).
    #[command(disable_help_flag = true)]
    Step(crate::torch_handoff::Handoff),
}

#[derive(Args)]
pub struct CorruptBench {
    /// Corpus size in MB of text, made with ../shared/tools/make-bench-corpus and ingested.
    #[arg(long, default_value_t = 64)]
    pub mb: u64,
    /// SentencePiece model for the ingest.
    #[arg(long, default_value = "../shared/data/spiece/t5-spiece.model")]
    pub vocab: PathBuf,
    /// Where the corpus and outputs go.
    #[arg(long, default_value = "target/bench")]
    pub work: PathBuf,
    /// Skip the numpy baseline.
    #[arg(long)]
    pub no_python: bool,
}

#[derive(Args)]
pub struct IngestBench {
    /// Corpus size in MB of text, made with ../shared/tools/make-bench-corpus.
    #[arg(long, default_value_t = 64)]
    mb: u64,
    /// SentencePiece model.
    #[arg(long, default_value = "../shared/data/spiece/t5-spiece.model")]
    vocab: PathBuf,
    /// Where the corpus and outputs go.
    #[arg(long, default_value = "target/bench")]
    work: PathBuf,
    /// Threads for conveyor's ingest (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Skip the Python baseline.
    #[arg(long)]
    no_python: bool,
}

pub fn run(b: BenchCommand) -> anyhow::Result<i32> {
    match b {
        BenchCommand::Ingest(a) => ingest_bench(a),
        BenchCommand::Corrupt(a) => corrupt::run(a),
        BenchCommand::Train(_) | BenchCommand::Step(_) | BenchCommand::Conv(_) => {
            crate::torch_handoff::to_torch()
        }
    }
}

/// The benchmark corpus of `mb` MB of text in `work` (made once), as sorted .json.gz files.
pub fn ensure_corpus(work: &Path, mb: u64) -> anyhow::Result<(PathBuf, Vec<PathBuf>)> {
    let corpus = work.join(format!("corpus-{mb}mb"));
    if !corpus.join(".complete").exists() {
        let tool = Path::new("../shared/tools/make-bench-corpus");
        let st = Command::new("python3")
            .arg(tool)
            .arg(&corpus)
            .args(["--mb", &mb.to_string()])
            .status()
            .with_context(|| format!("running {}", tool.display()))?;
        anyhow::ensure!(st.success(), "make-bench-corpus failed");
        std::fs::write(corpus.join(".complete"), b"")?;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&corpus)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".json.gz"))
        .collect();
    files.sort();
    Ok((corpus, files))
}

/// Runs `cmd` (a conveyor child printing a JSON summary), watching its peak resident memory.
/// Returns the summary, the wall seconds and the peak RSS in MB.
pub fn run_measured(mut cmd: Command) -> anyhow::Result<(serde_json::Value, f64, f64)> {
    let t0 = Instant::now();
    let child = cmd.stdout(Stdio::piped()).spawn()?;
    let pid = child.id();
    let watcher = std::thread::spawn(move || {
        let path = format!("/proc/{pid}/status");
        let mut peak = 0u64;
        while let Ok(s) = std::fs::read_to_string(&path) {
            if let Some(v) = s.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
                peak = peak.max(v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        peak
    });
    let output = child.wait_with_output()?;
    let secs = t0.elapsed().as_secs_f64();
    let peak_kb = watcher.join().unwrap_or(0);
    if !output.status.success() {
        bail!(
            "conveyor {:?} failed",
            cmd.get_args().next().unwrap_or_default()
        );
    }
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    Ok((summary, secs, peak_kb as f64 / 1024.0))
}

fn ingest_bench(a: IngestBench) -> anyhow::Result<i32> {
    let (corpus, files) = ensure_corpus(&a.work, a.mb)?;
    println!("corpus: {} ({} files)", corpus.display(), files.len());

    // 1. conveyor ingest, as a child process so its peak memory can be read.
    let out = a.work.join("out-conveyor");
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("ingest")
        .arg(&corpus)
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

    // 2. Tokenizers alone, one core, on the first file's text.
    let texts = read_texts(&files[0])?;
    let bytes: usize = texts.iter().map(|t| t.len()).sum();
    for kind in [TokenizerKind::Native, TokenizerKind::Reference] {
        let tok = load(&a.vocab, kind)?;
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

    // 3. The plain Python pipeline on the same files, 2 processes.
    if !a.no_python {
        let python = std::env::var("CONVEYOR_PYTHON").unwrap_or_else(|_| "python3".into());
        let o = Command::new(&python)
            .arg("scripts/python_ingest_baseline.py")
            .arg(&a.vocab)
            .arg(a.work.join("out-python"))
            .args(&files)
            .args(["--procs", "2"])
            .output()
            .with_context(|| format!("running the Python baseline with {python}"))?;
        if !o.status.success() {
            bail!(
                "Python baseline failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)?;
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
    }
    Ok(0)
}

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
