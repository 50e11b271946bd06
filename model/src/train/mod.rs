//! The trainer: batches from the pipeline loader (example shards, or token shards corrupted on
//! the fly), teacher-forced token cross-entropy, Adafactor or AdamW, metrics as JSON lines,
//! periodic evaluation, atomic checkpoints and exact resume; data-parallel over a c10d
//! process group, with gradient accumulation and mixed precision.
//!
//! A step's gradient is the mean over every target token of the step (all micro-batches of
//! all ranks): each rank first learns the step's token total (one small all-reduce), each
//! micro-batch's summed loss is divided by it before its backward pass, and the gradients
//! are summed over ranks. So 2 ranks x batch 4 = 1 rank x batch 8 = batch 4 x accumulate 2.
//!
//! Exactness: every micro-batch reseeds libtorch from (seed, step, rank, micro-batch) before
//! its forward pass (with `--cuda-graph`, every step from (seed, step): graph_step.rs), the
//! loader of every rank continues from the state stored with the checkpoint, and the
//! optimiser moments are restored by parameter name, so on CPU the losses after a resume
//! equal those of an uninterrupted run.

pub(crate) mod data;
mod grads;
mod graph_step;
mod loss;
mod resume;
mod run_folder;
mod step;
mod sync_steps;
mod weights;
mod window;

use std::path::{Path, PathBuf};
use std::time::Instant;

use conveyor_pipeline::loader::{Batch, Loader, LoaderState};
use serde::Serialize;
use tch::{Device, Tensor};

use crate::checkpoint;
use crate::config::ModelConfig;
use crate::dist::{Backend, Launch, ProcessGroup};
use crate::optim::{Optimizer, OptimizerKind, Schedule};
use crate::peak::{train_flops, Peak};

pub(crate) use data::{check_lengths, data_kind, loader_config, DataKind};
pub use data::{data_vocab_size, tensors, BatchTensors, Counts, ReadSpec};
pub use loss::{dataset_loss, LossConfig, LossReport};
pub use weights::{Precision, Weights};

use graph_step::GraphStep;
use run_folder::{diverged, prepare_out, MetricsFile};
use step::run_step;
use sync_steps::{checking_syncs, refuse_sync_check_off_cuda, sync_checked_step};
use window::{Pending, Window};

/// A training run.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Token shards or example shards.
    pub data: PathBuf,
    /// Held-out data for the evaluation loss (same kind and vocabulary).
    pub eval_data: Option<PathBuf>,
    pub out: PathBuf,
    pub model: ModelConfig,
    pub steps: u64,
    /// Rows per micro-batch on each rank.
    pub batch_size: usize,
    /// Micro-batches per optimiser step on each rank.
    pub accumulate: u64,
    /// Input length when corrupting token shards on the fly.
    pub inputs_length: usize,
    /// Pack examples into rows (token shards, unpacked example shards); example shards
    /// packed when written are read packed either way.
    pub pack: bool,
    pub seed: u64,
    pub optimizer: OptimizerKind,
    pub schedule: Schedule,
    pub checkpoint_every: u64,
    /// Keep only this many newest checkpoints (None: all).
    pub keep_checkpoints: Option<usize>,
    pub eval_every: u64,
    pub eval_batches: usize,
    pub shuffle_buffer: usize,
    pub device: Device,
    pub precision: Precision,
    pub resume: bool,
    /// Start from this checkpoint's weights (fine-tuning); the optimiser starts fresh.
    pub init: Option<PathBuf>,
    /// Several processes (torchrun, Slurm): this one's place among them.
    pub launch: Option<Launch>,
    /// The device's peak bf16 TFLOP/s for MFU (`--peak-tflops`); else looked up by GPU name.
    pub peak_tflops: Option<f64>,
    /// Steps per read-back of the loss and gradient norm (window.rs); default by device.
    pub sync_every: Option<usize>,
    /// Capture the step in a CUDA graph and replay it (graph_step.rs): one process, CUDA.
    pub cuda_graph: bool,
    /// Mesh TF's z-loss coefficient (1e-4 in T5's training; 0: none): the objective adds
    /// z_loss x logsumexp² of every target position's logits; the logged loss stays the
    /// cross-entropy.
    pub z_loss: f64,
    /// Fail a step that makes the host wait for the GPU (cuda/sync_check.rs): CUDA only,
    /// every step after the first few (with a graph: after its capture; sync_steps.rs).
    pub check_syncs: bool,
}

