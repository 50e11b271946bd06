//! `conveyor corrupt`: a token directory -> span-corruption example shards + manifest.
//!
//! Every token shard becomes one example shard, independently (shards are processed in
//! parallel; each shard's content depends only on the data and the settings). A finished
//! shard is renamed into the work folder with a small record beside it, so a killed run
//! resumes by redoing only unfinished shards; final names appear only when all are done.
//! With a [`Worker`], the job does token shards k with k mod N = I and leaves a part for
//! `conveyor manifest merge` (see [`parts`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};

mod parts;
mod spans;

use super::{Chunking, Corruption, Example, Keys, Packer, Pieces, Scratch, SpanCorruption};
use crate::error::Error;
use crate::examples::{
    ExampleSettings, ExampleShardRecord, ExampleShardWriter, ExamplesManifest, Objective,
    EXAMPLES_FORMAT, EXAMPLES_VERSION,
};
use crate::job::outdir;
use crate::job::workers::{part_dir, Worker, WorkerState};
use crate::manifest::{write_atomic, Manifest};
use crate::progress::Progress;
use crate::shard::{shard_name, Ids, TokenDocs};
use parts::{finalize_part, read_part};
pub use parts::{merge_parts, CorruptPart, CORRUPT_PART_FORMAT};
pub use spans::{check_density, check_spans, usable_lengths};

const WORK_DIR: &str = ".conveyor-corrupt";
/// Span corruption as a job kind: its work folder and the manifest it writes.
const KIND: crate::job::JobKind = crate::job::JobKind {
    work: WORK_DIR,
    format: EXAMPLES_FORMAT,
};

/// A corruption job.
#[derive(Debug, Clone)]
pub struct CorruptConfig {
    /// A finished token directory (with manifest.json).
    pub tokens: PathBuf,
    /// How the manifest names the token dataset (default: `tokens`' path); the URL when
    /// `tokens` is a downloaded copy.
    pub source_name: Option<String>,
    pub out: PathBuf,
    pub inputs_length: usize,
    pub noise_density: f64,
    pub mean_span_length: f64,
    pub seed: u64,
    pub epoch: u64,
    pub pack: bool,
    /// Output split name (default: the token directory's).
    pub split: Option<String>,
    pub extra_ids: u32,
    /// The vocabulary the user expects the tokens to be in (checked by sha256).
    pub vocab: Option<PathBuf>,
    pub threads: Option<usize>,
    pub overwrite: bool,
    /// This process's share of a split job; None = the whole job.
    pub worker: Option<Worker>,
}

impl CorruptConfig {
    pub fn new(tokens: PathBuf, out: PathBuf, inputs_length: usize) -> Self {
        Self {
            tokens,
            source_name: None,
            out,
            inputs_length,
            noise_density: 0.15,
            mean_span_length: 3.0,
            seed: 0,
            epoch: 0,
            pack: false,
            split: None,
            extra_ids: 100,
            vocab: None,
            threads: None,
            overwrite: false,
            worker: None,
        }
    }
}

/// What a finished (or already complete) job reports.
#[derive(Debug, Clone, Serialize)]
pub struct CorruptSummary {
    pub out: PathBuf,
    pub shards: usize,
    pub tokens_length: usize,
    pub inputs_length: usize,
    pub targets_length: usize,
    pub examples: u64,
    pub rows: u64,
    pub tokens: u64,
    pub source_tokens: u64,
    pub output_bytes: u64,
    pub already_complete: bool,
    pub resumed: bool,
    pub seconds: f64,
}

impl CorruptSummary {
    fn new(m: &ExamplesManifest, out: &Path, done: bool, resumed: bool, secs: f64) -> Self {
        Self {
            out: out.to_path_buf(),
            shards: m.shards.len(),
            tokens_length: m.settings.lengths.tokens_length,
            inputs_length: m.settings.lengths.inputs_length,
            targets_length: m.settings.lengths.targets_length,
            examples: m.examples,
            rows: m.rows,
            tokens: m.tokens,
            source_tokens: m.source_tokens,
            output_bytes: m.shards.iter().map(|s| s.bytes).sum(),
            already_complete: done,
            resumed,
            seconds: secs,
        }
    }
}

