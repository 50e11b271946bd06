//! What every job that writes a dataset shares (ingest, corrupt, clean, task prepare): the
//! output folder rules and `--overwrite` ([`outdir`]), the lock a running job holds on its
//! folder ([`lock`]), the split of a job among workers with their parts ([`workers`]), and the
//! checked moves that join them ([`moves`]). Joining the parts is `crate::merge`, above the job
//! kinds it dispatches to.

pub mod lock;
pub mod moves;
pub mod outdir;
pub mod workers;

/// Where the parts of a split job are written, inside the output folder.
pub const PARTS_DIR: &str = "parts";

/// A kind of job: the name of its work folder inside the output folder, and the format of
/// the manifest its finished output has (what its `--overwrite` may replace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobKind {
    pub work: &'static str,
    pub format: &'static str,
}
