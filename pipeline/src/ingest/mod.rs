//! The ingest job: corpus files -> tokenized Parquet token shards + manifest.
//!
//! Documents flow in input order; batches are parsed and tokenized in parallel (rayon) and
//! written in order, so the output never depends on the thread count. A shard ends when it
//! reaches the size target or its input file ends, so shard contents depend only on the data
//! (and N workers given disjoint inputs write the same shards as one). Work is journaled per
//! shard (see [`journal`]) so a killed run resumes to the identical result.
//!
//! With a [`Worker`] the job does only that worker's inputs and leaves a part
//! (`OUT/parts/worker-IIIII-of-NNNNN/`: shards and `part.json`) for [`crate::merge`].

mod feed;
pub mod journal;
mod run;

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::job::workers::{Worker, WorkerState};
use crate::manifest::{Counts, IngestSettings, InputRecord, Manifest};
use crate::progress::Progress;
use crate::record::ProblemKind;
use crate::source::{SourceOptions, TxtMode};
use crate::tokenize::{Tokenizer, TokenizerKind};
use journal::Journal;

/// Default shard size: about 192 MiB of Parquet.
pub const DEFAULT_SHARD_BYTES: u64 = 192 << 20;

/// Everything the ingest job needs, validated by the caller's parser.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Files, directories or glob patterns.
    pub inputs: Vec<String>,
    pub vocab: PathBuf,
    pub out: PathBuf,
    pub split: String,
    pub text_field: String,
    pub txt_mode: TxtMode,
    pub append_eos: bool,
    pub shard_bytes: u64,
    pub shard_tokens: Option<u64>,
    /// Records above this many bytes are skipped as `too_long` (bounds memory).
    pub max_document_bytes: usize,
    pub tokenizer: TokenizerKind,
    /// Worker threads; None = one per core.
    pub threads: Option<usize>,
    pub strict: bool,
    pub overwrite: bool,
    /// This process's share of a split job; None = the whole job.
    pub worker: Option<Worker>,
}

impl IngestConfig {
    pub fn new(inputs: Vec<String>, vocab: PathBuf, out: PathBuf) -> Self {
        Self {
            inputs,
            vocab,
            out,
            split: "train".into(),
            text_field: "text".into(),
            txt_mode: TxtMode::File,
            append_eos: false,
            shard_bytes: DEFAULT_SHARD_BYTES,
            shard_tokens: None,
            max_document_bytes: crate::source::MAX_DOCUMENT_BYTES,
            tokenizer: TokenizerKind::Native,
            threads: None,
            strict: false,
            overwrite: false,
            worker: None,
        }
    }
}

/// What a finished (or already complete) job reports.
#[derive(Debug, Clone, Serialize)]
pub struct IngestSummary {
    pub out: PathBuf,
    pub shards: usize,
    pub totals: Counts,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub failed_inputs: Vec<InputRecord>,
    pub problems_total: u64,
    /// True when the output was already complete and nothing was done.
    pub already_complete: bool,
    /// Inputs modified (same path and size, another modification time) since the complete
    /// output was written, or since a resumed job began: if their contents changed, the
    /// output is stale, or mixes old and new contents; `--overwrite` makes it again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub modified_inputs: Vec<String>,
    /// True when an interrupted run was continued.
    pub resumed: bool,
    pub seconds: f64,
}

impl IngestSummary {
    fn from_manifest(
        out: &Path,
        m: &Manifest,
        already_complete: bool,
        resumed: bool,
        seconds: f64,
    ) -> Self {
        Self {
            out: out.to_path_buf(),
            shards: m.shards.len(),
            totals: m.totals.clone(),
            input_bytes: m.inputs.iter().map(|i| i.bytes).sum(),
            output_bytes: m.shards.iter().map(|s| s.bytes).sum(),
            failed_inputs: m
                .inputs
                .iter()
                .filter(|i| i.error.is_some())
                .cloned()
                .collect(),
            problems_total: m.problems_total,
            already_complete,
            modified_inputs: Vec::new(),
            resumed,
            seconds,
        }
    }
}

