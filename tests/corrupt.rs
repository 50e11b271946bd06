//! End-to-end tests of `conveyor corrupt` on the real C4 sample: T5's lengths, examples that
//! merge back into exactly the documents, noise statistics, thread-count determinism,
//! kill-and-resume, packing, a job split among worker processes, and every refusal.

use crate::common;

use common::*;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arrow::array::{Array, AsArray};
use arrow::datatypes::UInt16Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// The C4 sample ingested once, in 16 small shards (shared by the tests).
fn tokens() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tmp_dir("tokens");
        ingest_c4_sample(&d, 20000);
        d
    })
}

fn corrupt(out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "corrupt",
        tokens().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(&args)).unwrap()
}

fn shards(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    v.sort();
    v
}

/// Every row of a list<uint16> column of every shard in `dir`, in order.
fn column(dir: &Path, name: &str) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    for f in shards(dir) {
        let r = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for b in r {
            let b = b.unwrap();
            let l = b.column_by_name(name).unwrap().as_list::<i32>();
            for i in 0..l.len() {
                let v = l.value(i);
                out.push(
                    v.as_primitive::<UInt16Type>()
                        .values()
                        .iter()
                        .map(|&x| x as u32)
                        .collect(),
                );
            }
        }
    }
    out
}

#[test]
fn lengths_follow_t5_random_spans_helper() {
    for (args, want) in [
        (vec!["--inputs-length", "512"], (568, 512, 114)),
        (
            vec![
                "--inputs-length",
                "64",
                "--noise-density",
                "0.2",
                "--mean-span-length",
                "2",
            ],
            (70, 64, 22),
        ),
        (
            vec![
                "--inputs-length",
                "64",
                "--noise-density",
                "0.2",
                "--mean-span-length",
                "1",
            ],
            (63, 64, 27),
        ),
    ] {
        let d = tmp_dir("lengths");
        let s = corrupt(&d, &args);
        let got = (
            s["tokens_length"].as_u64().unwrap(),
            s["inputs_length"].as_u64().unwrap(),
            s["targets_length"].as_u64().unwrap(),
        );
        assert_eq!(got, want, "{args:?}");
    }
}

#[test]
fn examples_merge_back_into_exactly_the_documents() {
    let d = tmp_dir("merge");
    let s = corrupt(&d, &[]);
    let inputs = column(&d, "inputs");
    let targets = column(&d, "targets");
    assert_eq!(inputs.len() as u64, s["examples"].as_u64().unwrap());
    // Rebuild the token stream: each input sentinel is replaced by the target tokens that
    // follow the same sentinel in the targets; EOS (1) ends both.
    let mut merged = Vec::new();
    let (mut noise, mut kept) = (0usize, 0usize);
    for (inp, tgt) in inputs.iter().zip(&targets) {
        assert!(inp.len() <= 512 && tgt.len() <= 114);
        assert_eq!((inp.last(), tgt.last()), (Some(&1), Some(&1)));
        let mut spans = std::collections::HashMap::new();
        let mut cur = None;
        for &t in &tgt[..tgt.len() - 1] {
            if t >= 32_000 {
                cur = Some(t);
                spans.insert(t, Vec::new());
            } else {
                spans.get_mut(&cur.unwrap()).unwrap().push(t);
                noise += 1;
            }
        }
        for &t in &inp[..inp.len() - 1] {
            if t >= 32_000 {
                merged.extend(&spans[&t]);
            } else {
                merged.push(t);
                kept += 1;
            }
        }
    }
    // The token directory's documents, concatenated in order.
    let mut docs = Vec::new();
    for f in shards(tokens()) {
        let r = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for b in r {
            let b = b.unwrap();
            let l = b.column_by_name("tokens").unwrap().as_list::<i32>();
            for i in 0..l.len() {
                let v = l.value(i);
                docs.extend(
                    v.as_primitive::<UInt16Type>()
                        .values()
                        .iter()
                        .map(|&x| x as u32),
                );
            }
        }
    }
    assert_eq!(merged.len(), docs.len());
    assert!(
        merged == docs,
        "the examples do not merge back into the documents"
    );
    // Noise statistics over the whole sample.
    let frac = noise as f64 / (noise + kept) as f64;
    assert!((frac - 0.15).abs() < 0.01, "noise fraction {frac}");
}

#[test]
fn output_is_identical_for_any_thread_count_and_rerun() {
    let a = tmp_dir("threads1");
    let b = tmp_dir("threads2");
    corrupt(&a, &["--threads", "1", "--seed", "5"]);
    corrupt(&b, &["--threads", "2", "--seed", "5"]);
    let files_a = shards(&a);
    assert_eq!(files_a.len(), 16);
    for (x, y) in files_a.iter().zip(shards(&b)) {
        assert!(std::fs::read(x).unwrap() == std::fs::read(y).unwrap());
    }
    // The same command again: already complete, nothing rewritten.
    let s = corrupt(&b, &["--threads", "2", "--seed", "5"]);
    assert_eq!(s["already_complete"], true);
    // Another seed or epoch gives other masks.
    let c = tmp_dir("epoch1");
    corrupt(&c, &["--seed", "5", "--epoch", "1"]);
    assert!(std::fs::read(&files_a[0]).unwrap() != std::fs::read(&shards(&c)[0]).unwrap());
}

