//! How long-running jobs report progress. The library only calls this trait; the CLI decides
//! between a progress bar on a terminal and plain log lines.

pub trait Progress: Send + Sync {
    /// The job starts with `total_bytes` of input to read.
    fn start(&self, total_bytes: u64);
    /// More input was read and turned into documents and tokens.
    fn advance(&self, bytes: u64, documents: u64, tokens: u64);
    /// A line worth telling the user (a skipped file, a resumed job).
    fn note(&self, message: &str);
    fn finish(&self);
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64, _: u64, _: u64) {}
    fn note(&self, _: &str) {}
    fn finish(&self) {}
}