/// The sentinels are numbered down from the vocabulary's size: a token manifest whose
/// `vocab` disagrees with the vocabulary it names by sha256 (an edited size would make
/// sentinels of real pieces) is refused, naming the field.
fn check_vocab_info(
    cfg: &CorruptConfig,
    source: &Manifest,
    vocab: &Path,
    bytes: &[u8],
) -> Result<(), Error> {
    let v = crate::tokenize::spm::SpmModel::from_bytes(bytes, vocab)?;
    let v = crate::tokenize::Tokenizer::vocab(&v);
    let m = &source.vocab;
    let id = |i: Option<u32>| i.map_or("none".to_string(), |i| i.to_string());
    let fields = [
        ("size", m.size.to_string(), v.len().to_string()),
        ("eos_id", id(m.eos_id), id(v.eos_id)),
        ("unk_id", m.unk_id.to_string(), v.unk_id.to_string()),
        ("pad_id", id(m.pad_id), id(v.pad_id)),
    ];
    match fields.iter().find(|(_, said, is)| said != is) {
        None => Ok(()),
        Some((field, said, is)) => Err(Error::Manifest {
            path: cfg.tokens.join("manifest.json"),
            message: format!(
                "vocab.{field} is {said}, but {} (the vocabulary it names by sha256) has {is}: the manifest was edited or damaged; re-ingest",
                vocab.display()
            ),
        }),
    }
}

/// The validated job.
pub struct Plan {
    pub source: Manifest,
    pub settings: ExampleSettings,
    pub corruption: SpanCorruption,
    pub job: String,
}

/// Checks the token directory and the settings; refuses what cannot work, saying why.
pub fn plan(cfg: &CorruptConfig) -> Result<Plan, Error> {
    let source = Manifest::read(&cfg.tokens).map_err(|e| match e {
        Error::Io { path, .. } => Error::Manifest {
            path,
            message: "missing: not a finished conveyor token directory (run `conveyor ingest` to make one, or rerun it to finish)".into(),
        },
        e => e,
    })?;
    if let Some(split) = &cfg.split {
        crate::contain::check_split(split, "--split")?;
    }
    if let Some(v) = &cfg.vocab {
        let bytes = crate::tokenize::read_model(v)?;
        let sha = crate::manifest::hex(&Sha256::digest(&bytes));
        if sha != source.vocab.sha256 {
            return Err(Error::Config(format!(
                "{} was tokenized with {} (sha256 {}), not with {} (sha256 {}): pass the vocabulary it was made with, or re-ingest",
                cfg.tokens.display(),
                source.vocab.path,
                &source.vocab.sha256[..16],
                v.display(),
                &sha[..16]
            )));
        }
        check_vocab_info(cfg, &source, v, &bytes)?;
    }
    let eos = source.vocab.eos_id.ok_or_else(|| {
        Error::Config(format!(
            "the vocabulary of {} has no </s> piece, which T5 examples end with",
            cfg.tokens.display()
        ))
    })?;
    let lengths = usable_lengths(
        cfg.inputs_length,
        cfg.noise_density,
        cfg.mean_span_length,
        cfg.extra_ids,
    )?;
    let vocab_size = u32::try_from(source.vocab.size)
        .ok()
        .and_then(|n| n.checked_add(cfg.extra_ids))
        .ok_or_else(|| {
            Error::Config(format!(
                "a vocabulary of {} pieces and {} extra ids do not fit 32-bit ids (the vocab.size of {} or --extra-ids is wrong)",
                source.vocab.size,
                cfg.extra_ids,
                cfg.tokens.join("manifest.json").display()
            ))
        })?;
    let narrow = crate::shard::narrow_ids(vocab_size as usize);
    if cfg.pack && lengths.inputs_length.max(lengths.targets_length) > u16::MAX as usize {
        return Err(Error::Config(format!(
            "packed rows store positions in 16 bits: lengths up to {} (asked {})",
            u16::MAX,
            lengths.inputs_length
        )));
    }
    let settings = ExampleSettings {
        objective: Objective::SpanCorruption,
        lengths,
        noise_density: Some(cfg.noise_density),
        mean_span_length: Some(cfg.mean_span_length),
        seed: cfg.seed,
        epoch: cfg.epoch,
        pack: cfg.pack,
        chunking: Some(Chunking {
            max_chunk: Chunking::T5_MAX_CHUNK,
            group_docs: Chunking::T5_GROUP_DOCS,
            piece: lengths.tokens_length,
        }),
        vocab_size,
        extra_ids: cfg.extra_ids,
        eos_id: eos,
        split: cfg
            .split
            .clone()
            .unwrap_or_else(|| source.settings.split.clone()),
        token_type: if narrow { "uint16" } else { "uint32" }.into(),
    };
    let identity = serde_json::json!({
        "source_job": source.job,
        "source_shards": source.shards.iter().map(|s| &s.sha256).collect::<Vec<_>>(),
        "settings": settings,
    });
    let job =
        crate::manifest::hex(&Sha256::digest(identity.to_string().as_bytes()))[..16].to_string();
    let corruption = SpanCorruption {
        lengths,
        density: cfg.noise_density as f32,
        mean: cfg.mean_span_length as f32,
        vocab_size,
        eos,
    };
    Ok(Plan {
        source,
        settings,
        corruption,
        job,
    })
}

