//! What the trainer reads: the kind of data folder (token shards corrupted on the fly, or
//! example shards), the loader over it for one rank, and batches turned into tensors.

use std::path::{Path, PathBuf};

use conveyor_pipeline::corrupt::CorruptConfig;
use conveyor_pipeline::loader::{Batch, LoaderConfig, LoaderInput};
use tch::{Device, Kind, Tensor};

use super::{TrainConfig, TrainError};
use crate::seq2seq::Segments;

/// The ids the data holds (pieces + extra ids): a model trained on it needs this vocab size.
pub fn data_vocab_size(data: &Path) -> Result<usize, TrainError> {
    Ok(match data_kind(data)? {
        DataKind::Tokens(m) => m.vocab.size + conveyor_pipeline::tokenize::EXTRA_IDS,
        DataKind::Examples(m) => m.settings.vocab_size as usize,
    })
}

/// The sha256 of the SentencePiece model the data was made with.
pub fn data_vocab_sha256(data: &Path) -> Result<String, TrainError> {
    Ok(match data_kind(data)? {
        DataKind::Tokens(m) => m.vocab.sha256,
        DataKind::Examples(m) => m.vocab.sha256,
    })
}

// Read once per run: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum DataKind {
    Tokens(conveyor_pipeline::manifest::Manifest),
    Examples(conveyor_pipeline::examples::ExamplesManifest),
}

pub(crate) fn data_kind(data: &Path) -> Result<DataKind, TrainError> {
    let path = data.join("manifest.json");
    let format = match conveyor_pipeline::manifest::format_of(data) {
        Ok(f) => f,
        // Text that is not JSON (a truncated or damaged manifest) names no format.
        Err(e @ conveyor_pipeline::Error::Manifest { .. }) => return Err(TrainError::Refused(format!(
            "{e}: the manifest cannot be read; rerun the command that wrote {} (conveyor ingest, corrupt or task prepare)",
            data.display()
        ))),
        Err(e) => return Err(TrainError::Refused(format!(
            "{e}: --data must be a token directory (conveyor ingest) or an example directory (conveyor corrupt)"
        ))),
    };
    match format.as_str() {
        conveyor_pipeline::manifest::TOKENS_FORMAT => Ok(DataKind::Tokens(
            conveyor_pipeline::manifest::Manifest::read(data)?,
        )),
        conveyor_pipeline::examples::EXAMPLES_FORMAT => Ok(DataKind::Examples(
            conveyor_pipeline::examples::ExamplesManifest::read(data)?,
        )),
        other => Err(TrainError::Refused(format!(
            "{}: format {other:?} is neither conveyor.tokens nor conveyor.examples",
            path.display()
        ))),
    }
}

/// How a dataset is read into batches.
#[derive(Debug, Clone)]
pub struct ReadSpec {
    /// Rows per batch.
    pub batch_size: usize,
    /// Input length of on-the-fly span corruption (token shards).
    pub inputs_length: usize,
    /// Pack examples into rows (example shards packed when written are read packed anyway).
    pub pack: bool,
    pub seed: u64,
    pub shuffle_buffer: usize,
}

impl TrainConfig {
    pub(crate) fn read_spec(&self) -> ReadSpec {
        ReadSpec {
            batch_size: self.batch_size,
            inputs_length: self.inputs_length,
            pack: self.pack,
            seed: self.seed,
            shuffle_buffer: self.shuffle_buffer,
        }
    }
}

/// The loader of `data` for rank `rank` of `world` (shuffled for training, in order for
/// evaluation).
pub(crate) fn loader_config(
    cfg: &ReadSpec,
    data: &Path,
    shuffle: bool,
    rank: usize,
    world: usize,
) -> Result<LoaderConfig, TrainError> {
    let input = match data_kind(data)? {
        DataKind::Tokens(_) => LoaderInput::Tokens(CorruptConfig::new(
            data.to_path_buf(),
            PathBuf::new(),
            cfg.inputs_length,
        )),
        DataKind::Examples(_) => LoaderInput::Examples(data.to_path_buf()),
    };
    let mut l = LoaderConfig::new(input, cfg.batch_size);
    l.seed = cfg.seed;
    l.shuffle_buffer = if shuffle { cfg.shuffle_buffer } else { 0 };
    l.shuffle_shards = shuffle;
    l.rank = rank;
    l.world_size = world;
    // Examples packed when written stay packed; others are packed here on request.
    l.pack = cfg.pack;
    // At most the model's rows (checked before training): an id beyond them would index past
    // the embedding inside libtorch, so the loader names its shard and row instead.
    l.vocab_limit = Some(data_vocab_size(data)? as u32);
    Ok(l)
}

