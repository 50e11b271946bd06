//! The project's own fixture data, written by a small seeded generator so that the demo needs
//! no download: an English-like corpus in C4's JSON-lines layout, and a review-sentiment task
//! in GLUE SST-2's TSV layout (so the built-in `sst2` reader takes it). The same seed always
//! writes the same bytes.

use std::io::Write;
use std::path::Path;

use conveyor_pipeline::rng::{Rng, Stream};

const SUBJECTS: [&str; 16] = [
    "the baker",
    "a farmer",
    "the old sailor",
    "my neighbour",
    "the teacher",
    "a young doctor",
    "the mayor",
    "our guide",
    "the fisherman",
    "a painter",
    "the librarian",
    "my cousin",
    "the engineer",
    "a musician",
    "the ferry captain",
    "the gardener",
];
const VERBS: [&str; 12] = [
    "walked to",
    "wrote about",
    "repaired",
    "painted",
    "visited",
    "talked about",
    "carried",
    "cleaned",
    "opened",
    "closed",
    "photographed",
    "described",
];
const OBJECTS: [&str; 16] = [
    "the harbour",
    "a small bridge",
    "the market",
    "the school",
    "a wooden boat",
    "the station",
    "the river bank",
    "an old mill",
    "the bakery",
    "the town hall",
    "a quiet garden",
    "the lighthouse",
    "the museum",
    "a long road",
    "the hill",
    "the square",
];
const TIMES: [&str; 8] = [
    "in the morning",
    "before lunch",
    "after the rain",
    "at dawn",
    "on sunday",
    "late at night",
    "during the storm",
    "in spring",
];
const THINGS: [&str; 10] = [
    "film",
    "book",
    "restaurant",
    "concert",
    "hotel",
    "museum",
    "play",
    "album",
    "cafe",
    "game",
];
const GOOD: [&str; 10] = [
    "wonderful",
    "delightful",
    "excellent",
    "charming",
    "brilliant",
    "lovely",
    "superb",
    "moving",
    "warm",
    "great",
];
const BAD: [&str; 10] = [
    "dreadful",
    "boring",
    "awful",
    "dull",
    "terrible",
    "clumsy",
    "tedious",
    "poor",
    "cold",
    "disappointing",
];
const EXTRAS: [&str; 8] = [
    "and the staff",
    "and the music",
    "and the ending",
    "and the service",
    "and the story",
    "and the view",
    "and the price",
    "and the seats",
];

fn pick<'a>(rng: &mut Rng, v: &[&'a str]) -> &'a str {
    v[rng.below(v.len() as u64) as usize]
}

fn sentence(rng: &mut Rng) -> String {
    let s = format!(
        "{} {} {} {}.",
        pick(rng, &SUBJECTS),
        pick(rng, &VERBS),
        pick(rng, &OBJECTS),
        pick(rng, &TIMES)
    );
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => s,
    }
}

/// A review sentence like the sentiment task's, without its label.
fn review(rng: &mut Rng) -> String {
    let words = if rng.below(2) == 1 { &GOOD } else { &BAD };
    format!(
        "The {} was {} {} {}.",
        pick(rng, &THINGS),
        pick(rng, words),
        pick(rng, &EXTRAS),
        pick(rng, words)
    )
}

/// Writes `docs` documents of 3-8 sentences (stories and reviews) as `fixture-corpus.jsonl`
/// in `dir`.
pub fn write_corpus(dir: &Path, docs: usize, seed: u64) -> std::io::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("fixture-corpus.jsonl");
    let mut f = Vec::new();
    for d in 0..docs {
        let mut rng = Rng::for_item(seed, 0, Stream::Mask, 7, d as u64);
        let n = 3 + rng.below(6) as usize;
        let text: Vec<String> = (0..n)
            .map(|_| {
                if rng.below(3) == 0 {
                    review(&mut rng)
                } else {
                    sentence(&mut rng)
                }
            })
            .collect();
        let line = serde_json::json!({
            "text": text.join(" "),
            "url": format!("https://fixtures.conveyor.invalid/generated/{d}"),
            "timestamp": "2026-01-01T00:00:00Z",
        });
        writeln!(f, "{line}")?;
    }
    write_if_changed(&path, &f)?;
    Ok(path)
}

/// Writes `bytes` to `path` unless it holds them already: a rerun leaves the file as it
/// was, modification time included (ingest takes an input touched since for an edited one).
fn write_if_changed(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    std::fs::write(path, bytes)
}

/// Writes a review-sentiment task in SST-2's layout: `train.tsv` and `dev.tsv` in `dir`.
/// A review praises or pans a thing; the label is 1 for praise. Mixed cues ("but") make it
/// less than trivial.
pub fn write_sentiment(dir: &Path, train: usize, dev: usize, seed: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, n, stream) in [("train.tsv", train, 1u64), ("dev.tsv", dev, 2u64)] {
        let mut f = Vec::new();
        writeln!(f, "sentence\tlabel")?;
        for i in 0..n {
            let mut rng = Rng::for_item(seed, stream, Stream::Mask, 8, i as u64);
            let positive = rng.below(2) == 1;
            let (main, other) = if positive {
                (&GOOD, &BAD)
            } else {
                (&BAD, &GOOD)
            };
            let thing = pick(&mut rng, &THINGS);
            let text = if rng.below(3) == 0 {
                format!(
                    "the {thing} was {} {} , but overall it was {}",
                    pick(&mut rng, other),
                    pick(&mut rng, &EXTRAS),
                    pick(&mut rng, main)
                )
            } else {
                format!(
                    "the {thing} was {} {} {}",
                    pick(&mut rng, main),
                    pick(&mut rng, &EXTRAS),
                    pick(&mut rng, main)
                )
            };
            writeln!(f, "{text}\t{}", u8::from(positive))?;
        }
        write_if_changed(&dir.join(name), &f)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes() {
        let base = std::env::temp_dir().join(format!("conveyor-synth-{}", std::process::id()));
        let (a, b) = (base.join("a"), base.join("b"));
        for d in [&a, &b] {
            write_corpus(d, 20, 3).unwrap();
            write_sentiment(d, 30, 10, 3).unwrap();
        }
        for f in ["fixture-corpus.jsonl", "train.tsv", "dev.tsv"] {
            assert_eq!(
                std::fs::read(a.join(f)).unwrap(),
                std::fs::read(b.join(f)).unwrap()
            );
        }
        let train = std::fs::read_to_string(a.join("train.tsv")).unwrap();
        assert_eq!(train.lines().count(), 31);
        assert!(
            train.lines().nth(1).unwrap().ends_with("\t0")
                || train.lines().nth(1).unwrap().ends_with("\t1")
        );
    }
}
