//! Checkpoints: `RUN/checkpoints/step-XXXXXXXX/` with `model.safetensors` (the variables by
//! name), `model_config.json`, `optimizer.safetensors` (moments by parameter name) and
//! `trainer_state.json` (step, loader state, schedule, optimiser). A checkpoint is written
//! into a temporary folder and renamed, then `RUN/checkpoints/latest` is replaced atomically,
//! so a kill never leaves a half-written checkpoint in use.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

use crate::config::ModelConfig;
use crate::optim::{OptimizerKind, Schedule};

mod weights;
mod write;

pub use weights::load_weights;
pub(crate) use weights::{fits, Misfit};
#[cfg(test)]
use write::remove_checkpoint_folder;
pub use write::{keep_latest, save, write_files};

/// What the trainer needs besides the tensors to continue exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub step: u64,
    pub loader: conveyor_pipeline::loader::LoaderState,
    pub optimizer: OptimizerKind,
    pub schedule: Schedule,
    /// The seed every step's dropout generator is derived from (with the step).
    pub seed: u64,
    pub tokens_seen: u64,
    pub examples_seen: u64,
    /// Processes that trained (1 for checkpoints from before data parallelism).
    #[serde(default = "one")]
    pub world_size: usize,
    /// Micro-batches per optimiser step on each rank.
    #[serde(default = "one_u64")]
    pub accumulate: u64,
    /// Rows per micro-batch on each rank (0: not recorded).
    #[serde(default)]
    pub batch_size: usize,
    /// Every rank's loader state, in rank order (`loader` is rank 0's).
    #[serde(default)]
    pub loaders: Vec<conveyor_pipeline::loader::LoaderState>,
    /// Input length of on-the-fly span corruption (token shards), for `model loss`.
    #[serde(default)]
    pub inputs_length: Option<usize>,
    /// The training precision (None in checkpoints from before it was recorded, and in
    /// imported models): a resume in another one would not repeat the uninterrupted run.
    #[serde(default)]
    pub precision: Option<crate::train::Precision>,
    /// Whether steps ran as a CUDA graph (with several micro-batches per step its dropout
    /// seeds differ from eager steps').
    #[serde(default)]
    pub cuda_graph: Option<bool>,
    /// The z-loss coefficient the run trained with (0 in checkpoints from before it).
    #[serde(default)]
    pub z_loss: f64,
    /// sha256 of the SentencePiece model of the data the run trained on (None in checkpoints
    /// from before it was recorded, and in imported ones): data of another vocabulary of the
    /// same size is refused by `--init`, `eval` and `model loss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_sha256: Option<String>,
    /// Size and sha256 of every other file of the checkpoint, checked before it is used
    /// (empty in checkpoints from before the sums, which are not checked).
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, FileSum>,
}

/// A checkpoint file's size and sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    pub bytes: u64,
    pub sha256: String,
}

/// The files a checkpoint's sums cover.
const SUMMED: [&str; 3] = [
    "model.safetensors",
    "optimizer.safetensors",
    "model_config.json",
];

fn one() -> usize {
    1
}

fn one_u64() -> u64 {
    1
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Mismatch { path: PathBuf, message: String },
    #[error("{path} {message}")]
    Damaged { path: PathBuf, message: String },
}

fn io(path: &Path, e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The step of a checkpoint folder's name as conveyor writes it (`step-` and eight digits).
fn step_of(name: &str) -> Option<u64> {
    name.strip_prefix("step-")
        .filter(|d| d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse().ok())
}

pub fn checkpoints_dir(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

/// The checkpoint `latest` points to; None when there is no pointer (no checkpoint finished
/// yet). The pointer is data: only a name conveyor writes (`step-` and eight digits) is
/// followed, so an edited or hostile `latest` never leads outside `checkpoints/`; one that
/// names nothing usable is an error saying so, never a silent start from step 0.
pub fn latest(run: &Path) -> Result<Option<PathBuf>, CheckpointError> {
    let dir = checkpoints_dir(run);
    let pointer = dir.join("latest");
    // A pointer is one short line: a FIFO or device in its place is named, not read.
    let text = match conveyor_pipeline::regular::read(&pointer, 4096) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Without the pointer, finished checkpoints would be written over by a run
            // starting again from step 0 (with whatever flags it was given).
            return match newest_finished(&dir) {
                None => Ok(None),
                Some(name) => Err(CheckpointError::Damaged {
                    path: pointer,
                    message: format!(
                        "is missing, but {} holds finished checkpoints (the newest: {name}): write the name of the step-* folder to resume from into it, or choose another --out",
                        dir.display()
                    ),
                }),
            };
        }
        Err(e) => return Err(io(&pointer, e)),
    };
    let text = String::from_utf8_lossy(&text);
    let name = text.trim();
    let what = if step_of(name).is_none() {
        let shown: String = name.chars().take(40).collect();
        format!("does not name a checkpoint folder (step- and eight digits): it holds {shown:?}")
    } else if !dir.join(name).join("trainer_state.json").is_file() {
        format!("names {name}, which is not a finished checkpoint (no {name}/trainer_state.json)")
    } else {
        return Ok(Some(dir.join(name)));
    };
    Err(CheckpointError::Damaged {
        path: pointer,
        message: format!(
            "{what}; write the name of the step-* folder to resume from into it, or choose another --out"
        ),
    })
}

