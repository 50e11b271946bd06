//! Inputs modified since a complete ingest was made from them, or since a killed one began:
//! named on the rerun.

use super::*;

/// An input edited in place at the same size is named (its modification time is recorded):
/// the rerun said "already complete" and kept the old tokens without a word.
#[test]
fn an_input_edited_in_place_is_named_on_a_rerun() {
    let d = tmp_dir("edited-input");
    let f = d.join("in").join("a.jsonl");
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::fs::write(&f, "{\"text\": \"the cat sat on the mat\"}\n").unwrap();
    let out = d.join("o");
    let (code, v, err) = ingest_json(&[f.to_str().unwrap()], &out, &[]);
    assert_eq!(code, 0, "{err}");
    let tokens = v["totals"]["tokens"].clone();
    let (_, again, _) = ingest_json(&[f.to_str().unwrap()], &out, &[]);
    assert_eq!(again["already_complete"], true);
    // Same size, other text, and a modification time surely other than the first.
    std::fs::write(&f, "{\"text\": \"THE DOG SAT ON THE MAT\"}\n").unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(later)
        .unwrap();
    // Said, not refused: a touch, a checkout or a copy without times changes it too, and a
    // refusal locked finished studies (which cannot pass --overwrite) out.
    let (code, v, err) = ingest_json(&[f.to_str().unwrap()], &out, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["modified_inputs"][0], f.to_str().unwrap(), "{v}");
    assert!(
        err.contains("was modified since") && err.contains("--overwrite"),
        "{err}"
    );
    let (code, v, err) = ingest_json(&[f.to_str().unwrap()], &out, &["--overwrite"]);
    assert_eq!(code, 0, "{err}");
    assert_ne!(
        v["totals"]["tokens"], tokens,
        "the new text tokenizes otherwise"
    );
}

/// A killed ingest resumed after an input was modified names it: the shards written before
/// the kill may hold its old contents (the rerun mixed old and new without a word).
#[test]
fn a_resumed_ingest_names_inputs_modified_since_it_began() {
    let d = tmp_dir("resume-modified");
    let inp = d.join("in");
    std::fs::create_dir_all(&inp).unwrap();
    for i in 0..4 {
        std::fs::copy(c4(), inp.join(format!("part{i}.json.gz"))).unwrap();
    }
    let out = d.join("o");
    let args: Vec<String> = [
        "ingest",
        inp.to_str().unwrap(),
        "--vocab",
        &t5(),
        "--out",
        out.to_str().unwrap(),
        "--shard-tokens",
        "20000",
        "--threads",
        "1",
        "-q",
    ]
    .map(String::from)
    .to_vec();
    let journal = out.join(".conveyor-ingest/journal.jsonl");
    let lines = || {
        std::fs::read_to_string(&journal)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let kills = run_with_kills(&args, 1, |_| lines() >= 2, || {});
    assert_eq!(kills, 1, "the run was never interrupted");
    let touched = inp.join("part3.json.gz");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&touched)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let (code, v, err) = ingest_json(
        &[inp.to_str().unwrap()],
        &out,
        &["--shard-tokens", "20000", "--threads", "1"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["resumed"], true, "{v}");
    assert_eq!(v["modified_inputs"][0], touched.to_str().unwrap(), "{v}");
    assert!(err.contains("was modified since"), "{err}");
}
