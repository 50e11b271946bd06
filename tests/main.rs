//! conveyor's end-to-end tests: each module runs the `conveyor` binaries as a user would, on
//! the project's fixtures and `../shared/data`. One test binary holds them all, so the
//! workspace is linked once; `cargo test --test e2e MODULE::` runs one module.

mod common;

mod bench;
mod checkpoints;
mod clean;
mod corrupt;
mod demo;
mod distributed;
mod finetune;
mod hf;
mod hostile;
mod ingest;
mod packing;
mod remote;
mod remote_s3;
mod study;
mod train;
mod vocab;
