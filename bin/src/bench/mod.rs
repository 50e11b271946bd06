//! `conveyor bench ingest|corrupt` (and the libtorch benchmarks handed to `conveyor-torch`):
//! the flags, the benchmark corpus they share, and running a command as a measured child
//! process. Each benchmark sets conveyor beside a baseline in the same run: ratios from one
//! run are what to trust on a noisy machine.

mod corrupt;
mod ingest;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

/// Runs a Python baseline script (scripts/, run from the repository root) with
/// $CONVEYOR_PYTHON (else python3) and parses the JSON object it prints; `what` names it in
/// errors.
fn python_json(
    script: &str,
    args: &[&std::ffi::OsStr],
    what: &str,
) -> anyhow::Result<serde_json::Value> {
    let python = std::env::var("CONVEYOR_PYTHON").unwrap_or_else(|_| "python3".into());
    let o = Command::new(&python)
        .arg(script)
        .args(args)
        .output()
        .with_context(|| format!("running the {what} with {python}"))?;
    if !o.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(serde_json::from_slice(&o.stdout)?)
}

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
    /// The optimiser step alone, per-tensor beside multi-tensor kernels (libtorch).
    #[command(disable_help_flag = true)]
    Optim(crate::torch_handoff::Handoff),
    /// One point of `bench train` as JSON: time per step, model TFLOP/s, MFU (libtorch).
    #[command(disable_help_flag = true, hide = true)]
    TrainOne(crate::torch_handoff::Handoff),
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
    pub mb: u64,
    /// SentencePiece model.
    #[arg(long, default_value = "../shared/data/spiece/t5-spiece.model")]
    pub vocab: PathBuf,
    /// Where the corpus and outputs go.
    #[arg(long, default_value = "target/bench")]
    pub work: PathBuf,
    /// Threads for conveyor's ingest (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Skip the Python baseline.
    #[arg(long)]
    pub no_python: bool,
}

pub fn run(b: BenchCommand) -> anyhow::Result<i32> {
    match b {
        BenchCommand::Ingest(a) => ingest::run(a),
        BenchCommand::Corrupt(a) => corrupt::run(a),
        BenchCommand::Train(_)
        | BenchCommand::Step(_)
        | BenchCommand::Conv(_)
        | BenchCommand::Optim(_)
        | BenchCommand::TrainOne(_) => crate::torch_handoff::to_torch(),
    }
}

/// The benchmark corpus of `mb` MB of text in `work` (made once), as sorted .json.gz files.
pub fn ensure_corpus(work: &Path, mb: u64) -> anyhow::Result<(PathBuf, Vec<PathBuf>)> {
    let corpus = work.join(format!("corpus-{mb}mb"));
    if !corpus.join(".complete").exists() {
        // The generator writes over files of its names: only into a folder holding nothing
        // else (a corpus it left unfinished is made again).
        let stranger = std::fs::read_dir(&corpus)
            .into_iter()
            .flatten()
            .flatten()
            .find(|e| !generated(&e.file_name().to_string_lossy()));
        if let Some(e) = stranger {
            anyhow::bail!(
                "{} holds {}, which the benchmark corpus generator did not write: remove it or give another --work",
                corpus.display(),
                e.file_name().to_string_lossy()
            );
        }
        let tool = Path::new("../shared/tools/make-bench-corpus");
        anyhow::ensure!(
            tool.exists(),
            "{} is missing: run the benchmark from the repository root (beside ../shared)",
            tool.display()
        );
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
        // The generator's shards only, no stranger.
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| generated(&n.to_string_lossy()) && n != ".complete")
        })
        .collect();
    files.sort();
    Ok((corpus, files))
}

/// A name the benchmark corpus generator writes: `c4-train.IIIII-of-NNNNN.json.gz` (and its
/// `.complete` marker).
fn generated(name: &str) -> bool {
    name == ".complete"
        || name
            .strip_prefix("c4-train.")
            .and_then(|n| n.strip_suffix(".json.gz"))
            .and_then(|n| n.split_once("-of-"))
            .is_some_and(|(i, n)| {
                [i, n]
                    .iter()
                    .all(|d| d.len() == 5 && d.bytes().all(|b| b.is_ascii_digit()))
            })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The corpus generator writes over files of its names: a --work corpus folder holding
    /// anything else is refused with the user's file kept, and a finished one lends the
    /// benchmark its generator's shards only.
    #[test]
    fn the_bench_corpus_is_its_own() {
        let work = std::env::temp_dir().join(format!("conveyor-bench-work-{}", std::process::id()));
        let corpus = work.join("corpus-1mb");
        std::fs::create_dir_all(&corpus).unwrap();
        let shard = corpus.join("c4-train.00000-of-00008.json.gz");
        std::fs::write(&shard, "a shard").unwrap();
        let mine = corpus.join("my-data.json.gz");
        std::fs::write(&mine, "mine").unwrap();
        let e = ensure_corpus(&work, 1).unwrap_err().to_string();
        assert!(
            e.contains("my-data.json.gz") && e.contains("did not write"),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&mine).unwrap(), "mine");
        std::fs::write(corpus.join(".complete"), "").unwrap();
        let (_, files) = ensure_corpus(&work, 1).unwrap();
        assert_eq!(files, [shard]);
        assert!(generated("c4-train.00007-of-00008.json.gz") && !generated("c4-train.x.json.gz"));
        std::fs::remove_dir_all(&work).unwrap();
    }
}
