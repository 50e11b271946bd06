//! The streaming loader that feeds trainers from disk (no libtorch here).
//!
//! An epoch is a fixed global order of items (examples, or rows packed when written):
//! shards in an order drawn from (seed, epoch), each shard's items in order, then a shuffle
//! within consecutive windows of `shuffle_buffer` items, each window permuted by its own
//! generator (seed, epoch, window). Rank `r` of `world_size` takes the items at global
//! positions `r, r + W, r + 2W, ...`, so ranks are disjoint and together cover the epoch. Items
//! come from example shards, or from token shards span-corrupted on the fly exactly as
//! `conveyor corrupt` would (same seed and epoch, same examples).
//!
//! Nothing depends on timing: the state after a batch is (epoch, items this rank consumed),
//! and a loader started from it recomputes the rest of the epoch, skipping whole shards by
//! their row counts and earlier windows without masking them. Batches are built on a
//! background thread and handed over through a bounded queue (`prefetch`); each shard
//! column's pages are read and decompressed a couple ahead on a thread of their own. Memory
//! is bounded by the window, the queue and a few pages (or one record batch) per column,
//! not by the data.

mod batch;
mod epoch;
mod shards;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use batch::{Batch, Batcher, Item, Packing};
use epoch::{aligned_batches, run_epoch};

use crate::corrupt::job::{plan as corrupt_plan, CorruptConfig};
use crate::corrupt::{Chunking, SpanCorruption};
use crate::error::Error;
use crate::examples::ExamplesManifest;

/// Where the items come from.
#[derive(Debug, Clone)]
pub enum LoaderInput {
    /// Example shards written by `conveyor corrupt` (packed or not).
    Examples(PathBuf),
    /// Token shards, span-corrupted on the fly as `conveyor corrupt` would with these
    /// settings (`tokens`, `seed` and `epoch` of the config are ignored: the loader's own
    /// seed and epoch are used).
    Tokens(CorruptConfig),
}

/// A loader's settings.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    pub input: LoaderInput,
    /// Rows per batch (per rank).
    pub batch_size: usize,
    pub seed: u64,
    /// Items per shuffle window; 0 or 1 keeps the order.
    pub shuffle_buffer: usize,
    /// Draw a new shard order every epoch.
    pub shuffle_shards: bool,
    pub rank: usize,
    pub world_size: usize,
    /// Pack examples into rows of the feature lengths (examples that are not packed yet).
    pub pack: bool,
    /// Pad plain batches to their longest row instead of the feature lengths.
    pub pad_to_longest: bool,
    /// Drop the last, short batch of each epoch.
    pub drop_remainder: bool,
    /// Batches prepared ahead on the background thread.
    pub prefetch: usize,
    /// Stop after this many epochs (None: run forever).
    pub epochs: Option<u64>,
    /// Every token id must be below this (the model's vocabulary size); a row holding
    /// another is an error naming its shard and row, not an index error inside libtorch.
    pub vocab_limit: Option<u32>,
    /// A trainer's optimiser step is `world_size` ranks x this many batches each: every rank
    /// then ends each epoch with the same number of batches, a multiple of it, the epoch's
    /// last step holding exactly its last items, and empty batches (`rows` 0) where a rank
    /// has none of them left. So ranks never train on different epochs in one step, and W
    /// ranks x A batches of B read, step by step, what one rank reads with batches of
    /// W x A x B. With `drop_remainder` the short last step is dropped on every rank instead
    /// (a rank's batches wait until enough items are read to show their step is whole).
    /// Applies where an item is a row (examples, or rows packed when written); examples
    /// packed here make each rank's row count its own, and are read as if this were None.
    /// None: each rank runs through its epochs on its own.
    pub align_steps: Option<usize>,
}

impl LoaderConfig {
    pub fn new(input: LoaderInput, batch_size: usize) -> Self {
        Self {
            input,
            batch_size,
            seed: 0,
            shuffle_buffer: 10_000,
            shuffle_shards: true,
            rank: 0,
            world_size: 1,
            pack: false,
            pad_to_longest: false,
            drop_remainder: false,
            prefetch: 4,
            epochs: None,
            vocab_limit: None,
            align_steps: None,
        }
    }
}

