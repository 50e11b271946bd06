//! End-to-end tests of `conveyor clean`: C4 itself passes the rules (it is their fixed
//! point), every corpus-level stage (English filter, bad words, line dedup across files)
//! on pages written here, thread-count determinism, kill-and-resume, a job split among
//! workers, WET input, and the output feeding ingest.

use crate::common;

use common::*;

use std::io::Read;
use std::path::{Path, PathBuf};

fn clean_json(args: &[&str]) -> serde_json::Value {
    let mut a = vec!["clean"];
    a.extend_from_slice(args);
    a.push("--json");
    serde_json::from_str(&ok(&a)).unwrap()
}

/// The C4 sample's JSON lines, decompressed.
fn c4_sample_text() -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(shared("c4/c4-train.00000-of-01024.first600.json.gz")).unwrap(),
    )
    .read_to_string(&mut text)
    .unwrap();
    text
}

/// A fresh folder of JSON-lines inputs `NAME.jsonl`, each the given range of the C4
/// sample's 600 pages.
fn c4_cuts(tag: &str, cuts: &[(&str, std::ops::Range<usize>)]) -> PathBuf {
    let dir = tmp_dir(tag);
    let text = c4_sample_text();
    let lines: Vec<&str> = text.lines().collect();
    for (name, range) in cuts {
        let part = &lines[range.clone()];
        std::fs::write(dir.join(format!("{name}.jsonl")), part.join("\n")).unwrap();
    }
    dir
}

/// The documents of a clean output file.
fn docs(path: &Path) -> Vec<serde_json::Value> {
    let mut s = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut s)
        .unwrap();
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn c4_is_a_fixed_point_of_the_rules_and_feeds_ingest() {
    let out = tmp_path("c4");
    let c4 = shared("c4/c4-train.00000-of-01024.first600.json.gz");
    let s = clean_json(&[
        c4.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--any-language",
    ]);
    let t = &s["totals"];
    assert_eq!(t["pages_in"], 600);
    // No line of C4 breaks a line rule, and no line repeats (C4 is deduplicated).
    assert_eq!(t["lines_dropped"], serde_json::json!({}), "{s}");
    // Our sentence counter is not nltk's: at most a page in a hundred may differ.
    assert!(t["pages_out"].as_u64().unwrap() >= 594, "{s}");
    let out_docs = docs(&out.join("c4-clean.00000-of-00001.json.gz"));
    assert_eq!(out_docs.len() as u64, t["pages_out"].as_u64().unwrap());
    assert!(out_docs[0]["url"].as_str().unwrap().starts_with("http"));
    // The output is ordinary C4-format input (its manifest.json is passed over).
    let tokens = tmp_path("c4-tokens");
    let i = ok(&[
        "ingest",
        out.to_str().unwrap(),
        "--vocab",
        shared("spiece/t5-spiece.model").to_str().unwrap(),
        "--out",
        tokens.to_str().unwrap(),
        "--json",
    ]);
    let i: serde_json::Value = serde_json::from_str(&i).unwrap();
    assert_eq!(i["totals"]["documents"], t["pages_out"]);
}

