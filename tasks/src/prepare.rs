//! `conveyor task prepare`: a task's files -> tokenized example shards, one per input file
//! (`inputs`, `targets` with EOS, plus `inputs_pretokenized`, `targets_pretokenized`,
//! `category`) and a manifest the loader and trainer read like span-corruption examples.
//! Split among workers (by input file; lengths must then be given, and no holdout), each
//! leaves a part that `conveyor manifest merge` joins into the one-process output. Inputs of
//! classification tasks default to the 90th percentile of the task's tokenized lengths (as
//! in the paper); targets, and a generation task's inputs, to the longest (a cut target, or
//! a cut sentence a logical form needs, could never be predicted right); longer examples are
//! trimmed to length - 1 plus EOS and counted.

use std::path::{Path, PathBuf};

use conveyor_pipeline::examples::{Example as Ids, ExampleShardWriter, Lengths};
use conveyor_pipeline::examples::{
    ExampleSettings, ExampleShardRecord, ExamplesManifest, TaskCounts, EXAMPLES_FORMAT,
    EXAMPLES_VERSION,
};
use conveyor_pipeline::job::outdir;
use conveyor_pipeline::job::workers::{part_dir, Worker, WorkerState};
use conveyor_pipeline::manifest::VocabInfo;
use conveyor_pipeline::rng::{Rng, Stream};
use conveyor_pipeline::shard::shard_name;
use conveyor_pipeline::tokenize::{load, TokenizerKind};
use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use crate::holdout::Holdout;
use crate::{read_all, Task, TaskError};

const WORK_DIR: &str = ".conveyor-task";
/// Task preparation as a job kind: its work folder and the manifest it writes.
const KIND: conveyor_pipeline::job::JobKind = conveyor_pipeline::job::JobKind {
    work: WORK_DIR,
    format: conveyor_pipeline::examples::EXAMPLES_FORMAT,
};

/// A preparation job.
#[derive(Debug, Clone)]
pub struct PrepareConfig {
    pub inputs: Vec<PathBuf>,
    pub vocab: PathBuf,
    pub out: PathBuf,
    pub split: String,
    /// Feature lengths (EOS included); None = the default (see the module's doc).
    pub inputs_length: Option<usize>,
    pub targets_length: Option<usize>,
    /// Extra ids after the pieces (the sentinels of pre-training), so fine-tuning uses the
    /// pre-trained model's embedding size.
    pub extra_ids: u32,
    pub strict: bool,
    pub overwrite: bool,
    /// Keep only one side of a seeded split of the rows (for tasks shipped without a dev
    /// file): `fraction` of the examples, rounded, are in the held-out part.
    pub holdout: Option<Holdout>,
    /// This process's share of a split job; None = the whole job.
    pub worker: Option<Worker>,
}

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Pipeline(#[from] conveyor_pipeline::Error),
}

/// What a preparation reports.
#[derive(Debug, Clone, Serialize)]
pub struct PrepareSummary {
    pub out: PathBuf,
    pub task: String,
    pub read: u64,
    pub written: u64,
    pub skipped: u64,
    pub excluded: std::collections::BTreeMap<String, u64>,
    pub inputs_length: usize,
    pub targets_length: usize,
    pub truncated_inputs: u64,
    pub truncated_targets: u64,
    /// Examples whose target the vocabulary cannot give back, and the first of them.
    pub unreachable_targets: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable_example: Option<String>,
    pub already_complete: bool,
}