/// Where a loader stands: everything needed to continue exactly (the randomness is a
/// function of seed, epoch and position, so there is no generator state to keep).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LoaderState {
    pub epoch: u64,
    /// Items this rank has consumed in the epoch.
    pub position: u64,
    /// The configuration this state belongs to (restoring into another is refused).
    pub fingerprint: u64,
    /// With `align_steps`: the empty batches this rank has had after its last item in this
    /// epoch (a state inside an epoch's last step; 0 elsewhere).
    #[serde(default)]
    pub padding: u64,
    /// How the configuration ends its epochs (`align_steps` as it applies, `drop_remainder`),
    /// hashed: a state is refused by a loader that ends them otherwise, since its position
    /// would fall elsewhere in the epoch. 0 in a state saved before it was recorded
    /// (accepted, as then).
    #[serde(default)]
    pub ending: u64,
}

/// One source shard: its path, how many items (rows) it holds, and its manifest's checksum.
#[derive(Debug, Clone)]
struct SourceShard {
    path: PathBuf,
    rows: u64,
    bytes: u64,
    sha256: String,
    /// Its checksum was checked by this loader.
    verified: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SourceShard {
    fn new(dir: &Path, file: &str, rows: u64, bytes: u64, sha256: &str) -> Result<Self, Error> {
        let path = crate::manifest::shard_path(dir, file)?;
        crate::shard::check_shape(&path, bytes, rows)?;
        Ok(SourceShard {
            path,
            rows,
            bytes,
            sha256: sha256.to_string(),
            verified: Default::default(),
        })
    }

    /// Checks the shard's sha256 against its manifest's the first time this loader reads it
    /// (it then reads the shard whole anyway; the page cache serves the second read): a bit
    /// flipped in place, size and row count unchanged, changed examples silently.
    fn verify(&self) -> Result<(), Error> {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.verified.load(Relaxed) {
            crate::shard::check_file(&self.path, &self.sha256, self.bytes)?;
            self.verified.store(true, Relaxed);
        }
        Ok(())
    }
}

/// Everything the background thread needs.
struct Plan {
    cfg: LoaderConfig,
    /// Every id is below this: the model's vocabulary (`cfg.vocab_limit`) and the data's own.
    vocab_limit: u32,
    shards: Vec<SourceShard>,
    corruption: Option<SpanCorruption>,
    chunking: Chunking,
    packed_source: bool,
    inputs_length: usize,
    targets_length: usize,
    fingerprint: u64,
    /// `LoaderState::ending` of this configuration.
    ending: u64,
}

/// Yields batches; iterate it (each item is a `Result<Batch, Error>`).
pub struct Loader {
    rx: Receiver<Result<Batch, Error>>,
    state: LoaderState,
    handle: Option<std::thread::JoinHandle<()>>,
    /// Batches this rank gets per epoch, when the item count is known before reading.
    batches_per_epoch: Option<u64>,
    /// Whether `align_steps` applies (see `LoaderConfig::align_steps`).
    steps_aligned: bool,
}

impl Loader {
    /// Starts a loader at the beginning of epoch 0.
    pub fn new(cfg: LoaderConfig) -> Result<Self, Error> {
        Self::resume(cfg, None)
    }

    /// Starts a loader from a state saved after some batch (or at the beginning if None).
    pub fn resume(cfg: LoaderConfig, state: Option<LoaderState>) -> Result<Self, Error> {
        let plan = plan(cfg)?;
        let state = match state {
            Some(s) if s.fingerprint != plan.fingerprint => {
                let data = match &plan.cfg.input {
                    LoaderInput::Examples(d) => d,
                    LoaderInput::Tokens(c) => &c.tokens,
                };
                return Err(Error::Config(format!(
                    "the loader state comes from another data configuration than {}'s with these settings: resume with the data, seed, shuffle buffer, ranks, batch size and packing it was saved with",
                    data.display()
                )));
            }
            Some(s) if s.ending != 0 && s.ending != plan.ending => {
                return Err(Error::Config(format!(
                    "the loader state was saved with another align_steps or drop_remainder than these (align_steps {}, drop_remainder {}): resume with the ones it was saved with",
                    plan.cfg
                        .align_steps
                        .filter(|_| epoch::steps_aligned(&plan))
                        .map_or("none".into(), |a| a.to_string()),
                    plan.cfg.drop_remainder
                )));
            }
            Some(s) => {
                check_edited(&plan, &s)?;
                LoaderState {
                    ending: plan.ending,
                    ..s
                }
            }
            None => LoaderState {
                epoch: 0,
                position: 0,
                fingerprint: plan.fingerprint,
                padding: 0,
                ending: plan.ending,
            },
        };
        Self::start(plan, state)
    }

