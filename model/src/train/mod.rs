//! The trainer: batches from the pipeline loader (example shards, or token shards corrupted on
//! the fly), teacher-forced token cross-entropy, Adafactor or AdamW, metrics as JSON lines,
//! periodic evaluation, atomic checkpoints and exact resume.
//!
//! Exactness: every step reseeds libtorch from (seed, step) before its forward pass, the
//! loader continues from the state stored with the checkpoint, and the optimiser moments are
//! restored by parameter name, so on CPU the losses after a resume equal those of an
//! uninterrupted run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use conveyor_pipeline::corrupt::CorruptConfig;
use conveyor_pipeline::loader::{Batch, Loader, LoaderConfig, LoaderInput};
use serde::Serialize;
use tch::{nn, Device, Kind, Tensor};

use crate::checkpoint::{self, TrainerState};
use crate::config::ModelConfig;
use crate::optim::{Optimizer, OptimizerKind, Schedule};
use crate::seq2seq::Seq2Seq;

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
    pub batch_size: usize,
    /// Input length when corrupting token shards on the fly.
    pub inputs_length: usize,
    pub seed: u64,
    pub optimizer: OptimizerKind,
    pub schedule: Schedule,
    pub checkpoint_every: u64,
    pub eval_every: u64,
    pub eval_batches: usize,
    pub shuffle_buffer: usize,
    pub device: Device,
    /// Keep the weights in bfloat16 (norms, softmax and the loss still run in float32;
    /// optimiser moments stay float32). Meant for CUDA.
    pub bf16: bool,
    pub resume: bool,
    /// Start from this checkpoint's weights (fine-tuning); the optimiser starts fresh.
    pub init: Option<PathBuf>,
}

/// One step's figures (one JSON line of `metrics.jsonl`).
#[derive(Debug, Clone, Serialize)]
pub struct StepMetrics {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub tokens_per_s: f64,
    pub examples_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
    pub elapsed_s: f64,
    /// On CUDA: the most GPU memory tensors have held so far in this process (MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_gpu_mb: Option<f64>,
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
    #[error("{0}")]
    Refused(String),
    #[error("the loss became {value} at step {step}; stopping. The last good checkpoint is {last}. Lower the learning rate or check the data, then rerun with --resume")]
    NonFinite { step: u64, value: f64, last: String },
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
}

/// The ids the data holds (pieces + extra ids): a model trained on it needs this vocab size.
pub fn data_vocab_size(data: &Path) -> Result<usize, TrainError> {
    Ok(match data_kind(data)? {
        DataKind::Tokens(m) => m.vocab.size + 100,
        DataKind::Examples(m) => m.settings.vocab_size as usize,
    })
}

enum DataKind {
    Tokens(conveyor_pipeline::manifest::Manifest),
    Examples(conveyor_pipeline::corrupt::manifest::ExamplesManifest),
}

fn data_kind(data: &Path) -> Result<DataKind, TrainError> {
    let path = data.join("manifest.json");
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::Refused(format!(
        "{}: {e}: --data must be a token directory (conveyor ingest) or an example directory (conveyor corrupt)",
        path.display()
    )))?;
    let format = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["format"].as_str().map(str::to_string))
        .unwrap_or_default();
    match format.as_str() {
        conveyor_pipeline::manifest::TOKENS_FORMAT => Ok(DataKind::Tokens(
            conveyor_pipeline::manifest::Manifest::read(data)?,
        )),
        conveyor_pipeline::corrupt::manifest::EXAMPLES_FORMAT => Ok(DataKind::Examples(
            conveyor_pipeline::corrupt::manifest::ExamplesManifest::read(data)?,
        )),
        other => Err(TrainError::Refused(format!(
            "{}: format {other:?} is neither conveyor.tokens nor conveyor.examples",
            path.display()
        ))),
    }
}

fn loader_config(
    cfg: &TrainConfig,
    data: &Path,
    shuffle: bool,
) -> Result<LoaderConfig, TrainError> {
    let input = match data_kind(data)? {
        DataKind::Tokens(_) => LoaderInput::Tokens(CorruptConfig::new(
            data.to_path_buf(),
            PathBuf::new(),
            cfg.inputs_length,
        )),
        DataKind::Examples(m) => {
            if m.settings.pack {
                return Err(TrainError::Refused(format!(
                    "{}: packed example shards are not supported by the trainer yet; write them without --pack",
                    data.display()
                )));
            }
            LoaderInput::Examples(data.to_path_buf())
        }
    };
    let mut l = LoaderConfig::new(input, cfg.batch_size);
    l.seed = cfg.seed;
    l.shuffle_buffer = if shuffle { cfg.shuffle_buffer } else { 0 };
    l.shuffle_shards = shuffle;
    Ok(l)
}