/// Refuses `data` (whose vocabulary's sha256 is `data_sha256`) for a checkpoint that
/// recorded another vocabulary: the ids would mean other pieces, and a vocabulary of the
/// same size passed every other check.
pub fn check_vocab(ckpt: &Path, data: &Path, data_sha256: &str) -> Result<(), CheckpointError> {
    let Some(trained) = other_vocab(ckpt, data_sha256) else {
        return Ok(());
    };
    Err(CheckpointError::Mismatch {
        path: ckpt.to_path_buf(),
        message: format!(
            "was trained on data of the vocabulary {trained}…, and {} was made with another one, {}… (of the same size or not): its ids stand for other pieces; use data made with the checkpoint's vocabulary",
            data.display(),
            short_sha(data_sha256)
        ),
    })
}

/// The (shortened) sha256 of the vocabulary the checkpoint's data was made with, when it
/// recorded one other than `sha256`.
pub fn other_vocab(ckpt: &Path, sha256: &str) -> Option<String> {
    let trained = read_state(ckpt).ok()?.vocab_sha256?;
    (trained != sha256).then(|| short_sha(&trained))
}

/// A sha256 for messages: its first 12 characters.
pub fn short_sha(s: &str) -> String {
    s.chars().take(12).collect()
}

/// The newest `step-*` folder of `dir` that holds its `trainer_state.json` (written last).
fn newest_finished(dir: &Path) -> Option<String> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| step_of(n).is_some() && dir.join(n).join("trainer_state.json").is_file())
        .max()
}

/// Reads a checkpoint's model config, checked against its weights before anything is
/// built from it: a shape that cannot work, or more parameters than `model.safetensors`
/// holds values (an edited or mismatched config), is refused here, not by the allocator.
pub fn read_config(ckpt: &Path) -> Result<ModelConfig, CheckpointError> {
    if !ckpt.is_dir() {
        return Err(CheckpointError::Mismatch {
            path: ckpt.to_path_buf(),
            message: format!(
                "{}: give a checkpoint folder (RUN/checkpoints/step-NNNNNNNN)",
                if ckpt.exists() {
                    "is not a folder"
                } else {
                    "does not exist"
                }
            ),
        });
    }
    // A run folder holds a model_config.json too, but no weights: named as what it is.
    if ckpt.join("checkpoints").is_dir() && !ckpt.join("model.safetensors").exists() {
        let latest = latest(ckpt).ok().flatten();
        return Err(CheckpointError::Mismatch {
            path: ckpt.to_path_buf(),
            message: format!(
                "is a training run's folder, not a checkpoint: pass one of its checkpoints, such as {}",
                latest.unwrap_or_else(|| checkpoints_dir(ckpt).join("step-NNNNNNNN")).display()
            ),
        });
    }
    let p = ckpt.join("model_config.json");
    readable(&p, conveyor_pipeline::regular::MAX_JSON_BYTES)?;
    let text = std::fs::read_to_string(&p).map_err(|e| io(&p, e))?;
    let cfg: ModelConfig = serde_json::from_str(&text).map_err(|e| io(&p, e))?;
    cfg.validate()
        .map_err(|e| damaged(&p, format!("is not a usable model ({e})")))?;
    let weights = ckpt.join("model.safetensors");
    let held = safetensors_values(&weights)?;
    // Far more than the file holds (an edited config): refused before any allocation. A
    // few tensors short (one dropped or cut) is left to the load, which names them.
    if cfg.parameter_count() as u128 > held.saturating_mul(2) {
        return Err(damaged(
            &p,
            format!(
                "implies {} parameters, over twice the {held} values {} holds: the config of another model?",
                cfg.parameter_count(),
                weights.display()
            ),
        ));
    }
    Ok(cfg)
}