    /// Starts a loader at the beginning of `epoch` (the shard order and shuffles of that
    /// epoch, as if the earlier ones had run).
    pub fn at_epoch(cfg: LoaderConfig, epoch: u64) -> Result<Self, Error> {
        let plan = plan(cfg)?;
        let state = LoaderState {
            epoch,
            position: 0,
            fingerprint: plan.fingerprint,
            padding: 0,
            ending: plan.ending,
        };
        Self::start(plan, state)
    }

    fn start(plan: Plan, state: LoaderState) -> Result<Self, Error> {
        let batches_per_epoch = batches_per_epoch(&plan);
        let steps_aligned = epoch::steps_aligned(&plan);
        let (tx, rx) = sync_channel(plan.cfg.prefetch.max(1));
        let handle = std::thread::Builder::new()
            .name("conveyor-loader".into())
            .spawn(move || produce(plan, state, tx))
            .map_err(|e| Error::Config(format!("cannot start the loader thread: {e}")))?;
        Ok(Self {
            rx,
            state,
            handle: Some(handle),
            batches_per_epoch,
            steps_aligned,
        })
    }

    /// Whether every rank ends each epoch after the same number of batches: `align_steps`
    /// was asked for and applies (not to examples packed here).
    pub fn steps_aligned(&self) -> bool {
        self.steps_aligned
    }

    /// Batches this rank gets per epoch, when known before reading: example shards read as
    /// written (token shards make an unknown number of pieces; packing here, of rows).
    pub fn batches_per_epoch(&self) -> Option<u64> {
        self.batches_per_epoch
    }