#[test]
fn corpus_stages_drop_what_they_should_in_input_order() {
    let dir = tmp_dir("pages");
    let line = |s: &str| {
        serde_json::json!({"text": s, "url": format!("https://example.com/{}", s.len())})
            .to_string()
    };
    let shared_line = "The old bridge over the river was rebuilt in stone after the flood.";
    let a = [
        format!("{shared_line}\nThe mill beside it ground corn for the whole valley for three hundred years.\nIts wheel still turns on summer days, when the families of the village come to watch it.\nThere is a small shop in the mill house where you can buy bread made with its flour."),
        "The badger lives in a sett dug into the bank of the field behind the church.\nIt comes out at night to look for worms and roots and the fruit that falls from the trees.\nFarmers rarely see it during the day, although they often find the paths it makes.".to_string(),
        "El puente viejo sobre el río fue reconstruido en piedra después de la inundación.\nEl molino molía maíz para todo el valle durante siglos.\nSu rueda todavía gira en los días de verano para los visitantes.".to_string(),
    ];
    let b = [
        format!("The village church stands on a low hill to the north of the bridge and the mill.\n{shared_line}\nIts tower can be seen from every farm in the valley, and its bell is heard in all of them.\nThe people of the village have met there every Sunday morning for as long as anyone remembers."),
        format!("{shared_line}\n{shared_line}\n{shared_line}"),
    ];
    // Blank lines between and after records are passed over, as JSON-lines readers do.
    std::fs::write(
        dir.join("a.jsonl"),
        a.iter().map(|t| line(t)).collect::<Vec<_>>().join("\n\n") + "\n\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b.jsonl"),
        b.iter().map(|t| line(t)).collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
    let words = dir.join("badwords.txt");
    std::fs::write(&words, "# test list\nbadger\n").unwrap();
    let out1 = tmp_path("pages-out1");
    let run = |out: &Path, threads: &str| {
        clean_json(&[
            dir.join("a.jsonl").to_str().unwrap(),
            dir.join("b.jsonl").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--badwords",
            words.to_str().unwrap(),
            "--threads",
            threads,
        ])
    };
    let s = run(&out1, "1");
    let t = &s["totals"];
    assert_eq!(t["pages_in"], 5);
    assert_eq!(s["unreadable"], 0, "{s}");
    assert_eq!(t["pages_dropped"]["bad_words"], 1, "{s}");
    assert_eq!(t["pages_dropped"]["not_english"], 1, "{s}");
    // The last page of b.jsonl repeats the shared line only: nothing is left of it.
    assert_eq!(t["pages_dropped"]["all_lines_duplicate"], 1, "{s}");
    assert_eq!(t["lines_dropped"]["duplicate"], 4, "{s}");
    let a_out = docs(&out1.join("c4-clean.00000-of-00002.json.gz"));
    let b_out = docs(&out1.join("c4-clean.00001-of-00002.json.gz"));
    assert_eq!(a_out.len(), 1);
    assert!(a_out[0]["text"].as_str().unwrap().starts_with(shared_line));
    // The first occurrence (in a.jsonl) keeps the line; b.jsonl's page loses it.
    assert_eq!(b_out.len(), 1);
    assert!(!b_out[0]["text"].as_str().unwrap().contains(shared_line));
    // Two threads write the same bytes; the same job again does nothing.
    let out2 = tmp_path("pages-out2");
    run(&out2, "2");
    for f in [
        "c4-clean.00000-of-00002.json.gz",
        "c4-clean.00001-of-00002.json.gz",
        "manifest.json",
    ] {
        assert!(
            std::fs::read(out1.join(f)).unwrap() == std::fs::read(out2.join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(run(&out1, "2")["already_complete"], true);
    // inspect names a clean output for what it is (it said "missing field records").
    let o = conveyor(&["inspect", out1.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("is a conveyor-clean folder; inspect reads token folders"),
        "{err}"
    );
    // Records that are not documents are named (they were counted only), and none at all
    // (a wrong --text-field) fails the run, writing nothing: the corrected command then runs
    // (it was "another job" over an empty output that needed --overwrite).
    let wrong = tmp_path("pages-wrong-field");
    let input = dir.join("a.jsonl");
    let clean = |field: &str| {
        let args = ["clean", input.to_str().unwrap(), "--out"];
        conveyor(&[&args[..], &[wrong.to_str().unwrap(), "--text-field", field]].concat())
    };
    let o = clean("content");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(2)
            && err.contains("none of the 3 records")
            && err.contains("a.jsonl: record 1")
            && err.contains("nothing was written"),
        "{err}"
    );
    assert!(!wrong.exists());
    let o = clean("text");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A finished output cut short is named, not taken as complete (clean's manifest listed
    // no sizes: a later ingest failed on the broken gzip stream).
    let first = out1.join("c4-clean.00000-of-00002.json.gz");
    let bytes = std::fs::read(&first).unwrap();
    std::fs::write(&first, &bytes[..bytes.len() / 2]).unwrap();
    let o = conveyor(&[
        "clean",
        dir.join("a.jsonl").to_str().unwrap(),
        dir.join("b.jsonl").to_str().unwrap(),
        "--out",
        out1.to_str().unwrap(),
        "--badwords",
        words.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("its manifest lists") && err.contains("--overwrite"),
        "{err}"
    );
}

#[test]
fn wet_pages_are_read_and_a_spanish_page_is_not_english() {
    let out = tmp_path("wet");
    let wet = shared("c4/wet/whirlwind.warc.wet.gz");
    let s = clean_json(&[wet.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(s["totals"]["pages_in"], 1);
    assert_eq!(s["totals"]["pages_out"], 0);
    // Thresholds are parameters: with the line rules off, the page reaches the language test.
    let rules = tmp_dir("wet-rules").join("rules.toml");
    std::fs::write(
        &rules,
        "terminal_punctuation = false\nmin_words_per_line = 1\ncurly_brace = false\n",
    )
    .unwrap();
    let out2 = tmp_path("wet2");
    let s = clean_json(&[
        wet.to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
    ]);
    assert_eq!(s["totals"]["pages_dropped"]["not_english"], 1, "{s}");
}

#[test]
fn three_workers_and_a_merge_write_exactly_what_one_process_writes() {
    // Three inputs cut from the C4 sample; the third repeats pages of the first, so the
    // corpus-wide dedup (done by the merge) has work across workers.
    let dir = c4_cuts("split", &[("a", 0..200), ("b", 200..400), ("c", 150..250)]);
    let one = tmp_path("split-one");
    let s = clean_json(&[dir.to_str().unwrap(), "--out", one.to_str().unwrap()]);
    assert!(
        s["totals"]["lines_dropped"]["duplicate"].as_u64().unwrap() > 500,
        "{s}"
    );
    let many = tmp_path("split-many");
    for i in ["0", "1", "2"] {
        ok(&[
            "clean",
            dir.to_str().unwrap(),
            "--out",
            many.to_str().unwrap(),
            "--num-workers",
            "3",
            "--worker-index",
            i,
            "-q",
        ]);
    }
    let m = ok(&["manifest", "merge", many.to_str().unwrap()]);
    assert!(m.contains("3 cleaned files"), "{m}");
    assert!(
        files_in(&many) == files_in(&one),
        "the merged output differs"
    );
}

#[test]
fn a_killed_run_resumes_to_the_identical_result() {
    // Four inputs, the last two repeating the first two: the resumed run must rebuild the
    // dedup set from the outputs already written, or it would keep the repeats.
    let dir = c4_cuts(
        "resume-in",
        &[
            ("a", 0..300),
            ("b", 300..600),
            ("c", 0..300),
            ("d", 300..600),
        ],
    );
    let args = |out: &Path| {
        vec![
            "clean".to_string(),
            dir.display().to_string(),
            "--out".into(),
            out.display().to_string(),
            "--threads".into(),
            "1".into(),
            "-q".into(),
        ]
    };
    let full = tmp_path("resume-full");
    let o = crate::common::conveyor_cmd()
        .args(args(&full))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let killed = tmp_path("resume-killed");
    let work = killed.join(".conveyor-clean");
    // Kill each run once it has finished one more input than the run before.
    let finished_inputs = || {
        std::fs::read_dir(&work)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".record.json"))
                    .count()
            })
            .unwrap_or(0)
    };
    let kills = run_with_kills(
        &args(&killed),
        20,
        |attempt| finished_inputs() > attempt,
        || {},
    );
    assert!(
        kills > 0,
        "the run always finished before it could be killed"
    );
    assert!(
        files_in(&killed) == files_in(&full),
        "the resumed output differs"
    );
}

#[test]
fn a_dedup_sharded_by_line_hash_gives_the_one_pass_result() {
    // The same inputs as the worker test: cut from C4, the third repeating parts of the others.
    let dir = c4_cuts(
        "shard-in",
        &[("a", 0..200), ("b", 200..400), ("c", 150..250)],
    );
    let one = tmp_path("shard-one");
    clean_json(&[
        dir.to_str().unwrap(),
        "--out",
        one.to_str().unwrap(),
        "--any-language",
    ]);
    let many = tmp_path("shard-many");
    let m = many.to_str().unwrap();
    for i in ["0", "1"] {
        ok(&[
            "clean",
            dir.to_str().unwrap(),
            "--out",
            m,
            "--any-language",
            "--num-workers",
            "2",
            "--worker-index",
            i,
            "-q",
        ]);
    }
    // Three dedup shards; merging with one missing is refused and names it.
    for i in ["0", "2"] {
        ok(&[
            "manifest",
            "merge",
            m,
            "--dedup-shard",
            i,
            "--dedup-shards",
            "3",
        ]);
    }
    let o = conveyor(&["manifest", "merge", m]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("dedup shard(s) 1 of 3"),
        "{err}"
    );
    let s = ok(&[
        "manifest",
        "merge",
        m,
        "--dedup-shard",
        "1",
        "--dedup-shards",
        "3",
    ]);
    assert!(s.contains("repeated lines to drop"), "{s}");
    // A drop list cut short is named, not applied in part.
    let list = many.join("parts/dedup-worker-00001-of-00003.bin");
    let whole = std::fs::read(&list).unwrap();
    std::fs::write(&list, &whole[..whole.len() - 16]).unwrap();
    let o = conveyor(&["manifest", "merge", m]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("dedup-worker-00001-of-00003.bin")
            && err.contains("damaged"),
        "{err}"
    );
    std::fs::write(&list, whole).unwrap();
    ok(&["manifest", "merge", m]);
    assert!(
        files_in(&many) == files_in(&one),
        "the sharded dedup differs from one pass"
    );
}

#[test]
fn a_different_clean_job_is_refused_and_overwrite_replaces_the_output() {
    let c4 = shared("c4/c4-train.00000-of-01024.first600.json.gz");
    let c4 = c4.to_str().unwrap();
    let out = tmp_path("overwrite");
    let fresh = tmp_path("overwrite-fresh");
    ok(&["clean", c4, "--out", out.to_str().unwrap(), "-q"]);
    // Other settings, same folder: refused, and nothing is removed.
    let o = conveyor(&[
        "clean",
        c4,
        "--out",
        out.to_str().unwrap(),
        "-q",
        "--any-language",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--overwrite"));
    assert!(out.join("c4-clean.00000-of-00001.json.gz").exists());
    // --overwrite replaces it with exactly what a fresh run writes.
    ok(&[
        "clean",
        c4,
        "--out",
        out.to_str().unwrap(),
        "-q",
        "--any-language",
        "--overwrite",
    ]);
    ok(&[
        "clean",
        c4,
        "--out",
        fresh.to_str().unwrap(),
        "-q",
        "--any-language",
    ]);
    assert!(files_but_manifest(&out) == files_but_manifest(&fresh));
}

/// A truncated gzip input is named with the position of its fault and the run exits 1 (as
/// ingest does), keeping what was read before the fault and every other input.
#[test]
fn a_truncated_input_is_named_and_fails_the_run() {
    let dir = c4_cuts("clean-cut", &[("a", 0..100)]);
    let gz = std::fs::read(shared("c4/c4-train.00000-of-01024.first600.json.gz")).unwrap();
    std::fs::write(dir.join("b.json.gz"), &gz[..gz.len() / 2]).unwrap();
    let out = tmp_path("clean-cut-out");
    let o = conveyor(&[
        "clean",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--any-language",
        "--json",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("b.json.gz") && err.contains("read failed after line"),
        "{err}"
    );
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let failed = s["failed_inputs"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{s}");
    assert!(failed[0]["input"].as_str().unwrap().ends_with("b.json.gz"));
    // Both inputs have their output; the truncated one's holds the pages read before the fault.
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let files = m["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    let kept = docs(&out.join(files[1]["output"].as_str().unwrap())).len();
    assert!(kept > 0 && files[1]["error"].is_string(), "{m}");
    assert!(
        files[0]["error"].is_null()
            && !docs(&out.join(files[0]["output"].as_str().unwrap())).is_empty()
    );
}
