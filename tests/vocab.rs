//! End-to-end tests of `conveyor vocab train`: the model is byte-identical to what the
//! SentencePiece library's own trainer (Python binding, same 0.2.1 sources) makes from the same
//! sentences; the committed fixture vocabulary is what the command makes; conveyor's native
//! encoder gives the library's ids with a freshly trained model; bad input is refused clearly.

use crate::common;

use common::*;

use std::path::PathBuf;
use std::process::Command;

fn c4_dir() -> PathBuf {
    root().join("../shared/data/c4")
}

fn python() -> String {
    std::env::var("CONVEYOR_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The library's trainer on the same sentences conveyor feeds it: the first `docs` documents,
/// split on "\n", each line stripped of Unicode white space, blank lines dropped.
const PY_TRAIN: &str = r#"
import gzip, io, json, sys
import sentencepiece as spm
path, docs, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
WS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
def sentences():
    n = 0
    for line in gzip.open(path, "rt", encoding="utf-8"):
        if n >= docs:
            return
        lines = [l.strip(WS) for l in json.loads(line)["text"].split("\n")]
        lines = [l for l in lines if l]
        if lines:
            n += 1
            yield from lines
spm.set_random_generator_seed(7)
out = io.BytesIO()
spm.SentencePieceTrainer.train(
    sentence_iterator=sentences(), model_writer=out, model_type="unigram",
    vocab_size=size, character_coverage=0.9995, input_sentence_size=10000000,
    shuffle_input_sentence=True, num_threads=16, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
    minloglevel=1)
sys.stdout.buffer.write(out.getvalue())
"#;

#[test]
fn model_is_byte_identical_to_the_sentencepiece_trainer() {
    let d = tmp_dir("parity");
    let prefix = d.join("c4");
    let s = ok(&[
        "vocab",
        "train",
        c4_dir()
            .join("c4-train.00000-of-01024.first600.json.gz")
            .to_str()
            .unwrap(),
        "--out",
        prefix.to_str().unwrap(),
        "--vocab-size",
        "1000",
        "--max-documents",
        "250",
        "--seed",
        "7",
        "--json",
    ]);
    let summary: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert_eq!(summary["documents"], 250);
    assert_eq!(summary["pieces"], 1000);
    let ours = std::fs::read(d.join("c4.model")).unwrap();
    let c4 = c4_dir().join("c4-train.00000-of-01024.first600.json.gz");
    let o = Command::new(python())
        .args(["-c", PY_TRAIN, c4.to_str().unwrap(), "250", "1000"])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run the tests with `make test`)", python()));
    assert!(
        o.status.success(),
        "python trainer failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        ours == o.stdout,
        "conveyor's model differs from the library trainer's"
    );
    // The listing has one line per piece, in id order, starting with T5's special pieces.
    let listing = std::fs::read_to_string(d.join("c4.vocab")).unwrap();
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 1000);
    assert_eq!(&lines[..3], &["<pad>\t0", "</s>\t0", "<unk>\t0"]);
}

#[test]
fn committed_fixture_vocabulary_is_what_the_command_makes() {
    let d = tmp_dir("fixture");
    let prefix = d.join("fixture");
    ok(&[
        "vocab",
        "train",
        root().join("fixtures/corpus").to_str().unwrap(),
        "--out",
        prefix.to_str().unwrap(),
        "--vocab-size",
        "400",
    ]);
    let made = std::fs::read(d.join("fixture.model")).unwrap();
    let committed = std::fs::read(root().join("fixtures/vocab/fixture.model")).unwrap();
    assert!(
        made == committed,
        "fixtures/vocab/fixture.model is stale: rerun `make fixtures`"
    );
    // Same inputs, settings and seed: the same bytes again.
    ok(&[
        "vocab",
        "train",
        root().join("fixtures/corpus").to_str().unwrap(),
        "--out",
        prefix.to_str().unwrap(),
        "--vocab-size",
        "400",
        "--overwrite",
    ]);
    assert!(std::fs::read(d.join("fixture.model")).unwrap() == made);
}

