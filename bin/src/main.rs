//! The `conveyor` command: parses arguments, converts them into the libraries' validated
//! configuration types and calls them. Nothing below this crate sees clap.

mod bench;
mod clean;
mod closed_pipe;
mod corrupt;
mod experiments;
mod ingest;
mod inspect;
mod job_flags;
mod manifest_merge;
mod progress;
mod remote;
mod task;
mod torch_handoff;
mod vocab;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "conveyor",
    version,
    about = "The T5 recipe, fast and exact: corpus -> tokens -> span corruption -> training -> evaluation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tokenize corpus files into Parquet token shards with a manifest.
    Ingest(ingest::IngestArgs),
    /// C4's cleaning rules over raw crawl text (WARC/WET or JSON lines) -> C4-format JSON lines.
    Clean(clean::CleanArgs),
    /// Text-to-text tasks: list them, show one (and its data).
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// Run a study grid from a TOML file (resumable): pre-training, fine-tuning over a
    /// learning-rate grid, evaluation, the speed benchmark, one report.
    Study {
        /// The study file (see studies/).
        file: PathBuf,
        /// Study folder (default: studies/out/NAME).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Evaluation results in the paper's Table 2 layout, with the gain from pre-training.
    Report {
        /// Run folders, evaluation folders written by `conveyor eval`, or metrics.json files.
        #[arg(required = true)]
        evals: Vec<PathBuf>,
        /// Also write report.md and report.json here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// SentencePiece vocabularies.
    #[command(subcommand)]
    Vocab(vocab::VocabCommand),
    /// T5 span corruption: token shards -> example shards (inputs, targets; optionally packed).
    Corrupt(corrupt::CorruptArgs),
    /// Summarise a token directory, decode its first documents, optionally verify every shard.
    Inspect(inspect::InspectArgs),
    /// Manifests: join the parts of a job split among workers (`manifest merge OUT`).
    #[command(subcommand)]
    Manifest(manifest_merge::ManifestCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// The main job on generated fixtures: vocabulary, ingest, corruption, pre-training,
    /// fine-tuning, evaluation, report (a minute or two on 2 cores).
    Demo {
        /// Output folder.
        #[arg(long, default_value = "out/demo")]
        out: PathBuf,
        /// Where the models train and evaluate: cpu (the 10-minute flow) or cuda.
        #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda", "auto"])]
        device: String,
        /// Model config overrides (JSON or TOML) for both architectures, e.g.
        /// `{"position_embedding": "none"}`.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Train a model from token or example shards (libtorch; see `conveyor train --help`).
    #[command(disable_help_flag = true)]
    Train(torch_handoff::Handoff),
    /// Fine-tune on a prepared task (libtorch; see `conveyor finetune --help`).
    #[command(disable_help_flag = true)]
    Finetune(torch_handoff::Handoff),
    /// Evaluate a checkpoint on a prepared task (libtorch; see `conveyor eval --help`).
    #[command(disable_help_flag = true)]
    Eval(torch_handoff::Handoff),
    /// Models: `conveyor model summary --arch A --preset P`, `model loss --checkpoint C --data D`,
    /// `model import-hf HF_DIR --out CKPT`, `model export-hf CKPT --out HF_DIR` (libtorch).
    #[command(disable_help_flag = true)]
    Model(torch_handoff::Handoff),
    /// What libtorch sees on this machine (CUDA devices), and the build's versions.
    #[command(disable_help_flag = true)]
    Env(torch_handoff::Handoff),
}

fn main() {
    closed_pipe::end_quietly();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ingest(a) => ingest::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Clean(a) => clean::run(a),
        Command::Manifest(c) => manifest_merge::run(c),
        Command::Corrupt(a) => corrupt::run(a),
        Command::Vocab(c) => vocab::run(c),
        Command::Task(c) => task::run(c),
        Command::Study { file, out } => experiments::study::run(&file, out),
        Command::Report { evals, out } => experiments::report::run(&evals, out),
        Command::Bench(b) => bench::run(b),
        Command::Demo {
            out,
            device,
            config,
        } => experiments::demo::run(out, &device, config.as_deref()),
        Command::Env(_)
        | Command::Train(_)
        | Command::Finetune(_)
        | Command::Eval(_)
        | Command::Model(_) => torch_handoff::to_torch(),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // Messages quote names from files: shown, never obeyed, by the terminal.
            eprintln!(
                "error: {}",
                conveyor_pipeline::printable::text(&format!("{e:#}"))
            );
            std::process::exit(2);
        }
    }
}
