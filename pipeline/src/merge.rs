//! `conveyor manifest merge OUT`: joins the parts that the workers of a split job left in
//! `OUT/parts/` into the dataset one worker would have written — the same shards, in the same
//! order, under the same names, with the same manifest. It checks first that the parts belong
//! together (one job: same inputs, vocabulary and settings; one worker count; every worker
//! present once; every input done by exactly the worker that owns it; every shard file
//! there) and says which worker to rerun when one is missing. Renames are idempotent and the
//! manifest is written last, so a killed merge is finished by running it again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Error;
use crate::ingest::{part_dir, read_parts, IngestPart};
use crate::manifest::{Counts, Manifest, MAX_LISTED_PROBLEMS};
use crate::shard::shard_name;
use crate::workers::PARTS_DIR;

/// What a merge did.
#[derive(Debug, Clone, Serialize)]
pub struct MergeSummary {
    pub out: PathBuf,
    pub workers: usize,
    pub shards: usize,
    pub totals: Counts,
    /// True when `out` already held the merged dataset and no parts.
    pub already_merged: bool,
}

fn refuse(path: &Path, message: String) -> Error {
    Error::OutputDir {
        path: path.to_path_buf(),
        message,
    }
}

/// Merges the ingest parts in `out` (see the module documentation).
pub fn merge(out: &Path) -> Result<MergeSummary, Error> {
    let parts = read_parts(out)?;
    if parts.is_empty() {
        if out.join(Manifest::FILE).exists() {
            let m = Manifest::read(out)?;
            return Ok(MergeSummary {
                out: out.to_path_buf(),
                workers: 0,
                shards: m.shards.len(),
                totals: m.totals,
                already_merged: true,
            });
        }
        return Err(refuse(
            out,
            format!("has no worker parts ({PARTS_DIR}/worker-*/part.json) to merge"),
        ));
    }
    check(out, &parts)?;
    let base = &parts[0].manifest;
    let count = parts[0].worker.count;

    // The shards in the order one worker writes them: by input, then by position in it.
    let mut shards = Vec::new();
    for p in &parts {
        let dir = part_dir(out, p.worker);
        for s in &p.manifest.shards {
            shards.push((s.input, s.first_record, dir.join(&s.file), s.clone()));
        }
    }
    shards.sort_by_key(|(input, first, _, _)| (*input, *first));
    let total = shards.len();
    let name = |k: usize| shard_name(&base.settings.split, k, total);
    // Every shard is in its part or, after an interrupted merge, already at its final name.
    for (k, (_, _, from, _)) in shards.iter().enumerate() {
        if !from.exists() && !out.join(name(k)).exists() {
            return Err(refuse(
                from,
                "a worker's shard is missing; rerun that worker with --overwrite and merge again"
                    .into(),
            ));
        }
    }
    let mut records = Vec::with_capacity(total);
    for (k, (_, _, from, mut shard)) in shards.into_iter().enumerate() {
        let to = out.join(name(k));
        if from.exists() {
            std::fs::rename(&from, &to).map_err(|e| Error::io(&from, e))?;
        }
        shard.file = name(k);
        records.push(shard);
    }

    // Inputs with the counts of the worker that did them; problems in input order.
    let mut inputs = base.inputs.clone();
    let mut by_input: BTreeMap<usize, Vec<_>> = BTreeMap::new();
    let index_of: BTreeMap<&str, usize> = base
        .inputs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();
    let mut problems_total = 0;
    for p in &parts {
        for &i in &p.inputs {
            inputs[i] = p.manifest.inputs[i].clone();
        }
        problems_total += p.manifest.problems_total;
        for problem in &p.manifest.problems {
            let i = index_of
                .get(problem.file.as_str())
                .copied()
                .unwrap_or(usize::MAX);
            by_input.entry(i).or_default().push(problem.clone());
        }
    }
    let mut problems: Vec<_> = by_input.into_values().flatten().collect();
    problems.truncate(MAX_LISTED_PROBLEMS);
    let mut totals = Counts::default();
    for i in &inputs {
        totals.add(&i.counts);
    }
    let manifest = Manifest {
        failed_inputs: inputs.iter().filter(|i| i.error.is_some()).count(),
        inputs,
        shards: records,
        totals: totals.clone(),
        problems,
        problems_total,
        ..base.clone()
    };
    manifest.write(out)?;
    let dir = out.join(PARTS_DIR);
    std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(MergeSummary {
        out: out.to_path_buf(),
        workers: count,
        shards: total,
        totals,
        already_merged: false,
    })
}

/// The checks that the parts make one dataset.
fn check(out: &Path, parts: &[IngestPart]) -> Result<(), Error> {
    let first = &parts[0];
    let count = first.worker.count;
    for p in parts {
        if p.manifest.job != first.manifest.job {
            return Err(refuse(
                out,
                format!(
                    "{} and {} are parts of different jobs ({} and {}): the workers were given different inputs, vocabularies or settings",
                    first.worker.tag(),
                    p.worker.tag(),
                    first.manifest.job,
                    p.manifest.job
                ),
            ));
        }
        if p.worker.count != count {
            return Err(refuse(
                out,
                format!(
                    "{} belongs to a {}-worker split and {} to a {}-worker one",
                    first.worker.tag(),
                    count,
                    p.worker.tag(),
                    p.worker.count
                ),
            ));
        }
    }
    let present: Vec<usize> = parts.iter().map(|p| p.worker.index).collect();
    let missing: Vec<String> = (0..count)
        .filter(|i| !present.contains(i))
        .map(|i| i.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(refuse(
            out,
            format!(
                "worker(s) {} of {count} have not finished (no {PARTS_DIR}/worker-*/part.json); run them (e.g. --worker-index {} --num-workers {count}) and merge again",
                missing.join(", "),
                missing[0]
            ),
        ));
    }
    let n = first.manifest.inputs.len();
    let mut done_by: Vec<Option<usize>> = vec![None; n];
    for p in parts {
        for &i in &p.inputs {
            if i >= n || !p.worker.owns(i) {
                return Err(refuse(
                    out,
                    format!(
                        "{} lists input {i}, which is not one of its inputs",
                        p.worker.tag()
                    ),
                ));
            }
            if let Some(other) = done_by[i] {
                return Err(refuse(
                    out,
                    format!(
                        "input {} was done twice (by workers {other} and {})",
                        first.manifest.inputs[i].path, p.worker.index
                    ),
                ));
            }
            done_by[i] = Some(p.worker.index);
        }
    }
    if let Some(i) = done_by.iter().position(Option::is_none) {
        return Err(refuse(
            out,
            format!(
                "input {} was done by no worker; rerun worker {} of {count}",
                first.manifest.inputs[i].path,
                i % count
            ),
        ));
    }
    Ok(())
}
