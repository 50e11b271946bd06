//! conveyor's data pipeline: corpus sources, the SentencePiece tokenizer, Parquet token
//! shards with manifests, and the restartable, thread-count-independent ingest job.
//! Nothing here depends on libtorch.

pub mod clean;
pub mod contain;
pub mod corrupt;
pub mod error;
pub mod examples;
pub mod ingest;
pub mod job;
pub mod loader;
pub mod manifest;
pub mod merge;
pub mod printable;
pub mod progress;
pub mod record;
pub mod regular;
pub mod remote;
pub mod rng;
pub mod run_info;
pub mod run_lock;
pub mod shard;
pub mod source;
pub mod tokenize;
pub mod vocab;

pub use error::{Error, Result};
