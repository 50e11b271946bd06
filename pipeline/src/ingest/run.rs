//! The ingest loop: batches come tokenized from [`feed`] in input order; the writer cuts and
//! journals shards; then the shards get their final names and the manifest is written.

use super::feed::{self, Item, Parsed, Todo};
use super::journal::{Entry, Journal};
use super::Plan;
use crate::error::Error;
use crate::manifest::{
    Counts, FileProblem, Manifest, ShardRecord, VocabInfo, MAX_LISTED_PROBLEMS, TOKENS_FORMAT,
    TOKENS_VERSION,
};
use crate::progress::Progress;
use crate::shard::{shard_name, TokenShardWriter};
use crate::source::{ProblemKind, ReadError};

pub(super) fn run(
    plan: &Plan,
    mut journal: Journal,
    progress: &dyn Progress,
) -> Result<Manifest, Error> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(plan.cfg.threads.unwrap_or(0))
        .build()
        .map_err(|e| Error::Config(format!("cannot start worker threads: {e}")))?;
    progress.start(
        plan.inputs
            .iter()
            .enumerate()
            .filter(|(i, _)| plan.owns(*i))
            .map(|(_, input)| input.bytes)
            .sum(),
    );
    if !journal.entries.is_empty() {
        progress.note(&format!(
            "resuming: {} shard(s) already written",
            journal.shards().count()
        ));
    }
    if !journal.finalizing() {
        let mut todo = Vec::new();
        for (i, input) in plan.inputs.iter().enumerate() {
            if !plan.owns(i) {
                continue;
            }
            if journal.input_done(i) {
                progress.advance(input.bytes, 0, 0);
            } else {
                todo.push(Todo {
                    input: i,
                    start: journal.resume_record(i),
                });
            }
        }
        // Shards left by the killed run after its last journal line are rewritten from scratch.
        let next_shard = journal.shards().count();
        let mut writer = Writer {
            plan,
            journal: &mut journal,
            progress,
            next_shard,
            current: None,
        };
        std::thread::scope(|scope| {
            let rx = feed::start(scope, plan, todo, &pool);
            // On an error `rx` is dropped on return, which stops the feeding threads.
            rx.into_iter().try_for_each(|item| writer.take(item))
        })?;
        let shards = writer.next_shard;
        // Every input failed before its first shard: an output of no shards would be
        // "complete", so a rerun after the inputs are fixed would read none of them again.
        // A worker of a split job finishes its part anyway (the job's other workers may have
        // read theirs): the merge reports the failures, or refuses as this does when every
        // input of the job failed.
        if shards == 0 && plan.cfg.worker.is_none() {
            if let Some(failed) = every_input_failed(plan, &journal) {
                journal.remove()?;
                return Err(Error::no_input_read(failed, "rerun"));
            }
        }
        journal.append(Entry::Finalizing { shards })?;
    }
    progress.finish();
    finalize(plan, journal)
}

/// The failures, each `PATH: message`, when every input of this process failed.
fn every_input_failed(plan: &Plan, journal: &Journal) -> Option<Vec<String>> {
    let mut failed = Vec::new();
    for entry in &journal.entries {
        if let Entry::InputDone {
            input,
            error: Some(e),
            ..
        } = entry
        {
            failed.push(format!(
                "{}: {e}",
                crate::printable::path(&plan.paths[*input])
            ));
        }
    }
    let owned = (0..plan.inputs.len()).filter(|&i| plan.owns(i)).count();
    (owned > 0 && failed.len() == owned).then_some(failed)
}

/// State of the shard being written.
struct Open {
    writer: TokenShardWriter,
    first_record: u64,
}

/// What the writer keeps about the input it is on.
struct Current {
    input: usize,
    /// Records consumed so far (resumed ones included).
    records: u64,
    counts: Counts,
    problems: Vec<FileProblem>,
    open: Option<Open>,
    last_bytes: u64,
}

/// The last stage: writes tokenized records in order, cuts and journals shards.
struct Writer<'a> {
    plan: &'a Plan,
    journal: &'a mut Journal,
    progress: &'a dyn Progress,
    next_shard: usize,
    current: Option<Current>,
}

