//! `conveyor manifest merge`, which joins the parts the workers of a split job left.

use std::path::PathBuf;

use clap::Subcommand;
use conveyor_pipeline::job::workers::Worker;

#[derive(Subcommand)]
pub enum ManifestCommand {
    /// Join the parts the workers of a split job left in OUT/parts/ into one dataset.
    Merge {
        /// The output folder the workers shared.
        out: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        /// No notes on stderr (a URL's transfers).
        #[arg(long, short)]
        quiet: bool,
        /// For a split `clean`: run only this shard of the line dedup (lines whose hash falls
        /// in bucket I of --dedup-shards), writing its drop list; run every shard (as many
        /// processes or array tasks as you like), then merge without these options.
        #[arg(long, requires = "dedup_shards")]
        dedup_shard: Option<usize>,
        #[arg(long, requires = "dedup_shard")]
        dedup_shards: Option<usize>,
    },
}

pub fn run(c: ManifestCommand) -> anyhow::Result<i32> {
    match c {
        ManifestCommand::Merge {
            out,
            json,
            quiet,
            dedup_shard: Some(i),
            dedup_shards: Some(n),
        } => {
            let shard = Worker::new(i, n)?;
            let drops = crate::remote::merge_at(&out, json || quiet, false, |dir| {
                Ok(conveyor_pipeline::clean::dedup_shard(dir, shard)?)
            })?;
            if json {
                println!("{}", serde_json::json!({"shard": shard, "drops": drops}));
            } else {
                println!(
                    "dedup shard {i} of {n}: {drops} repeated lines to drop; once every shard is done: conveyor manifest merge {}",
                    out.display()
                );
            }
            Ok(0)
        }
        ManifestCommand::Merge {
            out, json, quiet, ..
        } => {
            let mut s = crate::remote::merge_at(&out, json || quiet, true, |dir| {
                Ok(conveyor_pipeline::merge::merge(dir)?)
            })?;
            s.out = out.clone();
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else if s.already_merged {
                println!(
                    "{} already holds the merged dataset ({} {}); nothing to do.",
                    out.display(),
                    s.shards,
                    s.kind
                );
            } else {
                println!(
                    "merged {} workers' parts: {} {}, {} {}; manifest {}",
                    s.workers,
                    s.shards,
                    s.kind,
                    s.amount,
                    s.unit,
                    out.join("manifest.json").display()
                );
            }
            // As the one-process run of the job would: a worker's input that failed part-way
            // is an error once the dataset is whole (its worker exited 1 long before).
            for f in &s.failed_inputs {
                eprintln!(
                    "error: {}: {} (the dataset holds what was read before the fault, as a one-process run would)",
                    conveyor_pipeline::printable::one_line(&f.input),
                    conveyor_pipeline::printable::one_line(&f.error)
                );
            }
            Ok(i32::from(!s.failed_inputs.is_empty()))
        }
    }
}
