//! `task prepare` and `task texts` on their own: split among workers, held-out sides,
//! lengths, the order examples are written in.

use super::*;

#[test]
fn a_task_prepare_split_among_workers_merges_to_the_one_process_output() {
    // Civil Comments ships three files: one shard each, whoever writes it.
    let dir = "civil_comments/kaggle_unintended_bias_first_rows_";
    let inputs: Vec<String> = [
        "test_private_expanded.csv",
        "test_public_expanded.csv",
        "train.csv",
    ]
    .iter()
    .map(|f| shared(&format!("{dir}{f}")))
    .collect();
    let vocab = shared("spiece/t5-spiece.model");
    let args = |out: &str, extra: &[&str]| {
        let mut a: Vec<String> = ["task", "prepare", "civil_comments"]
            .map(String::from)
            .to_vec();
        for i in &inputs {
            a.extend(["--input".into(), i.clone()]);
        }
        a.extend(
            [
                "--vocab",
                &vocab,
                "--out",
                out,
                "--inputs-length",
                "96",
                "--targets-length",
                "4",
            ]
            .map(String::from),
        );
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |a: Vec<String>| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        conveyor(&refs)
    };
    let one = tmp_path("prepare-one");
    let o = run(args(one.to_str().unwrap(), &[]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let many = tmp_path("prepare-many");
    let m = many.to_str().unwrap();
    for i in ["0", "1"] {
        let o = run(args(m, &["--num-workers", "2", "--worker-index", i]));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let merged = ok(&["manifest", "merge", m]);
    assert!(merged.contains("3 task example shards"), "{merged}");
    assert!(
        files_in(&many) == files_in(&one),
        "the merged output differs"
    );
    // A split prepare without fixed lengths is refused with the reason.
    let mut a = args(
        tmp_path("prepare-bad").to_str().unwrap(),
        &["--num-workers", "2", "--worker-index", "0"],
    );
    let at = a.iter().position(|x| x == "--inputs-length").unwrap();
    a.drain(at..at + 2);
    let o = run(a);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("--inputs-length"),
        "{err}"
    );
}

/// `task texts` writes the inputs of the rows `task prepare --holdout` keeps for train (the
/// dev split's rows never), and refuses to replace a file without --overwrite.
#[test]
fn task_texts_are_the_train_side_of_the_holdout() {
    let dir = tmp_path("texts");
    std::fs::create_dir_all(&dir).unwrap();
    let (texts, dev) = (dir.join("trec.jsonl"), dir.join("dev"));
    let trec = shared("trec/train_5500.label");
    let args = |out: &str| {
        vec![
            "task".to_string(),
            "texts".into(),
            "trec".into(),
            "--input".into(),
            trec.clone(),
            "--holdout".into(),
            "0.2".into(),
            "--out".into(),
            out.into(),
        ]
    };
    let out = texts.to_str().unwrap();
    let run = |a: Vec<String>| conveyor(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let first = run(args(out));
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let again = run(args(out));
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("give --overwrite"));
    ok(&[
        "task",
        "prepare",
        "trec",
        "--input",
        &trec,
        "--vocab",
        &shared("spiece/t5-spiece.model"),
        "--out",
        dev.to_str().unwrap(),
        "--split",
        "dev",
        "--holdout",
        "0.2",
    ]);
    let lines: Vec<String> = std::fs::read_to_string(&texts)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dev.join("manifest.json")).unwrap()).unwrap();
    let held = m["examples"].as_u64().unwrap();
    // TREC's 5,452 rows: the texts and the dev split share none and together hold all.
    assert_eq!(lines.len() as u64 + held, 5452);
    assert!(lines[0].starts_with("trec question: "), "{}", lines[0]);
}

