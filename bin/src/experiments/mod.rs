//! Experiments: everything that chains conveyor's commands into a result. The study runner
//! (a grid from a TOML file, resumable cell by cell), the demo (a study file it writes for
//! generated fixtures and runs with that same runner) and the reports. The libtorch steps run
//! through `conveyor-torch`, as a user would run them.

mod cell;
pub mod demo;
mod folder;
mod precheck;
mod progress;
mod reference;
pub mod report;
pub mod study;
mod study_file;
