//! One epoch of one rank: the global order's windows shuffled, this rank's items taken,
//! batched, and (with `align_steps`) the epoch ended together with the other ranks'.

use std::collections::VecDeque;
use std::sync::mpsc::SyncSender;

use super::shards::{examples_shard, tokens_shard};
use super::{Batch, Batcher, Item, LoaderState, Plan};
use crate::error::Error;
use crate::rng::{Rng, Stream};

/// With `align_steps`, the batches every rank hands out in an epoch of `items` global items:
/// the whole steps, and the short last one padded, or dropped with `drop_remainder`.
pub(super) fn aligned_batches(plan: &Plan, items: u64) -> Option<u64> {
    let cfg = &plan.cfg;
    let a = cfg.align_steps? as u64;
    if (cfg.pack && !plan.packed_source) || a == 0 {
        return None;
    }
    let per_step = cfg.world_size as u64 * cfg.batch_size as u64 * a;
    Some(match cfg.drop_remainder {
        true => items / per_step * a,
        false => items.div_ceil(per_step) * a,
    })
}

/// Whether `align_steps` applies (asked for, and not to examples packed here).
pub(super) fn steps_aligned(plan: &Plan) -> bool {
    aligned_batches(plan, 0).is_some()
}

/// One epoch's work for this rank: the window shuffle, the rank filter and the batcher.
pub(super) struct EpochRun<'a> {
    plan: &'a Plan,
    tx: &'a SyncSender<Result<Batch, Error>>,
    epoch: u64,
    /// Global index of the first item of the current window.
    window_start: u64,
    window: Vec<Item>,
    /// This rank's first global item to hand out (resume point).
    first_global: u64,
    /// Items this rank has pushed into the batcher, resumed ones included.
    pushed: u64,
    batcher: Batcher,
    /// False once the receiver has gone.
    open: bool,
    /// Batches handed out in this run of the epoch, the empty ones of `align_steps`
    /// included (a rank given only those is in step with the others, not out of data).
    sent: u64,
    /// With `align_steps` and `drop_remainder`: full batches whose step may be the epoch's
    /// short last one (dropped on every rank), held until enough items are read to make
    /// it whole.
    held: Option<VecDeque<Batch>>,
    /// Empty batches of `align_steps` this rank had in this epoch before this run (a resume
    /// inside the epoch's last step).
    padded: u64,
}

impl EpochRun<'_> {
    fn window_size(&self) -> u64 {
        self.plan.cfg.shuffle_buffer.max(1) as u64
    }

    /// Takes the next item of the global order.
    pub(super) fn push(&mut self, item: Item) -> bool {
        self.window.push(item);
        if self.window.len() as u64 == self.window_size() {
            self.flush_window();
        }
        self.open
    }

    fn flush_window(&mut self) {
        let n = self.window.len();
        if n == 0 {
            return;
        }
        let mut order: Vec<usize> = (0..n).collect();
        if self.plan.cfg.shuffle_buffer > 1 {
            let w = self.window_start / self.window_size();
            Rng::for_item(self.plan.cfg.seed, self.epoch, Stream::Shuffle, 1, w)
                .shuffle(&mut order);
        }
        let mut items: Vec<Option<Item>> = self.window.drain(..).map(Some).collect();
        let (rank, world) = (self.plan.cfg.rank as u64, self.plan.cfg.world_size as u64);
        for (j, &src) in order.iter().enumerate() {
            let g = self.window_start + j as u64;
            if g % world != rank || g < self.first_global {
                continue;
            }
            self.batcher
                .push(items[src].take().expect("each item once"));
            self.pushed += 1;
            while self.batcher.ready() >= self.plan.cfg.batch_size {
                self.send_batch(self.window_start + n as u64);
            }
        }
        self.window_start += n as u64;
        // Steps this window made whole release their held batches now, not at this rank's
        // next batch.
        self.release(self.window_start);
    }

    /// Hands out the next full batch, once `seen` global items make its step whole where
    /// short last steps are dropped.
    fn send_batch(&mut self, seen: u64) {
        let state = LoaderState {
            epoch: self.epoch,
            position: 0,
            fingerprint: self.plan.fingerprint,
            padding: 0,
            ending: self.plan.ending,
        };
        if let Some(mut b) = self.batcher.take(state) {
            b.state.position = self.pushed - self.batcher.waiting_items() as u64;
            match &mut self.held {
                Some(held) => {
                    held.push_back(b);
                    self.release(seen);
                }
                None => self.emit(b),
            }
        }
    }

    fn emit(&mut self, b: Batch) {
        self.sent += 1;
        if self.tx.send(Ok(b)).is_err() {
            self.open = false;
        }
    }

    /// Hands out the held batches whose step is whole within the first `seen` global items:
    /// this rank's full batch ending at its item `p` is in step `(p / B - 1) / A`, which
    /// holds the global items below `(step + 1) x W x A x B`.
    fn release(&mut self, seen: u64) {
        let cfg = &self.plan.cfg;
        let (b, a) = (cfg.batch_size as u64, cfg.align_steps.unwrap_or(1) as u64);
        let per_step = cfg.world_size as u64 * a * b;
        while let Some(front) = self.held.as_ref().and_then(|h| h.front()) {
            let step = (front.state.position / b).saturating_sub(1) / a;
            if (step + 1) * per_step > seen {
                return;
            }
            let batch = self.held.as_mut().and_then(|h| h.pop_front());
            self.emit(batch.expect("a held batch"));
        }
    }

    /// With `align_steps`, how many empty batches end this rank's epoch of `items` global
    /// items with the others': every item has been pushed, so `pushed` is this rank's count
    /// (one row each: batches of them are `pushed / batch_size`, rounded up, whether or not
    /// the epoch was resumed). `items` is counted by the shard readers, not by the windows,
    /// which a resume at the epoch's end skips past it.
    fn padding(&self, items: u64) -> u64 {
        let real = self.pushed.div_ceil(self.plan.cfg.batch_size as u64);
        aligned_batches(self.plan, items).map_or(0, |total| total.saturating_sub(real))
    }

    /// Where the loader stands after this rank's last item (`padding` empty batches in), or
    /// at the next epoch's start once nothing of this one is left to hand out: a state
    /// taken inside the epoch's last step resumes with the empty batches still owed.
    fn end_state(&self, padding: u64, owed: u64) -> LoaderState {
        let (epoch, position, padding) = match padding < owed {
            true => (self.epoch, self.pushed, padding),
            false => (self.epoch + 1, 0, 0),
        };
        LoaderState {
            epoch,
            position,
            fingerprint: self.plan.fingerprint,
            padding,
            ending: self.plan.ending,
        }
    }

    /// The empty batches of `align_steps` this rank still owes the epoch.
    fn pad_to_step(&mut self, items: u64) {
        let owed = self.padding(items);
        for k in self.padded + 1..=owed {
            if !self.open {
                return;
            }
            let state = self.end_state(k, owed);
            self.emit(Batch::empty(state, self.plan.packed_source));
        }
    }

    /// End of the epoch of `items` global items: the last window, the packer's open row, the
    /// short last batch, and the empty batches of `align_steps`.
    fn finish(&mut self, items: u64) -> bool {
        self.flush_window();
        self.batcher.flush();
        while self.open && self.batcher.ready() >= self.plan.cfg.batch_size {
            self.send_batch(items);
        }
        // What is still held belongs to the short last step: dropped on every rank.
        self.release(items);
        if let Some(h) = &mut self.held {
            h.clear();
        }
        if self.open && self.batcher.ready() > 0 && !self.plan.cfg.drop_remainder {
            let state = self.end_state(0, self.padding(items));
            if let Some(b) = self.batcher.take(state) {
                self.sent += 1;
                if self.tx.send(Ok(b)).is_err() {
                    self.open = false;
                }
            }
        }
        self.pad_to_step(items);
        self.open
    }
}