/// Runs the job (or resumes it, or reports it as already complete).
pub fn corrupt(cfg: &CorruptConfig, progress: &dyn Progress) -> Result<CorruptSummary, Error> {
    let started = std::time::Instant::now();
    let plan = plan(cfg)?;
    let out = &cfg.out;
    outdir::check_not_input(out, std::slice::from_ref(&cfg.tokens))?;
    let merged_job = |d: &Path| ExamplesManifest::read(d).map(|m| m.job);
    let (state, work_name, _lock) = crate::job::workers::start_job(
        out,
        KIND,
        &plan.job,
        cfg.worker,
        cfg.overwrite,
        merged_job,
    )?;
    match (state, cfg.worker) {
        (WorkerState::Merged, _) => {
            let m = ExamplesManifest::read(out)?;
            return Ok(CorruptSummary::new(&m, out, true, false, 0.0));
        }
        (WorkerState::PartDone, Some(w)) => {
            let p = read_part(&part_dir(out, w).join("part.json"))?;
            return Ok(CorruptSummary::new(&p.manifest, out, true, false, 0.0));
        }
        _ => {}
    }
    let owns = |k: usize| cfg.worker.is_none_or(|w| w.owns(k));
    let work = outdir::work_dir(out, &work_name);
    let resumed = work.exists();
    outdir::claim(&work, &plan.job)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads.unwrap_or(0))
        .build()
        .map_err(|e| Error::Config(format!("cannot start worker threads: {e}")))?;
    let mine: Vec<usize> = (0..plan.source.shards.len()).filter(|&k| owns(k)).collect();
    progress.start(mine.iter().map(|&k| plan.source.shards[k].bytes).sum());
    let reused = AtomicUsize::new(0);
    let records: Vec<Result<ExampleShardRecord, Error>> = pool.install(|| {
        mine.par_iter()
            .copied()
            .map(|k| {
                let done = load_done(&work, k);
                if let Some(r) = done {
                    reused.fetch_add(1, Ordering::Relaxed);
                    progress.advance(plan.source.shards[k].bytes, r.source_documents, 0);
                    return Ok(r);
                }
                run_shard(cfg, &plan, &work, k, progress)
            })
            .collect()
    });
    let n = reused.load(Ordering::Relaxed);
    if n > 0 {
        progress.note(&format!("resumed: {n} shard(s) were already done"));
    }
    let records = records.into_iter().collect::<Result<Vec<_>, _>>()?;
    progress.finish();
    let m = match cfg.worker {
        None => finalize(cfg, &plan, &work, records)?,
        Some(w) => finalize_part(cfg, &plan, &work, w, &mine, records)?,
    };
    Ok(CorruptSummary::new(
        &m,
        out,
        false,
        resumed,
        started.elapsed().as_secs_f64(),
    ))
}

