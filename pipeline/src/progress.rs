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

/// A duration for progress lines: "42 s", "12 min", "3.5 h".
pub fn human_duration(secs: f64) -> String {
    if secs < 90.0 {
        format!("{secs:.0} s")
    } else if secs < 5400.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::human_duration;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(42.4), "42 s");
        assert_eq!(human_duration(720.0), "12 min");
        assert_eq!(human_duration(12_600.0), "3.5 h");
    }
}
