//! End-to-end tests of `conveyor ingest` / `inspect`, run as a user would run the binary:
//! formats, thread-count determinism, bad input, kill-and-resume, and an independent reader.

use crate::common;

use common::*;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

mod modified;
mod workers;

fn t5() -> String {
    shared("spiece/t5-spiece.model").display().to_string()
}

fn c4() -> PathBuf {
    shared("c4/c4-train.00000-of-01024.first600.json.gz")
}

fn ingest_json(inputs: &[&str], out: &Path, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let mut args = vec!["ingest"];
    args.extend_from_slice(inputs);
    let vocab = t5();
    let out_s = out.display().to_string();
    args.extend_from_slice(&["--vocab", &vocab, "--out", &out_s, "--json"]);
    args.extend_from_slice(extra);
    let o = conveyor(&args);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let v = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (o.status.code().unwrap_or(-1), v, stderr)
}

/// Every file of a directory (recursively) with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            for (k, v) in files(&p) {
                out.insert(format!("{}/{k}", e.file_name().to_string_lossy()), v);
            }
        } else {
            out.insert(
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            );
        }
    }
    out
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn c4_sample_is_tokenized_identically_by_native_and_reference_and_any_thread_count() {
    let d = tmp_dir("threads");
    let c4 = c4().display().to_string();
    let runs = [
        ("t1", vec!["--threads", "1"]),
        ("t2", vec!["--threads", "2"]),
        ("ref", vec!["--threads", "2", "--tokenizer", "reference"]),
    ];
    for (name, extra) in &runs {
        let mut e = extra.clone();
        e.extend(["--shard-tokens", "50000"]);
        let (code, v, err) = ingest_json(&[&c4], &d.join(name), &e);
        assert_eq!(code, 0, "{err}");
        assert_eq!(v["totals"]["documents"], 600);
        assert!(v["shards"].as_u64().unwrap() >= 6);
    }
    let t1 = files(&d.join("t1"));
    assert_eq!(t1, files(&d.join("t2")), "thread count changed the output");
    let mut r = files(&d.join("ref"));
    let mut n = t1.clone();
    // The manifests differ only in the tokenizer they name.
    r.remove("manifest.json");
    n.remove("manifest.json");
    assert_eq!(
        n, r,
        "native and reference tokenizers wrote different shards"
    );
    // A rerun of a complete job does nothing and changes nothing.
    let (code, v, _) = ingest_json(
        &[&c4],
        &d.join("t1"),
        &["--threads", "1", "--shard-tokens", "50000"],
    );
    assert_eq!(code, 0);
    assert_eq!(v["already_complete"], true);
    assert_eq!(files(&d.join("t1")), t1);
    // A finished output missing a shard, or holding a cut one, is not "complete".
    let t3 = d.join("t3");
    std::fs::create_dir_all(&t3).unwrap();
    for (name, bytes) in &t1 {
        std::fs::write(t3.join(name), bytes).unwrap();
    }
    let again = |dir: &std::path::Path| {
        ingest_json(&[&c4], dir, &["--threads", "1", "--shard-tokens", "50000"])
    };
    assert_eq!(again(&t3).0, 0);
    let shard = t3.join("train-00000-of-00007.parquet");
    let whole = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &whole[..100]).unwrap();
    let (code, _, err) = again(&t3);
    assert!(
        code != 0 && err.contains("train-00000-of-00007.parquet") && err.contains("damaged"),
        "{err}"
    );
    std::fs::remove_file(&shard).unwrap();
    let (code, _, err) = again(&t3);
    assert!(
        code != 0 && err.contains("is missing") && err.contains("--overwrite"),
        "{err}"
    );
    let out = ok(&[
        "inspect",
        d.join("t1").to_str().unwrap(),
        "--verify",
        "-n",
        "1",
    ]);
    assert!(out.contains("Beginners BBQ Class"), "{out}");
    assert!(
        out.contains("verify: 7 of 7 shards ok") || out.contains("shards ok"),
        "{out}"
    );
}

