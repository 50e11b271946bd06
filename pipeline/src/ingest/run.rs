//! The ingest loop: read a batch, tokenize it in parallel, write it in order, cut shards,
//! journal them; then rename the shards to their final names and write the manifest.

use std::path::Path;

use rayon::prelude::*;

use super::journal::{Entry, Journal};
use super::Plan;
use crate::error::Error;
use crate::manifest::{
    Counts, FileProblem, Manifest, ShardRecord, VocabInfo, MAX_LISTED_PROBLEMS, TOKENS_FORMAT,
    TOKENS_VERSION,
};
use crate::progress::Progress;
use crate::shard::{shard_name, TokenShardWriter};
use crate::source::{self, Document, ProblemKind, Raw, ReadError};

/// Bytes of input read per batch: large enough to keep every thread busy, small enough to
/// bound memory.
const BATCH_BYTES: usize = 8 << 20;

/// A record after parsing and tokenizing.
type Parsed = Result<(Document, Vec<u32>), (ProblemKind, String)>;

pub(super) fn run(
    plan: &Plan,
    mut journal: Journal,
    progress: &dyn Progress,
) -> Result<Manifest, Error> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(plan.cfg.threads.unwrap_or(0))
        .build()
        .map_err(|e| Error::Config(format!("cannot start worker threads: {e}")))?;
    progress.start(plan.inputs.iter().map(|i| i.bytes).sum());
    if !journal.entries.is_empty() {
        progress.note(&format!(
            "resuming: {} shard(s) already written",
            journal.shards().count()
        ));
    }
    // Shards left by the killed run after its last journal line are rewritten from scratch.
    let mut next_shard = journal.shards().count();
    if !journal.finalizing() {
        for (i, input) in plan.inputs.iter().enumerate() {
            if journal.input_done(i) {
                progress.advance(input.bytes, 0, 0);
                continue;
            }
            ingest_input(plan, i, &mut journal, &mut next_shard, &pool, progress)?;
        }
        journal.append(Entry::Finalizing { shards: next_shard })?;
    }
    progress.finish();
    finalize(plan, journal)
}

/// State of the shard being written.
struct Open {
    writer: TokenShardWriter,
    first_record: u64,
}

fn ingest_input(
    plan: &Plan,
    input: usize,
    journal: &mut Journal,
    next_shard: &mut usize,
    pool: &rayon::ThreadPool,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let path = &plan.paths[input];
    let name = &plan.inputs[input].name;
    let start = journal.resume_record(input);
    let mut records = start;
    let mut counts = Counts::default();
    let mut problems: Vec<FileProblem> = Vec::new();
    let mut open: Option<Open> = None;
    let mut failure: Option<String> = None;
    let mut last_bytes = 0u64;

    let mut src = match source::open(path, &plan.source_opts) {
        Ok(s) => Some(s),
        Err(e) => {
            failure = Some(e.to_string());
            None
        }
    };
    if let Some(s) = src.as_mut() {
        if let Err(e) = s.skip(start) {
            failure = Some(e.message);
            src = None;
        }
    }
    let narrow = crate::shard::narrow_ids(plan.tokenizer.vocab().len());
    let eos = plan
        .cfg
        .append_eos
        .then(|| plan.tokenizer.vocab().eos_id)
        .flatten();
    let mut batch: Vec<Raw> = Vec::new();
    while let Some(s) = src.as_mut() {
        batch.clear();
        let more = match s.read_batch(&mut batch, BATCH_BYTES) {
            Ok(more) => more,
            Err(ReadError { message, .. }) => {
                failure = Some(message);
                false
            }
        };
        let text_field = plan.source_opts.text_field.as_str();
        let tok = &*plan.tokenizer;
        let parsed: Vec<Parsed> = pool.install(|| {
            std::mem::take(&mut batch)
                .into_par_iter()
                .map(|raw| parse_and_encode(raw, text_field, tok, eos))
                .collect()
        });
        let (mut docs, mut toks) = (0u64, 0u64);
        for item in parsed {
            records += 1;
            counts.records += 1;
            match item {
                Err((kind, message)) => {
                    if plan.cfg.strict {
                        return Err(Error::Strict {
                            path: path.clone(),
                            line: records,
                            message,
                        });
                    }
                    *counts.skipped.entry(kind).or_default() += 1;
                    if kind != ProblemKind::Empty {
                        problems.push(FileProblem {
                            file: name.clone(),
                            line: records,
                            kind,
                            message,
                        });
                    }
                }
                Ok((doc, ids)) => {
                    let shard = match open.as_mut() {
                        Some(o) => o,
                        None => open.insert(Open {
                            writer: TokenShardWriter::create(
                                &journal.shard_path(*next_shard),
                                narrow,
                            )?,
                            first_record: records - 1,
                        }),
                    };
                    shard.writer.push(
                        &ids,
                        doc.url.as_deref(),
                        doc.timestamp.as_deref(),
                        name,
                        records - 1,
                    )?;
                    counts.documents += 1;
                    counts.tokens += ids.len() as u64;
                    counts.text_bytes += doc.text.len() as u64;
                    docs += 1;
                    toks += ids.len() as u64;
                    let full = shard.writer.approx_bytes() >= plan.cfg.shard_bytes
                        || plan
                            .cfg
                            .shard_tokens
                            .is_some_and(|t| shard.writer.tokens() >= t);
                    if full {
                        let o = open.take().expect("open shard");
                        close_shard(
                            journal,
                            o,
                            input,
                            records,
                            next_shard,
                            &mut counts,
                            &mut problems,
                        )?;
                    }
                }
            }
        }
        let now = s.bytes_read();
        progress.advance(now.saturating_sub(last_bytes), docs, toks);
        last_bytes = now;
        if !more {
            break;
        }
    }
    if let Some(o) = open.take() {
        close_shard(
            journal,
            o,
            input,
            records,
            next_shard,
            &mut counts,
            &mut problems,
        )?;
    }
    if let Some(f) = &failure {
        if plan.cfg.strict {
            return Err(Error::Strict {
                path: path.clone(),
                line: records,
                message: f.clone(),
            });
        }
        progress.note(&format!("{}: {f}", path.display()));
    }
    progress.advance(plan.inputs[input].bytes.saturating_sub(last_bytes), 0, 0);
    journal.append(Entry::InputDone {
        input,
        end_record: records,
        counts,
        problems,
        error: failure,
    })
}