/// One step's figures (one JSON line of `metrics.jsonl`), over all ranks and micro-batches.
#[derive(Debug, Clone, Serialize)]
pub struct StepMetrics {
    /// Optimiser steps so far.
    pub step: u64,
    /// Mean cross-entropy over the step's target tokens.
    pub loss: f64,
    /// L2 norm of the step's gradient (of that mean loss, over all ranks), before the update.
    pub grad_norm: f64,
    pub lr: f64,
    pub tokens_per_s: f64,
    pub examples_per_s: f64,
    /// Real tokens over row slots (inputs and targets): how little of the batch is padding.
    pub fill_rate: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
    pub elapsed_s: f64,
    /// On CUDA: the most GPU memory tensors have held so far in this process (MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_gpu_mb: Option<f64>,
    /// The model's arithmetic per second on this rank's device (analytic FLOPs of the
    /// step's padded batches, forward and backward), TFLOP/s.
    pub model_tflops: f64,
    /// `model_tflops` over the device's peak, when the peak is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfu: Option<f64>,
}

/// How the trainer reports.
pub trait TrainProgress {
    fn start(&self, first_step: u64, last_step: u64);
    fn step(&self, m: &StepMetrics);
    fn note(&self, message: &str);
    fn finish(&self);
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] conveyor_pipeline::Error),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error(transparent)]
    Dist(#[from] crate::dist::DistError),
    #[error(transparent)]
    Graph(#[from] crate::cuda::GraphError),
    #[error(transparent)]
    SyncCheck(#[from] crate::cuda::SyncCheckError),
    #[error("{0}")]
    Refused(String),
    #[error("at step {step} the {what}; stopping. The last good checkpoint is {last}. Lower the learning rate or check the data, and start again in a new --out (from the last good checkpoint's weights with --init, if there is one; --resume keeps the run's settings, and would diverge again)")]
    NonFinite {
        step: u64,
        what: String,
        last: String,
    },
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
}

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub out: PathBuf,
    pub steps: u64,
    pub resumed_from: Option<u64>,
    pub final_loss: Option<f64>,
    pub final_eval_loss: Option<f64>,
    pub parameters: usize,
    pub checkpoint: Option<PathBuf>,
    pub seconds: f64,
    pub world_size: usize,
    /// `--cuda-graph`: the steps of this invocation replayed from the graph.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayed_steps: Option<u64>,
    /// `--check-syncs`: the steps of this invocation run with the check on (none waited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_checked_steps: Option<u64>,
}

fn io_error(path: &Path, e: std::io::Error) -> TrainError {
    TrainError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The seed of libtorch's generator for micro-batch `micro` of rank `rank` at `step`
/// (rank 0's first micro-batch keeps the one-process seed).
fn micro_seed(cfg: &TrainConfig, step: u64, rank: usize, micro: usize) -> i64 {
    let index = rank as u64 * cfg.accumulate + micro as u64;
    let seed = if index == 0 {
        cfg.seed
    } else {
        cfg.seed ^ conveyor_pipeline::rng::mix64(index)
    };
    (conveyor_pipeline::rng::mix64(seed ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> 1) as i64
}

/// The ranks of a run: the process group (none for one process), this rank, the world size.
struct Ranks {
    pg: Option<ProcessGroup>,
    rank: usize,
    world: usize,
    device: Device,
}

impl Ranks {
    fn join(cfg: &TrainConfig) -> Result<Self, TrainError> {
        let Some(l) = &cfg.launch else {
            return Ok(Self {
                pg: None,
                rank: 0,
                world: 1,
                device: cfg.device,
            });
        };
        let (backend, index) = match cfg.device {
            Device::Cuda(i) => (Backend::Nccl, i),
            _ => (Backend::Gloo, 0),
        };
        let pg = ProcessGroup::join(l, backend, index)?;
        Ok(Self {
            rank: pg.rank,
            world: pg.world,
            pg: Some(pg),
            device: cfg.device,
        })
    }

    /// `v` summed over ranks, left on the device (float64): nothing waits for the GPU.
    fn sum_on_device(&self, v: &[f64]) -> Result<Tensor, TrainError> {
        let t = data::to_device_async(Tensor::from_slice(v), self.device);
        if let Some(pg) = &self.pg {
            pg.all_reduce_sum_queued(&t)?;
        }
        Ok(t)
    }

    /// Element-wise sums over ranks of `v` (float64), read back.
    fn sum(&self, v: Vec<f64>) -> Result<Vec<f64>, TrainError> {
        let Some(pg) = &self.pg else { return Ok(v) };
        let t = Tensor::from_slice(&v).to(self.device);
        pg.all_reduce_sum(&t)?;
        Ok(Vec::<f64>::try_from(t.to(Device::Cpu)).expect("f64 values"))
    }

    /// Every rank's value of `v` (int64), in rank order.
    fn gather(&self, v: &[i64]) -> Result<Vec<Vec<i64>>, TrainError> {
        let Some(pg) = &self.pg else {
            return Ok(vec![v.to_vec()]);
        };
        let mut all = vec![0i64; v.len() * self.world];
        all[self.rank * v.len()..(self.rank + 1) * v.len()].copy_from_slice(v);
        let t = Tensor::from_slice(&all).to(self.device);
        pg.all_reduce_sum(&t)?;
        let all = Vec::<i64>::try_from(t.to(Device::Cpu)).expect("i64 values");
        Ok(all.chunks(v.len()).map(|c| c.to_vec()).collect())
    }
}

/// Runs (or resumes) a training run.
pub fn train(cfg: &TrainConfig, progress: &dyn TrainProgress) -> Result<TrainSummary, TrainError> {
    let started = Instant::now();
    check_vocab(cfg)?;
    let mut graph = match cfg.cuda_graph {
        true => Some(GraphStep::new(cfg)?),
        false => None,
    };
    let mut sync_checked = 0u64;
    if cfg.check_syncs {
        refuse_sync_check_off_cuda(cfg)?;
    }
    let ranks = Ranks::join(cfg)?;
    let (existing, _lock) = prepare_out(cfg, ranks.rank, progress)?;
    crate::seed_everything(cfg.seed);
    let mut w = Weights::new(&cfg.model, cfg.device, cfg.precision)?;
    if existing.is_none() {
        init_weights(cfg, &mut w, progress)?;
    }
    let mut opt = Optimizer::new(cfg.optimizer, cfg.schedule, &w.params);
    let mut state = resume::fresh_state(cfg, ranks.world);
    let mut loader_state = None;
    if let Some(ckpt) = &existing {
        let (saved, mine) = resume::restore(cfg, ckpt, &mut w, &mut opt, ranks.rank, ranks.world)?;
        progress.note(&format!(
            "resuming from {} (step {})",
            ckpt.display(),
            saved.step
        ));
        state = saved;
        loader_state = Some(mine);
        resume::within_steps(cfg, state.step)?;
    }
    // For --init, eval and model loss (a resumed run's data is its own, by content).
    state.vocab_sha256 = Some(data::data_vocab_sha256(&cfg.data)?);
    resume::agree(cfg, &ranks, &mut w, state.step)?;
    let mut read = loader_config(&cfg.read_spec(), &cfg.data, true, ranks.rank, ranks.world)?;
    // Every rank ends each epoch with the same number of micro-batches, whole steps of them.
    read.align_steps = Some(cfg.accumulate as usize);
    let mut loader = Loader::resume(read, loader_state)?;
    let mut metrics = match ranks.rank {
        0 => Some(MetricsFile::open(cfg, state.step, existing.is_none())?),
        _ => None,
    };
    let resumed_from = existing.as_ref().map(|_| state.step);
    let first_step = resumed_from.unwrap_or(0) + 1;
    let peak = Peak::of(cfg.device, cfg.peak_tflops);
    if let Some(p) = &peak {
        progress.note(&format!("MFU against {} TFLOP/s ({})", p.tflops, p.source));
    }
    progress.start(state.step + 1, cfg.steps);
    let mut last_ckpt = existing.clone();
    let (mut final_loss, mut final_eval) = (None, None);
    let run_start = Instant::now();
    let mut window = Window::new(cfg.device, cfg.sync_every);
    loop {
        let t0 = Instant::now();
        let batches = match state.step < cfg.steps {
            true => next_batches(&mut loader, cfg.accumulate)?,
            false => None,
        };
        let ended = batches.is_none();
        if let Some((batches, after)) = batches {
            let step = state.step + 1;
            let lr = opt.next_lr();
            let captured = graph.as_ref().map(|g| g.captured_at.is_some());
            let check = cfg.check_syncs && sync_checked_step(captured, step, first_step);
            let (nll, grad_norm, counts) = checking_syncs(check, step, || match graph.as_mut() {
                Some(g) => {
                    let out = g.run(cfg, &mut w, &mut opt, &batches, step)?;
                    if g.captured_at == Some(step) {
                        progress.note(&format!("step {step} captured in a CUDA graph: later steps of its shape replay it"));
                    }
                    Ok(out)
                }
                None => run_step(cfg, &ranks, &mut w, &mut opt, &batches, step),
            })?;
            sync_checked += u64::from(check);
            let flops: f64 = batches
                .iter()
                .map(|b| train_flops(&cfg.model, b.rows, b.inputs_width, b.targets_width))
                .sum();
            state.step = step;
            state.loader = after;
            let p = Pending {
                step,
                lr,
                nll,
                grad_norm,
                counts,
                flops,
            };
            window.push(p, t0);
        }
        let step = state.step;
        let eval_due = !ended && cfg.eval_every > 0 && step.is_multiple_of(cfg.eval_every);
        let checkpoint_due =
            !ended && (step.is_multiple_of(cfg.checkpoint_every.max(1)) || step == cfg.steps);
        if !(ended || eval_due || checkpoint_due || window.is_full()) {
            continue;
        }
        for d in window.drain(&ranks)? {
            // Saturating: an edited trainer state near 2^64 must not wrap to a small count.
            state.tokens_seen = state
                .tokens_seen
                .saturating_add((d.counts.input_tokens + d.counts.target_tokens) as u64);
            state.examples_seen += d.counts.examples as u64;
            if !d.loss.is_finite() {
                let (loss, last) = (d.loss.to_string(), last_ckpt.as_deref());
                return Err(diverged(cfg, ranks.rank, d.step, loss, None, last));
            }
            let eval_loss = match (&cfg.eval_data, ranks.rank) {
                (Some(data), 0) if eval_due && d.step == step => {
                    Some(evaluate(cfg, &w.model, data)?)
                }
                _ => None,
            };
            let (c, secs) = (d.counts, d.seconds);
            let m = StepMetrics {
                step: d.step,
                loss: d.loss,
                grad_norm: d.grad_norm,
                lr: d.lr,
                tokens_per_s: (c.input_tokens + c.target_tokens) / secs,
                examples_per_s: c.examples / secs,
                fill_rate: c.fill_rate(),
                eval_loss,
                elapsed_s: run_start.elapsed().as_secs_f64(),
                peak_gpu_mb: match cfg.device {
                    Device::Cuda(i) => {
                        crate::cuda::peak_memory(i).map(|p| p.allocated as f64 / 1048576.0)
                    }
                    _ => None,
                },
                model_tflops: d.flops / secs / 1e12,
                mfu: peak.as_ref().map(|p| p.mfu(d.flops, secs)),
            };
            if let Some(f) = metrics.as_mut() {
                f.write(&m)?;
            }
            progress.step(&m);
            final_loss = Some(d.loss);
            if eval_loss.is_some() {
                final_eval = eval_loss;
            }
        }
        if ended {
            break;
        }
        if checkpoint_due {
            // A finite loss does not prove the last update left the weights finite (an
            // infinite gradient): such weights are a divergence, never a checkpoint.
            if let Some(name) = checkpoint::non_finite(&w.master) {
                let loss = final_loss.unwrap_or(f64::NAN).to_string();
                let last = last_ckpt.as_deref();
                return Err(diverged(cfg, ranks.rank, step, loss, Some(name), last));
            }
            state.loaders = gather_loader_states(&ranks, &state.loader)?;
            if ranks.rank == 0 {
                let moments: Vec<(String, &Tensor)> = opt
                    .named_moments()
                    .into_iter()
                    .map(|(k, t)| {
                        let (i, part) = k.split_once('.').expect("index.part");
                        let i: usize = i.parse().expect("index");
                        (format!("{}:{part}", w.names[i]), t)
                    })
                    .collect();
                last_ckpt = Some(checkpoint::save(
                    &cfg.out, &w.master, &cfg.model, &moments, &state,
                )?);
                // Cleaning up never stops training (an error here would also leave the
                // other ranks waiting in their next all-reduce): said, and left.
                if let Some(keep) = cfg.keep_checkpoints {
                    let left = checkpoint::keep_latest(&cfg.out, keep, step).unwrap_or_else(|e| {
                        vec![(checkpoint::checkpoints_dir(&cfg.out), e.to_string())]
                    });
                    for (path, why) in left {
                        progress.note(&format!(
                            "--keep-checkpoints: left {} ({why})",
                            path.display()
                        ));
                    }
                }
            }
        }
    }
    if let Some(g) = &graph {
        progress.note(&format!(
            "CUDA graph: {} steps replayed, {} eager (the warm-up, and batches of another shape)",
            g.replayed, g.eager
        ));
    }
    match (cfg.check_syncs, sync_checked) {
        (false, _) => {}
        (true, 0) => progress.note("--check-syncs: no step was checked (too few steps, or no capture)"),
        (true, n) => progress.note(&format!(
            "--check-syncs: {n} steps ran with libtorch's sync debug mode at \"error\"; none waited for the GPU"
        )),
    }
    progress.finish();
    Ok(TrainSummary {
        replayed_steps: graph.as_ref().map(|g| g.replayed),
        sync_checked_steps: cfg.check_syncs.then_some(sync_checked),
        out: cfg.out.clone(),
        steps: state.step,
        resumed_from,
        final_loss,
        final_eval_loss: final_eval,
        parameters: cfg.model.parameter_count(),
        checkpoint: last_ckpt,
        seconds: started.elapsed().as_secs_f64(),
        world_size: ranks.world,
    })
}

fn check_vocab(cfg: &TrainConfig) -> Result<(), TrainError> {
    let vocab = data_vocab_size(&cfg.data)?;
    if !cfg.model.takes_vocab(vocab) {
        return Err(TrainError::Refused(format!(
            "{} holds ids of a {vocab}-id vocabulary (pieces + 100 extra ids) but the model has {} embeddings (the same count, or padded to a multiple of 128, is needed)",
            cfg.data.display(),
            cfg.model.vocab_size
        )));
    }
    if let Some(e) = &cfg.eval_data {
        let v = data_vocab_size(e)?;
        if v != vocab {
            return Err(TrainError::Refused(format!(
                "{} uses another vocabulary ({v} ids) than {} ({vocab})",
                e.display(),
                cfg.data.display()
            )));
        }
    }
    check_lengths(&cfg.model, &cfg.read_spec(), &cfg.data)?;
    if let Some(e) = &cfg.eval_data {
        check_lengths(&cfg.model, &cfg.read_spec(), e)?;
    }
    if cfg.accumulate == 0 || cfg.batch_size == 0 {
        return Err(TrainError::Refused(
            "--batch-size and --accumulate must be at least 1".into(),
        ));
    }
    // A learning rate that is not a positive number trains nothing a resume could read back
    // (NaN was written into the trainer state as null).
    if let crate::optim::Schedule::Constant { lr } = cfg.schedule {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(TrainError::Refused(format!(
                "--lr {lr} is not a positive learning rate"
            )));
        }
    }
    Ok(())
}

/// `--init`: the weights of a checkpoint of the same configuration.
fn init_weights(
    cfg: &TrainConfig,
    w: &mut Weights,
    progress: &dyn TrainProgress,
) -> Result<(), TrainError> {
    let Some(init) = &cfg.init else { return Ok(()) };
    let saved = checkpoint::read_config(init)?;
    checkpoint::check_vocab(init, &cfg.data, &data::data_vocab_sha256(&cfg.data)?)?;
    if !cfg.model.same_weights(&saved) {
        return Err(TrainError::Refused(format!(
            "{} holds a {} model with another configuration than asked ({}); fine-tune with the same --arch, --preset and --config",
            init.display(),
            saved.arch.name(),
            cfg.model.arch.name()
        )));
    }
    checkpoint::load_weights(init, &mut w.master)?;
    w.refresh();
    progress.note(&format!("starting from the weights of {}", init.display()));
    Ok(())
}

/// The micro-batches of one optimiser step that hold rows, and the loader's state after
/// its last one; `None` when the data ends first. The empty batches that end an epoch on a
/// rank with none of its last items (`align_steps`) come last in a step, so the others keep
/// their places (and dropout seeds); a rank may be left with none.
fn next_batches(
    loader: &mut Loader,
    n: u64,
) -> Result<Option<(Vec<Batch>, LoaderState)>, TrainError> {
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        match loader.next() {
            Some(b) => out.push(b?),
            None => return Ok(None),
        }
    }
    let after = loader.state();
    out.retain(|b| b.rows > 0);
    Ok(Some((out, after)))
}

/// Every rank's loader state, for the checkpoint (rank order).
fn gather_loader_states(ranks: &Ranks, mine: &LoaderState) -> Result<Vec<LoaderState>, TrainError> {
    let v = [
        mine.epoch as i64,
        mine.position as i64,
        mine.fingerprint as i64,
        mine.padding as i64,
        mine.ending as i64,
    ];
    Ok(ranks
        .gather(&v)?
        .into_iter()
        .map(|r| LoaderState {
            epoch: r[0] as u64,
            position: r[1] as u64,
            fingerprint: r[2] as u64,
            padding: r[3] as u64,
            ending: r[4] as u64,
        })
        .collect())
}

/// Mean loss over the target tokens of the first `eval_batches` batches of `data` (no
/// shuffling, no dropout): every token weighs the same, whatever batch it falls in.
fn evaluate(cfg: &TrainConfig, model: &crate::Seq2Seq, data: &Path) -> Result<f64, TrainError> {
    let _guard = tch::no_grad_guard();
    let mut l = loader_config(&cfg.read_spec(), data, false, 0, 1)?;
    l.epochs = Some(1);
    let (mut nll, mut tokens) = (0.0, 0.0);
    for b in Loader::new(l)?.take(cfg.eval_batches.max(1)) {
        let b = b?;
        let t = tensors(&b, cfg.device);
        nll += t.loss_sum(model, false).double_value(&[]);
        tokens += Counts::of(&b).target_tokens;
    }
    Ok(nll / tokens.max(1.0))
}