/// The nearest-rank `q` quantile of `v` (sorted in place).
pub fn percentile(v: &mut [usize], q: f64) -> usize {
    if v.is_empty() {
        return 1;
    }
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn summary(m: &ExamplesManifest, out: &Path, done: bool) -> PrepareSummary {
    let t = m.task.clone().expect("a task manifest");
    PrepareSummary {
        out: out.to_path_buf(),
        task: t.name,
        read: t.read,
        written: t.written,
        skipped: t.skipped,
        excluded: t.excluded,
        inputs_length: m.settings.lengths.inputs_length,
        targets_length: m.settings.lengths.targets_length,
        truncated_inputs: t.truncated_inputs,
        truncated_targets: t.truncated_targets,
        unreachable_targets: t.unreachable_targets,
        unreachable_example: t.unreachable_example,
        already_complete: done,
    }
}

/// Why a prepare that found no example fails instead of writing an empty dataset: the
/// rows read, skipped (with the first reason) and excluded.
fn no_examples(
    task: &dyn Task,
    data: &[(usize, crate::TaskData)],
    holdout: bool,
) -> conveyor_pipeline::Error {
    let read: u64 = data.iter().map(|(_, d)| d.read).sum();
    let skipped: Vec<&crate::Skipped> = data.iter().flat_map(|(_, d)| &d.skipped).collect();
    let excluded: u64 = data.iter().flat_map(|(_, d)| d.excluded.values()).sum();
    let first = skipped
        .first()
        .map(|s| format!(" (first: {}:{}: {})", s.file, s.line, s.reason))
        .unwrap_or_default();
    conveyor_pipeline::Error::Config(format!(
        "task {} found no example in its inputs: {read} rows read, {} skipped{first}, {excluded} excluded{}; check the input files and the task's fields",
        task.name(),
        skipped.len(),
        if holdout { ", the rest not on the --holdout side asked for" } else { "" }
    ))
}

/// The sha256 of an input: of a file's bytes; of a folder's entries' names (relative to it)
/// and its files' bytes in name order, links followed as the task readers follow them (at
/// most 16 folders deep: a link cycle ends there); entries that are neither files nor
/// folders (a FIFO) count by name only, never opened.
fn input_sha256(path: &Path) -> Result<String, PrepareError> {
    fn walk(
        dir: &Path,
        rel: &str,
        depth: usize,
        hash: &mut Sha256,
    ) -> Result<(), conveyor_pipeline::Error> {
        let io = |e| conveyor_pipeline::Error::io(dir, e);
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .collect::<Result<_, _>>()
            .map_err(io)?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = format!("{rel}/{}", e.file_name().to_string_lossy());
            hash.update(name.as_bytes());
            match std::fs::metadata(e.path()) {
                Ok(m) if m.is_dir() && depth < 16 => walk(&e.path(), &name, depth + 1, hash)?,
                Ok(m) if m.is_file() => {
                    hash.update(conveyor_pipeline::shard::file_sha256(&e.path())?.as_bytes())
                }
                _ => {}
            }
        }
        Ok(())
    }
    let meta = std::fs::metadata(path).map_err(|e| conveyor_pipeline::Error::io(path, e))?;
    if meta.is_file() {
        return Ok(conveyor_pipeline::shard::file_sha256(path)?);
    }
    let mut hash = Sha256::new();
    if meta.is_dir() {
        walk(path, "", 0, &mut hash)?;
    }
    Ok(conveyor_pipeline::manifest::hex(&hash.finalize()))
}

/// Reads, tokenizes and writes the task's examples.
pub fn prepare(task: &dyn Task, cfg: &PrepareConfig) -> Result<PrepareSummary, PrepareError> {
    conveyor_pipeline::job::outdir::removed_if_failed_empty(&cfg.out, cfg.worker.is_some(), || {
        prepare_into(task, cfg)
    })
}

