//! Hugging Face interop: a `T5ForConditionalGeneration` folder (config.json + safetensors) to
//! a conveyor checkpoint folder (`conveyor model import-hf`) and a conveyor checkpoint to a
//! folder transformers loads (`conveyor model export-hf`). Convolutional models export in
//! the same folder layout with conveyor's own tensor names and settings (docs/formats.md).
//! Weights are float32 in conveyor; bfloat16 and float16 files are widened on import.

mod config;
mod files;
mod names;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use conveyor_pipeline::tokenize::EXTRA_IDS;
use tch::{nn, Device, Kind, Tensor};

pub use config::{from_hf, to_hf, CONVEYOR_MODEL_TYPE};
pub use names::to_hf as hf_name;

use crate::checkpoint::{self, CheckpointError, TrainerState};
use crate::config::{ConfigError, ModelConfig};
use crate::optim::{OptimizerKind, Schedule};
use crate::seq2seq::Seq2Seq;

#[derive(Debug, thiserror::Error)]
pub enum HfError {
    #[error("{0}")]
    Refused(String),
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

fn io(path: &Path, e: impl std::fmt::Display) -> HfError {
    HfError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// For the parity tests (the environment itself has transformers 4): the folder
/// scripts/setup.sh installs transformers 5 into, to put first on PYTHONPATH —
/// `CONVEYOR_TRANSFORMERS5` (the Makefile sets it), else `transformers5` in the environment
/// of `CONVEYOR_PYTHON`; `None` where that folder holds no transformers.
#[doc(hidden)]
pub fn transformers5_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("CONVEYOR_TRANSFORMERS5")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // The environment's bin/python is a link: `..` of it would be resolved from
            // where it points.
            let python = PathBuf::from(
                std::env::var("CONVEYOR_PYTHON").unwrap_or_else(|_| "python3".into()),
            );
            let env = python.parent().and_then(Path::parent);
            env.unwrap_or(Path::new(".")).join("transformers5")
        });
    dir.join("transformers").is_dir().then_some(dir)
}

/// The conveyor configuration of a Hugging Face folder's `config.json`. From the config
/// alone: a config transformers 5 wrote does not say whether the weight files hold a head of
/// their own, and reads as tied ([`load`] looks at the files).
pub fn read_config(dir: &Path) -> Result<ModelConfig, HfError> {
    read_config_file(&dir.join("config.json"))
}

/// The conveyor configuration of a Hugging Face `config.json` file.
pub fn read_config_file(path: &Path) -> Result<ModelConfig, HfError> {
    from_hf(&read_json(path)?, path)
}

fn read_json(path: &Path) -> Result<serde_json::Value, HfError> {
    files::regular(path, conveyor_pipeline::regular::MAX_JSON_BYTES)?;
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    serde_json::from_str(&text).map_err(|e| io(path, e))
}

/// A model built from a Hugging Face folder: its configuration and weights, on the CPU.
pub struct Imported {
    pub config: ModelConfig,
    pub vs: nn::VarStore,
    pub model: Seq2Seq,
}

/// Reads a Hugging Face folder into a conveyor model, checking every tensor's name and
/// shape; tensors the model has no place for are refused by name.
pub fn load(dir: &Path) -> Result<Imported, HfError> {
    let path = dir.join("config.json");
    let v = read_json(&path)?;
    let mut config = from_hf(&v, &path)?;
    let mut weights = files::read_weights(dir)?;
    // Files that hold the stacks' copies of the embedding and not `shared.weight` (some
    // savers keep only those): transformers ties the copies to it and loads them.
    if !weights.contains_key("shared.weight") {
        let copy = names::TIED_COPIES.iter().find_map(|n| weights.get(*n));
        if let Some(t) = copy.map(Tensor::shallow_clone) {
            weights.insert("shared.weight".into(), t);
        }
    }
    config::separate_head(&v, &mut config, &weights);
    // Before any allocation: a config.json asking for far more than its files hold is
    // refused here, not by the allocator; a few tensors short is left to `fill`, which
    // names them.
    let held: usize = weights.values().map(|t| t.numel()).sum();
    if config.parameter_count() > held.saturating_mul(2) {
        return Err(HfError::Refused(format!(
            "{}: config.json implies {} parameters, over twice the {held} values its weight files hold: a config of another model?",
            dir.display(),
            config.parameter_count()
        )));
    }
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Seq2Seq::new(&vs.root(), &config)?;
    fill(&vs, &config, &mut weights, dir)?;
    Ok(Imported { config, vs, model })
}