#[test]
fn killed_run_resumes_to_the_identical_result() {
    let want = tmp_dir("resume-want");
    corrupt(&want, &["--threads", "1"]);
    let d = tmp_dir("resume");
    let work = d.join(".conveyor-corrupt");
    let mut caught = false;
    for _ in 0..20 {
        let mut child = crate::common::conveyor_cmd()
            .args([
                "corrupt",
                tokens().to_str().unwrap(),
                "--out",
                d.to_str().unwrap(),
                "--threads",
                "1",
                "-q",
                "--overwrite",
            ])
            .spawn()
            .unwrap();
        // Kill it once some shards, but not all, are done.
        loop {
            let done = std::fs::read_dir(&work)
                .map(|r| {
                    r.flatten()
                        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                        .count()
                })
                .unwrap_or(0);
            if done >= 2 || child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        let finished = child.try_wait().unwrap().is_some();
        child.kill().ok();
        child.wait().unwrap();
        if !finished && !d.join("manifest.json").exists() {
            caught = true;
            break;
        }
    }
    assert!(caught, "could not interrupt a run before it finished");
    let s = corrupt(&d, &["--threads", "2"]);
    assert_eq!(s["resumed"], true);
    let (a, b) = (shards(&want), shards(&d));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!(std::fs::read(x).unwrap() == std::fs::read(y).unwrap());
    }
    assert!(!work.exists());
}

#[test]
fn packed_rows_hold_the_same_examples() {
    let plain = tmp_dir("unpacked");
    let packed = tmp_dir("packed");
    corrupt(&plain, &["--inputs-length", "128"]);
    let s = corrupt(&packed, &["--inputs-length", "128", "--pack"]);
    let want_in = column(&plain, "inputs");
    let want_tg = column(&plain, "targets");
    let (inp, tgt) = (column(&packed, "inputs"), column(&packed, "targets"));
    let (iseg, tseg) = (
        column(&packed, "inputs_segment_ids"),
        column(&packed, "targets_segment_ids"),
    );
    let ipos = column(&packed, "inputs_positions");
    assert_eq!(inp.len() as u64, s["rows"].as_u64().unwrap());
    let mut got_in = Vec::new();
    let mut got_tg = Vec::new();
    for r in 0..inp.len() {
        assert_eq!((inp[r].len(), tgt[r].len()), (128, 29));
        let n = *iseg[r].iter().max().unwrap();
        for s in 1..=n {
            let pick = |v: &[u32], seg: &[u32]| -> Vec<u32> {
                v.iter()
                    .zip(seg)
                    .filter(|(_, &g)| g == s)
                    .map(|(&x, _)| x)
                    .collect()
            };
            let e = pick(&inp[r], &iseg[r]);
            assert_eq!(
                pick(&ipos[r], &iseg[r]),
                (0..e.len() as u32).collect::<Vec<_>>()
            );
            got_in.push(e);
            got_tg.push(pick(&tgt[r], &tseg[r]));
        }
    }
    assert_eq!(got_in, want_in);
    assert_eq!(got_tg, want_tg);
    assert!((got_in.len() as u64) == s["examples"].as_u64().unwrap());
    // Full pieces fill a row exactly, as in T5; only the short last piece of each group
    // leaves room (the packer's own tests cover rows holding several examples).
}

#[test]
fn refusals_say_what_to_do() {
    let d = tmp_dir("refuse");
    let out = d.join("o");
    let run = |tokens: &Path, extra: &[&str]| {
        let mut args = vec![
            "corrupt",
            tokens.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = conveyor(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?} was not refused");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    // No manifest.
    let err = run(&d, &[]);
    assert!(
        err.contains("manifest.json") && err.contains("conveyor ingest"),
        "{err}"
    );
    // Another vocabulary than the tokens were made with.
    let other = shared("spiece/spm-example-20k.model");
    let err = run(tokens(), &["--vocab", other.to_str().unwrap()]);
    assert!(
        err.contains("t5-spiece.model") && err.contains("re-ingest"),
        "{err}"
    );
    // More spans than sentinels (T5 at 2048 needs 114).
    let err = run(tokens(), &["--inputs-length", "2048"]);
    assert!(
        err.contains("114 noise spans") && err.contains("100 sentinels"),
        "{err}"
    );
    // Too short to hold a span.
    let err = run(tokens(), &["--inputs-length", "4"]);
    assert!(
        err.contains("too small") && err.contains("use at least"),
        "{err}"
    );
    // Example shards given for token shards: named as such (it was "missing field
    // text_field").
    let examples = d.join("examples");
    corrupt(&examples, &[]);
    let err = run(&examples, &[]);
    assert!(
        err.contains("is the manifest of a conveyor.examples folder")
            && err.contains("reads conveyor.tokens folders"),
        "{err}"
    );
    assert!(!out.join("manifest.json").exists());
}

#[test]
fn three_workers_merged_write_exactly_what_one_process_writes() {
    let one = tmp_dir("split-one");
    corrupt(&one, &["--seed", "3"]);
    let many = tmp_path("split-many");
    let worker = |index: usize| {
        crate::common::conveyor_cmd()
            .args(["corrupt", tokens().to_str().unwrap(), "--out"])
            .arg(&many)
            .args(["--seed", "3", "-q", "--num-workers", "3", "--worker-index"])
            .arg(index.to_string())
            .env_remove("SLURM_ARRAY_TASK_ID")
            .env_remove("JOB_COMPLETION_INDEX")
            .output()
            .unwrap()
    };
    // Workers 0 and 2 side by side; the merge then names worker 1 as missing.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| worker(0));
        let b = s.spawn(|| worker(2));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a.status.success() && b.status.success());
    let o = conveyor(&["manifest", "merge", many.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("worker(s) 1 of 3"),
        "{err}"
    );
    assert!(worker(1).status.success());
    let out = ok(&["manifest", "merge", many.to_str().unwrap()]);
    assert!(out.contains("16 example shards"), "{out}");
    // The same shard files, byte for byte, and the same manifest.
    assert!(
        files_in(&many) == files_in(&one),
        "the merged output differs"
    );
}