/// A generation task's examples keep their whole length by default (COGS's 90th percentile
/// cut 275 of its 3,000 dev logical forms, which then could never be predicted right, and
/// the sentences they need); lengths under 2 and `--holdout` with a split that is neither
/// train nor dev (it kept the training rows as the "validation" set) are refused.
#[test]
fn targets_keep_their_length_and_holdout_splits_are_named() {
    let vocab = shared("spiece/t5-spiece.model");
    let cogs = shared("cogs/dev.tsv");
    let prepare = |extra: &[&str]| {
        let out = tmp_path("cogs-lengths");
        let _ = std::fs::remove_dir_all(&out);
        let mut args = vec![
            "task", "prepare", "cogs", "--input", &cogs, "--vocab", &vocab, "--json", "--out",
        ];
        let out = out.to_str().unwrap().to_string();
        args.push(&out);
        args.extend(extra);
        conveyor(&args)
    };
    let o = prepare(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (&s["truncated_targets"], &s["truncated_inputs"]),
        (&0.into(), &0.into()),
        "{s}"
    );
    // Given lengths still cut, and say so.
    let o = prepare(&["--inputs-length", "8", "--targets-length", "16"]);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cut = |k: &str| s[k].as_u64().unwrap();
    assert!(
        cut("truncated_targets") > 0 && cut("truncated_inputs") > 0,
        "{s}"
    );
    for (extra, words) in [
        (
            &["--targets-length", "1"][..],
            "--targets-length 1 leaves no room",
        ),
        (
            &["--inputs-length", "0"][..],
            "--inputs-length 0 leaves no room",
        ),
        (
            &["--split", "validation", "--holdout", "0.1"][..],
            "--split dev for the held-out rows",
        ),
    ] {
        let o = prepare(extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(words),
            "{extra:?}: {err}"
        );
    }
}

/// Task files sorted by label (aclImdb's neg/ then pos/, Sentiment140's CSV) are written in a
/// seeded random order, as TFDS writes datasets: in read order a loader's shuffle buffer saw
/// one label for thousands of steps.
#[test]
fn task_examples_are_written_in_a_random_order() {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::UInt16Type;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let text =
        std::fs::read_to_string(shared("ag_news/train_subset_581rows_noncontiguous.csv")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_by_key(|l| l.split(',').next().unwrap().to_string());
    let sorted = tmp_dir("sorted-task").join("train.csv");
    std::fs::write(&sorted, lines.join("\n") + "\n").unwrap();
    let out = tmp_path("sorted-task-examples");
    ok(&[
        "task",
        "prepare",
        "ag_news",
        "--input",
        sorted.to_str().unwrap(),
        "--vocab",
        &shared("spiece/t5-spiece.model"),
        "--out",
        out.to_str().unwrap(),
    ]);
    let mut targets: Vec<Vec<u16>> = Vec::new();
    for e in std::fs::read_dir(&out).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "parquet") {
            let file = std::fs::File::open(e.path()).unwrap();
            for b in ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap()
            {
                let b = b.unwrap();
                let l = b.column_by_name("targets").unwrap().as_list::<i32>();
                for i in 0..l.len() {
                    targets.push(l.value(i).as_primitive::<UInt16Type>().values().to_vec());
                }
            }
        }
    }
    assert_eq!(targets.len(), lines.len());
    let longest = targets
        .chunk_by(|a, b| a == b)
        .map(<[_]>::len)
        .max()
        .unwrap();
    // Four labels in random order: runs of a few rows (read order: ~145).
    assert!(longest < 20, "{longest} rows of one label in a row");
}

