//! `conveyor manifest merge OUT`: joins the parts that the workers of a split job (ingest,
//! corrupt, task prepare, or clean — whose merge is its line-dedup pass) left in `OUT/parts/` into the dataset one worker would have written — the same
//! shards, in the same order, under the same names, with the same manifest. It checks first
//! that the parts belong together (one job: same inputs, vocabulary and settings; one worker
//! count; every worker present once; every input or token shard done by exactly the worker
//! that owns it; every shard file there) and says which worker to rerun when one is missing.
//! Renames are idempotent and the manifest is written last, so a killed merge is finished by
//! running it again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::corrupt::job::CORRUPT_PART_FORMAT;
use crate::error::Error;
use crate::examples::ExamplesManifest;
use crate::ingest::{read_parts, IngestPart, INGEST_PART_FORMAT};
use crate::job::workers::{check_parts, part_dir, part_file, read_part_files, PARTS_DIR};
use crate::manifest::{Counts, Manifest, ShardRecord, MAX_LISTED_PROBLEMS};
use crate::printable;
use crate::shard::shard_name;

/// What a merge did.
#[derive(Debug, Clone, Serialize)]
pub struct MergeSummary {
    pub out: PathBuf,
    /// "token shards", "example shards", "task example shards" or "cleaned files".
    pub kind: String,
    pub workers: usize,
    /// Output files.
    pub shards: usize,
    /// Tokens, examples (task shards) or pages (cleaned files) in them.
    pub amount: u64,
    /// "tokens", "examples" or "pages".
    pub unit: String,
    /// True when `out` already held the merged dataset and no parts.
    pub already_merged: bool,
    /// Inputs a worker could not read to their end (ingest, clean): what was read before
    /// the fault is in the dataset, as in a one-process run, which exits 1 for them.
    pub failed_inputs: Vec<crate::clean::FailedInput>,
}

fn refuse(path: &Path, message: String) -> Error {
    Error::OutputDir {
        path: path.to_path_buf(),
        message,
    }
}

/// Merges the worker parts in `out` (see the module documentation).
pub fn merge(out: &Path) -> Result<MergeSummary, Error> {
    // No worker (or other job) may still be writing into `out`.
    let _lock = crate::job::lock::OutLock::take(out, ".conveyor-merge")?;
    let mut s = merge_locked(out)?;
    s.failed_inputs = failed_inputs(out);
    Ok(s)
}