fn write_zst(path: &Path, data: &[u8]) {
    let f = std::fs::File::create(path).unwrap();
    let mut enc = zstd::stream::write::Encoder::new(f, 3)
        .unwrap()
        .auto_finish();
    enc.write_all(data).unwrap();
}

fn write_gz(path: &Path, data: &[u8]) {
    let f = std::fs::File::create(path).unwrap();
    let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap();
}

fn write_parquet(path: &Path, texts: &[&str]) {
    use arrow::array::{RecordBatch, StringArray};
    use std::sync::Arc;
    let arr = Arc::new(StringArray::from(texts.to_vec()));
    let batch = RecordBatch::try_from_iter([("body", arr as _)]).unwrap();
    let f = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn every_input_format_is_read() {
    let d = tmp_dir("formats");
    let inp = d.join("in");
    std::fs::create_dir_all(&inp).unwrap();
    let line = |t: &str| format!("{{\"text\": {}}}\n", serde_json::to_string(t).unwrap());
    std::fs::write(inp.join("a.jsonl"), line("plain json lines")).unwrap();
    write_gz(&inp.join("b.json.gz"), line("gzip json lines").as_bytes());
    write_zst(&inp.join("c.jsonl.zst"), line("zstd json lines").as_bytes());
    std::fs::write(inp.join("d.txt"), "a whole text file\nis one document\n").unwrap();
    write_parquet(
        &inp.join("e.parquet"),
        &["parquet row one", "parquet row two"],
    );
    // .parquet inputs here keep their text in `body`; the JSON files use `text`.
    let (code, v, err) = ingest_json(
        &[
            inp.join("*.j*").to_str().unwrap(),
            inp.join("d.txt").to_str().unwrap(),
        ],
        &d.join("o1"),
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["totals"]["documents"], 4);
    let (code, v, err) = ingest_json(
        &[inp.join("e.parquet").to_str().unwrap()],
        &d.join("o2"),
        &["--text-field", "body"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["totals"]["documents"], 2);
    let (code, v, err) = ingest_json(
        &[inp.join("d.txt").to_str().unwrap()],
        &d.join("o3"),
        &["--txt-mode", "line"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["totals"]["documents"], 2);
    // A wrong column is an error that lists the columns.
    let (code, _, err) = ingest_json(
        &[inp.join("e.parquet").to_str().unwrap()],
        &d.join("o4"),
        &[],
    );
    // The only input failed: nothing is written (exit 2), the reason named.
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no string column `text`")
            && err.contains("body")
            && err.contains("nothing was written"),
        "{err}"
    );
}

#[test]
fn pyarrow_reads_the_shards() {
    let d = tmp_dir("pyarrow");
    let (code, _, err) = ingest_json(
        &[root().join("fixtures/corpus").to_str().unwrap()],
        &d,
        &["--append-eos"],
    );
    assert_eq!(code, 0, "{err}");
    let m = manifest(&d);
    let shard = d.join(m["shards"][0]["file"].as_str().unwrap());
    let python = std::env::var("CONVEYOR_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import sys, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
print(t.schema.field("tokens").type, t.num_rows, t.column("source")[0], t.column("tokens")[0].as_py()[-1])
"#;
    let o = Command::new(&python)
        .args(["-c", script, shard.to_str().unwrap()])
        .output()
        .unwrap_or_else(|e| {
            panic!("{python}: {e} (run the tests with `make test`, which sets CONVEYOR_PYTHON)")
        });
    assert!(
        o.status.success(),
        "pyarrow failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let s = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        s.trim(),
        "list<item: uint16 not null> 24 stories-a.jsonl 1",
        "{s}"
    );
}

#[test]
fn bad_records_are_skipped_counted_and_located() {
    let d = tmp_dir("badrec");
    let f = d.join("mixed.jsonl");
    let mut data = Vec::new();
    data.extend_from_slice(b"{\"text\": \"good one\"}\n");
    data.extend_from_slice(b"{\"text\": \"broken\n");
    data.extend_from_slice(b"{\"text\": \"bad \xff utf8\"}\n");
    data.extend_from_slice(b"{\"body\": \"no text field\"}\n");
    data.extend_from_slice(b"{\"text\": \"   \"}\n");
    data.extend_from_slice(b"{\"text\": \"good two\"}\n");
    // A blank line, as files often end: empty, not malformed, and no stop for --strict.
    data.extend_from_slice(b"\n");
    std::fs::write(&f, &data).unwrap();
    let (code, v, err) = ingest_json(&[f.to_str().unwrap()], &d.join("o"), &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["totals"]["documents"], 2);
    assert_eq!(v["totals"]["records"], 7);
    let sk = &v["totals"]["skipped"];
    assert_eq!(
        (
            sk["malformed_json"].as_u64(),
            sk["invalid_utf8"].as_u64(),
            sk["missing_text"].as_u64(),
            sk["empty"].as_u64()
        ),
        (Some(1), Some(1), Some(1), Some(2))
    );
    let m = manifest(&d.join("o"));
    let lines: Vec<u64> = m["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![2, 3, 4]);
    assert_eq!(m["problems"][0]["file"], "mixed.jsonl");
    // source_index traces rows back to their lines (0-based).
    let o = ok(&["inspect", d.join("o").to_str().unwrap(), "-n", "2"]);
    assert!(
        o.contains("mixed.jsonl:1 ") && o.contains("mixed.jsonl:6 "),
        "{o}"
    );
    // --strict stops at the first problem, naming file and line.
    let (code, _, err) = ingest_json(&[f.to_str().unwrap()], &d.join("strict"), &["--strict"]);
    assert_eq!(code, 2);
    assert!(err.contains("mixed.jsonl:2"), "{err}");
    // So does a rerun with --strict over the output made without it (it was "already
    // complete", exit 0).
    let (code, _, again) = ingest_json(&[f.to_str().unwrap()], &d.join("o"), &["--strict"]);
    assert_eq!(code, 2, "{again}");
    assert!(
        again.contains(&format!("{}:2", f.display())) && again.contains("without --strict"),
        "{again}"
    );
    let blank = d.join("blank.jsonl");
    std::fs::write(&blank, "{\"text\": \"one\"}\n\n{\"text\": \"two\"}\n\n").unwrap();
    let (code, v, err) = ingest_json(&[blank.to_str().unwrap()], &d.join("blank"), &["--strict"]);
    assert_eq!((code, &v["totals"]["documents"]), (0, &2.into()), "{err}");
    // No record a document (a wrong --text-field) is a failure, not an empty success.
    let (code, v, err) = ingest_json(
        &[blank.to_str().unwrap()],
        &d.join("wrong"),
        &["--text-field", "body"],
    );
    assert_eq!(v["totals"]["skipped"]["missing_text"], 2);
    assert!(
        code == 1 && err.contains("none of the 4 records") && err.contains("--text-field"),
        "{code} {err}"
    );
}

#[test]
fn corrupt_file_is_reported_and_others_still_processed() {
    let top = tmp_dir("corrupt");
    // The inputs in a folder of their own: an --out inside an input folder is refused.
    let d = top.join("in");
    std::fs::create_dir_all(&d).unwrap();
    let bytes = std::fs::read(c4()).unwrap();
    std::fs::write(d.join("truncated.json.gz"), &bytes[..bytes.len() / 2]).unwrap();
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 3;
    for b in &mut flipped[mid..mid + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(d.join("damaged.json.gz"), &flipped).unwrap();
    std::fs::copy(
        root().join("fixtures/corpus/stories-a.jsonl"),
        d.join("good.jsonl"),
    )
    .unwrap();
    let (code, v, err) = ingest_json(&[d.to_str().unwrap()], &top.join("o"), &[]);
    assert_eq!(code, 1, "a failed input must fail the run: {err}");
    let failed = v["failed_inputs"].as_array().unwrap();
    assert_eq!(failed.len(), 2, "{v}");
    assert!(
        err.contains("truncated.json.gz") && err.contains("damaged.json.gz"),
        "{err}"
    );
    assert!(err.contains("corrupt or truncated"), "{err}");
    assert!(
        err.contains("rerun with --overwrite to make it with them"),
        "{err}"
    );
    let m = manifest(&top.join("o"));
    let good = m["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "good.jsonl")
        .unwrap();
    assert_eq!(good["documents"], 24);
    assert_eq!(m["failed_inputs"], 2);
    // Documents before the damage are kept and counted.
    let trunc = m["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "truncated.json.gz")
        .unwrap();
    assert!(trunc["documents"].as_u64().unwrap() > 100, "{trunc}");
    // Split between workers, the merge of the whole dataset fails as the one-process run
    // does (it exited 0: the worker's exit 1 was all that said so), and names the inputs.
    let split = top.join("w");
    let mut codes = Vec::new();
    for i in ["0", "1"] {
        let extra = ["--num-workers", "2", "--worker-index", i];
        codes.push(ingest_json(&[d.to_str().unwrap()], &split, &extra).0);
    }
    assert!(codes.contains(&1), "{codes:?}");
    let o = conveyor(&["manifest", "merge", split.to_str().unwrap(), "--json"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("truncated.json.gz") && err.contains("damaged.json.gz"),
        "{err}"
    );
    let merged: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        merged["failed_inputs"].as_array().unwrap().len(),
        2,
        "{merged}"
    );
    assert_eq!(manifest(&split)["shards"], m["shards"]);
    // --strict stops at the first failed file.
    let (code, _, err) = ingest_json(
        &[d.join("truncated.json.gz").to_str().unwrap()],
        &d.join("s"),
        &["--strict"],
    );
    assert_eq!(code, 2, "{err}");
}

/// Inputs that all fail before a shard leave no output: a "complete" output of no shards
/// made the rerun after the files were fixed read nothing again.
#[test]
fn no_input_read_writes_nothing_and_the_rerun_reads_them_again() {
    let top = tmp_dir("none-read");
    let d = top.join("in");
    std::fs::create_dir_all(&d).unwrap();
    let bytes = std::fs::read(c4()).unwrap();
    std::fs::write(d.join("a.json.gz"), &bytes[..40]).unwrap();
    std::fs::write(d.join("b.json.gz"), b"not gzip at all").unwrap();
    let out = top.join("o");
    let (code, _, err) = ingest_json(&[d.to_str().unwrap()], &out, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no input could be read")
            && err.contains("a.json.gz")
            && err.contains("b.json.gz"),
        "{err}"
    );
    assert!(!out.exists(), "the --out it made is left");
    // Fixed in place: the same command reads them.
    std::fs::copy(c4(), d.join("a.json.gz")).unwrap();
    write_gz(&d.join("b.json.gz"), b"{\"text\": \"fixed\"}\n");
    let (code, v, err) = ingest_json(&[d.to_str().unwrap()], &out, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["totals"]["documents"], 601, "{v}");

    // Split, one file per worker: each worker finishes its part (the other may have read its
    // file), and the merge refuses as the one process does, leaving nothing to stop the
    // workers' rerun from reading the fixed files.
    std::fs::write(d.join("a.json.gz"), &bytes[..40]).unwrap();
    std::fs::write(d.join("b.json.gz"), b"not gzip at all").unwrap();
    let split = top.join("w2");
    let workers = |want: i32| {
        for i in ["0", "1"] {
            let extra = ["--num-workers", "2", "--worker-index", i];
            let (code, _, err) = ingest_json(&[d.to_str().unwrap()], &split, &extra);
            assert_eq!(code, want, "worker {i}: {err}");
        }
        conveyor(&["manifest", "merge", split.to_str().unwrap()])
    };
    let o = workers(1);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(2)
            && err.contains("no input could be read")
            && err.contains("a.json.gz")
            && err.contains("b.json.gz")
            && err.contains("rerun every worker"),
        "{err}"
    );
    assert!(!split.join("manifest.json").exists() && !split.join("parts").exists());
    std::fs::copy(c4(), d.join("a.json.gz")).unwrap();
    write_gz(&d.join("b.json.gz"), b"{\"text\": \"fixed\"}\n");
    let o = workers(0);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(manifest(&split)["totals"]["documents"], 601);
}

#[test]
fn refusals_before_any_work() {
    let d = tmp_dir("refuse");
    let good = root().join("fixtures/corpus").display().to_string();
    let (code, _, err) = ingest_json(&["/no/such/input.jsonl"], &d.join("o"), &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("/no/such/input.jsonl") && err.contains("does not exist"),
        "{err}"
    );
    let o = conveyor(&[
        "ingest",
        &good,
        "--vocab",
        "/no/vocab.model",
        "--out",
        d.join("o").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/no/vocab.model"));
    std::fs::write(d.join("junk.model"), b"not a model").unwrap();
    let o = conveyor(&[
        "ingest",
        &good,
        "--vocab",
        d.join("junk.model").to_str().unwrap(),
        "--out",
        d.join("o").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a usable SentencePiece model"));
    assert!(
        !d.join("o").exists(),
        "nothing may be written before the checks pass"
    );
    // An output directory holding another job is refused until --overwrite.
    let (code, _, err) = ingest_json(&[&good], &d.join("o"), &[]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = ingest_json(&[&good], &d.join("o"), &["--append-eos"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("different job") && err.contains("--overwrite"),
        "{err}"
    );
    let (code, _, err) = ingest_json(&[&good], &d.join("o"), &["--append-eos", "--overwrite"]);
    assert_eq!(code, 0, "{err}");
    // A folder of unrelated files is not written into.
    std::fs::create_dir_all(d.join("foreign")).unwrap();
    std::fs::write(d.join("foreign/notes.txt"), b"mine").unwrap();
    let (code, _, err) = ingest_json(&[&good], &d.join("foreign"), &[]);
    assert_eq!(code, 2);
    assert!(err.contains("not empty"), "{err}");
}

#[test]
fn killed_run_resumes_to_the_identical_result() {
    let d = tmp_dir("resume");
    let inp = d.join("in");
    std::fs::create_dir_all(&inp).unwrap();
    for i in 0..4 {
        std::fs::copy(c4(), inp.join(format!("part{i}.json.gz"))).unwrap();
    }
    let args = |out: &Path| {
        vec![
            "ingest".to_string(),
            inp.display().to_string(),
            "--vocab".into(),
            t5(),
            "--out".into(),
            out.display().to_string(),
            "--shard-tokens".into(),
            "20000".into(),
            "--threads".into(),
            "1".into(),
            "-q".into(),
        ]
    };
    let full = d.join("full");
    let o = crate::common::conveyor_cmd()
        .args(args(&full))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = files(&full);

    let killed = d.join("killed");
    let journal = killed.join(".conveyor-ingest/journal.jsonl");
    // Let each run finish a few shards (more each attempt), then kill it mid-work.
    let journaled = || {
        std::fs::read_to_string(&journal)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let kills = run_with_kills(
        &args(&killed),
        50,
        |attempt| journaled() >= 2 + 5 * attempt,
        || {
            // Nothing half-written is ever visible under a final name: a shard that already
            // carries one (the kill hit the final renames) is the whole shard.
            for (name, bytes) in files(&killed) {
                if name.ends_with(".parquet") && !name.starts_with(".conveyor-ingest/") {
                    assert_eq!(Some(&bytes), want.get(&name), "{name} is not a whole shard");
                }
            }
        },
    );
    assert!(kills >= 2, "the run was never interrupted");
    assert_eq!(
        files(&killed),
        want,
        "resumed output differs from an uninterrupted run"
    );
}