/// `--strict` over a complete output written without it (strictness is not part of the
/// job: the same records make the same shards): the first problem the run skipped, as the
/// error a strict run stops with, or nothing when it skipped none. A rerun with `--strict`
/// answered "already complete" and exited 0.
fn strict_refusal(m: &Manifest, out: &Path) -> Option<Error> {
    let note = |what: String| {
        format!(
            "{what} (skipped by the run that wrote {} without --strict; rerun without --strict to keep that output, or fix the input and use --overwrite)",
            out.display()
        )
    };
    if let Some(p) = m.problems.iter().find(|p| p.kind != ProblemKind::Empty) {
        // Problems name an input by its name; the error by its path, as a strict run's does.
        let input = m.inputs.iter().find(|i| i.name == p.file);
        return Some(Error::Strict {
            path: PathBuf::from(input.map_or(&p.file, |i| &i.path)),
            line: p.line,
            message: note(p.message.clone()),
        });
    }
    if let Some(i) = m.inputs.iter().find(|i| i.error.is_some()) {
        return Some(Error::Strict {
            path: PathBuf::from(&i.path),
            line: i.counts.records,
            message: note(i.error.clone().unwrap_or_default()),
        });
    }
    let skipped = m
        .totals
        .skipped
        .iter()
        .find(|(k, _)| **k != ProblemKind::Empty);
    skipped.map(|(k, n)| Error::Strict {
        path: out.join("manifest.json"),
        line: 0,
        message: note(format!("{n} record(s) skipped as {}", k.name())),
    })
}

/// The resolved job: inputs, tokenizer, settings and identity.
pub(crate) struct Plan {
    pub cfg: IngestConfig,
    pub inputs: Vec<InputRecord>,
    pub paths: Vec<PathBuf>,
    pub tokenizer: Box<dyn Tokenizer>,
    pub settings: IngestSettings,
    pub source_opts: SourceOptions,
    pub job: String,
    /// The work folder's name inside the output folder.
    pub work_name: String,
}

impl Plan {
    /// Whether this process handles input `i` (all of them unless it is one worker of many).
    pub fn owns(&self, i: usize) -> bool {
        self.cfg.worker.is_none_or(|w| w.owns(i))
    }
}

/// Runs the ingest job (or resumes it, or reports it as already complete).
pub fn ingest(cfg: IngestConfig, progress: &dyn Progress) -> Result<IngestSummary, Error> {
    let (out, worker) = (cfg.out.clone(), cfg.worker.is_some());
    crate::job::outdir::removed_if_failed_empty(&out, worker, || ingest_into(cfg, progress))
}

fn ingest_into(cfg: IngestConfig, progress: &dyn Progress) -> Result<IngestSummary, Error> {
    let started = std::time::Instant::now();
    let plan = plan(cfg)?;
    let out = plan.cfg.out.clone();
    let (done, _lock) = prepare_out_dir(&plan)?;
    if let Some(m) = done {
        if plan.cfg.strict {
            if let Some(e) = strict_refusal(&m, &out) {
                return Err(e);
            }
        }
        let mut s = IngestSummary::from_manifest(&out, &m, true, false, 0.0);
        s.modified_inputs = modified_inputs(&m.inputs, &plan.inputs);
        return Ok(s);
    }
    let journal = Journal::open(&out, &plan.work_name, &plan.job)?;
    let resumed = !journal.entries.is_empty();
    let modified = started_inputs(&out, &plan, resumed)?;
    let manifest = run::run(&plan, journal, progress)?;
    let mut s = IngestSummary::from_manifest(
        &out,
        &manifest,
        false,
        resumed,
        started.elapsed().as_secs_f64(),
    );
    s.modified_inputs = modified;
    Ok(s)
}

