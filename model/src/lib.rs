//! conveyor's model side on libtorch (tch): devices, seeding and, with the model issue, the
//! convolutional seq2seq models, the T5 baseline, Adafactor and the trainer.

pub mod checkpoint;
pub mod config;
pub mod conv;
pub mod cuda;
pub mod device;
pub mod dist;
pub mod hf;
pub mod layers;
pub mod optim;
pub mod peak;
pub mod predict;
pub mod seq2seq;
pub mod summary;
pub mod train;

pub use config::{Arch, AttentionImpl, ConfigError, Ffn, ModelConfig, PositionEmbedding};
pub use device::{describe, rank_gpu, seed_everything, select_device, DeviceChoice, DeviceError};
pub use seq2seq::Seq2Seq;

/// Tests that seed or draw from libtorch's global generator hold this, so that tests running
/// in parallel threads do not interleave their draws.
#[cfg(test)]
pub(crate) fn test_rng() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