pub(super) fn work_shard(work: &Path, k: usize) -> PathBuf {
    work.join(format!("shard-{k:05}.parquet"))
}

fn work_record(work: &Path, k: usize) -> PathBuf {
    work.join(format!("shard-{k:05}.json"))
}

/// The record of a shard an earlier run finished, if its file is there.
fn load_done(work: &Path, k: usize) -> Option<ExampleShardRecord> {
    let text = std::fs::read_to_string(work_record(work, k)).ok()?;
    let r: ExampleShardRecord = serde_json::from_str(&text).ok()?;
    let len = std::fs::metadata(work_shard(work, k)).ok()?.len();
    (len == r.bytes).then_some(r)
}

/// Corrupts token shard `k` into the work folder.
fn run_shard(
    cfg: &CorruptConfig,
    plan: &Plan,
    work: &Path,
    k: usize,
    progress: &dyn Progress,
) -> Result<ExampleShardRecord, Error> {
    let src = &plan.source.shards[k];
    let src_path = crate::manifest::shard_path(&cfg.tokens, &src.file)?;
    // The shard is read whole: its checksum costs one sequential pass (measured in
    // docs/benchmarks.md) and catches damage the Parquet reader would decode silently.
    crate::shard::check_file(&src_path, &src.sha256, src.bytes)?;
    let tmp = work.join(format!("shard-{k:05}.parquet.tmp"));
    let s = &plan.settings;
    let narrow = s.token_type == "uint16";
    let mut writer = ExampleShardWriter::create(&tmp, narrow, s.pack)?;
    let keys = Keys {
        seed: s.seed,
        epoch: s.epoch,
        shard: k as u64,
    };
    let mut pieces = Pieces::new(s.chunking.expect("span corruption settings"), keys);
    let mut packer = Packer::new(s.lengths.inputs_length, s.lengths.targets_length);
    let mut scratch = Scratch::default();
    let mut ex = Example::default();
    let mut failed: Option<Error> = None;
    let mut emit = |index: u64, piece: &[u32]| {
        if failed.is_some() {
            return;
        }
        plan.corruption
            .example(keys, index, piece, &mut scratch, &mut ex);
        let r = if s.pack {
            let mut res = Ok(());
            packer.push(&ex, &mut |row| {
                if res.is_ok() {
                    res = writer.push_packed(row);
                }
            });
            res
        } else {
            writer.push_example(&ex)
        };
        if let Err(e) = r {
            failed = Some(e);
        }
    };
    let docs = TokenDocs::open(&src_path)?;
    let rows = docs.rows().max(1);
    let mut seen = 0u64;
    let mut reported = 0u64;
    let mut tokens = 0u64;
    // Every id below the vocabulary's size: a larger one would collide with a sentinel or
    // run past the model's embedding. The first is reported with its row.
    let limit = plan.source.vocab.size as u64;
    let mut beyond: Option<(u64, u64)> = None;
    let n = docs.for_each(|ids| {
        let over = match &ids {
            Ids::U16(d) => d.iter().map(|&i| u64::from(i)).find(|&i| i >= limit),
            Ids::U32(d) => d.iter().map(|&i| u64::from(i)).find(|&i| i >= limit),
        };
        if let (Some(id), None) = (over, beyond) {
            beyond = Some((seen, id));
        }
        if beyond.is_none() {
            match ids {
                Ids::U16(d) => {
                    tokens += d.len() as u64;
                    pieces.push(d, &mut emit)
                }
                Ids::U32(d) => {
                    tokens += d.len() as u64;
                    pieces.push(d, &mut emit)
                }
            }
        }
        seen += 1;
        if seen.is_multiple_of(4096) {
            let bytes = src.bytes * seen / rows;
            progress.advance(bytes - reported, 4096, 0);
            reported = bytes;
        }
    })?;
    if let Some((row, id)) = beyond {
        return Err(Error::Verify {
            path: src_path,
            message: format!(
                "row {row} holds token id {id}, not below the vocabulary size {limit} its manifest gives: the shard was made with another vocabulary, or it or the manifest is damaged; re-ingest"
            ),
        });
    }
    pieces.finish(&mut emit);
    if s.pack {
        let mut res = Ok(());
        packer.finish(&mut |row| {
            if res.is_ok() {
                res = writer.push_packed(row);
            }
        });
        res?;
    }
    if let Some(e) = failed {
        return Err(e);
    }
    if n != src.rows {
        return Err(Error::Verify {
            path: src_path,
            message: format!(
                "{n} rows, the manifest says {}: the token directory changed; re-ingest it",
                src.rows
            ),
        });
    }
    let examples = writer.examples();
    let stats = writer.finish()?;
    let final_path = work_shard(work, k);
    std::fs::rename(&tmp, &final_path).map_err(|e| Error::io(&tmp, e))?;
    let record = ExampleShardRecord {
        file: final_path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        rows: stats.rows,
        examples,
        tokens: stats.tokens,
        bytes: stats.bytes,
        sha256: stats.sha256,
        source_shard: src.file.clone(),
        source_documents: n,
        source_tokens: tokens,
    };
    let text = serde_json::to_string(&record).expect("record serialises");
    write_atomic(&work_record(work, k), text.as_bytes())?;
    progress.advance(src.bytes - reported, seen % 4096, 0);
    Ok(record)
}

