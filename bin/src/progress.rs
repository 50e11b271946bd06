//! Progress reporting for the CLI: a bar on a terminal, plain log lines otherwise.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use conveyor_pipeline::progress::Progress;
use indicatif::{ProgressBar, ProgressStyle};

pub struct CliProgress {
    bar: Option<ProgressBar>,
    total: AtomicU64,
    bytes: AtomicU64,
    docs: AtomicU64,
    tokens: AtomicU64,
    started: Instant,
    last_log: Mutex<Instant>,
    quiet: bool,
}

impl CliProgress {
    pub fn new(quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                )
                .expect("valid template"),
            );
            b
        });
        Self {
            bar,
            total: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            docs: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            started: Instant::now(),
            last_log: Mutex::new(Instant::now()),
            quiet,
        }
    }

    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let bytes = self.bytes.load(Ordering::Relaxed);
        format!(
            "{:.1}/{:.1} MB read, {} documents, {} tokens, {:.1} MB/s",
            bytes as f64 / 1e6,
            self.total.load(Ordering::Relaxed) as f64 / 1e6,
            self.docs.load(Ordering::Relaxed),
            self.tokens.load(Ordering::Relaxed),
            bytes as f64 / 1e6 / secs
        )
    }
}

impl Progress for CliProgress {
    fn start(&self, total_bytes: u64) {
        self.total.store(total_bytes, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_length(total_bytes);
        }
    }

    fn advance(&self, bytes: u64, documents: u64, tokens: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.docs.fetch_add(documents, Ordering::Relaxed);
        self.tokens.fetch_add(tokens, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(bytes);
            b.set_message(format!(
                "{} docs {} tokens",
                self.docs.load(Ordering::Relaxed),
                self.tokens.load(Ordering::Relaxed)
            ));
        } else if !self.quiet {
            let mut last = self.last_log.lock().expect("progress lock");
            if last.elapsed() >= Duration::from_secs(10) {
                *last = Instant::now();
                eprintln!("[progress] {}", self.line());
            }
        }
    }

    fn note(&self, message: &str) {
        if self.quiet {
            return;
        }
        // Notes quote input names and read errors (a bucket's object keys): escaped.
        let message = conveyor_pipeline::printable::text(message);
        match &self.bar {
            Some(b) => b.println(message),
            None => eprintln!("{message}"),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