#[test]
fn ingest_with_a_trained_vocabulary_matches_the_library() {
    // A model trained here, then the whole C4 sample through the native encoder and through
    // the SentencePiece library: the shards must be identical.
    let d = tmp_dir("ingest");
    let prefix = d.join("v");
    ok(&[
        "vocab",
        "train",
        c4_dir()
            .join("c4-train.00000-of-01024.first600.json.gz")
            .to_str()
            .unwrap(),
        "--out",
        prefix.to_str().unwrap(),
        "--vocab-size",
        "3000",
        "--option",
        "split_digits=true",
    ]);
    let model = d.join("v.model");
    let c4 = c4_dir().join("c4-train.00000-of-01024.first600.json.gz");
    let mut shards = Vec::new();
    for tok in ["native", "reference"] {
        let out = d.join(tok);
        ok(&[
            "ingest",
            c4.to_str().unwrap(),
            "--vocab",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--tokenizer",
            tok,
            "-q",
        ]);
        shards.push(std::fs::read(out.join("train-00000-of-00001.parquet")).unwrap());
    }
    assert!(shards[0] == shards[1], "native and library ids differ");
}

#[test]
fn bad_input_is_refused_with_the_file_named() {
    let d = tmp_dir("bad");
    // A missing input.
    let o = conveyor(&[
        "vocab",
        "train",
        "/no/such/corpus.jsonl",
        "--out",
        d.join("m").to_str().unwrap(),
        "--vocab-size",
        "100",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/no/such/corpus.jsonl"));
    // A URL as --out (a local folder "s3:/b" was made of it, nothing uploaded).
    let corpus = c4_dir().join("c4-train.00000-of-01024.first600.json.gz");
    let args = [
        "vocab",
        "train",
        corpus.to_str().unwrap(),
        "--out",
        "s3://b/v",
    ];
    let o = conveyor(&[&args[..], &["--vocab-size", "100"]].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("vocab train writes a local model"),
        "{err}"
    );
    // A truncated gzip file: named, and no model written.
    let full = std::fs::read(c4_dir().join("c4-train.00000-of-01024.first600.json.gz")).unwrap();
    let cut = d.join("cut.json.gz");
    std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
    let o = conveyor(&[
        "vocab",
        "train",
        cut.to_str().unwrap(),
        "--out",
        d.join("m").to_str().unwrap(),
        "--vocab-size",
        "500",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("cut.json.gz"), "{err}");
    assert!(!d.join("m.model").exists());
    // A vocabulary larger than the corpus allows: the trainer's advice comes through.
    let o = conveyor(&[
        "vocab",
        "train",
        root().join("fixtures/corpus").to_str().unwrap(),
        "--out",
        d.join("m").to_str().unwrap(),
        "--vocab-size",
        "5000",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("Vocabulary size too high"), "{err}");
    // An existing model is not replaced without --overwrite.
    std::fs::write(d.join("m.model"), b"keep").unwrap();
    let o = conveyor(&[
        "vocab",
        "train",
        root().join("fixtures/corpus").to_str().unwrap(),
        "--out",
        d.join("m").to_str().unwrap(),
        "--vocab-size",
        "300",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--overwrite"));
    assert_eq!(std::fs::read(d.join("m.model")).unwrap(), b"keep");
    let train = |inputs: &str, out: &str, extra: &[&str]| {
        let mut a = vec![
            "vocab",
            "train",
            inputs,
            "--out",
            out,
            "--vocab-size",
            "300",
        ];
        a.extend_from_slice(extra);
        let o = conveyor(&a);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let corpus = root().join("fixtures/corpus").display().to_string();
    // A folder as the prefix: refused (it wrote hidden DIR/.model and DIR/.vocab).
    let folder = format!("{}/", d.join("voc").display());
    let (code, err) = train(&corpus, &folder, &[]);
    assert!(code == Some(2) && err.contains("is a folder"), "{err}");
    assert!(!d.join("voc/.model").exists() && !d.join("voc").exists());
    // A wrong --text-field: named with what was skipped, not the trainer's internal error.
    let (code, err) = train(
        &corpus,
        d.join("t").to_str().unwrap(),
        &["--text-field", "nope"],
    );
    assert!(
        code == Some(2) && err.contains("missing_text") && err.contains("--text-field"),
        "{err}"
    );
    // A thread count: the model depends on it, so the trainer's is fixed and a flag asking
    // for another is refused rather than followed (or ignored).
    let out = d.join("n").display().to_string();
    for flag in [&["--threads", "4"][..], &["--option", "num_threads=4"]] {
        let (code, err) = train(&corpus, &out, flag);
        assert!(code == Some(2) && err.contains("16 threads"), "{err}");
        assert!(!d.join("n.model").exists());
    }
}