/// Gives the shards their final names, writes the manifest and removes the work folder.
/// Safe to repeat after a kill at any point.
fn finalize(
    cfg: &CorruptConfig,
    plan: &Plan,
    work: &Path,
    mut records: Vec<ExampleShardRecord>,
) -> Result<ExamplesManifest, Error> {
    let count = records.len();
    for (k, r) in records.iter_mut().enumerate() {
        let name = shard_name(&plan.settings.split, k, count);
        outdir::rename_once(
            &work_shard(work, k),
            &cfg.out.join(&name),
            outdir::FINISHED_SHARD_MISSING,
        )?;
        r.file = name;
    }
    let m = examples_manifest(cfg, plan, records);
    m.write(&cfg.out)?;
    std::fs::remove_dir_all(work).map_err(|e| Error::io(work, e))?;
    Ok(m)
}

/// The manifest of `records` (all of a job's shards, or one worker's).
pub(super) fn examples_manifest(
    cfg: &CorruptConfig,
    plan: &Plan,
    records: Vec<ExampleShardRecord>,
) -> ExamplesManifest {
    ExamplesManifest {
        format: EXAMPLES_FORMAT.into(),
        version: EXAMPLES_VERSION,
        created_by: format!("conveyor {}", env!("CARGO_PKG_VERSION")),
        job: plan.job.clone(),
        source: cfg
            .source_name
            .clone()
            .unwrap_or_else(|| cfg.tokens.display().to_string()),
        source_job: plan.source.job.clone(),
        vocab: plan.source.vocab.clone(),
        settings: plan.settings.clone(),
        examples: records.iter().map(|r| r.examples).sum(),
        rows: records.iter().map(|r| r.rows).sum(),
        tokens: records.iter().map(|r| r.tokens).sum(),
        source_tokens: records.iter().map(|r| r.source_tokens).sum(),
        shards: records,
        task: None,
    }
}
