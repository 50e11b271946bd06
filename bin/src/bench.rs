//! `conveyor bench ingest`: throughput and peak memory of the full ingest, beside the
//! SentencePiece library's own encode speed on the same text.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Benchmark the ingest.
    Ingest,
}

pub fn run(_b: BenchCommand) -> anyhow::Result<i32> {
    anyhow::bail!("not yet")
}