/// The inputs as a job began (`inputs.json` in its work folder, written when it starts):
/// a resumed job names the inputs modified since, whose shards written before the kill may
/// hold their old contents.
fn started_inputs(out: &Path, plan: &Plan, resumed: bool) -> Result<Vec<String>, Error> {
    let file = crate::job::outdir::work_dir(out, &plan.work_name).join("inputs.json");
    if !resumed {
        let json = serde_json::to_string(&plan.inputs).expect("input records serialise");
        crate::manifest::write_atomic(&file, json.as_bytes())?;
        return Ok(Vec::new());
    }
    let cap = crate::regular::MAX_JSON_BYTES;
    let began: Vec<InputRecord> = crate::regular::read_to_string(&file, cap)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    Ok(modified_inputs(&began, &plan.inputs))
}

/// A worker's part: its shards, folder-local names, and the manifest of its inputs.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct IngestPart {
    pub format: String,
    pub job: String,
    pub worker: Worker,
    /// The inputs (indices into `manifest.inputs`) this worker did.
    pub inputs: Vec<usize>,
    /// Shards are named relative to the part folder; only `inputs` carry counts.
    pub manifest: Manifest,
}

impl crate::job::workers::Part for IngestPart {
    const KIND: &'static str = "ingest";

    fn check_names(&self, source: &Path) -> Result<(), Error> {
        self.manifest.check_names(source)
    }
}

impl IngestPart {
    /// The part's manifest with only the inputs this worker did (for its summary).
    pub fn own_manifest(&self) -> Manifest {
        let mut m = self.manifest.clone();
        m.inputs = self
            .inputs
            .iter()
            .filter_map(|&i| self.manifest.inputs.get(i).cloned())
            .collect();
        m
    }
}

/// The `format` of `part.json` written by an ingest worker.
pub const INGEST_PART_FORMAT: &str = "conveyor-ingest-part";

/// Every ingest part in `out`, in folder-name order.
pub fn read_parts(out: &Path) -> Result<Vec<IngestPart>, Error> {
    crate::job::workers::read_part_files(out)?
        .into_iter()
        .map(|(path, header)| {
            if header.format != INGEST_PART_FORMAT {
                return Err(Error::OutputDir {
                    path,
                    message: format!("format {:?} is not {INGEST_PART_FORMAT}", header.format),
                });
            }
            crate::job::workers::read_part::<IngestPart>(&path)
        })
        .collect()
}

/// Checks everything that can be checked before any work: inputs exist, the vocabulary
/// loads, the settings make sense.
fn plan(cfg: IngestConfig) -> Result<Plan, Error> {
    if cfg.shard_bytes == 0 || cfg.shard_tokens == Some(0) || cfg.max_document_bytes == 0 {
        return Err(Error::Config("shard size must be positive".into()));
    }
    crate::contain::check_split(&cfg.split, "--split")?;
    let paths = crate::source::expand_inputs(&cfg.inputs)?;
    let tokenizer = crate::tokenize::load(&cfg.vocab, cfg.tokenizer)?;
    if cfg.append_eos && tokenizer.vocab().eos_id.is_none() {
        return Err(Error::Vocab {
            path: cfg.vocab.clone(),
            reason: "--append-eos needs a </s> piece and this model has none".into(),
        });
    }
    let names = source_names(&paths);
    let mut inputs = Vec::new();
    for (p, name) in paths.iter().zip(names) {
        let bytes = crate::remote::input_len(p)?;
        inputs.push(InputRecord {
            path: p.display().to_string(),
            name,
            bytes,
            modified: crate::remote::input_modified(p),
            counts: Counts::default(),
            error: None,
        });
    }
    let narrow = crate::shard::narrow_ids(tokenizer.vocab().len());
    let settings = IngestSettings {
        split: cfg.split.clone(),
        text_field: cfg.text_field.clone(),
        txt_mode: cfg.txt_mode,
        append_eos: cfg.append_eos,
        shard_bytes: cfg.shard_bytes,
        shard_tokens: cfg.shard_tokens,
        token_type: if narrow { "uint16" } else { "uint32" }.into(),
        max_document_bytes: cfg.max_document_bytes,
    };
    let identity = serde_json::json!({
        "inputs": inputs.iter().map(|i| (&i.path, i.bytes)).collect::<Vec<_>>(),
        "vocab": tokenizer.vocab().sha256,
        "settings": settings,
    });
    let job =
        crate::manifest::hex(&Sha256::digest(identity.to_string().as_bytes()))[..16].to_string();
    let source_opts = SourceOptions {
        text_field: cfg.text_field.clone(),
        txt_mode: cfg.txt_mode,
        max_document_bytes: cfg.max_document_bytes,
    };
    let work_name = journal::work_name(cfg.worker);
    Ok(Plan {
        cfg,
        inputs,
        paths,
        tokenizer,
        settings,
        source_opts,
        job,
        work_name,
    })
}