/// Copies `weights` (transformers' names) into the variables of `vs`.
fn fill(
    vs: &nn::VarStore,
    cfg: &ModelConfig,
    weights: &mut BTreeMap<String, Tensor>,
    dir: &Path,
) -> Result<(), HfError> {
    let refuse = |m: String| HfError::Refused(format!("{}: {m}", dir.display()));
    let _guard = tch::no_grad_guard();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (ours, mut var) in vars {
        // Folders conveyor exported for its conv models keep conveyor's names.
        let theirs = if cfg.arch.is_conv() {
            ours.clone()
        } else {
            names::to_hf(&ours).expect("every transformer variable has a T5 name")
        };
        let t = weights.remove(&theirs).ok_or_else(|| {
            refuse(format!(
                "has no tensor {theirs}, which its config.json implies (a weight file missing, or a config of another model?)"
            ))
        })?;
        match crate::checkpoint::fits(&t, &var) {
            Err(crate::checkpoint::Misfit::Shape) => {
                return Err(refuse(format!(
                    "{theirs} has shape {:?}, its config.json implies {:?}",
                    t.size(),
                    var.size()
                )))
            }
            Err(crate::checkpoint::Misfit::Kind) => {
                return Err(refuse(format!(
                    "{theirs} holds {:?} values, not floating point weights (F32, F16, BF16, F64): a damaged or foreign file",
                    t.kind()
                )))
            }
            Ok(()) => {}
        }
        let t = t.to_kind(Kind::Float);
        if !bool::try_from(t.isfinite().all()).unwrap_or(false) {
            return Err(refuse(format!("{theirs} holds values that are not finite")));
        }
        var.copy_(&t);
    }
    let shared = vs.variables()["shared.weight"].shallow_clone();
    let mut copies: Vec<&str> = names::TIED_COPIES.to_vec();
    if cfg.tie_embeddings {
        copies.push("lm_head.weight");
    }
    for name in copies {
        if let Some(t) = weights.remove(name) {
            if !t.to_kind(Kind::Float).equal(&shared) {
                return Err(refuse(format!(
                    "{name} differs from shared.weight, which the model ties it to"
                )));
            }
        }
    }
    for name in names::IGNORED {
        weights.remove(name);
    }
    if !weights.is_empty() {
        let left: Vec<&str> = weights.keys().take(5).map(String::as_str).collect();
        return Err(refuse(format!(
            "holds {} tensors a {} model of its config.json has no place for: {}{}",
            weights.len(),
            cfg.arch.name(),
            left.join(", "),
            if weights.len() > 5 { ", ..." } else { "" }
        )));
    }
    Ok(())
}

/// `conveyor model import-hf`: writes the folder `out` (new, or empty) as a conveyor
/// checkpoint at step 0 that `finetune --init`, `eval` and `model loss` take.
pub fn import(dir: &Path, out: &Path) -> Result<ModelConfig, HfError> {
    let m = load(dir)?;
    let state = initial_state();
    write_new(out, |tmp| {
        checkpoint::write_files(tmp, &m.vs, &m.config, &[], &state).map_err(HfError::from)
    })?;
    Ok(m.config)
}

/// The trainer state of a checkpoint no training wrote: step 0, nothing seen.
pub fn initial_state() -> TrainerState {
    TrainerState {
        step: 0,
        loader: Default::default(),
        optimizer: OptimizerKind::adafactor(),
        schedule: Schedule::Constant { lr: 1e-3 },
        seed: 0,
        tokens_seen: 0,
        examples_seen: 0,
        world_size: 1,
        accumulate: 1,
        batch_size: 0,
        loaders: Vec::new(),
        inputs_length: None,
        precision: None,
        cuda_graph: None,
        z_loss: 0.0,
        vocab_sha256: None,
        files: Default::default(),
    }
}

/// `conveyor model export-hf`: the checkpoint as a folder transformers loads
/// (`T5ForConditionalGeneration.from_pretrained`), with the tokenizer files when `vocab`
/// (a SentencePiece model) is given; conv models in the same layout with conveyor's names.
pub fn export(ckpt: &Path, out: &Path, vocab: Option<&Path>) -> Result<ModelConfig, HfError> {
    let cfg = checkpoint::read_config(ckpt)?;
    let hf_config = to_hf(&cfg)?;
    let tokenizer = vocab.map(|v| tokenizer_files(v, ckpt, &cfg)).transpose()?;
    let mut vs = nn::VarStore::new(Device::Cpu);
    let _model = Seq2Seq::new(&vs.root(), &cfg)?;
    checkpoint::load_weights(ckpt, &mut vs)?;
    let mut tensors: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(name, t)| match cfg.arch.is_conv() {
            true => (name, t),
            false => (names::to_hf(&name).expect("a T5 name"), t),
        })
        .collect();
    if !cfg.arch.is_conv() {
        config::t5_head(&cfg, &mut tensors);
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    write_new(out, |tmp| {
        let json = |name: &str, v: &serde_json::Value| {
            let p = tmp.join(name);
            std::fs::write(&p, serde_json::to_string_pretty(v).expect("json") + "\n")
                .map_err(|e| io(&p, e))
        };
        json("config.json", &hf_config)?;
        json(
            "generation_config.json",
            &serde_json::json!({
                "decoder_start_token_id": cfg.decoder_start_id,
                "eos_token_id": 1,
                "pad_token_id": cfg.pad_id,
            }),
        )?;
        files::write_weights(&tmp.join("model.safetensors"), &tensors)?;
        if let (Some(vocab), Some(files)) = (vocab, &tokenizer) {
            let spm = tmp.join("spiece.model");
            std::fs::copy(vocab, &spm).map_err(|e| io(&spm, e))?;
            for (name, v) in files {
                json(name, v)?;
            }
        }
        Ok(())
    })?;
    Ok(cfg)
}