/// The inputs the merged manifest in `out` records as failed.
fn failed_inputs(out: &Path) -> Vec<crate::clean::FailedInput> {
    let failed = |input: &str, error: &Option<String>| {
        error.as_ref().map(|e| crate::clean::FailedInput {
            input: input.to_string(),
            error: e.clone(),
        })
    };
    if let Ok(m) = Manifest::read(out) {
        return m
            .inputs
            .iter()
            .filter_map(|i| failed(&i.path, &i.error))
            .collect();
    }
    match crate::clean::read_manifest(out) {
        Ok(m) => m
            .files
            .iter()
            .filter_map(|f| failed(&f.input, &f.error))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn merge_locked(out: &Path) -> Result<MergeSummary, Error> {
    let files = read_part_files(out)?;
    let summary = |kind: &str, workers, shards, amount, already_merged| MergeSummary {
        out: out.to_path_buf(),
        kind: kind.into(),
        workers,
        shards,
        amount,
        unit: match kind {
            "cleaned files" => "pages",
            "task example shards" => "examples",
            _ => "tokens",
        }
        .into(),
        already_merged,
        failed_inputs: Vec::new(),
    };
    if files.is_empty() {
        if out.join(Manifest::FILE).exists() {
            if let Ok(m) = Manifest::read(out) {
                return Ok(summary(
                    "token shards",
                    0,
                    m.shards.len(),
                    m.totals.tokens,
                    true,
                ));
            }
            if let Ok(m) = ExamplesManifest::read(out) {
                return Ok(summary("example shards", 0, m.shards.len(), m.tokens, true));
            }
            let m = crate::clean::read_manifest(out)?;
            return Ok(summary(
                "cleaned files",
                0,
                m.files.len(),
                m.totals.pages_out,
                true,
            ));
        }
        return Err(refuse(
            out,
            format!("has no worker parts ({PARTS_DIR}/worker-*/part.json) to merge"),
        ));
    }
    let headers: Vec<_> = files.iter().map(|(_, h)| h.clone()).collect();
    check_parts(out, &headers)?;
    same_settings(&files)?;
    let workers = headers[0].worker.count;
    match headers[0].format.as_str() {
        INGEST_PART_FORMAT => {
            let (shards, totals) = merge_ingest(out, read_parts(out)?)?;
            Ok(summary(
                "token shards",
                workers,
                shards,
                totals.tokens,
                false,
            ))
        }
        CORRUPT_PART_FORMAT => {
            let paths: Vec<PathBuf> = files.into_iter().map(|(p, _)| p).collect();
            let (shards, tokens) = crate::corrupt::job::merge_parts(out, &paths)?;
            Ok(summary("example shards", workers, shards, tokens, false))
        }
        crate::examples::task_parts::TASK_PART_FORMAT => {
            let paths: Vec<PathBuf> = files.into_iter().map(|(p, _)| p).collect();
            let (shards, examples) = crate::examples::task_parts::merge_task_parts(out, &paths)?;
            Ok(summary(
                "task example shards",
                workers,
                shards,
                examples,
                false,
            ))
        }
        crate::clean::CLEAN_PART_FORMAT => {
            let paths: Vec<PathBuf> = files.into_iter().map(|(p, _)| p).collect();
            let (n, pages) = crate::clean::merge_parts(out, &paths)?;
            Ok(summary("cleaned files", workers, n, pages, false))
        }
        other => Err(refuse(
            out,
            format!("holds parts of format {other:?}, which this conveyor cannot merge"),
        )),
    }
}

/// The job ids the parts carry are data: beside them, the settings each part's manifest
/// records (seed, lengths, vocabulary, cleaning rules, ...) must be the first part's, so that
/// an edited or foreign part cannot merge under another's manifest.
fn same_settings(files: &[(PathBuf, crate::job::workers::PartHeader)]) -> Result<(), Error> {
    const KEYS: [&str; 6] = [
        "settings",
        "vocab",
        "rules",
        "min_english",
        "dedup",
        "badwords_sha256",
    ];
    // Where a worker found the vocabulary is its own (another working folder, a staging
    // folder); what it is, is not.
    let setting = |part: &serde_json::Value, key: &str| {
        let mut v = part["manifest"][key].clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("path");
        }
        v
    };
    let read = |p: &PathBuf| -> Result<serde_json::Value, Error> {
        let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
        serde_json::from_str(&text).map_err(|e| refuse(p, format!("not a readable part: {e}")))
    };
    let Some((first_path, _)) = files.first() else {
        return Ok(());
    };
    let first = read(first_path)?;
    for (path, _) in &files[1..] {
        let part = read(path)?;
        if let Some(key) = KEYS
            .iter()
            .find(|k| setting(&part, k) != setting(&first, k))
        {
            return Err(refuse(
                path,
                format!(
                    "records other {key} than {}: the parts are of different jobs; rerun this worker with --overwrite",
                    first_path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Joins ingest parts; returns the shard count and totals.
fn merge_ingest(out: &Path, parts: Vec<IngestPart>) -> Result<(usize, Counts), Error> {
    check_inputs(out, &parts)?;
    let base = &parts[0].manifest;
    refuse_if_nothing_read(out, &parts)?;

    // The shards in the order one worker writes them: by input, then by position in it.
    let mut shards = Vec::new();
    for p in &parts {
        let dir = part_dir(out, p.worker);
        for s in &p.manifest.shards {
            let from = crate::contain::join(&dir, &s.file, &part_file(out, p.worker))?;
            shards.push((s.input, s.first_record, from, s.clone()));
        }
    }
    shards.sort_by_key(|(input, first, _, _)| (*input, *first));
    let total = shards.len();
    let name = |k: usize| shard_name(&base.settings.split, k, total);
    let moves = shards
        .iter()
        .enumerate()
        .map(|(k, (_, _, from, shard))| crate::job::moves::Move {
            from: from.clone(),
            to: out.join(name(k)),
            sha256: &shard.sha256,
            bytes: shard.bytes,
        })
        .collect();
    crate::job::moves::check(moves)?.run()?;
    let records: Vec<_> = shards
        .into_iter()
        .enumerate()
        .map(|(k, (_, _, _, shard))| ShardRecord {
            file: name(k),
            ..shard
        })
        .collect();

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
    crate::job::workers::remove_parts(out)?;
    Ok((total, totals))
}

/// As one process does when every input failed before a shard: nothing is merged and the
/// parts go (they hold no shards, only the failures, which the error names), so that the
/// workers, rerun once the inputs are fixed, read them all again.
fn refuse_if_nothing_read(out: &Path, parts: &[IngestPart]) -> Result<(), Error> {
    let mut failed = Vec::new();
    for p in parts {
        if !p.manifest.shards.is_empty() {
            return Ok(());
        }
        for &i in &p.inputs {
            let input = &p.manifest.inputs[i];
            match &input.error {
                Some(e) => failed.push((i, format!("{}: {e}", printable::one_line(&input.path)))),
                None => return Ok(()),
            }
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    failed.sort();
    crate::job::workers::remove_parts(out)?;
    Err(Error::no_input_read(
        failed.into_iter().map(|(_, f)| f).collect(),
        "rerun every worker, then the merge",
    ))
}

/// Every input done by exactly the worker that owns it.
fn check_inputs(out: &Path, parts: &[IngestPart]) -> Result<(), Error> {
    let first = &parts[0];
    let count = first.worker.count;
    let claims: Vec<_> = parts
        .iter()
        .map(|p| (p.worker, p.manifest.inputs.len(), p.inputs.len()))
        .collect();
    let n = crate::job::workers::claimed_count(out, "inputs", &claims)?;
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
