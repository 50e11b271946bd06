//! The flags every command that writes a dataset shares (`ingest`, `corrupt`, `clean`):
//! threads, `--overwrite`, the worker split, `--json` and `-q`, declared once and flattened
//! into each command; and the worker options on their own (`task prepare` has no threads).

use clap::Args;
use conveyor_pipeline::job::workers::Worker;

#[derive(Args, Debug, Clone, Default)]
pub struct JobFlags {
    /// Worker threads (default: one per core). The output does not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Replace what an earlier, different job left in --out (only files its manifest lists;
    /// see docs/safety.md).
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub workers: WorkerArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

impl JobFlags {
    /// No progress or notes on stderr (`-q`, or `--json` whose output is read by a program).
    pub fn silent(&self) -> bool {
        self.quiet || self.json
    }

    /// The worker this process is (None: the whole job).
    pub fn worker(&self) -> anyhow::Result<Option<Worker>> {
        self.workers.resolve(self.silent())
    }

    /// Whether the upload of a URL output deletes what the old dataset there listed: a whole
    /// job under --overwrite (a worker's upload never does).
    pub fn mirror(&self, worker: Option<Worker>) -> bool {
        self.overwrite && worker.is_none()
    }
}

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
        // Said even under -q/--json when the split came from the environment (a Slurm
        // array task or an Indexed Job): a command that does only part of the job without
        // being asked to must say so.
        let from_env = self.worker_index.is_none() || self.num_workers.is_none();
        if let (Some((w, from)), true) = (&w, !quiet || from_env) {
            eprintln!(
                "worker {} of {} (from {from}): this process does its share of the inputs; once every worker is done, `conveyor manifest merge` joins them (--num-workers 1 --worker-index 0 to do the whole job here)",
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
            conveyor_pipeline::job::workers::part_dir(out, w).display(),
            w.count,
            out.display()
        );
    }
}

/// A command's summary as JSON; a worker's says it is one part (`worker`: index and count,
/// `part`: its folder, `merge`: the command that joins the parts), so that a program
/// reading it does not take a part for the whole dataset.
pub fn json_summary<T: serde::Serialize>(
    s: &T,
    out: &std::path::Path,
    worker: Option<Worker>,
) -> anyhow::Result<String> {
    let mut v = serde_json::to_value(s)?;
    if let (Some(w), Some(map)) = (worker, v.as_object_mut()) {
        let part = conveyor_pipeline::job::workers::part_dir(out, w);
        map.insert("worker".into(), serde_json::to_value(w)?);
        map.insert("part".into(), part.display().to_string().into());
        map.insert(
            "merge".into(),
            format!("conveyor manifest merge {}", out.display()).into(),
        );
    }
    Ok(serde_json::to_string_pretty(&v)?)
}
