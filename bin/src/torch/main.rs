//! `conveyor-torch`: the commands that need libtorch. Users run them as `conveyor COMMAND`;
//! the `conveyor` binary hands them over to this one (see `torch_handoff.rs` there), so that the
//! data commands never load libtorch.

mod bench;
#[path = "../closed_pipe.rs"]
mod closed_pipe;
mod eval;
mod hf;
mod loss;
mod malloc;
mod train;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "conveyor",
    bin_name = "conveyor",
    version,
    about = "conveyor's libtorch commands (run them as `conveyor COMMAND`)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// What libtorch sees on this machine (CUDA devices), and the build's versions.
    Env,
    /// Train a model (pre-training by default) from token or example shards.
    Train(train::TrainArgs),
    /// Fine-tune on a prepared task (constant learning rate; --init for a pre-trained model).
    Finetune(train::FinetuneArgs),
    /// Greedy-decode a prepared task with a checkpoint and score it.
    Eval(eval::EvalArgs),
    /// Models.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Benchmarks of the model side.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Layers, parameter counts and FLOPs per example of a configuration.
    Summary(train::SummaryArgs),
    /// Token-weighted cross-entropy and perplexity of a checkpoint on a dataset.
    Loss(loss::LossArgs),
    /// A Hugging Face T5 folder (config.json + safetensors) to a conveyor checkpoint.
    ImportHf(hf::ImportArgs),
    /// A conveyor checkpoint to a folder transformers loads (T5ForConditionalGeneration).
    ExportHf(hf::ExportArgs),
}

fn main() {
    closed_pipe::end_quietly();
    malloc::keep_freed_memory();
    let cli = Cli::parse();
    let result: anyhow::Result<i32> = match cli.command {
        Command::Env => {
            println!("conveyor {}", env!("CARGO_PKG_VERSION"));
            println!("{}", conveyor_model::describe());
            Ok(0)
        }
        Command::Train(a) => train::run(a),
        Command::Finetune(a) => train::finetune(a),
        Command::Eval(a) => eval::run(a),
        Command::Model(ModelCommand::Summary(a)) => train::summary(a),
        Command::Model(ModelCommand::Loss(a)) => loss::run(a),
        Command::Model(ModelCommand::ImportHf(a)) => hf::import(a),
        Command::Model(ModelCommand::ExportHf(a)) => hf::export(a),
        Command::Bench(c) => bench::run(c),
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