/// `tokenizer_config.json` and `special_tokens_map.json` for `T5Tokenizer`, after checking
/// that the vocabulary is the one the checkpoint's data was made with (where it recorded
/// it) and fits the model's embedding.
fn tokenizer_files(
    vocab: &Path,
    ckpt: &Path,
    cfg: &ModelConfig,
) -> Result<Vec<(&'static str, serde_json::Value)>, HfError> {
    let spm = conveyor_pipeline::tokenize::spm::SpmModel::open(vocab).map_err(|e| io(vocab, e))?;
    use conveyor_pipeline::tokenize::Tokenizer;
    // Another vocabulary of the same size passed the size check: its tokenizer would turn
    // text into ids that stand for other pieces in this model.
    if let Some(t) = checkpoint::other_vocab(ckpt, &spm.vocab().sha256) {
        return Err(HfError::Refused(format!(
            "{}: the checkpoint was trained on data of another vocabulary (sha256 {t}…; this file's is {}…): export with the vocabulary the model was trained with",
            vocab.display(),
            checkpoint::short_sha(&spm.vocab().sha256)
        )));
    }
    let pieces = spm.vocab().len();
    if !cfg.takes_vocab(pieces + EXTRA_IDS) {
        return Err(HfError::Refused(format!(
            "{}: {pieces} pieces + {EXTRA_IDS} extra ids do not fit the model's {} embedding rows (the same count, or padded to a multiple of 128): export with the vocabulary the model was trained with",
            vocab.display(),
            cfg.vocab_size
        )));
    }
    // The exported config says T5's ids (EOS 1, the model's padding id) and T5Tokenizer finds
    // `</s>` and `<pad>` by name: a vocabulary of SentencePiece's layout (`<unk>` 0, `<s>` 1,
    // `</s>` 2, no `<pad>`) would make generate() stop at `<s>` and pad with `<unk>`.
    let (eos, pad) = (spm.vocab().eos_id, spm.vocab().pad_id);
    if eos != Some(1) || pad.map(i64::from) != Some(cfg.pad_id) {
        let id = |i: Option<u32>| i.map_or("none".to_string(), |i| i.to_string());
        return Err(HfError::Refused(format!(
            "{}: its </s> is id {} and its <pad> id {}, where a T5 export has </s> 1 and <pad> {} (the model's): a vocabulary trained with --layout spm cannot be exported as T5's; export without --vocab and give transformers a tokenizer of those ids yourself",
            vocab.display(),
            id(eos),
            id(pad),
            cfg.pad_id
        )));
    }
    let special =
        serde_json::json!({"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"});
    let mut config = special.clone();
    config["tokenizer_class"] = "T5Tokenizer".into();
    config["extra_ids"] = EXTRA_IDS.into();
    config["model_max_length"] = 512.into();
    Ok(vec![
        ("tokenizer_config.json", config),
        ("special_tokens_map.json", special),
    ])
}

/// Writes a new folder `out` through `write` into a temporary sibling, then puts it in place
/// ([`place`]): `out` must not exist, or be an empty folder (nothing of the user's is
/// removed or overwritten).
fn write_new(out: &Path, write: impl FnOnce(&Path) -> Result<(), HfError>) -> Result<(), HfError> {
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .map_err(|e| io(out, e))?
            .next()
            .is_none();
        if !empty {
            return Err(HfError::Refused(format!(
                "{}: exists and is not empty: give --out a new folder",
                out.display()
            )));
        }
    }
    let name = out
        .file_name()
        .ok_or_else(|| io(out, "names no folder"))?
        .to_string_lossy();
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
    let parent = parent.unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    let tmp = parent.join(format!(".{name}.conveyor-tmp"));
    if tmp.exists() {
        return Err(HfError::Refused(format!(
            "{}: exists: an earlier import or export was interrupted; remove it and run again",
            tmp.display()
        )));
    }
    std::fs::create_dir(&tmp).map_err(|e| io(&tmp, e))?;
    // Only what this call created and wrote is removed when it fails.
    let result = write(&tmp).and_then(|()| place(&tmp, out));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Puts the written folder `tmp` at `out`: renamed into place when `out` is new; moved file
/// by file into an empty `out` (renaming over it would replace the user's folder, its
/// permissions and owner with it).
fn place(tmp: &Path, out: &Path) -> Result<(), HfError> {
    if !out.exists() {
        return std::fs::rename(tmp, out).map_err(|e| io(out, e));
    }
    let mut names: Vec<_> = std::fs::read_dir(tmp)
        .map_err(|e| io(tmp, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| io(tmp, e))?;
    names.sort();
    for name in names {
        std::fs::rename(tmp.join(&name), out.join(&name)).map_err(|e| io(out, e))?;
    }
    std::fs::remove_dir(tmp).map_err(|e| io(tmp, e))
}

#[cfg(test)]
mod tests;