/// The `source` column value of each input: its file name, or its path below the inputs'
/// common folder when two inputs share a file name.
fn source_names(paths: &[PathBuf]) -> Vec<String> {
    let file_names: Vec<String> = paths
        .iter()
        .map(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let mut sorted = file_names.clone();
    sorted.sort();
    sorted.dedup();
    if sorted.len() == file_names.len() {
        return file_names;
    }
    let abs: Vec<PathBuf> = paths
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let mut common = abs[0].parent().map(Path::to_path_buf).unwrap_or_default();
    while !abs.iter().all(|p| p.starts_with(&common)) {
        if !common.pop() {
            break;
        }
    }
    abs.iter()
        .map(|p| p.strip_prefix(&common).unwrap_or(p).display().to_string())
        .collect()
}

/// Applies the output folder rules of a whole or split job ([`crate::job::workers::start_job`]);
/// returns the manifest (for one worker: of its inputs only) when this job's output, or this
/// worker's part, is already there.
fn prepare_out_dir(plan: &Plan) -> Result<(Option<Manifest>, crate::job::lock::OutLock), Error> {
    let out = &plan.cfg.out;
    // The inputs as given (folders) and as found (files).
    let given = plan.cfg.inputs.iter().map(PathBuf::from);
    let inputs: Vec<PathBuf> = given.chain(plan.paths.iter().cloned()).collect();
    crate::job::outdir::check_not_input(out, &inputs)?;
    let (state, _, lock) = crate::job::workers::start_job(
        out,
        crate::job::JobKind {
            work: journal::WORK_DIR,
            format: crate::manifest::TOKENS_FORMAT,
        },
        &plan.job,
        plan.cfg.worker,
        plan.cfg.overwrite,
        |dir| Manifest::read(dir).map(|m| m.job),
    )?;
    let done = match (state, plan.cfg.worker) {
        (WorkerState::Merged, _) => Some(Manifest::read(out)?),
        (WorkerState::PartDone, Some(w)) => read_parts(out)?
            .into_iter()
            .find(|p| p.worker == w)
            .map(|p| p.own_manifest()),
        _ => None,
    };
    Ok((done, lock))
}

/// The inputs `m` records with another modification time than they have now. Not proof
/// of an edit (a `touch`, a checkout or a copy without times change it too), so it is
/// reported, not refused: refusing locked finished studies and worker reruns out.
fn modified_inputs(recorded: &[InputRecord], now: &[InputRecord]) -> Vec<String> {
    recorded
        .iter()
        .filter(|was| {
            let is = now.iter().find(|i| i.path == was.path);
            matches!((was.modified, is.and_then(|i| i.modified)), (Some(a), Some(b)) if a != b)
        })
        .map(|was| was.path.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_names_are_file_names_unless_they_clash() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            source_names(&[p("/a/x.jsonl"), p("/b/y.jsonl")]),
            vec!["x.jsonl", "y.jsonl"]
        );
        assert_eq!(
            source_names(&[p("/d/a/x.jsonl"), p("/d/b/x.jsonl")]),
            vec!["a/x.jsonl", "b/x.jsonl"]
        );
    }
}
