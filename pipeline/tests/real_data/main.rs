//! The pipeline on real data (`../shared/data`): the loader on the C4 sample and the native
//! SentencePiece encoder against the library. One test binary, so the crate links once.

mod loader;
mod spm_parity;
