//! `RUN/run.json`: what a training run is — architecture, the checkpoint it started from,
//! data, objective, size, precision. The trainer (conveyor-model) writes it when a run starts;
//! reports (conveyor-tasks) read it to place the run's evaluations. It lives here, below
//! both, so that neither crate reads the other's files by untyped keys.
//!
//! `RUN/diverged.json`: written by the trainer when the loss stops being finite, so that a
//! study can tell a run that diverged (a result: that learning rate is too high) from one
//! that failed (an error to fix).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Fields in the order earlier versions wrote them; all but `arch` default, so `run.json`
/// files from before a field existed still read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// `transformer`, `lightconv`, ...
    pub arch: String,
    /// The training data folder.
    #[serde(default)]
    pub data: String,
    /// The checkpoint the weights came from (`--init`); None when trained from scratch.
    #[serde(default)]
    pub init: Option<String>,
    /// `span_corruption (on the fly)`, `span_corruption` or `task:NAME`.
    #[serde(default)]
    pub objective: String,
    #[serde(default)]
    pub parameters: usize,
    /// `float32`, `bf16` (mixed) or `pure-bf16`; `float32` in runs from before the field.
    #[serde(default = "float32")]
    pub precision: String,
    /// The run's seed (runs from before the field: none).
    #[serde(default)]
    pub seed: Option<u64>,
}

fn float32() -> String {
    "float32".into()
}

impl RunInfo {
    pub const FILE: &'static str = "run.json";

    /// Reads `RUN/run.json`.
    pub fn read(run: &Path) -> Result<RunInfo, Error> {
        let path = run.join(Self::FILE);
        let text = crate::regular::read_to_string(&path, crate::regular::MAX_JSON_BYTES)
            .map_err(|e| Error::io(&path, e))?;
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

/// A run whose loss, or whose weights after an update, stopped being finite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diverged {
    /// The step whose loss (or update) was not finite.
    pub step: u64,
    /// That loss as text (`NaN`, `inf`: JSON has no number for them), or, with `weights`,
    /// the step's loss, which was finite.
    pub loss: String,
    /// The first variable the step's update left non-finite, when the loss was finite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
}

impl Diverged {
    /// What went non-finite, for a line or a table cell: `loss NaN`, or `loss 2.3, then
    /// NAME non-finite`.
    pub fn describe(&self) -> String {
        match &self.weights {
            None => format!("loss {}", self.loss),
            Some(name) => format!("loss {}, then {name} non-finite", self.loss),
        }
    }

    pub const FILE: &'static str = "diverged.json";

    /// `RUN/diverged.json`, if the run diverged; a file that is not one reads as an error.
    pub fn read(run: &Path) -> Result<Option<Diverged>, Error> {
        let path = run.join(Self::FILE);
        let text = match crate::regular::read_to_string(&path, crate::regular::MAX_JSON_BYTES) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Manifest {
                path,
                message: format!(
                    "not a conveyor diverged.json ({e}); move or remove it, it is not conveyor's"
                ),
            })
    }

    /// Writes `RUN/diverged.json`.
    pub fn write(&self, run: &Path) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(self).expect("a divergence serialises") + "\n";
        crate::manifest::write_atomic(&run.join(Self::FILE), text.as_bytes())
    }

    /// Removes `RUN/diverged.json` when it is a conveyor record (a run that starts again).
    pub fn clear(run: &Path) -> Result<(), Error> {
        if Self::read(run)?.is_some() {
            let path = run.join(Self::FILE);
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_files_of_earlier_versions_read() {
        let old: RunInfo = serde_json::from_str(r#"{"arch": "lightconv", "init": null}"#).unwrap();
        assert_eq!(
            (old.arch.as_str(), old.init, old.precision.as_str()),
            ("lightconv", None, "float32")
        );
        let info = RunInfo {
            arch: "transformer".into(),
            data: "d".into(),
            init: Some("c".into()),
            objective: "task:sst2".into(),
            parameters: 7,
            precision: "bf16".into(),
            seed: Some(3),
        };
        let text = serde_json::to_string(&info).unwrap();
        assert_eq!(
            text,
            r#"{"arch":"transformer","data":"d","init":"c","objective":"task:sst2","parameters":7,"precision":"bf16","seed":3}"#
        );
        assert_eq!(serde_json::from_str::<RunInfo>(&text).unwrap(), info);
    }

    #[test]
    fn a_divergence_is_recorded_read_and_cleared() {
        let dir = std::env::temp_dir().join(format!("conveyor-diverged-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(Diverged::read(&dir).unwrap(), None);
        let d = Diverged {
            step: 4,
            loss: "NaN".into(),
            weights: None,
        };
        d.write(&dir).unwrap();
        assert_eq!(Diverged::read(&dir).unwrap(), Some(d));
        Diverged::clear(&dir).unwrap();
        assert!(!dir.join(Diverged::FILE).exists());
        // A file of that name that conveyor did not write is an error, and is kept.
        std::fs::write(dir.join(Diverged::FILE), "my notes").unwrap();
        assert!(Diverged::read(&dir).is_err());
        assert!(Diverged::clear(&dir).is_err());
        assert!(dir.join(Diverged::FILE).exists());
        // A FIFO of that name (a read would wait forever) is named, not read.
        std::fs::remove_file(dir.join(Diverged::FILE)).unwrap();
        let fifo = std::process::Command::new("mkfifo")
            .arg(dir.join(Diverged::FILE))
            .status()
            .unwrap();
        assert!(fifo.success());
        let err = Diverged::read(&dir).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
