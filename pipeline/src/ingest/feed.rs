//! The front of the ingest pipeline: a reader thread (file reading and decompression) and an
//! encoder thread (parallel JSON parsing and tokenizing on the rayon pool), joined by
//! bounded channels so that reading, tokenizing and writing overlap while memory stays
//! bounded by a few batches. Batches flow strictly in input order, so what the writer sees
//! never depends on timing or the thread count.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use rayon::prelude::*;

use super::Plan;
use crate::source::{self, Document, ProblemKind, Raw, ReadError};
use crate::tokenize::Tokenizer;

/// Bytes of input read per batch: enough work to spread over the pool, small enough that the
/// stages overlap finely and memory stays low.
pub const BATCH_BYTES: usize = 2 << 20;

/// Batches that may wait between two stages.
const QUEUE: usize = 2;

/// A record after parsing and tokenizing.
pub type Parsed = Result<(Document, Vec<u32>), (ProblemKind, String)>;

/// What the reader hands on, per input in order.
pub enum Item<T> {
    /// Records of `input`; `bytes_read` is how far into the file (compressed) the reader is.
    Batch {
        input: usize,
        records: Vec<T>,
        bytes_read: u64,
    },
    /// `input` ended, at its end or at a read error.
    End {
        input: usize,
        failure: Option<ReadError>,
    },
}

/// An input still to do and the record to resume it from.
#[derive(Clone, Copy)]
pub struct Todo {
    pub input: usize,
    pub start: u64,
}

/// Starts the reader and encoder threads inside `scope`; the receiver yields tokenized
/// batches. Dropping it stops both threads at their next hand-over.
pub fn start<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    plan: &'env Plan,
    todo: Vec<Todo>,
    pool: &'env rayon::ThreadPool,
) -> Receiver<Item<Parsed>> {
    let (raw_tx, raw_rx) = sync_channel(QUEUE);
    let (tok_tx, tok_rx) = sync_channel(QUEUE);
    scope.spawn(move || read_all(plan, &todo, &raw_tx));
    scope.spawn(move || encode_all(plan, pool, raw_rx, &tok_tx));
    tok_rx
}

/// Reads every input in order; stops early when the next stage has gone.
fn read_all(plan: &Plan, todo: &[Todo], tx: &SyncSender<Item<Raw>>) {
    for t in todo {
        let failure = read_one(plan, *t, tx);
        let Ok(failure) = failure else { return };
        if tx
            .send(Item::End {
                input: t.input,
                failure,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Reads one input: Ok(why it could not be read to its end, if so), Err(()) when the receiver
/// has gone.
fn read_one(plan: &Plan, t: Todo, tx: &SyncSender<Item<Raw>>) -> Result<Option<ReadError>, ()> {
    let mut src = match source::open(&plan.paths[t.input], &plan.source_opts) {
        Ok(s) => s,
        Err(e) => {
            let mut failure = ReadError::new(0, e.to_string());
            // A remote store out of reach is no fault of the input.
            failure.unreachable = matches!(e, crate::error::Error::Remote { .. });
            return Ok(Some(failure));
        }
    };
    if let Err(e) = src.skip(t.start) {
        return Ok(Some(e));
    }
    loop {
        let mut records = Vec::new();
        let (more, failure) = match src.read_batch(&mut records, BATCH_BYTES) {
            Ok(more) => (more, None),
            Err(e) => (false, Some(e)),
        };
        if !records.is_empty() {
            let item = Item::Batch {
                input: t.input,
                records,
                bytes_read: src.bytes_read(),
            };
            tx.send(item).map_err(|_| ())?;
        }
        if !more {
            return Ok(failure);
        }
    }
}

/// Parses and tokenizes each batch on the pool, in order.
fn encode_all(
    plan: &Plan,
    pool: &rayon::ThreadPool,
    rx: Receiver<Item<Raw>>,
    tx: &SyncSender<Item<Parsed>>,
) {
    let text_field = plan.source_opts.text_field.as_str();
    let limit = plan.source_opts.max_document_bytes;
    let tok = &*plan.tokenizer;
    let eos = plan.cfg.append_eos.then(|| tok.vocab().eos_id).flatten();
    for item in rx {
        let out = match item {
            Item::Batch {
                input,
                records,
                bytes_read,
            } => Item::Batch {
                input,
                records: pool.install(|| {
                    records
                        .into_par_iter()
                        .map(|raw| parse_and_encode(raw, (text_field, limit), tok, eos))
                        .collect()
                }),
                bytes_read,
            },
            Item::End { input, failure } => Item::End { input, failure },
        };
        if tx.send(out).is_err() {
            return;
        }
    }
}

/// `field`: the text field and the largest document kept.
fn parse_and_encode(
    raw: Raw,
    field: (&str, usize),
    tok: &dyn Tokenizer,
    eos: Option<u32>,
) -> Parsed {
    let doc = source::parse(raw, field.0, field.1)?;
    let mut ids = Vec::with_capacity(doc.text.len() / 3);
    tok.encode_into(&doc.text, &mut ids)
        .map_err(|e| (ProblemKind::Tokenizer, e.0))?;
    if ids.is_empty() {
        return Err((ProblemKind::Empty, "empty document".into()));
    }
    ids.extend(eos);
    Ok((doc, ids))
}
