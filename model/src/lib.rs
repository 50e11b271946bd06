//! conveyor's model side on libtorch (tch): devices, seeding and, with the model issue, the
//! convolutional seq2seq models, the T5 baseline, Adafactor and the trainer.

pub mod device;

pub use device::{describe, seed_everything, select_device, DeviceChoice, DeviceError};