/// Batch tensors on `device`: (inputs, input mask, targets, target mask).
fn tensors(b: &Batch, device: Device) -> (Tensor, Tensor, Tensor, Tensor) {
    let ids = |v: &[u32], w: usize| {
        let v: Vec<i64> = v.iter().map(|&x| x as i64).collect();
        Tensor::from_slice(&v)
            .view([b.rows as i64, w as i64])
            .to(device)
    };
    let mask = |lens: &[u32], w: usize| {
        let l: Vec<i64> = lens.iter().map(|&x| x as i64).collect();
        let l = Tensor::from_slice(&l).to(device).unsqueeze(1);
        Tensor::arange(w as i64, (Kind::Int64, device))
            .unsqueeze(0)
            .lt_tensor(&l)
            .to_kind(Kind::Float)
    };
    (
        ids(&b.inputs, b.inputs_width),
        mask(&b.input_lengths, b.inputs_width),
        ids(&b.targets, b.targets_width),
        mask(&b.target_lengths, b.targets_width),
    )
}

/// The per-step seed of libtorch's generator.
fn step_seed(seed: u64, step: u64) -> i64 {
    (conveyor_pipeline::rng::mix64(seed ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> 1) as i64
}

/// Runs (or resumes) a training run.
pub fn train(cfg: &TrainConfig, progress: &dyn TrainProgress) -> Result<TrainSummary, TrainError> {
    let started = Instant::now();
    let vocab = data_vocab_size(&cfg.data)?;
    if vocab != cfg.model.vocab_size {
        return Err(TrainError::Refused(format!(
            "{} holds ids of a {vocab}-id vocabulary (pieces + 100 extra ids) but the model has {} embeddings",
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
    let io = |path: &Path, e: std::io::Error| TrainError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(&cfg.out).map_err(|e| io(&cfg.out, e))?;
    let existing = checkpoint::latest(&cfg.out);
    if existing.is_some() && !cfg.resume {
        return Err(TrainError::Refused(format!(
            "{} already holds a run; pass --resume to continue it, or choose another --out",
            cfg.out.display()
        )));
    }
    let mut vs = nn::VarStore::new(cfg.device);
    crate::seed_everything(cfg.seed);
    let model = Seq2Seq::new(&vs.root(), &cfg.model)?;
    if let (Some(init), None) = (&cfg.init, &existing) {
        let saved = checkpoint::read_config(init)?;
        if saved != cfg.model {
            return Err(TrainError::Refused(format!(
                "{} holds a {} model with another configuration than asked ({}); fine-tune with the same --arch, --preset and --config",
                init.display(),
                saved.arch.name(),
                cfg.model.arch.name()
            )));
        }
        vs.load(init.join("model.safetensors"))
            .map_err(|e| TrainError::Refused(format!("{}: {e}", init.display())))?;
        progress.note(&format!("starting from the weights of {}", init.display()));
    }
    if cfg.bf16 {
        vs.bfloat16();
    }
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut params: Vec<Tensor> = named.iter().map(|(_, t)| t.shallow_clone()).collect();
    let mut opt = Optimizer::new(cfg.optimizer, cfg.schedule, &params);
    let mut state = TrainerState {
        step: 0,
        loader: Default::default(),
        optimizer: cfg.optimizer,
        schedule: cfg.schedule,
        seed: cfg.seed,
        tokens_seen: 0,
        examples_seen: 0,
    };
    let mut loader_state = None;
    let mut resumed_from = None;
    if let Some(ckpt) = &existing {
        let (moments, saved) = checkpoint::load(ckpt, &mut vs, &cfg.model)?;
        let by_index: Vec<(String, Tensor)> = moments
            .into_iter()
            .filter_map(|(k, t)| {
                let (name, part) = k.rsplit_once(':')?;
                let i = named.iter().position(|(n, _)| n == name)?;
                Some((format!("{i}.{part}"), t.to(cfg.device)))
            })
            .collect();
        opt.load_moments(&by_index)
            .map_err(|m| TrainError::Refused(format!("{}: {m}", ckpt.display())))?;
        opt.step = saved.step;
        loader_state = Some(saved.loader);
        resumed_from = Some(saved.step);
        progress.note(&format!(
            "resuming from {} (step {})",
            ckpt.display(),
            saved.step
        ));
        state = saved;
    }
    let mut loader = Loader::resume(loader_config(cfg, &cfg.data, true)?, loader_state)?;
    // Metrics of steps after the checkpoint belong to the interrupted run: drop them.
    let metrics_path = cfg.out.join("metrics.jsonl");
    let kept: Vec<String> = std::fs::read_to_string(&metrics_path)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= state.step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&metrics_path, kept.concat()).map_err(|e| io(&metrics_path, e))?;
    let mut metrics = std::fs::OpenOptions::new()
        .append(true)
        .open(&metrics_path)
        .map_err(|e| io(&metrics_path, e))?;
    let run_info = serde_json::json!({
        "arch": cfg.model.arch.name(),
        "init": cfg.init.as_ref().map(|p| p.display().to_string()),
        "data": cfg.data.display().to_string(),
        "objective": match data_kind(&cfg.data)? {
            DataKind::Tokens(_) => "span_corruption (on the fly)".to_string(),
            DataKind::Examples(m) => m.settings.objective,
        },
        "parameters": cfg.model.parameter_count(),
    });
    if existing.is_none() {
        std::fs::write(
            cfg.out.join("run.json"),
            serde_json::to_string_pretty(&run_info).expect("json") + "\n",
        )
        .map_err(|e| io(&cfg.out, e))?;
    }
    std::fs::write(
        cfg.out.join("model_config.json"),
        serde_json::to_string_pretty(&cfg.model).expect("config serialises") + "\n",
    )
    .map_err(|e| io(&cfg.out, e))?;

    progress.start(state.step + 1, cfg.steps);
    let mut last_ckpt = existing.clone();
    let (mut final_loss, mut final_eval) = (None, None);
    let run_start = Instant::now();
    while state.step < cfg.steps {
        let t0 = Instant::now();
        let batch = match loader.next() {
            Some(b) => b?,
            None => break,
        };
        let step = state.step + 1;
        tch::manual_seed(step_seed(cfg.seed, step));
        let (x, xm, y, ym) = tensors(&batch, cfg.device);
        let lr = opt.next_lr();
        let loss = model.loss(&x, &xm, &y, &ym, true);
        let value = loss.double_value(&[]);
        if !value.is_finite() {
            return Err(TrainError::NonFinite {
                step,
                value,
                last: last_ckpt
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "none (no checkpoint was written yet)".into()),
            });
        }
        loss.backward();
        opt.step(&mut params);
        let tokens: u64 = batch
            .input_lengths
            .iter()
            .chain(&batch.target_lengths)
            .map(|&l| l as u64)
            .sum();
        let secs = t0.elapsed().as_secs_f64().max(1e-9);
        state.step = step;
        state.loader = batch.state;
        state.tokens_seen += tokens;
        state.examples_seen += batch.examples as u64;
        let eval_loss = if cfg.eval_every > 0 && step.is_multiple_of(cfg.eval_every) {
            cfg.eval_data
                .as_ref()
                .map(|d| evaluate(cfg, &model, d))
                .transpose()?
        } else {
            None
        };
        let m = StepMetrics {
            step,
            loss: value,
            lr,
            tokens_per_s: tokens as f64 / secs,
            examples_per_s: batch.examples as f64 / secs,
            eval_loss,
            elapsed_s: run_start.elapsed().as_secs_f64(),
            peak_gpu_mb: match cfg.device {
                tch::Device::Cuda(i) => {
                    crate::cuda::peak_memory(i).map(|p| p.allocated as f64 / 1048576.0)
                }
                _ => None,
            },
        };
        writeln!(
            metrics,
            "{}",
            serde_json::to_string(&m).expect("metrics serialise")
        )
        .map_err(|e| io(&metrics_path, e))?;
        progress.step(&m);
        final_loss = Some(value);
        if eval_loss.is_some() {
            final_eval = eval_loss;
        }
        if step.is_multiple_of(cfg.checkpoint_every.max(1)) || step == cfg.steps {
            let moments: Vec<(String, &Tensor)> = opt
                .named_moments()
                .into_iter()
                .map(|(k, t)| {
                    let (i, part) = k.split_once('.').expect("index.part");
                    let i: usize = i.parse().expect("index");
                    (format!("{}:{part}", named[i].0), t)
                })
                .collect();
            last_ckpt = Some(checkpoint::save(
                &cfg.out, &vs, &cfg.model, &moments, &state,
            )?);
        }
    }
    progress.finish();
    Ok(TrainSummary {
        out: cfg.out.clone(),
        steps: state.step,
        resumed_from,
        final_loss,
        final_eval_loss: final_eval,
        parameters: cfg.model.parameter_count(),
        checkpoint: last_ckpt,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Mean loss over the first `eval_batches` batches of `data` (no shuffling, no dropout).
fn evaluate(cfg: &TrainConfig, model: &Seq2Seq, data: &Path) -> Result<f64, TrainError> {
    let _guard = tch::no_grad_guard();
    let mut l = loader_config(cfg, data, false)?;
    l.epochs = Some(1);
    let mut total = 0.0;
    let mut n = 0usize;
    for b in Loader::new(l)?.take(cfg.eval_batches.max(1)) {
        let b = b?;
        let (x, xm, y, ym) = tensors(&b, cfg.device);
        total += model.loss(&x, &xm, &y, &ym, false).double_value(&[]);
        n += 1;
    }
    Ok(total / n.max(1) as f64)
}