fn parse_and_encode(
    raw: Raw,
    text_field: &str,
    tok: &dyn crate::tokenize::Tokenizer,
    eos: Option<u32>,
) -> Parsed {
    let doc = source::parse(raw, text_field)?;
    let mut ids = Vec::with_capacity(doc.text.len() / 3);
    tok.encode_into(&doc.text, &mut ids)
        .map_err(|e| (ProblemKind::Tokenizer, e.0))?;
    if ids.is_empty() {
        return Err((ProblemKind::Empty, "empty document".into()));
    }
    ids.extend(eos);
    Ok((doc, ids))
}

fn close_shard(
    journal: &mut Journal,
    open: Open,
    input: usize,
    end_record: u64,
    next_shard: &mut usize,
    counts: &mut Counts,
    problems: &mut Vec<FileProblem>,
) -> Result<(), Error> {
    let stats = open.writer.finish()?;
    let shard = ShardRecord {
        file: format!("shard-{:05}.parquet", *next_shard),
        rows: stats.rows,
        tokens: stats.tokens,
        bytes: stats.bytes,
        sha256: stats.sha256,
        input,
        first_record: open.first_record,
        end_record,
    };
    journal.append(Entry::Shard {
        shard,
        counts: std::mem::take(counts),
        problems: std::mem::take(problems),
    })?;
    *next_shard += 1;
    Ok(())
}

/// Renames the shards to `{split}-{i:05}-of-{n:05}.parquet`, writes the manifest and removes
/// the work folder. Safe to repeat after a kill at any point.
fn finalize(plan: &Plan, journal: Journal) -> Result<Manifest, Error> {
    let out = &plan.cfg.out;
    let mut inputs = plan.inputs.clone();
    let mut problems = Vec::new();
    let mut shards = Vec::new();
    for entry in &journal.entries {
        let (input, counts, probs) = match entry {
            Entry::Shard {
                shard,
                counts,
                problems,
            } => {
                shards.push(shard.clone());
                (shard.input, counts, problems)
            }
            Entry::InputDone {
                input,
                counts,
                problems,
                error,
                ..
            } => {
                inputs[*input].error = error.clone();
                (*input, counts, problems)
            }
            Entry::Finalizing { .. } => continue,
        };
        inputs[input].counts.add(counts);
        problems.extend(probs.iter().cloned());
    }
    let count = shards.len();
    for (i, shard) in shards.iter_mut().enumerate() {
        let final_name = shard_name(&plan.settings.split, i, count);
        rename_once(&journal.shard_path(i), &out.join(&final_name))?;
        shard.file = final_name;
    }
    let mut totals = Counts::default();
    for i in &inputs {
        totals.add(&i.counts);
    }
    let problems_total = problems.len() as u64;
    problems.truncate(MAX_LISTED_PROBLEMS);
    let vocab = plan.tokenizer.vocab();
    let manifest = Manifest {
        format: TOKENS_FORMAT.into(),
        version: TOKENS_VERSION,
        created_by: format!("conveyor {}", env!("CARGO_PKG_VERSION")),
        job: plan.job.clone(),
        vocab: VocabInfo {
            path: plan.cfg.vocab.display().to_string(),
            sha256: vocab.sha256.clone(),
            size: vocab.len(),
            unk_id: vocab.unk_id,
            eos_id: vocab.eos_id,
            pad_id: vocab.pad_id,
        },
        settings: plan.settings.clone(),
        tokenizer: plan.cfg.tokenizer.name().into(),
        failed_inputs: inputs.iter().filter(|i| i.error.is_some()).count(),
        inputs,
        shards,
        totals,
        problems,
        problems_total,
    };
    manifest.write(out)?;
    journal.remove()?;
    Ok(manifest)
}

/// Renames `from` to `to` unless an earlier, interrupted finalize already did.
fn rename_once(from: &Path, to: &Path) -> Result<(), Error> {
    if from.exists() {
        std::fs::rename(from, to).map_err(|e| Error::io(from, e))
    } else if to.exists() {
        Ok(())
    } else {
        Err(Error::OutputDir {
            path: from.to_path_buf(),
            message: "a finished shard is missing; rerun with --overwrite to start again".into(),
        })
    }
}