fn prepare_into(task: &dyn Task, cfg: &PrepareConfig) -> Result<PrepareSummary, PrepareError> {
    conveyor_pipeline::contain::check_split(&cfg.split, "--split")?;
    for (flag, l) in [
        ("--inputs-length", cfg.inputs_length),
        ("--targets-length", cfg.targets_length),
    ] {
        if let Some(l @ 0..=1) = l {
            // Room for one token and the EOS at least (0 underflowed the cut; 1 left EOS alone).
            return Err(TaskError::Io {
                path: cfg.out.clone(),
                message: format!(
                    "{flag} {l} leaves no room for a token before the EOS: give 2 or more"
                ),
            }
            .into());
        }
    }
    let tok = load(&cfg.vocab, TokenizerKind::Native)?;
    let vocab = tok.vocab();
    let eos = vocab
        .eos_id
        .ok_or_else(|| conveyor_pipeline::Error::Vocab {
            path: cfg.vocab.clone(),
            reason: "it has no </s> piece, which T5 examples end with".into(),
        })?;
    let mut identity = serde_json::json!({
        "task": task.name(), "split": cfg.split, "vocab": vocab.sha256,
        "inputs_length": cfg.inputs_length, "targets_length": cfg.targets_length,
        "extra_ids": cfg.extra_ids,
        "holdout": cfg.holdout.map(|h| (h.fraction, h.seed, h.keep_held_out)),
    });
    // Held-out rows were drawn one coin flip each before (a split of about `fraction`): a
    // folder prepared so is another job.
    if cfg.holdout.is_some() {
        identity["holdout_size"] = "exact".into();
    }
    // What changed since a folder was made without these keys: a generation task's default
    // lengths, and readers that now read rows otherwise (the task's revision); a folder
    // prepared before is then another job (refused, not reused with the old examples),
    // while every other task's job stays what it was.
    if task.labels().is_none() && (cfg.inputs_length.is_none() || cfg.targets_length.is_none()) {
        identity["default_lengths"] = "longest".into();
    }
    if task.revision() > 0 {
        identity["revision"] = task.revision().into();
    }
    // Written in read order before: such a folder is another job.
    identity["order"] = "shuffled".into();
    let mut files = Vec::new();
    for p in &cfg.inputs {
        let len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        files.push(serde_json::json!([p.display().to_string(), len]));
    }
    identity["inputs"] = files.into();
    // The inputs' bytes and a task file's settings, recorded beside the job rather than in
    // it (folders prepared before keep their job): a file relabelled or edited in place, same
    // name and size, was "already complete" with the old examples.
    let mut contents = Sha256::new();
    contents.update(task.definition().unwrap_or_default().to_string());
    for p in &cfg.inputs {
        contents.update(input_sha256(p)?);
    }
    let contents = conveyor_pipeline::manifest::hex(&contents.finalize());
    let job = conveyor_pipeline::manifest::hex(&Sha256::digest(identity.to_string().as_bytes()))
        [..16]
        .to_string();
    // A finished output of other contents is another job's (replaced only with --overwrite).
    let read_job = |d: &Path| {
        ExamplesManifest::read(d).map(|m| {
            let recorded = m.task.as_ref().and_then(|t| t.contents_sha256.as_ref());
            match recorded.is_some_and(|r| *r != contents) {
                true => format!("{} (from other input or task file contents)", m.job),
                false => m.job,
            }
        })
    };
    if cfg.worker.is_some()
        && (cfg.inputs_length.is_none() || cfg.targets_length.is_none() || cfg.holdout.is_some())
    {
        return Err(conveyor_pipeline::Error::Config(
            "a task prepare split among workers needs --inputs-length and --targets-length (the defaults are over every input; a one-process prepare prints the lengths it chose) and no --holdout (held-out rows are drawn by their position in the whole task)".into(),
        )
        .into());
    }
    conveyor_pipeline::job::outdir::check_not_input(&cfg.out, &cfg.inputs)?;
    let (state, work_name, _lock) = conveyor_pipeline::job::workers::start_job(
        &cfg.out,
        KIND,
        &job,
        cfg.worker,
        cfg.overwrite,
        read_job,
    )?;
    match (state, cfg.worker) {
        (WorkerState::Merged, _) => {
            let m = ExamplesManifest::read(&cfg.out)?;
            // Strictness is not part of the job (the same rows make the same shards): a rerun
            // with --strict over an output that skipped rows answered "already complete".
            if let Some(t) = m.task.as_ref().filter(|t| cfg.strict && t.skipped > 0) {
                return Err(TaskError::StrictOver {
                    out: cfg.out.clone(),
                    skipped: t.skipped,
                    first: t.problems.first().cloned().unwrap_or_default(),
                }
                .into());
            }
            return Ok(summary(&m, &cfg.out, true));
        }
        (WorkerState::PartDone, Some(w)) => {
            let p = conveyor_pipeline::examples::task_parts::read_task_part(
                &part_dir(&cfg.out, w).join("part.json"),
            )?;
            return Ok(summary(&p.manifest, &cfg.out, true));
        }
        _ => {}
    }

    // Each input read on its own (its own counts and shard); examples keep their input.
    let mine: Vec<usize> = (0..cfg.inputs.len())
        .filter(|&i| cfg.worker.is_none_or(|w| w.owns(i)))
        .collect();
    let mut per_input: Vec<(usize, crate::TaskData)> = Vec::new();
    for &i in &mine {
        per_input.push((i, read_all(task, &cfg.inputs[i..=i], cfg.strict)?));
    }
    let mut examples: Vec<(usize, crate::Example)> = per_input
        .iter_mut()
        .flat_map(|(i, d)| {
            std::mem::take(&mut d.examples)
                .into_iter()
                .map(move |e| (*i, e))
        })
        .collect();
    if let Some(h) = cfg.holdout {
        examples = h.keep(examples);
    }
    // A whole job with no example fails (a worker's share may hold none; the merged
    // dataset then holds the others' examples).
    if examples.is_empty() && cfg.worker.is_none() {
        return Err(no_examples(task, &per_input, cfg.holdout.is_some()).into());
    }
    let encode = |text: &str| -> Vec<u32> {
        let mut ids = Vec::new();
        tok.encode_into(text, &mut ids).ok();
        ids.push(eos);
        ids
    };
    let mut encoded: Vec<Ids> = examples
        .par_iter()
        .map(|(_, e)| Ids {
            inputs: encode(&e.inputs),
            targets: encode(&e.targets),
        })
        .collect();
    let pick = |given: Option<usize>, lens: Vec<usize>| {
        given.unwrap_or_else(|| {
            let mut lens = lens;
            percentile(&mut lens, 0.9).max(2)
        })
    };
    let longest = |f: fn(&Ids) -> usize| encoded.iter().map(f).max().unwrap_or(2);
    let li = match (cfg.inputs_length, task.labels()) {
        (Some(l), _) => l,
        (None, Some(_)) => pick(None, encoded.iter().map(|e| e.inputs.len()).collect()),
        // A generation task's output may need every word of its input (COGS).
        (None, None) => longest(|e| e.inputs.len()),
    };
    // A target cut short can never be predicted right (the evaluation compares with the
    // whole text): targets keep their full length by default, the longest, labels and
    // generated outputs alike (COGS's 90th percentile left 275 of its 3,000 dev logical forms
    // unreachable). Inputs take the percentile, as the paper's sequence lengths do.
    let lt = cfg
        .targets_length
        .unwrap_or_else(|| longest(|e| e.targets.len()));
    // Targets the vocabulary cannot give back: eval compares decoded text with the target's,
    // so such an example is never right (39 of TREC's 50 labels with a small trained vocabulary).
    // Decoded once per distinct target (a classification task has a few, repeated by the
    // million).
    let mut unreachable: std::collections::BTreeMap<usize, (u64, Option<String>)> =
        Default::default();
    let mut decoded: std::collections::HashMap<&str, Option<String>> = Default::default();
    for (e, (i, ex)) in encoded.iter().zip(&examples) {
        let wrong = decoded.entry(ex.targets.as_str()).or_insert_with(|| {
            let back = vocab.decode(&e.targets[..e.targets.len() - 1]);
            (back.trim() != ex.targets.trim())
                .then(|| format!("{:?} decodes as {back:?}", ex.targets))
        });
        if let Some(why) = wrong {
            let u = unreachable.entry(*i).or_default();
            u.0 += 1;
            u.1.get_or_insert_with(|| why.clone());
        }
    }
    let mut truncated: std::collections::BTreeMap<usize, (u64, u64)> = Default::default();
    for (e, (i, _)) in encoded.iter_mut().zip(&examples) {
        let t = truncated.entry(*i).or_default();
        for (v, l, n) in [
            (&mut e.inputs, li, &mut t.0),
            (&mut e.targets, lt, &mut t.1),
        ] {
            if v.len() > l {
                v.truncate(l - 1);
                v.push(eos);
                *n += 1;
            }
        }
    }

    let work = outdir::work_dir(&cfg.out, &work_name);
    outdir::claim(&work, &job)?;
    let vocab_size = vocab.len() as u32 + cfg.extra_ids;
    let narrow = conveyor_pipeline::shard::narrow_ids(vocab_size as usize);
    let n = cfg.inputs.len();
    let dest = match cfg.worker {
        None => cfg.out.clone(),
        Some(w) => part_dir(&cfg.out, w),
    };
    std::fs::create_dir_all(&dest).map_err(|e| conveyor_pipeline::Error::io(&dest, e))?;
    let mut shards = Vec::new();
    let mut counts = Vec::new();
    for (i, data) in &per_input {
        let tmp = work.join(format!("shard-{i:05}.parquet"));
        let mut w = ExampleShardWriter::create_text(&tmp, narrow, task.has_answers())?;
        let mut source_tokens = 0u64;
        // In a seeded random order, as TFDS writes a dataset: task files are often sorted by
        // label (aclImdb's neg/ then pos/, Sentiment140's 800k negative then 800k positive),
        // and a loader's shuffle buffer of 10,000 would train on one label for thousands of
        // steps. Drawn per input (by its index), so a split job writes the same shards.
        let mut rows: Vec<(&Ids, &crate::Example)> = encoded
            .iter()
            .zip(&examples)
            .filter(|(_, (j, _))| j == i)
            .map(|(ids, (_, ex))| (ids, ex))
            .collect();
        Rng::for_item(0, 0, Stream::Shuffle, 0x7a5c, *i as u64).shuffle(&mut rows);
        for (ids, ex) in rows {
            w.push_text(
                ids,
                &ex.inputs,
                &ex.targets,
                ex.category.as_deref(),
                &ex.answers,
            )?;
            source_tokens += (ids.inputs.len() + ids.targets.len()) as u64;
        }
        let stats = w.finish()?;
        let name = match cfg.worker {
            None => shard_name(&cfg.split, *i, n),
            Some(_) => format!("shard-{i:05}.parquet"),
        };
        let target = dest.join(&name);
        std::fs::rename(&tmp, &target).map_err(|e| conveyor_pipeline::Error::io(&tmp, e))?;
        let (ti, tt) = truncated.get(i).copied().unwrap_or_default();
        shards.push(ExampleShardRecord {
            file: name,
            rows: stats.rows,
            examples: stats.rows,
            tokens: stats.tokens,
            bytes: stats.bytes,
            sha256: stats.sha256,
            source_shard: String::new(),
            source_documents: data.read,
            source_tokens,
        });
        counts.push(TaskCounts {
            name: task.name(),
            inputs: vec![cfg.inputs[*i].display().to_string()],
            read: data.read,
            written: stats.rows,
            skipped: data.skipped.len() as u64,
            excluded: data.excluded.clone(),
            truncated_inputs: ti,
            truncated_targets: tt,
            contents_sha256: Some(contents.clone()),
            definition_sha256: crate::definition_sha256(task),
            unreachable_targets: unreachable.get(i).map_or(0, |u| u.0),
            unreachable_example: unreachable.get(i).and_then(|u| u.1.clone()),
            problems: data
                .skipped
                .iter()
                .take(1000)
                .map(|s| format!("{}:{}: {}", s.file, s.line, s.reason))
                .collect(),
        });
    }
    let base = ExamplesManifest {
        format: EXAMPLES_FORMAT.into(),
        version: EXAMPLES_VERSION,
        created_by: format!("conveyor {}", env!("CARGO_PKG_VERSION")),
        job: job.clone(),
        source: cfg
            .inputs
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        source_job: String::new(),
        vocab: VocabInfo {
            path: cfg.vocab.display().to_string(),
            sha256: vocab.sha256.clone(),
            size: vocab.len(),
            unk_id: vocab.unk_id,
            eos_id: vocab.eos_id,
            pad_id: vocab.pad_id,
        },
        settings: ExampleSettings {
            objective: conveyor_pipeline::examples::Objective::Task(task.name()),
            lengths: Lengths {
                tokens_length: li,
                inputs_length: li,
                targets_length: lt,
            },
            noise_density: None,
            mean_span_length: None,
            seed: 0,
            epoch: 0,
            pack: false,
            chunking: None,
            vocab_size,
            extra_ids: cfg.extra_ids,
            eos_id: eos,
            split: cfg.split.clone(),
            token_type: if narrow { "uint16" } else { "uint32" }.into(),
        },
        shards: Vec::new(),
        examples: 0,
        rows: 0,
        tokens: 0,
        source_tokens: 0,
        task: None,
    };
    let inputs: Vec<String> = cfg.inputs.iter().map(|p| p.display().to_string()).collect();
    let m = conveyor_pipeline::examples::task_parts::task_manifest(
        &base,
        shards.clone(),
        &counts,
        task.name(),
        inputs,
    );
    if let Some(w) = cfg.worker {
        let part = conveyor_pipeline::examples::task_parts::TaskPart {
            format: conveyor_pipeline::examples::task_parts::TASK_PART_FORMAT.into(),
            job,
            worker: w,
            inputs: n,
            shards: per_input
                .iter()
                .map(|(i, _)| *i)
                .zip(shards)
                .zip(counts)
                .map(|((i, s), c)| (i, s, c))
                .collect(),
            manifest: m.clone(),
        };
        let json = serde_json::to_string_pretty(&part).expect("part serialises") + "\n";
        conveyor_pipeline::manifest::write_atomic(&dest.join("part.json"), json.as_bytes())?;
    } else {
        m.write(&cfg.out)?;
    }
    std::fs::remove_dir_all(&work).map_err(|e| conveyor_pipeline::Error::io(&work, e))?;
    Ok(summary(&m, &cfg.out, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentile() {
        let mut v: Vec<usize> = (1..=10).collect();
        assert_eq!(percentile(&mut v, 0.9), 9);
        let mut v = vec![5, 1, 3];
        assert_eq!(percentile(&mut v, 0.9), 5);
        assert_eq!(percentile(&mut [], 0.9), 1);
    }
}