/// How many values a safetensors file's tensors hold, from its header alone (nothing
/// else is read or allocated).
fn safetensors_values(path: &Path) -> Result<u128, CheckpointError> {
    use std::io::Read;
    let unreadable = |why: String| damaged(path, format!("cannot be read as safetensors ({why})"));
    readable(path, u64::MAX)?;
    let mut f = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => damaged(path, "is missing".into()),
        _ => io(path, e),
    })?;
    let len = f.metadata().map_err(|e| io(path, e))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|_| unreadable(format!("{len} bytes, no header")))?;
    let n = u64::from_le_bytes(n);
    if n > (len - 8).min(100 << 20) {
        return Err(unreadable(format!(
            "a header of {n} bytes in a file of {len}"
        )));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| unreadable(e.to_string()))?;
    let v: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| unreadable(format!("header: {e}")))?;
    let tensors = v
        .as_object()
        .ok_or_else(|| unreadable("the header is not a JSON object".into()))?;
    let mut total = 0u128;
    for (name, t) in tensors.iter().filter(|(k, _)| *k != "__metadata__") {
        // Integer tensors would be cast to floats of their bit patterns' values.
        if !matches!(t["dtype"].as_str(), Some("F32" | "F16" | "BF16" | "F64")) {
            return Err(unreadable(format!(
                "{name} holds {} values, not floating point weights",
                t["dtype"]
            )));
        }
        let dims = t["shape"]
            .as_array()
            .ok_or_else(|| unreadable(format!("{name} has no shape")))?;
        let mut values = 1u128;
        for d in dims {
            let d = d
                .as_u64()
                .ok_or_else(|| unreadable(format!("{name} has a shape of non-integers")))?;
            values = values.saturating_mul(u128::from(d));
        }
        total = total.saturating_add(values);
    }
    // Every value takes at least a byte: a header claiming more than the file holds lies.
    let data = u128::from(len - 8 - n);
    if total > data {
        return Err(unreadable(format!(
            "its header lists {total} values, more than its {data} bytes of data"
        )));
    }
    Ok(total)
}

/// Reads a checkpoint's trainer state.
pub fn read_state(ckpt: &Path) -> Result<TrainerState, CheckpointError> {
    let p = ckpt.join("trainer_state.json");
    if !p.exists() {
        return Err(damaged(
            &p,
            "is missing: this is not a finished conveyor checkpoint".into(),
        ));
    }
    readable(&p, conveyor_pipeline::regular::MAX_JSON_BYTES)?;
    let text = std::fs::read_to_string(&p).map_err(|e| io(&p, e))?;
    let state: TrainerState = serde_json::from_str(&text)
        .map_err(|e| damaged(&p, format!("is not a readable trainer state ({e})")))?;
    // A step folder's state is of its own step (an edited one said 2^63 and the run ended
    // at once, reporting success).
    // (Only in a run's checkpoints/ folder: an imported model may sit in any folder.)
    let in_run = ckpt
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|p| p == "checkpoints");
    let named = ckpt
        .file_name()
        .and_then(|n| n.to_str()?.strip_prefix("step-")?.parse::<u64>().ok())
        .filter(|_| in_run);
    if let Some(n) = named.filter(|&n| n != state.step) {
        return Err(damaged(
            &p,
            format!("says step {}, its folder is step {n}", state.step),
        ));
    }
    Ok(state)
}

/// A checkpoint file that is a FIFO, a device or absurdly large is named, not read.
fn readable(path: &Path, max: u64) -> Result<(), CheckpointError> {
    match conveyor_pipeline::regular::refusal(path, max) {
        Ok(None) => Ok(()),
        Ok(Some(why)) => Err(damaged(path, why)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(damaged(path, "is missing".into()))
        }
        Err(e) => Err(io(path, e)),
    }
}

/// A checkpoint that cannot be used as it is, with what to do.
fn damaged(path: &Path, what: String) -> CheckpointError {
    CheckpointError::Damaged {
        path: path.to_path_buf(),
        message: format!(
            "{what}; use another checkpoint (an earlier step-* folder: to resume from it, write its name into checkpoints/latest) or copy this one again"
        ),
    }
}

