//! The line dedup's page drop and a resumed run's dedup set.

use super::*;

/// A line C4's rules keep: five words or more, ending in a full stop, one sentence.
fn line(s: &str) -> String {
    format!("The {s} stood by the old road for many years.")
}

#[test]
fn pages_left_with_too_few_sentences_by_the_dedup_are_dropped() {
    let mut d = pages::Dedup::default();
    let mut counts = RuleCounts::default();
    let page = |v: &[&str]| v.iter().map(|s| line(s)).collect::<Vec<_>>();
    assert!(d.keep(page(&["a", "b", "c"]), 3, &mut counts).is_some());
    // Two of three lines seen: one sentence is left, fewer than 3 (C4 drops the page).
    assert!(d.keep(page(&["a", "b", "d"]), 3, &mut counts).is_none());
    assert_eq!(
        counts.pages_dropped[&PageDrop::TooFewSentencesAfterDedup],
        1
    );
    // No line removed: the page is kept as the rules left it, whatever its sentences.
    assert_eq!(d.keep(page(&["e"]), 3, &mut counts), Some(page(&["e"])));
    // "d" was first seen on the dropped page: a later page loses it, as in one pass of C4.
    let kept = d.keep(page(&["d", "f", "g", "h"]), 3, &mut counts);
    assert_eq!(kept, Some(page(&["f", "g", "h"])));
}

/// Stops the job (as a kill would) at its `n`-th progress report.
struct StopAt(std::sync::atomic::AtomicUsize, usize);

impl Progress for StopAt {
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64, _: u64, _: u64) {
        if self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == self.1 {
            panic!("stopped");
        }
    }
    fn note(&self, _: &str) {}
    fn finish(&self) {}
}

#[test]
fn a_resumed_run_treats_lines_of_pages_dropped_by_the_dedup_as_seen() {
    let dir = std::env::temp_dir().join(format!("conveyor-clean-dedup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // a: lines 1-3; b: 1, 2, 4 (dropped after the dedup: 4 is seen there); c: 4-7 (loses 4).
    let pages = [
        ["1", "2", "3", ""],
        ["1", "2", "4", ""],
        ["4", "5", "6", "7"],
    ];
    let mut inputs = Vec::new();
    for (name, p) in ["a", "b", "c"].iter().zip(pages) {
        let text: Vec<String> = p
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| line(s))
            .collect();
        let path = dir.join(format!("{name}.jsonl"));
        let doc = serde_json::json!({"text": text.join("\n"), "url": name});
        std::fs::write(&path, format!("{doc}\n")).unwrap();
        inputs.push(path.display().to_string());
    }
    let cfg = |out: &str| CleanConfig {
        min_english: None,
        threads: Some(1),
        ..CleanConfig::new(inputs.clone(), dir.join(out))
    };
    let straight = clean(&cfg("straight"), &crate::progress::Silent).unwrap();
    assert_eq!(
        straight.totals.pages_dropped[&PageDrop::TooFewSentencesAfterDedup],
        1
    );
    // Killed while cleaning c (its third report), then run again.
    let stop = StopAt(Default::default(), 3);
    let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        clean(&cfg("resumed"), &stop)
    }));
    assert!(killed.is_err());
    clean(&cfg("resumed"), &crate::progress::Silent).unwrap();
    let files = |out: &str| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(dir.join(out))
            .unwrap()
            .flatten()
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(files("resumed"), files("straight"));
    std::fs::remove_dir_all(&dir).unwrap();
}
