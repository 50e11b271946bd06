//! End-to-end: prepare a real task, fine-tune a tiny model on it, evaluate by greedy decoding
//! (through `conveyor`, which hands finetune/eval to `conveyor-torch`).

use crate::common;

use common::*;

/// A path under ../shared/data, as a command-line argument.
fn shared(rel: &str) -> String {
    common::shared(rel).display().to_string()
}

#[test]
fn prepare_finetune_and_evaluate_ag_news_and_cogs() {
    let vocab = shared("spiece/t5-spiece.model");
    let (data, run, eval) = (tmp_path("ag"), tmp_path("run"), tmp_path("eval"));
    let (d, r, e) = (
        data.to_str().unwrap(),
        run.to_str().unwrap(),
        eval.to_str().unwrap(),
    );
    ok(&[
        "task",
        "prepare",
        "ag_news",
        "--input",
        &shared("ag_news/test_rows_0001-6000.csv"),
        "--vocab",
        &vocab,
        "--out",
        d,
        "--inputs-length",
        "64",
    ]);
    ok(&[
        "finetune",
        "--task",
        "ag_news",
        "--data",
        d,
        "--arch",
        "transformer",
        "--preset",
        "tiny",
        "--out",
        r,
        "--steps",
        "120",
        "--batch-size",
        "32",
        "--lr",
        "0.003",
        "--device",
        "cpu",
        "-q",
    ]);
    let ckpt = run.join("checkpoints/step-00000120");
    let out = ok(&[
        "eval",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--data",
        d,
        "--out",
        e,
        "--limit",
        "200",
        "--device",
        "cpu",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let acc = v["scores"]["accuracy"].as_f64().unwrap();
    assert_eq!(v["scores"]["examples"], 200);
    // Four balanced classes: a model that learned nothing scores about 0.25 or emits junk.
    assert!(acc > 0.35, "accuracy {acc}");
    assert!(v["scores"]["invalid"].as_u64().unwrap() < 20, "{v}");
    let lines = std::fs::read_to_string(eval.join("predictions.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 200);
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["scores"]["accuracy"].as_f64(), Some(acc));

    // The report puts it in the Table 2 layout; run folders work too (evaluations with the
    // default --out land in the checkpoint folder).
    let table = ok(&["report", e]);
    assert!(
        table.contains("AG News") && table.contains("transformer, no pre-training"),
        "{table}"
    );
    // An evaluation of a task the table has no column for (a task file's) is said, not an
    // empty table with status 0.
    let other = tmp_path("eval-task-file");
    std::fs::create_dir_all(&other).unwrap();
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(eval.join("metrics.json")).unwrap()).unwrap();
    m["task"] = "my_trec".into();
    std::fs::write(other.join("metrics.json"), m.to_string()).unwrap();
    let o = conveyor(&["report", other.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("none of the evaluations"),
        "{err}"
    );
    ok(&[
        "eval",
        "--task",
        "ag_news",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--data",
        d,
        "--limit",
        "10",
        "--device",
        "cpu",
    ]);
    assert!(ckpt.join("eval-ag_news/metrics.json").exists());
    // A mistyped checkpoint is named and nothing is made (the default --out lies inside it:
    // its folders were created, with a lock and a temporary, and then named a run folder).
    let typo = tmp_path("no-such-run").join("checkpoints/step-00000002");
    let o = conveyor(&[
        "eval",
        "--checkpoint",
        typo.to_str().unwrap(),
        "--data",
        d,
        "--device",
        "cpu",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("does not exist"),
        "{err}"
    );
    assert!(!tmp_path("no-such-run").exists());
    // The manifest's vocabulary path is as prepare was given it (here a relative one, from
    // another folder than eval runs in): named, with --vocab to pass.
    let moved = tmp_dir("ag-relative-vocab");
    for e in std::fs::read_dir(&data).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), moved.join(e.file_name())).unwrap();
        }
    }
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(moved.join("manifest.json")).unwrap())
            .unwrap();
    m["vocab"]["path"] = "spiece/t5-spiece.model".into();
    std::fs::write(moved.join("manifest.json"), m.to_string()).unwrap();
    let mut args = vec!["eval", "--checkpoint", ckpt.to_str().unwrap()];
    args.extend(["--data", moved.to_str().unwrap(), "--device", "cpu"]);
    let o = conveyor(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("not a file from here: pass --vocab"),
        "{err}"
    );
    let temporaries = std::fs::read_dir(ckpt.join("eval-ag_news"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .count();
    assert_eq!(temporaries, 0, "a failed evaluation leaves no temporary");
    args.extend(["--vocab", &vocab, "--limit", "4"]);
    ok(&args);
    let from_run = ok(&["report", r]);
    assert!(from_run.contains("AG News"), "{from_run}");

    // eval and report --out replace only their own files: an evaluation of conveyor's is
    // replaced (the default --out again), a user's files of the same names are not.
    let eval_to = |out: &std::path::Path| {
        let c = ckpt.to_str().unwrap();
        let o = out.to_str().unwrap().to_string();
        conveyor(&[
            "eval",
            "--checkpoint",
            c,
            "--data",
            d,
            "--out",
            &o,
            "--limit",
            "10",
            "--device",
            "cpu",
        ])
    };
    let mine = tmp_path("eval-mine");
    std::fs::create_dir_all(&mine).unwrap();
    for f in ["metrics.json", "predictions.jsonl"] {
        std::fs::write(mine.join(f), "{\"mine\": 1}\n").unwrap();
    }
    let o = eval_to(&mine);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("not an evaluation conveyor wrote"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("metrics.json")).unwrap(),
        "{\"mine\": 1}\n"
    );
    // A killed evaluation's temporary predictions go with the next run.
    std::fs::write(eval.join(".predictions.jsonl.99999-0.tmp"), "partial").unwrap();
    let files = || {
        let mut v: Vec<_> = std::fs::read_dir(&eval)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    // While another evaluation holds the folder, a second one is refused and takes nothing,
    // not even that temporary (it could be the running one's).
    let held = conveyor_pipeline::run_lock::RunLock::take(
        &eval,
        conveyor_pipeline::run_lock::RunKind::Eval,
    )
    .unwrap();
    let before = files();
    let o = eval_to(&eval);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("in use"), "{err}");
    assert_eq!(files(), before);
    drop(held);
    assert!(eval_to(&eval).status.success());
    assert_eq!(
        files(),
        [".conveyor-eval.lock", "metrics.json", "predictions.jsonl"]
    );
    std::fs::write(mine.join("report.md"), "mine").unwrap();
    let o = conveyor(&["report", e, "--out", mine.to_str().unwrap()]);
    assert!(
        !o.status.success()
            && String::from_utf8_lossy(&o.stderr).contains("not a report conveyor wrote")
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("report.md")).unwrap(),
        "mine"
    );
    let reports = tmp_path("reports");
    for _ in 0..2 {
        ok(&["report", e, "--out", reports.to_str().unwrap()]);
    }
    assert!(reports.join("report.json").exists() && reports.join("report.md").exists());

    // Fine-tuning from a checkpoint (its architecture is taken from it) is a "pre-trained"
    // row, and the report shows the gain.
    // --config applies on top of the checkpoint's: here T5 v1.1's recipe, dropout 0 in
    // pre-training and 0.1 in fine-tuning (the dropout rates were refused as another model).
    let (r2, e2) = (tmp_path("run-init"), tmp_path("eval-init"));
    let dropout = tmp_path("dropout.json");
    std::fs::write(&dropout, r#"{"dropout": 0.25}"#).unwrap();
    ok(&[
        "finetune",
        "--task",
        "ag_news",
        "--data",
        d,
        "--init",
        ckpt.to_str().unwrap(),
        "--config",
        dropout.to_str().unwrap(),
        "--out",
        r2.to_str().unwrap(),
        "--steps",
        "3",
        "--device",
        "cpu",
        "-q",
    ]);
    let tuned: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(r2.join("checkpoints/step-00000003/model_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(tuned["dropout"], 0.25, "{tuned}");
    ok(&[
        "eval",
        "--checkpoint",
        r2.join("checkpoints/step-00000003").to_str().unwrap(),
        "--data",
        d,
        "--out",
        e2.to_str().unwrap(),
        "--limit",
        "200",
        "--device",
        "cpu",
    ]);
    let table = ok(&["report", e, e2.to_str().unwrap()]);
    assert!(table.contains("transformer, pre-trained"), "{table}");
    assert!(table.contains("gain from pre-training"), "{table}");
    assert!(
        table.contains("AG News") && table.contains("transformer, no pre-training"),
        "{table}"
    );
    // Evaluations record their runs: moving the run folders away (or reporting from
    // another working folder than relative checkpoint paths were given in) changes nothing.
    let moved = (tmp_path("run-moved"), tmp_path("run-init-moved"));
    std::fs::rename(&run, &moved.0).unwrap();
    std::fs::rename(&r2, &moved.1).unwrap();
    assert_eq!(ok(&["report", e, e2.to_str().unwrap()]), table);
    std::fs::rename(&moved.0, &run).unwrap();
    std::fs::rename(&moved.1, &r2).unwrap();

    // COGS: exact match, reported per generalisation category.
    let cogs = tmp_path("cogs");
    ok(&[
        "task",
        "prepare",
        "cogs",
        "--input",
        &shared("cogs/dev.tsv"),
        "--vocab",
        &vocab,
        "--out",
        cogs.to_str().unwrap(),
    ]);
    let out = ok(&[
        "eval",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--data",
        cogs.to_str().unwrap(),
        "--out",
        tmp_path("cogs-eval").to_str().unwrap(),
        "--limit",
        "20",
        "--device",
        "cpu",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["scores"]["per_category"]["in_distribution"].is_number(),
        "{v}"
    );

    // A task defined in a TOML file goes through the same commands.
    let spec = tmp_path("spec.toml");
    std::fs::write(
        &spec,
        "name = \"my_trec\"\nformat = \"csv\"\nheader = false\ninput_template = \"topic: {1}\"\nlabel_column = \"0\"\nmetric = \"accuracy\"\n[label_map]\n\"1\" = \"World\"\n\"2\" = \"Sports\"\n\"3\" = \"Business\"\n\"4\" = \"Sci/Tech\"\n",
    )
    .unwrap();
    let spec_out = tmp_path("spec-out");
    let prepare = |task: &str, out: &std::path::Path| -> Vec<String> {
        let input = shared("ag_news/train_subset_581rows_noncontiguous.csv");
        let (spec, out) = (spec.to_str().unwrap(), out.to_str().unwrap());
        [
            "task",
            "prepare",
            task,
            "--task-file",
            spec,
            "--input",
            &input,
            "--vocab",
            &vocab,
        ]
        .into_iter()
        .chain(["--out", out, "--json"])
        .map(String::from)
        .collect()
    };
    let args = prepare("my_trec", &spec_out);
    let out = ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["task"].as_str(), v["written"].as_u64()),
        (Some("my_trec"), Some(581))
    );
    // Named for a built-in task, the file is not silently set aside for it.
    let args = prepare("ag_news", &tmp_path("spec-other"));
    let o = conveyor(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("defines the task \"my_trec\", not \"ag_news\""),
        "{err}"
    );

    // Fine-tuning data of another task is refused.
    let o = crate::common::conveyor_cmd()
        .args([
            "finetune",
            "--task",
            "sst2",
            "--data",
            d,
            "--arch",
            "transformer",
            "--out",
            tmp_path("wrong").to_str().unwrap(),
            "--device",
            "cpu",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("task prepare sst2"));
}

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
