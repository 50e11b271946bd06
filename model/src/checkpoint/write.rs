//! Writing checkpoints: into a temporary folder, synced, renamed into place, then named by
//! `checkpoints/latest`; folders written again, and old ones past `--keep-checkpoints`, are
//! removed only when they hold nothing but checkpoint files.

use std::path::{Path, PathBuf};

use tch::{nn, Tensor};

use super::{checkpoints_dir, io, latest, step_of, CheckpointError, FileSum, TrainerState, SUMMED};
use crate::config::ModelConfig;

/// Removes a checkpoint folder a save is about to write again (the temporary folder of a
/// killed save, or a step written after the checkpoint resumed from), only when it holds
/// nothing but checkpoint files: anything else in it (a user's file, an evaluation) is named
/// and left, and the save fails.
pub(super) fn remove_checkpoint_folder(dir: &Path) -> Result<(), CheckpointError> {
    // A link in a checkpoint folder's place is not followed: the files of its target would
    // go, and the save would write through it.
    match std::fs::symlink_metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Err(CheckpointError::Mismatch {
                path: dir.to_path_buf(),
                message: "a checkpoint is to be written here, but a link or file has the name; move it away and rerun".into(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        _ => {}
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(dir, e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io(dir, e))?;
        let name = entry.file_name();
        let ours = name
            .to_str()
            .is_some_and(|n| SUMMED.contains(&n) || n == "trainer_state.json")
            && entry.file_type().is_ok_and(|t| t.is_file());
        if !ours {
            return Err(CheckpointError::Mismatch {
                path: dir.to_path_buf(),
                message: format!(
                    "a checkpoint is to be written here again, but the folder holds {}, which is not a checkpoint file conveyor wrote; move it away and rerun",
                    name.to_string_lossy()
                ),
            });
        }
        files.push(entry.path());
    }
    for f in files {
        std::fs::remove_file(&f).map_err(|e| io(&f, e))?;
    }
    std::fs::remove_dir(dir).map_err(|e| io(dir, e))
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
    remove_checkpoint_folder(&tmp)?;
    write_files(&tmp, vs, cfg, moments, state)?;
    let target = dir.join(&name);
    remove_checkpoint_folder(&target)?;
    std::fs::rename(&tmp, &target).map_err(|e| io(&target, e))?;
    // On disk before the pointer names it, and the pointer before the save returns: a crash
    // of the machine (not only of the process) leaves `latest` naming a whole checkpoint.
    sync_folder(&dir)?;
    let pointer = dir.join("latest");
    conveyor_pipeline::manifest::write_atomic(&pointer, name.as_bytes())
        .map_err(|e| io(&pointer, e))?;
    sync_folder(&dir)?;
    Ok(target)
}

/// Makes a folder's entries (files created or renamed in it) durable.
fn sync_folder(dir: &Path) -> Result<(), CheckpointError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(dir, e))
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
    std::fs::write(dir.join("trainer_state.json"), json(&state)).map_err(|e| io(dir, e))?;
    for name in SUMMED.iter().chain(["trainer_state.json"].iter()) {
        let path = dir.join(name);
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| io(&path, e))?;
    }
    sync_folder(dir)
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

/// `--keep-checkpoints`: removes the step folders of `run` older than its `keep` newest up to
/// `step` (the one just saved; later ones belong to a future a resume abandoned, and are
/// written again), never the one `latest` names, never a link, and never a folder holding
/// anything but checkpoint files: those are returned with why, for the trainer to say.
pub fn keep_latest(
    run: &Path,
    keep: usize,
    step: u64,
) -> Result<Vec<(PathBuf, String)>, CheckpointError> {
    let dir = checkpoints_dir(run);
    let named = latest(run)?;
    let mut steps: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
        let entry = entry.map_err(|e| io(&dir, e))?;
        let name = entry.file_name();
        let n = name.to_str().and_then(step_of);
        // The entry's own type: a link to a folder is not one of ours.
        let folder = entry.file_type().is_ok_and(|t| t.is_dir());
        if let Some(n) = n.filter(|&n| n <= step && folder) {
            steps.push((n, entry.path()));
        }
    }
    steps.sort();
    let old = steps.len().saturating_sub(keep.max(1));
    let mut left = Vec::new();
    for (_, path) in steps.into_iter().take(old) {
        if named.as_deref() == Some(path.as_path()) {
            continue;
        }
        if !path.join("trainer_state.json").is_file() {
            left.push((path, "it is not a finished checkpoint".to_string()));
        } else if let Err(e) = remove_checkpoint_folder(&path) {
            left.push((path, e.to_string()));
        }
    }
    Ok(left)
}