/// Checks every file the trainer state lists (size, then sha256) before any is used, so a
/// truncated, damaged or replaced file is named instead of loaded as garbage weights.
/// A folder without a trainer state (weights exported by other tools) is not checked here;
/// [`load_weights`] still refuses weights that are not finite.
pub fn verify(ckpt: &Path) -> Result<(), CheckpointError> {
    if !ckpt.join("trainer_state.json").exists() {
        return Ok(());
    }
    let files = read_state(ckpt)?.files;
    if let Some(name) = SUMMED
        .iter()
        .find(|n| !files.is_empty() && !files.contains_key(**n))
    {
        return Err(damaged(
            &ckpt.join("trainer_state.json"),
            format!("lists sums for some files but not for {name}"),
        ));
    }
    for (name, sum) in files {
        // Only a checkpoint's own files: a sum of another name (/dev/zero's, a FIFO's) would
        // have the check read forever.
        if !SUMMED.contains(&name.as_str()) {
            return Err(damaged(
                &ckpt.join("trainer_state.json"),
                format!(
                    "lists a sum for {}, which is not a checkpoint file ({})",
                    conveyor_pipeline::printable::one_line(&name),
                    SUMMED.join(", ")
                ),
            ));
        }
        let path = ckpt.join(&name);
        readable(&path, u64::MAX)?;
        let meta = std::fs::metadata(&path).map_err(|_| damaged(&path, "is missing".into()))?;
        if meta.len() != sum.bytes {
            return Err(damaged(
                &path,
                format!(
                    "has {} bytes, the trainer state says {} (truncated?)",
                    meta.len(),
                    sum.bytes
                ),
            ));
        }
        let got = conveyor_pipeline::shard::file_sha256(&path).map_err(|e| io(&path, e))?;
        if got != sum.sha256 {
            return Err(damaged(
                &path,
                format!(
                    "has sha256 {got}, the trainer state says {}: the file is damaged",
                    sum.sha256
                ),
            ));
        }
    }
    Ok(())
}

/// The first variable (by name) holding a NaN or an infinity, if any.
pub fn non_finite(vs: &nn::VarStore) -> Option<String> {
    let _guard = tch::no_grad_guard();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars.into_iter()
        .find(|(_, t)| !bool::try_from(t.isfinite().all()).unwrap_or(false))
        .map(|(name, _)| name)
}

