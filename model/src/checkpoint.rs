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

pub fn checkpoints_dir(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

/// The checkpoint `latest` points to, if any. The pointer is data: only a name conveyor
/// writes (`step-` and eight digits) is followed, so an edited or hostile `latest` never
/// leads outside `checkpoints/`.
pub fn latest(run: &Path) -> Option<PathBuf> {
    let dir = checkpoints_dir(run);
    let name = std::fs::read_to_string(dir.join("latest")).ok()?;
    let name = name.trim();
    let digits = name.strip_prefix("step-")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let p = dir.join(name);
    p.join("trainer_state.json").exists().then_some(p)
}

/// Writes a checkpoint of `vs`, the optimiser moments and `state`; returns its folder.
pub fn save(
    run: &Path,
    vs: &nn::VarStore,
    cfg: &ModelConfig,
    moments: &[(String, &Tensor)],
    state: &TrainerState,
) -> Result<PathBuf, CheckpointError> {
    let dir = checkpoints_dir(run);
    let name = format!("step-{:08}", state.step);
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    write_files(&tmp, vs, cfg, moments, state)?;
    let target = dir.join(&name);
    let _ = std::fs::remove_dir_all(&target);
    std::fs::rename(&tmp, &target).map_err(|e| io(&target, e))?;
    let pointer = dir.join("latest");
    let pointer_tmp = dir.join(".latest.tmp");
    std::fs::write(&pointer_tmp, &name).map_err(|e| io(&pointer_tmp, e))?;
    std::fs::rename(&pointer_tmp, &pointer).map_err(|e| io(&pointer, e))?;
    Ok(target)
}

/// Writes the files of a checkpoint into the new folder `dir`: weights, moments, config, and
/// the trainer state with the others' sums.
pub fn write_files(
    dir: &Path,
    vs: &nn::VarStore,
    cfg: &ModelConfig,
    moments: &[(String, &Tensor)],
    state: &TrainerState,
) -> Result<(), CheckpointError> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    vs.save(dir.join("model.safetensors"))
        .map_err(|e| io(dir, e))?;
    Tensor::write_safetensors(moments, dir.join("optimizer.safetensors"))
        .map_err(|e| io(dir, e))?;
    let json = |v: &dyn erased::Json| v.to_json();
    std::fs::write(dir.join("model_config.json"), json(cfg)).map_err(|e| io(dir, e))?;
    let mut state = state.clone();
    for name in SUMMED {
        let path = dir.join(name);
        let bytes = std::fs::metadata(&path).map_err(|e| io(&path, e))?.len();
        let sha256 = conveyor_pipeline::shard::file_sha256(&path).map_err(|e| io(&path, e))?;
        state
            .files
            .insert(name.to_string(), FileSum { bytes, sha256 });
    }
    std::fs::write(dir.join("trainer_state.json"), json(&state)).map_err(|e| io(dir, e))
}

/// Reads a checkpoint's model config.
pub fn read_config(ckpt: &Path) -> Result<ModelConfig, CheckpointError> {
    let p = ckpt.join("model_config.json");
    let text = std::fs::read_to_string(&p).map_err(|e| io(&p, e))?;
    serde_json::from_str(&text).map_err(|e| io(&p, e))
}

/// Reads a checkpoint's trainer state.
pub fn read_state(ckpt: &Path) -> Result<TrainerState, CheckpointError> {
    let p = ckpt.join("trainer_state.json");
    let text = std::fs::read_to_string(&p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => damaged(
            &p,
            "is missing: this is not a finished conveyor checkpoint".into(),
        ),
        _ => io(&p, e),
    })?;
    serde_json::from_str(&text)
        .map_err(|e| damaged(&p, format!("is not a readable trainer state ({e})")))
}

/// A checkpoint that cannot be used as it is, with what to do.
fn damaged(path: &Path, what: String) -> CheckpointError {
    CheckpointError::Damaged {
        path: path.to_path_buf(),
        message: format!(
            "{what}; use another checkpoint (an earlier step-* folder) or copy this one again"
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
        let path = conveyor_pipeline::contain::join(ckpt, &name, &ckpt.join("trainer_state.json"))
            .map_err(|e| io(ckpt, e))?;
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

/// Checks the checkpoint ([`verify`]) and loads its weights into `vs` (whose model has the
/// checkpoint's config), refusing weights that are not finite.
pub fn load_weights(ckpt: &Path, vs: &mut nn::VarStore) -> Result<(), CheckpointError> {
    verify(ckpt)?;
    let path = ckpt.join("model.safetensors");
    if !path.exists() {
        return Err(damaged(&path, "is missing".into()));
    }
    vs.load(&path).map_err(|e| {
        damaged(
            &path,
            format!("cannot be read as this model's weights ({e})"),
        )
    })?;
    let _guard = tch::no_grad_guard();
    for (name, t) in vs.variables() {
        if !bool::try_from(t.isfinite().all()).unwrap_or(false) {
            return Err(damaged(&path, format!("holds non-finite values in {name}")));
        }
    }
    Ok(())
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
                if saved.position_embedding != cfg.position_embedding {
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
    load_weights(ckpt, vs)?;
    let opt = ckpt.join("optimizer.safetensors");
    let moments = Tensor::read_safetensors(&opt)
        .map_err(|e| damaged(&opt, format!("cannot be read ({e})")))?;
    Ok((moments, read_state(ckpt)?))
}

mod erased {
    /// Pretty JSON of anything serialisable, for the small files of a checkpoint.
    pub trait Json {
        fn to_json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> String {
            serde_json::to_string_pretty(self).expect("serialisable") + "\n"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_follows_only_checkpoint_names() {
        let run = std::env::temp_dir().join(format!("conveyor-latest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run);
        let dir = checkpoints_dir(&run);
        for d in ["step-00000007", "../outside"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
            std::fs::write(dir.join(d).join("trainer_state.json"), "{}").unwrap();
        }
        std::fs::write(dir.join("latest"), "step-00000007\n").unwrap();
        assert_eq!(latest(&run), Some(dir.join("step-00000007")));
        for hostile in ["../outside", "/etc", "step-0000007/../../outside"] {
            std::fs::write(dir.join("latest"), hostile).unwrap();
            assert_eq!(latest(&run), None, "{hostile}");
        }
        std::fs::remove_dir_all(&run).unwrap();
    }
}