impl Writer<'_> {
    fn take(&mut self, item: Item<Parsed>) -> Result<(), Error> {
        match item {
            Item::Batch {
                input,
                records,
                bytes_read,
            } => self.batch(input, records, bytes_read),
            Item::End { input, failure } => self.end(input, failure),
        }
    }

    /// The state of `input`, started on its first batch (or its end, if it had none).
    fn current(&mut self, input: usize) -> &mut Current {
        let journal = &*self.journal;
        self.current.get_or_insert_with(|| Current {
            input,
            records: journal.resume_record(input),
            counts: Counts::default(),
            problems: Vec::new(),
            open: None,
            last_bytes: 0,
        })
    }

    fn strict(&self, input: usize, line: u64, message: String) -> Error {
        Error::Strict {
            path: self.plan.paths[input].clone(),
            line,
            message,
        }
    }

    fn batch(&mut self, input: usize, items: Vec<Parsed>, bytes_read: u64) -> Result<(), Error> {
        self.current(input);
        let mut cur = self.current.take().expect("current input");
        let result = self.write_batch(&mut cur, items);
        let advanced = bytes_read.saturating_sub(cur.last_bytes);
        cur.last_bytes = cur.last_bytes.max(bytes_read);
        self.current = Some(cur);
        let (docs, toks) = result?;
        self.progress.advance(advanced, docs, toks);
        Ok(())
    }

    /// Writes one batch of `cur`'s input; returns the documents and tokens written.
    fn write_batch(&mut self, cur: &mut Current, items: Vec<Parsed>) -> Result<(u64, u64), Error> {
        let plan = self.plan;
        let name = &plan.inputs[cur.input].name;
        let narrow = crate::shard::narrow_ids(plan.tokenizer.vocab().len());
        let (mut docs, mut toks) = (0u64, 0u64);
        for item in items {
            cur.records += 1;
            cur.counts.records += 1;
            let line = cur.records;
            let (doc, ids) = match item {
                Ok(v) => v,
                Err((kind, message)) => {
                    // Empty records (and blank lines) are counted, not problems.
                    if plan.cfg.strict && kind != ProblemKind::Empty {
                        return Err(self.strict(cur.input, line, message));
                    }
                    *cur.counts.skipped.entry(kind).or_default() += 1;
                    if kind != ProblemKind::Empty {
                        cur.problems.push(FileProblem {
                            file: name.clone(),
                            line,
                            kind,
                            message,
                        });
                    }
                    continue;
                }
            };
            let shard = match cur.open.as_mut() {
                Some(o) => o,
                None => cur.open.insert(Open {
                    writer: TokenShardWriter::create(
                        &self.journal.shard_path(self.next_shard),
                        narrow,
                    )?,
                    first_record: line - 1,
                }),
            };
            shard.writer.push(
                &ids,
                doc.url.as_deref(),
                doc.timestamp.as_deref(),
                name,
                line - 1,
            )?;
            cur.counts.documents += 1;
            cur.counts.tokens += ids.len() as u64;
            cur.counts.text_bytes += doc.text.len() as u64;
            docs += 1;
            toks += ids.len() as u64;
            let full = shard.writer.approx_bytes() >= plan.cfg.shard_bytes
                || plan
                    .cfg
                    .shard_tokens
                    .is_some_and(|t| shard.writer.tokens() >= t);
            if full {
                self.close_shard(cur)?;
            }
        }
        Ok((docs, toks))
    }

    fn end(&mut self, input: usize, failure: Option<ReadError>) -> Result<(), Error> {
        // A remote input out of reach stops the job as a kill would: the open shard is
        // dropped, and a rerun resumes after the last journaled shard, cutting the same shards.
        if let Some(f) = failure.as_ref().filter(|f| f.unreachable) {
            return Err(Error::Remote {
                url: self.plan.paths[input].display().to_string(),
                message: f.message.clone(),
            });
        }
        self.current(input);
        let mut cur = self.current.take().expect("current input");
        self.close_shard(&mut cur)?;
        let failure = failure.map(|f| f.message);
        if let Some(f) = &failure {
            if self.plan.cfg.strict {
                return Err(self.strict(input, cur.records, f.clone()));
            }
            self.progress.note(&format!(
                "{}: {f}",
                crate::printable::path(&self.plan.paths[input])
            ));
        }
        self.progress.advance(
            self.plan.inputs[input].bytes.saturating_sub(cur.last_bytes),
            0,
            0,
        );
        self.journal.append(Entry::InputDone {
            input,
            end_record: cur.records,
            counts: cur.counts,
            problems: cur.problems,
            error: failure,
        })
    }

    /// Finishes the open shard of `cur`, if any, and journals it with the counts and problems
    /// since the previous journal entry of that input.
    fn close_shard(&mut self, cur: &mut Current) -> Result<(), Error> {
        let Some(open) = cur.open.take() else {
            return Ok(());
        };
        let stats = open.writer.finish()?;
        let shard = ShardRecord {
            file: format!("shard-{:05}.parquet", self.next_shard),
            rows: stats.rows,
            tokens: stats.tokens,
            bytes: stats.bytes,
            sha256: stats.sha256,
            input: cur.input,
            first_record: open.first_record,
            end_record: cur.records,
        };
        self.journal.append(Entry::Shard {
            shard,
            counts: std::mem::take(&mut cur.counts),
            problems: std::mem::take(&mut cur.problems),
        })?;
        self.next_shard += 1;
        Ok(())
    }
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
    // One worker of a split job keeps its shards in its part folder under local names;
    // `manifest merge` gives them their final names.
    let part = plan
        .cfg
        .worker
        .map(|w| crate::job::workers::part_dir(out, w));
    if let Some(dir) = &part {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    for (i, shard) in shards.iter_mut().enumerate() {
        let (dir, final_name) = match &part {
            None => (out.as_path(), shard_name(&plan.settings.split, i, count)),
            Some(dir) => (dir.as_path(), format!("shard-{i:05}.parquet")),
        };
        crate::job::outdir::rename_once(
            &journal.shard_path(i),
            &dir.join(&final_name),
            crate::job::outdir::FINISHED_SHARD_MISSING,
        )?;
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
    if let (Some(dir), Some(w)) = (&part, plan.cfg.worker) {
        let part = super::IngestPart {
            format: super::INGEST_PART_FORMAT.into(),
            job: plan.job.clone(),
            worker: w,
            inputs: (0..plan.inputs.len()).filter(|&i| plan.owns(i)).collect(),
            manifest,
        };
        let json = serde_json::to_string_pretty(&part).expect("part serialises") + "\n";
        crate::manifest::write_atomic(&dir.join("part.json"), json.as_bytes())?;
        journal.remove()?;
        return Ok(part.own_manifest());
    }
    manifest.write(out)?;
    journal.remove()?;
    Ok(manifest)
}