/// Loads weights into `vs` (whose model must have the checkpoint's config), and returns the
/// optimiser moments and trainer state.
pub fn load(
    ckpt: &Path,
    vs: &mut nn::VarStore,
    cfg: &ModelConfig,
) -> Result<(Vec<(String, Tensor)>, TrainerState), CheckpointError> {
    let saved = read_config(ckpt)?;
    if !cfg.same_weights(&saved) {
        return Err(CheckpointError::Mismatch {
            path: ckpt.to_path_buf(),
            message: format!(
                "the checkpoint is a {} model with another configuration than this run's {} model; use a run folder of the same architecture and settings{}",
                saved.arch.name(),
                cfg.arch.name(),
                if saved.arch == cfg.arch && saved.position_embedding != cfg.position_embedding {
                    format!(
                        " (the checkpoint has position_embedding {:?}, this run {:?}; configs written before that field existed read as none: pass --config with {{\"position_embedding\": \"none\"}} to continue them)",
                        saved.position_embedding, cfg.position_embedding
                    )
                } else {
                    String::new()
                }
            ),
        });
    }
    // A resumed run continues the run: the dropout rates too (--init may change them).
    if (saved.dropout, saved.weight_dropout) != (cfg.dropout, cfg.weight_dropout) {
        return Err(CheckpointError::Mismatch {
            path: ckpt.to_path_buf(),
            message: format!(
                "the run trained with dropout {} and weight_dropout {}, this one asks for {} and {}: resume with the run's (leave out --arch and --config to take them from the checkpoint), or start a new --out with --init to change them",
                saved.dropout, saved.weight_dropout, cfg.dropout, cfg.weight_dropout
            ),
        });
    }
    load_weights(ckpt, vs)?;
    let opt = ckpt.join("optimizer.safetensors");
    let moments = Tensor::read_safetensors(&opt)
        .map_err(|e| damaged(&opt, format!("cannot be read ({e})")))?;
    Ok((moments, read_state(ckpt)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_follows_only_checkpoint_names() {
        let run = std::env::temp_dir().join(format!("conveyor-latest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run);
        let dir = checkpoints_dir(&run);
        assert!(latest(&run).unwrap().is_none(), "no pointer: no checkpoint");
        for d in ["step-00000007", "../outside"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
            std::fs::write(dir.join(d).join("trainer_state.json"), "{}").unwrap();
        }
        std::fs::write(dir.join("latest"), "step-00000007\n").unwrap();
        assert_eq!(latest(&run).unwrap(), Some(dir.join("step-00000007")));
        // Hostile, empty or dangling pointers are named, never followed nor read as "none".
        for bad in [
            "../outside",
            "/etc",
            "step-0000007/../../outside",
            "",
            "step-00000009",
        ] {
            std::fs::write(dir.join("latest"), bad).unwrap();
            let e = latest(&run).unwrap_err().to_string();
            assert!(
                e.contains("checkpoints/latest") && e.contains("step-* folder"),
                "{bad}: {e}"
            );
        }
        std::fs::remove_dir_all(&run).unwrap();
    }

    /// A safetensors header claiming more values than its file has bytes is refused (an
    /// edited header would otherwise pass the config check and reach the allocator).
    #[test]
    fn a_header_claiming_more_than_its_bytes_is_refused() {
        let p =
            std::env::temp_dir().join(format!("conveyor-st-{}.safetensors", std::process::id()));
        let header = br#"{"w":{"dtype":"F32","shape":[1000000,1000],"data_offsets":[0,16]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0u8; 16]);
        std::fs::write(&p, &bytes).unwrap();
        let e = safetensors_values(&p).unwrap_err().to_string();
        assert!(e.contains("more than its 16 bytes"), "{e}");
        std::fs::remove_file(&p).unwrap();
    }

    /// Weights a tensor short (one dropped) pass the count check, so that the load names the
    /// tensor (the count message named none); a config asking for over twice the values
    /// is still refused before anything is built.
    #[test]
    fn a_dropped_tensor_is_named_and_a_far_larger_config_refused() {
        let dir = std::env::temp_dir().join(format!("conveyor-short-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = ModelConfig::preset(crate::Arch::Transformer, "tiny", 512).unwrap();
        let vs = nn::VarStore::new(tch::Device::Cpu);
        crate::Seq2Seq::new(&vs.root(), &cfg).unwrap();
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let dropped = named.remove(named.len() / 2).0;
        Tensor::write_safetensors(&named, dir.join("model.safetensors")).unwrap();
        std::fs::write(
            dir.join("model_config.json"),
            serde_json::to_string(&cfg).unwrap(),
        )
        .unwrap();
        assert!(read_config(&dir).is_ok());
        let mut target = nn::VarStore::new(tch::Device::Cpu);
        crate::Seq2Seq::new(&target.root(), &cfg).unwrap();
        let e = weights::load_weights(&dir, &mut target)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&dropped), "{e}");
        let mut big = cfg.clone();
        big.d_ff *= 10;
        std::fs::write(
            dir.join("model_config.json"),
            serde_json::to_string(&big).unwrap(),
        )
        .unwrap();
        let e = read_config(&dir).unwrap_err().to_string();
        assert!(e.contains("over twice"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A save replaces a folder of its own name only when it holds checkpoint files alone.
    #[test]
    fn a_save_removes_only_checkpoint_files() {
        let root = std::env::temp_dir().join(format!("conveyor-rmckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let ours = root.join("step-00000002");
        std::fs::create_dir_all(&ours).unwrap();
        for f in ["model.safetensors", "trainer_state.json"] {
            std::fs::write(ours.join(f), "x").unwrap();
        }
        remove_checkpoint_folder(&ours).unwrap();
        assert!(!ours.exists());
        remove_checkpoint_folder(&ours).unwrap();
        for foreign in ["thesis.tex", "eval-sst2"] {
            let mixed = root.join("step-00000004");
            std::fs::create_dir_all(&mixed).unwrap();
            std::fs::write(mixed.join("model.safetensors"), "x").unwrap();
            match foreign.starts_with("eval") {
                true => std::fs::create_dir_all(mixed.join(foreign)).unwrap(),
                false => std::fs::write(mixed.join(foreign), "mine").unwrap(),
            }
            let e = remove_checkpoint_folder(&mixed).unwrap_err().to_string();
            assert!(e.contains(foreign) && e.contains("move it away"), "{e}");
            assert!(mixed.join(foreign).exists() && mixed.join("model.safetensors").exists());
            std::fs::remove_dir_all(&mixed).unwrap();
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
