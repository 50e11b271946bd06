//! Task examples (`conveyor task prepare`, which lives in conveyor-tasks) written one shard
//! per input file: the manifest those shards get, a worker's part of a split prepare, and the
//! merge of such parts (called by [`crate::merge`], which cannot see the tasks crate).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::manifest::{ExampleShardRecord, ExamplesManifest, TaskCounts};
use crate::error::Error;
use crate::job::workers::{part_dir, part_file, Worker};
use crate::shard::shard_name;

/// The format of a task-prepare worker's `part.json`.
pub const TASK_PART_FORMAT: &str = "conveyor-task-part";

/// A worker's part: a shard and the counts of each of its inputs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskPart {
    pub format: String,
    pub job: String,
    pub worker: Worker,
    /// Inputs in the whole job.
    pub inputs: usize,
    /// (input index, its shard named in the part folder, its counts).
    pub shards: Vec<(usize, ExampleShardRecord, TaskCounts)>,
    /// The manifest of this part alone.
    pub manifest: ExamplesManifest,
}

impl crate::job::workers::Part for TaskPart {
    const KIND: &'static str = "task";

    fn check_names(&self, source: &Path) -> Result<(), Error> {
        self.manifest.check_names(source)?;
        self.shards
            .iter()
            .try_for_each(|(_, s, _)| crate::contain::check_name(&s.file, source))
    }
}

pub fn read_task_part(path: &Path) -> Result<TaskPart, Error> {
    crate::job::workers::read_part(path)
}

/// `base` (settings, vocabulary, job) with `shards` and the task counts summed over the
/// per-input `counts` (problems in input order, the first 1,000 kept).
pub fn task_manifest(
    base: &ExamplesManifest,
    shards: Vec<ExampleShardRecord>,
    counts: &[TaskCounts],
    name: String,
    inputs: Vec<String>,
) -> ExamplesManifest {
    let mut excluded: BTreeMap<String, u64> = BTreeMap::new();
    for c in counts {
        for (k, v) in &c.excluded {
            *excluded.entry(k.clone()).or_default() += v;
        }
    }
    let task = TaskCounts {
        name,
        inputs,
        read: counts.iter().map(|c| c.read).sum(),
        written: counts.iter().map(|c| c.written).sum(),
        skipped: counts.iter().map(|c| c.skipped).sum(),
        excluded,
        truncated_inputs: counts.iter().map(|c| c.truncated_inputs).sum(),
        truncated_targets: counts.iter().map(|c| c.truncated_targets).sum(),
        // Every worker hashes the whole job's inputs: the same value.
        contents_sha256: counts.iter().find_map(|c| c.contents_sha256.clone()),
        definition_sha256: counts.iter().find_map(|c| c.definition_sha256.clone()),
        unreachable_targets: counts.iter().map(|c| c.unreachable_targets).sum(),
        unreachable_example: counts.iter().find_map(|c| c.unreachable_example.clone()),
        problems: counts
            .iter()
            .flat_map(|c| c.problems.iter().cloned())
            .take(1000)
            .collect(),
    };
    ExamplesManifest {
        examples: shards.iter().map(|s| s.examples).sum(),
        rows: shards.iter().map(|s| s.rows).sum(),
        tokens: shards.iter().map(|s| s.tokens).sum(),
        source_tokens: shards.iter().map(|s| s.source_tokens).sum(),
        shards,
        task: Some(task),
        ..base.clone()
    }
}

/// Joins task-prepare parts (already checked to be one job with every worker present) into
/// the one-process output; returns the shard count and examples.
pub fn merge_task_parts(out: &Path, files: &[PathBuf]) -> Result<(usize, u64), Error> {
    let parts = files
        .iter()
        .map(|f| read_task_part(f))
        .collect::<Result<Vec<_>, _>>()?;
    let claims: Vec<_> = parts
        .iter()
        .map(|p| (p.worker, p.inputs, p.shards.len()))
        .collect();
    let n = crate::job::workers::claimed_count(out, "inputs", &claims)?;
    let mut slots: Vec<Option<(Worker, ExampleShardRecord, TaskCounts)>> = vec![None; n];
    for p in &parts {
        for (i, s, c) in &p.shards {
            if *i >= n || !p.worker.owns(*i) || slots[*i].is_some() {
                return Err(Error::OutputDir {
                    path: out.to_path_buf(),
                    message: format!(
                        "{} lists input {i}, which is not its own or was done twice",
                        p.worker.tag()
                    ),
                });
            }
            slots[*i] = Some((p.worker, s.clone(), c.clone()));
        }
    }
    if let Some(i) = slots.iter().position(Option::is_none) {
        return Err(Error::OutputDir {
            path: out.to_path_buf(),
            message: format!("input {i} was prepared by no worker"),
        });
    }
    let base = &parts[0].manifest;
    let split = base.settings.split.clone();
    let task = base.task.clone().ok_or_else(|| Error::OutputDir {
        path: part_file(out, parts[0].worker),
        message: "has no task in its manifest: not a task part; rerun that worker with --overwrite"
            .into(),
    })?;
    let moves = slots
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, (w, s, _))| {
            Ok(crate::job::moves::Move {
                from: crate::contain::join(&part_dir(out, *w), &s.file, &part_file(out, *w))?,
                to: out.join(shard_name(&split, i, n)),
                sha256: &s.sha256,
                bytes: s.bytes,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    crate::job::moves::check(moves)?.run()?;
    let (mut shards, mut counts) = (Vec::new(), Vec::new());
    for (i, slot) in slots.into_iter().enumerate() {
        let (_, s, c) = slot.expect("checked above");
        shards.push(ExampleShardRecord {
            file: shard_name(&split, i, n),
            ..s
        });
        counts.push(c);
    }
    let m = task_manifest(base, shards, &counts, task.name, task.inputs);
    m.write(out)?;
    crate::job::workers::remove_parts(out)?;
    Ok((n, m.examples))
}