/// Refuses data whose rows are longer than the model's learned position table.
pub(crate) fn check_lengths(
    model: &crate::ModelConfig,
    cfg: &ReadSpec,
    data: &Path,
) -> Result<(), TrainError> {
    if model.max_length().is_none() {
        return Ok(());
    }
    let (inputs, targets) = match data_kind(data)? {
        DataKind::Tokens(_) => (cfg.inputs_length, 0),
        DataKind::Examples(m) => (
            m.settings.lengths.inputs_length,
            m.settings.lengths.targets_length,
        ),
    };
    fits_positions(model, data, inputs, targets, cfg.pack)
}

/// Rows of `data` of up to `inputs` / `targets` tokens fit the model's learned position
/// table, if it has one (past its end every position would read its last row).
pub(crate) fn fits_positions(
    model: &crate::ModelConfig,
    data: &Path,
    inputs: usize,
    targets: usize,
    packed: bool,
) -> Result<(), TrainError> {
    match model.max_length() {
        Some(max) if inputs.max(targets) > max => Err(TrainError::Refused(format!(
            "{}: rows of up to {inputs} input and {targets} target tokens{} do not fit the model's learned position table of {max} rows: give the model \"max_positions\": {} in --config, or write the data with --inputs-length of at most {max}",
            data.display(),
            if packed { " (packed)" } else { "" },
            inputs.max(targets)
        ))),
        _ => Ok(()),
    }
}

/// A batch on `device`: ids and 0/1 masks, and segment ids and positions of packed rows.
pub struct BatchTensors {
    pub inputs: Tensor,
    pub input_mask: Tensor,
    pub targets: Tensor,
    pub target_mask: Tensor,
    pub segments: Option<Segments>,
}

/// Token counts of a batch, summed over micro-batches and ranks for a step's figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub target_tokens: f64,
    pub input_tokens: f64,
    pub examples: f64,
    /// Row slots (rows x width, inputs and targets): the fill rate's denominator.
    pub slots: f64,
}

impl Counts {
    pub fn of(b: &Batch) -> Self {
        let sum = |v: &[u32]| v.iter().map(|&l| l as f64).sum::<f64>();
        Self {
            target_tokens: sum(&b.target_lengths),
            input_tokens: sum(&b.input_lengths),
            examples: b.examples as f64,
            slots: (b.rows * (b.inputs_width + b.targets_width)) as f64,
        }
    }

    /// The counts of a step's micro-batches together.
    pub fn all(batches: &[Batch]) -> Self {
        let mut c = Self::default();
        for b in batches {
            c.add(&Self::of(b));
        }
        c
    }

    pub fn add(&mut self, o: &Counts) {
        self.target_tokens += o.target_tokens;
        self.input_tokens += o.input_tokens;
        self.examples += o.examples;
        self.slots += o.slots;
    }

    pub fn to_vec(self) -> Vec<f64> {
        vec![
            self.target_tokens,
            self.input_tokens,
            self.examples,
            self.slots,
        ]
    }

    pub fn from_slice(v: &[f64]) -> Self {
        Self {
            target_tokens: v[0],
            input_tokens: v[1],
            examples: v[2],
            slots: v[3],
        }
    }

    /// Real tokens over row slots.
    pub fn fill_rate(&self) -> f64 {
        (self.target_tokens + self.input_tokens) / self.slots.max(1.0)
    }
}

/// Batch tensors on `device`.
pub fn tensors(b: &Batch, device: Device) -> BatchTensors {
    Layout::of(b).tensors(&upload(b, device))
}

/// What the sizes of a batch's tensors follow from: rows, widths, packed or not. Batches of
/// one layout fit the same buffers (what a CUDA graph replays with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    rows: i64,
    inputs_width: i64,
    targets_width: i64,
    packed: bool,
}

