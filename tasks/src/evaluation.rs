//! What one evaluation leaves behind: `metrics.json`, written by `conveyor eval` and read by
//! the report and the study runner through this one type.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::read::io_error;
use crate::{Scores, TaskError};

/// The contents of an evaluation folder's `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    /// The task the data was prepared for.
    pub task: String,
    /// The checkpoint evaluated (RUN/checkpoints/step-N).
    pub checkpoint: PathBuf,
    /// The prepared examples it was evaluated on.
    #[serde(default)]
    pub data: PathBuf,
    pub scores: Scores,
    /// The per-example predictions file.
    #[serde(default)]
    pub predictions: PathBuf,
    /// The checkpoint's run as its `run.json` said when it was evaluated (absent in
    /// evaluations from before the field, and of checkpoints outside a run folder): the
    /// report reads it here, so that it needs neither the run folder nor the working folder
    /// the evaluation ran from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<conveyor_pipeline::run_info::RunInfo>,
}

impl EvalSummary {
    /// Its file name inside an evaluation folder.
    pub const FILE: &'static str = "metrics.json";

    /// Reads a `metrics.json` file.
    pub fn read(path: &Path) -> Result<EvalSummary, TaskError> {
        let text = conveyor_pipeline::regular::read_to_string(
            path,
            conveyor_pipeline::regular::MAX_JSON_BYTES,
        )
        .map_err(|e| io_error(path, e))?;
        serde_json::from_str(&text).map_err(|e| {
            io_error(
                path,
                format!("{e}: not a metrics.json written by `conveyor eval`"),
            )
        })
    }

    /// Writes it as `DIR/metrics.json`, whole (through a temporary file): a kill never
    /// leaves half a file.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, TaskError> {
        let path = dir.join(Self::FILE);
        let text = serde_json::to_string_pretty(self).map_err(|e| io_error(&path, e))? + "\n";
        conveyor_pipeline::manifest::write_atomic(&path, text.as_bytes())
            .map_err(|e| io_error(&path, e))?;
        Ok(path)
    }

    /// The run folder its checkpoint belongs to (RUN of RUN/checkpoints/step-N); None for a
    /// checkpoint outside a run's checkpoints/ (an imported model).
    pub fn run_dir(&self) -> Option<PathBuf> {
        run_dir_of(&self.checkpoint).map(Path::to_path_buf)
    }
}

/// The run folder a checkpoint belongs to: RUN of RUN/checkpoints/step-N; none for a
/// checkpoint elsewhere (an imported model's folder: its grandparent's run.json, say the
/// working folder's, is another run's or another tool's).
pub fn run_dir_of(checkpoint: &Path) -> Option<&Path> {
    let folder = checkpoint.parent()?;
    match folder.file_name()? == "checkpoints" {
        true => folder.parent(),
        false => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_checkpoints_folder_makes_a_run() {
        let run = |p: &str| run_dir_of(Path::new(p)).map(Path::to_path_buf);
        assert_eq!(
            run("out/runs/a/checkpoints/step-00000004"),
            Some(PathBuf::from("out/runs/a"))
        );
        assert_eq!(run("checkpoints/step-00000004"), Some(PathBuf::new()));
        // An imported model two folders down from a run.json of something else.
        assert_eq!(run("models/t5"), None);
        assert_eq!(run("t5"), None);
    }
}
