//! The pipeline's error type: every variant names the file (and line or shard) involved and
//! says what the user can do about it.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The OS error is part of the message and not a `source`, so that printing the error
    /// chain shows it once.
    #[error("{}: {error}", crate::printable::path(path))]
    Io { path: PathBuf, error: io::Error },

    #[error("{}: not a usable SentencePiece model: {reason}. Pass a .model file written by SentencePiece training, e.g. the T5 vocabulary.", crate::printable::path(path))]
    Vocab { path: PathBuf, reason: String },

    #[error("input {0} does not exist (pass files, directories, glob patterns or URLs)")]
    MissingInput(String),

    #[error("{}: unsupported input type; expected .json.gz, .jsonl.gz, .jsonl, .json, .jsonl.zst, .json.zst, .warc.wet(.gz|.zst), .parquet or .txt", crate::printable::path(path))]
    UnsupportedInput { path: PathBuf },

    #[error("no input files found in {0}")]
    NoInputs(String),

    #[error("{}: {message}", crate::printable::path(path))]
    Parquet { path: PathBuf, message: String },

    #[error("{}: {message}", crate::printable::path(path))]
    OutputDir { path: PathBuf, message: String },

    /// `path` holds the finished output of another job: other inputs or settings, or the same
    /// ones under an earlier version whose output differs.
    #[error("{}: holds the output of a different job (job {found}, this one is {job}); pass --overwrite to replace it or choose another --out", crate::printable::path(path))]
    OtherJob {
        path: PathBuf,
        found: String,
        job: String,
    },

    /// `path` holds the unfinished work of another job.
    #[error("{}: holds an unfinished different job ({found}, this one is {job}); rerun that job's command to finish it, or pass --overwrite", crate::printable::path(path))]
    OtherUnfinishedJob {
        path: PathBuf,
        found: String,
        job: String,
    },

    #[error(
        "{}:{line}: {message} (stopping because of --strict)",
        crate::printable::path(path)
    )]
    Strict {
        path: PathBuf,
        line: u64,
        message: String,
    },

    #[error("{}: {message}", crate::printable::path(path))]
    Manifest { path: PathBuf, message: String },

    #[error("{}: shard check failed: {message}", crate::printable::path(path))]
    Verify { path: PathBuf, message: String },

    #[error(
        "{}: {message}; fix or remove this input and rerun",
        crate::printable::path(path)
    )]
    Unreadable { path: PathBuf, message: String },

    #[error("{url}: {message}")]
    Remote { url: String, message: String },

    #[error("no input could be read, so nothing was written: {listed}; fix them and {rerun} (every input is read again)")]
    NoInputRead { listed: String, rerun: &'static str },

    #[error("SentencePiece training failed: {0}")]
    Trainer(String),

    #[error("{origin}: {what} {value:?} is refused: {why}. conveyor only reads and writes plain names inside their folder; fix the value (or re-create the file with conveyor)")]
    Unsafe {
        origin: String,
        what: &'static str,
        value: String,
        why: String,
    },

    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    /// [`Error::NoInputRead`] for `failed` (each `INPUT: message`): the first three are
    /// named, and how many more.
    pub(crate) fn no_input_read(mut failed: Vec<String>, rerun: &'static str) -> Self {
        let more = failed.len().saturating_sub(3);
        failed.truncate(3);
        if more > 0 {
            failed.push(format!("and {more} more"));
        }
        Error::NoInputRead {
            listed: failed.join("; "),
            rerun,
        }
    }

    pub fn io(path: &Path, error: io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            error,
        }
    }

    pub fn parquet(path: &Path, e: impl std::fmt::Display) -> Self {
        Error::Parquet {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
