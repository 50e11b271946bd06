//! The `--num-workers` / `--worker-index` options of the commands that split a job among
//! workers, and `conveyor manifest merge`, which joins their parts.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use conveyor_pipeline::workers::Worker;

#[derive(Args, Debug, Clone, Default)]
pub struct WorkerArgs {
    /// Split the job among N workers, each run as its own process (on one machine or many,
    /// sharing --out); then `conveyor manifest merge OUT`. Read from SLURM_ARRAY_TASK_COUNT
    /// in a Slurm job array when not given.
    #[arg(long)]
    pub num_workers: Option<usize>,
    /// This worker's index, from 0 (default: SLURM_ARRAY_TASK_ID minus SLURM_ARRAY_TASK_MIN,
    /// or JOB_COMPLETION_INDEX in a Kubernetes Indexed Job).
    #[arg(long)]
    pub worker_index: Option<usize>,
}

impl WorkerArgs {
    /// The worker this process is (None: the whole job); says where that came from on
    /// stderr unless `quiet`.
    pub fn resolve(&self, quiet: bool) -> anyhow::Result<Option<Worker>> {
        let w = Worker::resolve(self.worker_index, self.num_workers, |k| {
            std::env::var(k).ok()
        })?;
        if let (Some((w, from)), false) = (&w, quiet) {
            eprintln!(
                "worker {} of {} (from {from}): this process does its share of the inputs",
                w.index, w.count
            );
        }
        Ok(w.map(|(w, _)| w))
    }
}

/// After a worker's share: where its part is and what to run once all are done.
pub fn merge_hint(out: &std::path::Path, worker: Option<Worker>, json: bool) {
    if let (Some(w), false) = (worker, json) {
        println!(
            "this worker's part is in {}; once all {} workers are done: conveyor manifest merge {}",
            conveyor_pipeline::workers::part_dir(out, w).display(),
            w.count,
            out.display()
        );
    }
}

#[derive(Subcommand)]
pub enum ManifestCommand {
    /// Join the parts the workers of a split job left in OUT/parts/ into one dataset.
    Merge {
        /// The output folder the workers shared.
        out: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
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
            dedup_shard: Some(i),
            dedup_shards: Some(n),
        } => {
            let shard = Worker::new(i, n)?;
            let drops = crate::remote::merge_at(&out, json, false, |dir| {
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
        ManifestCommand::Merge { out, json, .. } => {
            let mut s = crate::remote::merge_at(&out, json, true, |dir| {
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
            Ok(0)
        }
    }
}
