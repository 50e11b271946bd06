//! Reading one source shard into the epoch: example shards as they are, token shards
//! span-corrupted on the fly, every row's ids checked against the vocabulary.

use super::epoch::EpochRun;
use super::{Item, Plan, SourceShard};
use crate::corrupt::{Corruption, Keys, Pieces, Scratch, SpanCorruption};
use crate::error::Error;
use crate::examples::{Example, PackedRow};
use crate::shard::{Ids, ListRows};

/// The vocabulary check of one row: every id below `limit`.
fn check_ids<T: Copy + Into<u32>>(
    limit: u32,
    ids: &[&[T]],
    shard: &SourceShard,
    row: u64,
) -> Result<(), Error> {
    let mut all = ids.iter().flat_map(|s| s.iter()).map(|&id| id.into());
    match all.find(|&id| id >= limit) {
        Some(id) => Err(Error::Verify {
            path: shard.path.clone(),
            message: format!(
                "row {row} holds token id {id}, not below the vocabulary size {limit} (the model's, or the data's own): the data was made with another vocabulary or is damaged; re-create it, or train a model whose vocab_size covers it"
            ),
        }),
        None => Ok(()),
    }
}

/// An example shard's row fits the feature lengths its manifest gives: a longer one would be
/// cut to them in its batch without a word (its EOS, or a target's sentinels, lost).
fn check_widths(
    plan: &Plan,
    inputs: usize,
    targets: usize,
    shard: &SourceShard,
    row: u64,
) -> Result<(), Error> {
    for (what, n, length) in [
        ("inputs", inputs, plan.inputs_length),
        ("targets", targets, plan.targets_length),
    ] {
        if n > length {
            return Err(Error::Verify {
                path: shard.path.clone(),
                message: format!(
                    "row {row} holds {n} {what} ids, more than the {what} length {length} its manifest's settings give: the manifest was edited or belongs to other shards; re-create the data"
                ),
            });
        }
    }
    Ok(())
}

/// Items of one example shard; `global` counts items of the epoch so far.
pub(super) fn examples_shard(
    plan: &Plan,
    shard: &SourceShard,
    global: &mut u64,
    skip: u64,
    run: &mut EpochRun<'_>,
) -> Result<bool, Error> {
    if *global + shard.rows <= skip {
        *global += shard.rows;
        return Ok(true);
    }
    let within = skip.saturating_sub(*global);
    *global += within;
    let columns: &[&str] = if plan.packed_source {
        &[
            "inputs",
            "targets",
            "inputs_segment_ids",
            "inputs_positions",
            "targets_segment_ids",
            "targets_positions",
        ]
    } else {
        &["inputs", "targets"]
    };
    shard.verify()?;
    let rows = ListRows::open(&shard.path, columns, within)?.read_ahead();
    let mut open = true;
    let mut bad = None;
    let mut row_index = within;
    rows.for_each(|row| {
        *global += 1;
        row_index += 1;
        let v = |i: usize| {
            let mut out = Vec::with_capacity(row[i].len());
            row[i].extend_into(&mut out);
            out
        };
        let item = if plan.packed_source {
            let inputs_segment_ids = v(2);
            PackedRow {
                examples: inputs_segment_ids.iter().copied().max().unwrap_or(0),
                inputs: v(0),
                targets: v(1),
                inputs_segment_ids,
                inputs_positions: v(3),
                targets_segment_ids: v(4),
                targets_positions: v(5),
            }
            .into()
        } else {
            Item::Example(Example {
                inputs: v(0),
                targets: v(1),
            })
        };
        let (inputs, targets) = item.ids();
        let checked = check_ids(plan.vocab_limit, &[inputs, targets], shard, row_index - 1)
            .and_then(|()| check_widths(plan, inputs.len(), targets.len(), shard, row_index - 1));
        if let Err(e) = checked {
            bad = Some(e);
            return false;
        }
        open = run.push(item);
        open
    })?;
    match bad {
        Some(e) => Err(e),
        None => Ok(open),
    }
}

impl From<PackedRow> for Item {
    fn from(r: PackedRow) -> Self {
        Item::Packed(r)
    }
}

/// Items of one token shard, span-corrupted on the fly with the offline command's keys.
#[allow(clippy::too_many_arguments)]
pub(super) fn tokens_shard(
    plan: &Plan,
    c: &SpanCorruption,
    k: usize,
    shard: &SourceShard,
    epoch: u64,
    global: &mut u64,
    skip: u64,
    run: &mut EpochRun<'_>,
) -> Result<bool, Error> {
    let keys = Keys {
        seed: plan.cfg.seed,
        epoch,
        shard: k as u64,
    };
    let mut pieces = Pieces::new(plan.chunking, keys);
    let mut scratch = Scratch::default();
    let open = std::cell::Cell::new(true);
    let mut emit = |index: u64, piece: &[u32]| {
        let g = *global;
        *global += 1;
        if g < skip || !open.get() {
            return;
        }
        let mut ex = Example::default();
        c.example(keys, index, piece, &mut scratch, &mut ex);
        open.set(run.push(Item::Example(ex)));
    };
    shard.verify()?;
    let rows = ListRows::open(&shard.path, &["tokens"], 0)?.read_ahead();
    let mut bad = None;
    let mut row_index = 0u64;
    rows.for_each(|row| {
        let checked = match row[0] {
            Ids::U16(d) => check_ids(plan.vocab_limit, &[d], shard, row_index),
            Ids::U32(d) => check_ids(plan.vocab_limit, &[d], shard, row_index),
        };
        if let Err(e) = checked {
            bad = Some(e);
            return false;
        }
        match row[0] {
            Ids::U16(d) => pieces.push(d, &mut emit),
            Ids::U32(d) => pieces.push(d, &mut emit),
        }
        row_index += 1;
        open.get()
    })?;
    if let Some(e) = bad {
        return Err(e);
    }
    if open.get() {
        pieces.finish(&mut emit);
    }
    Ok(open.get())
}