    /// The state after the last batch handed out (the start state before any).
    pub fn state(&self) -> LoaderState {
        self.state
    }
}

impl Iterator for Loader {
    type Item = Result<Batch, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let Ok(b) = self.rx.recv() else {
            // The producer is gone: done with its epochs, or stopped by a panic, which must
            // not pass for the end of the data (a training loop would end early, or one rank
            // of several, and the others wait forever).
            let panic = self.handle.take()?.join().err()?;
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no message");
            return Some(Err(Error::Config(format!(
                "the loader's reading thread failed ({why}) after the state {:?}: a damaged or foreign shard, or a bug; please report it with the data's manifest",
                self.state
            ))));
        };
        if let Ok(b) = &b {
            self.state = b.state;
        }
        Some(b)
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the queue stops the producer at its next hand-over.
        let (_, dead) = sync_channel(1);
        drop(std::mem::replace(&mut self.rx, dead));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The most batches a loader prepares ahead.
const MAX_PREFETCH: usize = 1024;

fn plan(cfg: LoaderConfig) -> Result<Plan, Error> {
    if cfg.batch_size == 0 || cfg.world_size == 0 || cfg.rank >= cfg.world_size {
        return Err(Error::Config(format!(
            "batch size must be positive and rank ({}) below world size ({})",
            cfg.rank, cfg.world_size
        )));
    }
    // The batches waiting are allocated up front: a bound, not an abort.
    if cfg.prefetch > MAX_PREFETCH {
        return Err(Error::Config(format!(
            "prefetch={}: at most {MAX_PREFETCH} batches are prepared ahead",
            cfg.prefetch
        )));
    }
    // Ids are checked against the data's own vocabulary as well as the model's (`vocab_limit`):
    // an example id past its manifest's size, or a token id past its vocabulary's pieces
    // (where sentinels begin), is damage.
    let data_vocab;
    let (shards, corruption, chunking, packed_source, li, lt, source_id) = match &cfg.input {
        LoaderInput::Examples(dir) => {
            let m = ExamplesManifest::read(dir)?;
            data_vocab = m.settings.vocab_size;
            let shards: Vec<SourceShard> = m
                .shards
                .iter()
                .map(|s| SourceShard::new(dir, &s.file, s.rows, s.bytes, &s.sha256))
                .collect::<Result<_, Error>>()?;
            let l = m.settings.lengths;
            (
                shards,
                None,
                m.settings.chunking.unwrap_or_default(),
                m.settings.pack,
                l.inputs_length,
                l.targets_length,
                m.job.clone(),
            )
        }
        LoaderInput::Tokens(c) => {
            let p = corrupt_plan(c)?;
            data_vocab = u32::try_from(p.source.vocab.size).unwrap_or(u32::MAX);
            // The sentinels count down from pieces + extra ids - 1, in nearly every example:
            // a model with fewer embeddings fails on the first batch, inside the model.
            if let Some(model) = cfg.vocab_limit.filter(|&m| m < p.corruption.vocab_size) {
                return Err(Error::Config(format!(
                    "{}: span corruption of its {} pieces with {} extra ids makes ids up to {}, past a model vocabulary of {model}: give the model {} embeddings (pieces + extra ids), or fewer extra ids",
                    c.tokens.display(),
                    data_vocab,
                    p.corruption.vocab_size.saturating_sub(data_vocab),
                    p.corruption.vocab_size - 1,
                    p.corruption.vocab_size
                )));
            }
            let shards: Vec<SourceShard> = p
                .source
                .shards
                .iter()
                .map(|s| SourceShard::new(&c.tokens, &s.file, s.rows, s.bytes, &s.sha256))
                .collect::<Result<_, Error>>()?;
            let l = p.settings.lengths;
            let id = format!("{}:{}", p.source.job, p.job);
            (
                shards,
                Some(p.corruption),
                p.settings.chunking.expect("span corruption settings"),
                false,
                l.inputs_length,
                l.targets_length,
                id,
            )
        }
    };
    if shards.iter().all(|s| s.rows == 0) {
        let dir = match &cfg.input {
            LoaderInput::Examples(d) => d,
            LoaderInput::Tokens(c) => &c.tokens,
        };
        return Err(Error::Manifest {
            path: dir.join("manifest.json"),
            message: format!(
                "lists {} shard(s) holding no rows: there is nothing to train or evaluate on; check the command that made it",
                shards.len()
            ),
        });
    }
    let vocab_limit = cfg.vocab_limit.map_or(data_vocab, |m| m.min(data_vocab));
    let identity = serde_json::json!({
        "source": source_id,
        "seed": cfg.seed,
        "shuffle_buffer": cfg.shuffle_buffer,
        "shuffle_shards": cfg.shuffle_shards,
        "rank": cfg.rank,
        "world_size": cfg.world_size,
        "batch_size": cfg.batch_size,
        "pack": cfg.pack,
    });
    let fingerprint = hash64(&identity);
    let mut plan = Plan {
        cfg,
        vocab_limit,
        shards,
        corruption,
        chunking,
        packed_source,
        inputs_length: li,
        targets_length: lt,
        fingerprint,
        ending: 0,
    };
    let ending = serde_json::json!({
        "align_steps": plan.cfg.align_steps.filter(|_| epoch::steps_aligned(&plan)),
        "drop_remainder": plan.cfg.drop_remainder,
    });
    // Never 0, which marks a state saved before it was recorded.
    plan.ending = hash64(&ending).max(1);
    Ok(plan)
}

/// What no loader of this configuration could have saved (the fingerprint covers only the
/// configuration; a position past the data is found when the epoch is read): empty batches
/// owed past what an epoch's end can owe, or an epoch past the last one.
fn check_edited(plan: &Plan, s: &LoaderState) -> Result<(), Error> {
    let owe = plan.cfg.align_steps.filter(|_| epoch::steps_aligned(plan));
    if s.padding > owe.map_or(0, |a| a as u64) {
        return Err(Error::Config(format!(
            "the loader state owes {} empty batch(es) at its epoch's end, more than this configuration's can (align_steps {}): the state was edited; resume from the state saved, or start without one",
            s.padding,
            owe.map_or("none".into(), |a| a.to_string())
        )));
    }
    if let Some(n) = plan.cfg.epochs.filter(|&n| s.epoch > n) {
        return Err(Error::Config(format!(
            "the loader state is in epoch {}, past the last one asked for (epochs={n}: epochs 0 to {}): nothing would be read; give epochs above {}",
            s.epoch,
            n.saturating_sub(1),
            s.epoch
        )));
    }
    Ok(())
}

/// The first 8 bytes (little-endian) of the SHA-256 of a JSON value's compact text: how a
/// state records the configuration it belongs to.
fn hash64(value: &serde_json::Value) -> u64 {
    let digest = Sha256::digest(value.to_string().as_bytes());
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The background thread: runs epochs from `start` and sends batches until the loader is
/// dropped or the epochs are done.
fn produce(plan: Plan, start: LoaderState, tx: SyncSender<Result<Batch, Error>>) {
    let mut state = start;
    loop {
        if plan.cfg.epochs.is_some_and(|n| state.epoch >= n) {
            return;
        }
        match run_epoch(&plan, state, &tx) {
            Ok((true, 0)) if state.position == 0 => {
                let _ = tx.send(Err(empty_epoch(&plan, state.epoch)));
                return;
            }
            Ok((true, _)) => {
                state = LoaderState {
                    epoch: state.epoch + 1,
                    position: 0,
                    fingerprint: plan.fingerprint,
                    padding: 0,
                    ending: plan.ending,
                }
            }
            Ok((false, _)) => return,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

/// This rank's share of an epoch's items in batches, when the item count is known.
fn batches_per_epoch(plan: &Plan) -> Option<u64> {
    let cfg = &plan.cfg;
    if plan.corruption.is_some() || (cfg.pack && !plan.packed_source) {
        return None;
    }
    let items: u64 = plan.shards.iter().map(|s| s.rows).sum();
    let (rank, world) = (cfg.rank as u64, cfg.world_size as u64);
    let mine = items.saturating_sub(rank).div_ceil(world);
    let b = cfg.batch_size as u64;
    let n = if cfg.drop_remainder {
        mine / b
    } else {
        mine.div_ceil(b)
    };
    // An epoch without a batch is an error when read, not a length of 0.
    Some(aligned_batches(plan, items).unwrap_or(n)).filter(|&n| n > 0)
}

/// Why an epoch that gave this rank no batch is an error (a loop of empty epochs would
/// never end).
fn empty_epoch(plan: &Plan, epoch: u64) -> Error {
    let rows: u64 = plan.shards.iter().map(|s| s.rows).sum();
    let cfg = &plan.cfg;
    Error::Config(format!(
        "epoch {epoch} gave rank {} of {} no batch of {}: the data has {rows} rows in {} shard(s){}; use more data, a smaller batch or fewer ranks",
        cfg.rank,
        cfg.world_size,
        cfg.batch_size,
        plan.shards.len(),
        if cfg.drop_remainder { " and short batches are dropped" } else { "" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reading thread that panics ends the loader with an error, not as if the data ran
    /// out (an early, silent end of training).
    #[test]
    fn a_panicking_reader_is_an_error_not_the_end() {
        let (tx, rx) = sync_channel::<Result<Batch, Error>>(1);
        let handle = std::thread::spawn(move || {
            let _keep = tx;
            panic!("a column of another type");
        });
        let mut loader = Loader {
            rx,
            state: LoaderState::default(),
            handle: Some(handle),
            batches_per_epoch: None,
            steps_aligned: false,
        };
        let err = loader.next().expect("an error").unwrap_err().to_string();
        assert!(err.contains("a column of another type"), "{err}");
        assert!(loader.next().is_none());
        // A producer that finished its epochs ends the loader quietly.
        let (tx, rx) = sync_channel::<Result<Batch, Error>>(1);
        let mut done = Loader {
            rx,
            state: LoaderState::default(),
            handle: Some(std::thread::spawn(move || drop(tx))),
            batches_per_epoch: None,
            steps_aligned: false,
        };
        assert!(done.next().is_none());
    }
}
