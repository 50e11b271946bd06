//! `RUN/run.json`: what a training run is — architecture, the checkpoint it started from,
//! data, objective, size, precision. The trainer (conveyor-model) writes it when a run starts;
//! reports (conveyor-tasks) read it to place the run's evaluations. It lives here, below
//! both, so that neither crate reads the other's files by untyped keys.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// `transformer`, `lightconv`, ...
    pub arch: String,
    /// The checkpoint the weights came from (`--init`); None when trained from scratch.
    pub init: Option<String>,
    /// The training data folder.
    pub data: String,
    /// `span_corruption (on the fly)`, `span_corruption` or `task:NAME`.
    pub objective: String,
    pub parameters: usize,
    /// `float32`, `bf16` (mixed) or `pure-bf16`.
    pub precision: String,
}

impl RunInfo {
    pub const FILE: &'static str = "run.json";

    /// Reads `RUN/run.json`.
    pub fn read(run: &Path) -> Result<RunInfo, Error> {
        let path = run.join(Self::FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Manifest {
            path,
            message: format!("not a conveyor run.json: {e}"),
        })
    }

    /// Writes `RUN/run.json`.
    pub fn write(&self, run: &Path) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(self).expect("run info serialises") + "\n";
        crate::manifest::write_atomic(&run.join(Self::FILE), text.as_bytes())
    }
}
