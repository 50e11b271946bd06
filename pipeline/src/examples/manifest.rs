//! `manifest.json` of an example directory: where the examples come from (the token
//! directory's job and vocabulary), the exact settings, and every shard with its checksum.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Chunking, Lengths};
use crate::error::Error;
use crate::manifest::{write_atomic, VocabInfo};

pub const EXAMPLES_FORMAT: &str = "conveyor.examples";
pub const EXAMPLES_VERSION: u32 = 1;

/// What made a dataset's examples; written as `span_corruption` or `task:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Objective {
    /// T5 span corruption of token shards (the settings' span fields are set).
    SpanCorruption,
    /// A text-to-text task's examples, by task name (no span fields).
    Task(String),
}

impl Objective {
    /// The task's name, for a task's examples.
    pub fn task(&self) -> Option<&str> {
        match self {
            Objective::Task(name) => Some(name),
            Objective::SpanCorruption => None,
        }
    }
}

impl std::fmt::Display for Objective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Objective::SpanCorruption => f.write_str("span_corruption"),
            Objective::Task(name) => write!(f, "task:{name}"),
        }
    }
}

impl From<Objective> for String {
    fn from(o: Objective) -> String {
        o.to_string()
    }
}

impl TryFrom<String> for Objective {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.strip_prefix("task:") {
            _ if s == "span_corruption" => Ok(Objective::SpanCorruption),
            Some(name) if !name.is_empty() => Ok(Objective::Task(name.to_string())),
            _ => Err(format!(
                "objective {s:?} is neither span_corruption nor task:NAME"
            )),
        }
    }
}

/// Everything that decides the examples: the objective, the lengths, the span settings
/// (span corruption only) and the vocabulary's ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExampleSettings {
    pub objective: Objective,
    #[serde(flatten)]
    pub lengths: Lengths,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_density: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_span_length: Option<f64>,
    pub seed: u64,
    pub epoch: u64,
    pub pack: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunking: Option<Chunking>,
    /// SentencePiece pieces + extra ids; the first sentinel is `vocab_size - 1`.
    pub vocab_size: u32,
    pub extra_ids: u32,
    pub eos_id: u32,
    pub split: String,
    pub token_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExampleShardRecord {
    pub file: String,
    /// Rows (examples, or packed rows).
    pub rows: u64,
    pub examples: u64,
    /// Tokens in inputs and targets, padding excluded.
    pub tokens: u64,
    pub bytes: u64,
    pub sha256: String,
    /// The token shard the examples come from, and its documents.
    pub source_shard: String,
    pub source_documents: u64,
    pub source_tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExamplesManifest {
    pub format: String,
    pub version: u32,
    pub created_by: String,
    pub job: String,
    /// The token directory's path and job id.
    pub source: String,
    pub source_job: String,
    pub vocab: VocabInfo,
    pub settings: ExampleSettings,
    pub shards: Vec<ExampleShardRecord>,
    pub examples: u64,
    pub rows: u64,
    pub tokens: u64,
    pub source_tokens: u64,
    /// For task examples: rows read, examples written, skipped and truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskCounts>,
}

/// What preparing a task's examples counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCounts {
    pub name: String,
    pub inputs: Vec<String>,
    pub read: u64,
    pub written: u64,
    pub skipped: u64,
    /// Rows left out on purpose, by reason (e.g. neutral tweets).
    pub excluded: std::collections::BTreeMap<String, u64>,
    pub truncated_inputs: u64,
    pub truncated_targets: u64,
    /// sha256 over the task file's settings and every input's bytes (None in folders
    /// prepared before it was recorded): a rerun on edited inputs is refused, not "already
    /// complete".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contents_sha256: Option<String>,
    /// sha256 of the task file's settings (None for a built-in task, and in folders
    /// prepared before it was recorded): `eval` scores with that definition only, not with
    /// an edited file's labels and metric, nor with a built-in task of the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition_sha256: Option<String>,
    /// Examples whose target text the vocabulary cannot give back (decoding its ids is
    /// another text: a character it lacks, spacing it normalises): never predicted right.
    #[serde(default)]
    pub unreachable_targets: u64,
    /// The first such target and what it decodes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_example: Option<String>,
    /// Skipped rows, first ones, with file:line and reason.
    pub problems: Vec<String>,
}

impl crate::manifest::Versioned for ExamplesManifest {
    const FORMAT: &'static str = EXAMPLES_FORMAT;
    const VERSION: u32 = EXAMPLES_VERSION;
    const WHAT: &'static str = "conveyor example manifest";
    const FOLDER: &'static str = "example shards, as corrupt or task prepare write them";

    fn format_version(&self) -> (&str, u32) {
        (&self.format, self.version)
    }

    fn check_names(&self, source: &Path) -> Result<(), Error> {
        ExamplesManifest::check_names(self, source)
    }
}

impl ExamplesManifest {
    pub const FILE: &'static str = "manifest.json";

    /// Reads `DIR/manifest.json`.
    pub fn read(dir: &Path) -> Result<Self, Error> {
        crate::manifest::read_versioned(dir)
    }

    /// Refuses a split or shard name (read from `source`) that is not a plain name.
    pub fn check_names(&self, source: &Path) -> Result<(), Error> {
        let files = self.shards.iter().map(|s| s.file.as_str());
        crate::manifest::check_names(&self.settings.split, files, source)
    }

    pub fn write(&self, dir: &Path) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(self).expect("manifest serialises") + "\n";
        write_atomic(&dir.join(Self::FILE), text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objectives_read_and_write_as_their_strings() {
        for (o, s) in [
            (Objective::SpanCorruption, "\"span_corruption\""),
            (Objective::Task("sst2".into()), "\"task:sst2\""),
        ] {
            assert_eq!(serde_json::to_string(&o).unwrap(), s);
            assert_eq!(serde_json::from_str::<Objective>(s).unwrap(), o);
        }
        for bad in ["\"task:\"", "\"lm\"", "\"\""] {
            assert!(serde_json::from_str::<Objective>(bad).is_err(), "{bad}");
        }
    }
}