/// A task prepared again from inputs or a task file edited in place (same names, same sizes)
/// is another job: it was "already complete" with the old examples.
#[test]
fn edited_inputs_and_task_files_are_another_job() {
    let dir = tmp_dir("edited-task");
    let data = dir.join("train.tsv");
    let spec = dir.join("polarity.toml");
    std::fs::write(
        &data,
        "sentence\tlabel\ngood film\t1\nbad film\t0\nfine film\t1\n",
    )
    .unwrap();
    let map = |a: &str, b: &str| {
        format!("name = \"polarity\"\nformat = \"tsv\"\ninput_template = \"polarity: {{sentence}}\"\nlabel_column = \"label\"\nmetric = \"accuracy\"\n[label_map]\n\"0\" = \"{a}\"\n\"1\" = \"{b}\"\n")
    };
    std::fs::write(&spec, map("negative", "positive")).unwrap();
    let out = tmp_path("edited-task-examples");
    let vocab = shared("spiece/t5-spiece.model");
    let prepare = |extra: &[&str]| {
        let mut args = vec![
            "task",
            "prepare",
            "polarity",
            "--task-file",
            spec.to_str().unwrap(),
            "--input",
            data.to_str().unwrap(),
            "--vocab",
            &vocab,
            "--out",
            out.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        conveyor(&args)
    };
    let first = prepare(&[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let again = prepare(&[]);
    let v: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(v["already_complete"], true);
    // Relabelled in place: same size.
    std::fs::write(
        &data,
        "sentence\tlabel\ngood film\t0\nbad film\t1\nfine film\t0\n",
    )
    .unwrap();
    let o = prepare(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--overwrite"), "{err}");
    assert!(prepare(&["--overwrite"]).status.success());
    // The task file's labels swapped: same size.
    std::fs::write(&spec, map("positive", "negative")).unwrap();
    let o = prepare(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--overwrite"), "{err}");
    // A row skipped without --strict: a rerun with it stops there, as a strict run does (it
    // answered "already complete").
    let sst2 = dir.join("sst2.tsv");
    std::fs::write(
        &sst2,
        "sentence\tlabel\ngood film\t1\nno label here\nbad film\t0\n",
    )
    .unwrap();
    let out = tmp_path("strict-task-examples");
    let prepare = |extra: &[&str]| {
        let mut args = vec!["task", "prepare", "sst2", "--input", sst2.to_str().unwrap()];
        args.extend(["--vocab", &vocab, "--out", out.to_str().unwrap(), "--json"]);
        args.extend_from_slice(extra);
        conveyor(&args)
    };
    let o = prepare(&[]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["skipped"], 1, "{}", String::from_utf8_lossy(&o.stderr));
    let o = prepare(&["--strict"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("sst2.tsv:3") && err.contains("without --strict"),
        "{err}"
    );
    // A folder as --input reads its files (it failed: "Is a directory"); -q is taken as by
    // the other commands.
    let folder = dir.join("sst2-folder");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(&sst2, folder.join("a.tsv")).unwrap();
    std::fs::copy(&sst2, folder.join("b.tsv")).unwrap();
    let shown = ok(&["task", "show", "sst2", "--input", folder.to_str().unwrap()]);
    assert!(shown.contains("read 6 rows"), "{shown}");
    let both = tmp_path("strict-task-both");
    let (a, b) = (folder.join("a.tsv"), folder.join("b.tsv"));
    ok(&[
        "task",
        "prepare",
        "sst2",
        "--input",
        a.to_str().unwrap(),
        "--input",
        b.to_str().unwrap(),
        "--vocab",
        &vocab,
        "--out",
        both.to_str().unwrap(),
        "-q",
    ]);
}

/// Targets a vocabulary cannot give back are counted and warned about (39 of TREC's 50 labels
/// with the small fixture vocabulary decode otherwise: accuracy silently capped).
#[test]
fn targets_the_vocabulary_cannot_give_back_are_counted() {
    let prepare = |vocab: &str, name: &str| {
        let out = tmp_path(name);
        let o = conveyor(&[
            "task",
            "prepare",
            "trec",
            "--input",
            &shared("trec/train_5500.label"),
            "--vocab",
            vocab,
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (v, String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/vocab/fixture.model");
    let (v, err) = prepare(fixture.to_str().unwrap(), "unreachable-fixture");
    let n = v["unreachable_targets"].as_u64().unwrap();
    assert!(
        n > 1000 && err.contains("cannot give back") && err.contains("decodes as"),
        "{n} {err}"
    );
    let (v, err) = prepare(&shared("spiece/t5-spiece.model"), "unreachable-t5");
    assert_eq!(v["unreachable_targets"], 0, "{err}");
    assert!(!err.contains("cannot give back"), "{err}");
}
