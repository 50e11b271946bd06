//! conveyor's data pipeline: corpus sources, the SentencePiece tokenizer, Parquet token
//! shards with manifests, and the restartable, thread-count-independent ingest job.
//! Nothing here depends on libtorch.

pub mod clean;
pub mod contain;
pub mod corrupt;
pub mod error;
pub mod examples;
pub mod ingest;
pub mod loader;
pub mod lock;
pub mod manifest;
pub mod merge;
pub mod outdir;
pub mod progress;
pub mod remote;
pub mod rng;
pub mod shard;
pub mod source;
pub mod spm;
pub mod tokenize;
pub mod vocab;
pub mod workers;

pub use error::{Error, Result};
