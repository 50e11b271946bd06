//! `conveyor model loss`: the token-weighted mean cross-entropy (and perplexity) of a
//! checkpoint on token shards (span-corrupted on the fly with the run's input length), example
//! shards or packed example shards, read in order without dropout.

use std::path::PathBuf;

use conveyor_pipeline::loader::Loader;
use serde::Serialize;
use tch::{nn, Device};

use super::data::{check_lengths, loader_config, tensors, Counts, ReadSpec};
use super::TrainError;
use crate::checkpoint;
use crate::seq2seq::Seq2Seq;

#[derive(Debug, Clone)]
pub struct LossConfig {
    /// A checkpoint folder (RUN/checkpoints/step-N).
    pub checkpoint: PathBuf,
    pub data: PathBuf,
    pub batch_size: usize,
    /// Stop after the batch that reaches this many examples.
    pub limit: Option<usize>,
    /// On-the-fly corruption length (default: the one the checkpoint's run trained with).
    pub inputs_length: Option<usize>,
    /// Pack examples into rows (example shards packed when written are read packed anyway).
    pub pack: bool,
    pub device: Device,
}

#[derive(Debug, Clone, Serialize)]
pub struct LossReport {
    pub checkpoint: PathBuf,
    pub data: PathBuf,
    pub examples: u64,
    pub target_tokens: u64,
    /// Mean cross-entropy per target token (nats).
    pub loss: f64,
    pub perplexity: f64,
    /// Real tokens over row slots.
    pub fill_rate: f64,
    pub inputs_length: usize,
}

/// The checkpoint's loss over `data` (every target token weighs the same).
pub fn dataset_loss(cfg: &LossConfig) -> Result<LossReport, TrainError> {
    let model_cfg = checkpoint::read_config(&cfg.checkpoint)?;
    let vocab = super::data_vocab_size(&cfg.data)?;
    checkpoint::check_vocab(
        &cfg.checkpoint,
        &cfg.data,
        &super::data::data_vocab_sha256(&cfg.data)?,
    )?;
    if !model_cfg.takes_vocab(vocab) {
        return Err(TrainError::Refused(format!(
            "{} holds ids of a {vocab}-id vocabulary but the checkpoint's model has {} embeddings",
            cfg.data.display(),
            model_cfg.vocab_size
        )));
    }
    let inputs_length = match cfg.inputs_length {
        Some(l) => l,
        None => checkpoint::read_state(&cfg.checkpoint)?
            .inputs_length
            .unwrap_or(512),
    };
    let spec = ReadSpec {
        batch_size: cfg.batch_size.max(1),
        inputs_length,
        pack: cfg.pack,
        seed: 0,
        shuffle_buffer: 0,
    };
    check_lengths(&model_cfg, &spec, &cfg.data)?;
    let mut vs = nn::VarStore::new(cfg.device);
    let model = Seq2Seq::new(&vs.root(), &model_cfg)?;
    crate::checkpoint::load_weights(&cfg.checkpoint, &mut vs)?;
    let mut l = loader_config(&spec, &cfg.data, false, 0, 1)?;
    l.epochs = Some(1);
    let _guard = tch::no_grad_guard();
    let (mut nll, mut counts) = (0.0, Counts::default());
    for b in Loader::new(l)? {
        let b = b?;
        nll += tensors(&b, cfg.device)
            .loss_sum(&model, false)
            .double_value(&[]);
        counts.add(&Counts::of(&b));
        if cfg.limit.is_some_and(|n| counts.examples >= n as f64) {
            break;
        }
    }
    let loss = nll / counts.target_tokens.max(1.0);
    Ok(LossReport {
        checkpoint: cfg.checkpoint.clone(),
        data: cfg.data.clone(),
        examples: counts.examples as u64,
        target_tokens: counts.target_tokens as u64,
        loss,
        perplexity: loss.exp(),
        fill_rate: counts.fill_rate(),
        inputs_length,
    })
}
