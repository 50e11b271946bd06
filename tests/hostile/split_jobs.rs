//! Jobs split among workers: the workers write only into a new or empty folder or one holding
//! their own parts, and the merge removes and replaces only what the workers wrote.

use super::sandbox::*;
use crate::common::{ok, shared};

#[test]
fn workers_and_merges_leave_strangers_alone() {
    let sb = Sandbox::new("split-jobs");
    let inputs = sb.work.join("in");
    std::fs::create_dir_all(&inputs).unwrap();
    for f in ["a.json.gz", "b.json.gz"] {
        let c4 = shared("c4/c4-train.00000-of-01024.first600.json.gz");
        std::fs::copy(c4, inputs.join(f)).unwrap();
    }
    let worker = |out: &std::path::Path, w: &str| {
        ingest_args(
            &inputs,
            out,
            &["--worker-index", w, "--num-workers", "2", "-q"],
        )
    };
    // A folder of the user's: the first worker is refused before writing anything.
    let mine = sb.work.join("mine");
    std::fs::create_dir_all(mine.join("parts/notes")).unwrap();
    std::fs::write(mine.join("parts/notes/keep.txt"), "mine").unwrap();
    let before = snapshot(&mine);
    fails(
        &refs(&worker(&mine, "0")),
        &["parts", "not a part of a split conveyor job"],
    );
    assert_eq!(snapshot(&mine), before);
    std::fs::write(mine.join("report.md"), "mine").unwrap();
    std::fs::remove_dir_all(mine.join("parts")).unwrap();
    let before_md = snapshot(&mine);
    fails(
        &refs(&worker(&mine, "1")),
        &["report.md", "Move report.md away"],
    );
    assert_eq!(snapshot(&mine), before_md);

    // Strangers that arrive after the workers: the merge neither removes nor overwrites them.
    let out = sb.work.join("split");
    for w in ["0", "1"] {
        ok(&refs(&worker(&out, w)));
    }
    // A part listing one of its shards twice: named before anything moves.
    let part = out.join("parts/worker-00000-of-00002/part.json");
    let good = std::fs::read(&part).unwrap();
    edit_json(&part, |p| {
        let shards = p["manifest"]["shards"].as_array_mut().unwrap();
        let mut twin = shards[0].clone();
        twin["first_record"] = 999_999.into();
        shards.push(twin);
    });
    let before = snapshot(&out);
    fails(
        &["manifest", "merge", s(&out)],
        &["listed twice", "rerun its worker"],
    );
    assert_eq!(snapshot(&out), before, "a refused merge moved shards");
    std::fs::write(&part, good).unwrap();
    // A part whose job id was made to match but whose settings differ (another seed,
    // another shard size): named, nothing moved.
    let other = out.join("parts/worker-00001-of-00002/part.json");
    let good = std::fs::read(&other).unwrap();
    edit_json(&other, |p| {
        p["manifest"]["settings"]["shard_tokens"] = 7.into()
    });
    let before = snapshot(&out);
    fails(
        &["manifest", "merge", s(&out)],
        &[s(&other), "records other settings"],
    );
    assert_eq!(snapshot(&out), before, "a refused merge moved shards");
    std::fs::write(&other, good).unwrap();
    std::fs::create_dir_all(out.join("parts/notes")).unwrap();
    std::fs::write(out.join("parts/notes/keep.txt"), "mine").unwrap();
    // A stranger in the last shard's place stops the merge before the first move.
    let last = out.join("train-00001-of-00002.parquet");
    std::fs::write(&last, "mine").unwrap();
    let before = snapshot(&out);
    fails(&["manifest", "merge", s(&out)], &[s(&last), "in the way"]);
    assert_eq!(snapshot(&out), before, "a refused merge moved shards");
    // The very bytes of the shard there (a move redone after a kill, a staging folder
    // downloaded again) are this merge's own.
    let shard = out.join("parts/worker-00001-of-00002/shard-00000.parquet");
    std::fs::copy(&shard, &last).unwrap();
    // And a shard a killed merge had already moved is taken from its place.
    let first = out.join("parts/worker-00000-of-00002/shard-00000.parquet");
    std::fs::rename(&first, out.join("train-00000-of-00002.parquet")).unwrap();
    ok(&["manifest", "merge", s(&out)]);
    assert!(!shard.exists());
    ok(&["inspect", s(&out), "--verify"]);
    assert_eq!(
        std::fs::read_to_string(out.join("parts/notes/keep.txt")).unwrap(),
        "mine"
    );
    assert!(!out.join("parts/worker-00000-of-00002").exists());
    sb.assert_outside_unchanged();
}
