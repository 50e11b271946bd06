//! The dataset of (inputs, targets) examples: what span corruption (`conveyor corrupt`) and
//! task preparation (`conveyor task prepare`, in conveyor-tasks) write, and what the loader,
//! the trainer and eval read. [`manifest`] describes a dataset (its [`Objective`], lengths,
//! vocabulary and shards), [`writer`] writes its Parquet shards, and [`task_parts`] holds the
//! worker parts of a split task preparation and their merge.

pub mod manifest;
pub mod pack;
pub mod task_parts;
pub mod writer;

pub use pack::{PackedRow, Packer};

pub use manifest::{
    ExampleSettings, ExampleShardRecord, ExamplesManifest, Objective, TaskCounts, EXAMPLES_FORMAT,
    EXAMPLES_VERSION,
};
pub use writer::{example_schema, ExampleShardWriter, ANSWERS_COLUMN};

/// One example: token ids of the inputs and the targets (each ending in EOS), before packing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Example {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
}

/// The feature lengths of a dataset (and, for span corruption, the raw tokens per example).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lengths {
    /// Raw tokens per example before masking (span corruption; the input length for tasks).
    pub tokens_length: usize,
    /// Input feature length (EOS included).
    pub inputs_length: usize,
    /// Target feature length (EOS included).
    pub targets_length: usize,
}

/// How span corruption cuts documents into pieces (recorded in its manifest; the cutting
/// itself is `corrupt::stream`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Chunking {
    /// Longest chunk kept of a document (T5: 65,536).
    pub max_chunk: usize,
    /// Documents concatenated per group (T5: 128).
    pub group_docs: usize,
    /// Raw tokens per piece (`tokens_length`).
    pub piece: usize,
}

impl Chunking {
    pub const T5_MAX_CHUNK: usize = 65_536;
    pub const T5_GROUP_DOCS: usize = 128;
}