impl Layout {
    pub fn of(b: &Batch) -> Self {
        Self {
            rows: b.rows as i64,
            inputs_width: b.inputs_width as i64,
            targets_width: b.targets_width as i64,
            packed: b.packing.is_some(),
        }
    }

    /// The batch's tensors over `flat`, what [`upload`] made: views of its ids (and of the
    /// packing's segment ids and positions), and 0/1 masks computed from its lengths.
    pub fn tensors(&self, flat: &Tensor) -> BatchTensors {
        let (rows, wi, wt) = (self.rows, self.inputs_width, self.targets_width);
        let mut shapes = vec![[rows, wi], [rows, wt], [rows, 1], [rows, 1]];
        if self.packed {
            shapes.extend([[rows, wi], [rows, wt], [rows, wi], [rows, wt]]);
        }
        let sizes: Vec<i64> = shapes.iter().map(|s| s[0] * s[1]).collect();
        let mut parts = flat
            .split_with_sizes(sizes.as_slice(), 0)
            .into_iter()
            .zip(shapes)
            .map(|(t, shape)| t.view(shape));
        let mut next = || parts.next().expect("a tensor per part");
        let device = flat.device();
        let mask = |lengths: Tensor, w: i64| {
            Tensor::arange(w, (Kind::Int64, device))
                .unsqueeze(0)
                .lt_tensor(&lengths)
                .to_kind(Kind::Float)
        };
        let inputs = next();
        let targets = next();
        let input_mask = mask(next(), wi);
        let target_mask = mask(next(), wt);
        let segments = self.packed.then(|| Segments {
            inputs: next(),
            targets: next(),
            input_positions: next(),
            target_positions: next(),
        });
        BatchTensors {
            inputs,
            input_mask,
            targets,
            target_mask,
            segments,
        }
    }
}

/// A batch's ids, lengths and packing parts (the order [`Layout::tensors`] reads) as one
/// int64 tensor on `device`, through one copy. On CUDA the copy starts from pinned memory
/// and does not wait: a copy from pageable memory would first wait for the GPU to finish
/// the work already queued, a host synchronisation per batch.
pub(crate) fn upload(b: &Batch, device: Device) -> Tensor {
    let mut parts: Vec<&[u32]> = vec![&b.inputs, &b.targets, &b.input_lengths, &b.target_lengths];
    if let Some(p) = &b.packing {
        parts.extend([
            &p.inputs_segment_ids[..],
            &p.targets_segment_ids,
            &p.inputs_positions,
            &p.targets_positions,
        ]);
    }
    let flat: Vec<i64> = parts
        .iter()
        .flat_map(|p| p.iter().map(|&x| x as i64))
        .collect();
    to_device_async(Tensor::from_slice(&flat), device)
}

/// `host` on `device` without waiting for the GPU's queued work: on CUDA a non-blocking copy
/// from pinned memory (should pinning fail, a libtorch without a CUDA host allocator, the
/// blocking copy); elsewhere as it is.
pub(super) fn to_device_async(host: Tensor, device: Device) -> Tensor {
    let pinned = match device {
        Device::Cuda(_) => host.f_pin_memory(device).ok(),
        _ => None,
    };
    match pinned {
        Some(p) => p.to_device_(device, p.kind(), true, false),
        None => host.to(device),
    }
}

impl BatchTensors {
    /// The summed token cross-entropy of the batch's targets under `model`.
    pub fn loss_sum(&self, model: &crate::Seq2Seq, train: bool) -> Tensor {
        self.loss_parts(model, train, None, 0.0).1
    }

    /// [`crate::Seq2Seq::loss_parts`] of the batch: the sum, and the objective (with
    /// `z_loss`) over `denom`.
    pub fn loss_parts(
        &self,
        model: &crate::Seq2Seq,
        train: bool,
        denom: Option<&Tensor>,
        z_loss: f64,
    ) -> (Tensor, Tensor) {
        model.loss_parts(
            &self.inputs,
            &self.input_mask,
            &self.targets,
            &self.target_mask,
            self.segments.as_ref(),
            train,
            denom,
            z_loss,
        )
    }
}