/// Streams one epoch from `state`; returns false when the receiver has gone, and the
/// batches sent.
pub(super) fn run_epoch(
    plan: &Plan,
    state: LoaderState,
    tx: &SyncSender<Result<Batch, Error>>,
) -> Result<(bool, u64), Error> {
    let cfg = &plan.cfg;
    let world = cfg.world_size as u64;
    let first_global = state
        .position
        .checked_mul(world)
        .and_then(|g| g.checked_add(cfg.rank as u64))
        .ok_or_else(|| past_the_end(plan, state, None))?;
    let window = cfg.shuffle_buffer.max(1) as u64;
    // Items before the resume point's window are skipped without being made.
    let skip = if state.position == 0 {
        0
    } else {
        first_global / window * window
    };
    let mut order: Vec<usize> = (0..plan.shards.len()).collect();
    if cfg.shuffle_shards {
        Rng::for_item(cfg.seed, state.epoch, Stream::Shuffle, 0, 0).shuffle(&mut order);
    }
    let mut run = EpochRun {
        plan,
        tx,
        epoch: state.epoch,
        window_start: skip,
        window: Vec::new(),
        first_global,
        pushed: state.position,
        batcher: Batcher::new(
            cfg.batch_size,
            plan.inputs_length,
            plan.targets_length,
            cfg.pack && !plan.packed_source,
            cfg.pad_to_longest,
        ),
        open: true,
        sent: 0,
        held: (cfg.drop_remainder && steps_aligned(plan)).then(VecDeque::new),
        padded: state.padding,
    };
    let mut global = 0u64;
    for &k in &order {
        let shard = &plan.shards[k];
        let open = match &plan.corruption {
            None => examples_shard(plan, shard, &mut global, skip, &mut run)?,
            Some(c) => tokens_shard(plan, c, k, shard, state.epoch, &mut global, skip, &mut run)?,
        };
        if !open {
            return Ok((false, run.sent));
        }
    }
    // A resume point past this rank's items is not a state this data could have given.
    let mine = global.saturating_sub(cfg.rank as u64).div_ceil(world);
    if state.position > mine {
        return Err(past_the_end(plan, state, Some(mine)));
    }
    let open = run.finish(global);
    Ok((open, run.sent))
}

/// Why a loader state cannot be resumed: its position lies past the epoch's end for this
/// rank (an edited or damaged state: the fingerprint only covers the configuration).
fn past_the_end(plan: &Plan, state: LoaderState, items: Option<u64>) -> Error {
    let cfg = &plan.cfg;
    Error::Config(format!(
        "the loader state's position {} in epoch {} is past the end of the data ({} for rank {} of {}): the state was edited or saved from other data; resume from the state saved with this data, or start without one",
        state.position,
        state.epoch,
        items.map_or("more items than exist".to_string(), |n| format!("{n} items")),
        cfg.rank,
        cfg.world_size
    ))
}
