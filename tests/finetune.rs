//! End-to-end: prepare a real task, fine-tune a tiny model on it, evaluate by greedy decoding
//! (through `conveyor`, which hands finetune/eval to `conveyor-torch`).

use crate::common;

use common::*;

mod prepare;
mod squad;

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
    // The same scores from the predictions file alone (as another trainer's would be), and
    // other ones once a prediction changes.
    let predictions = eval.join("predictions.jsonl");
    let score = || {
        let out = ok(&[
            "task",
            "score",
            "ag_news",
            "--predictions",
            predictions.to_str().unwrap(),
            "--json",
        ]);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    assert_eq!(score(), metrics["scores"]);
    let labels = ["World", "Sports", "Business", "Sci/Tech"];
    let mut rows: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let valid = rows
        .iter()
        .position(|r| labels.iter().any(|l| r["prediction"] == *l))
        .unwrap();
    rows[valid]["prediction"] = "no label".into();
    let edited: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    std::fs::write(&predictions, edited.join("\n")).unwrap();
    let invalid = metrics["scores"]["invalid"].as_u64().unwrap();
    assert_eq!(score()["invalid"], invalid + 1);
    let first = lines.lines().next().unwrap();
    std::fs::write(
        &predictions,
        format!("{first}\n{{\"prediction\": \"World\"}}\n"),
    )
    .unwrap();
    let o = conveyor(&[
        "task",
        "score",
        "ag_news",
        "--predictions",
        predictions.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("predictions.jsonl: line 2: no \"target\""),
        "{err}"
    );
    std::fs::write(&predictions, &lines).unwrap();

    // The report puts it in the Table 2 layout; run folders work too (evaluations with the
    // default --out land in the checkpoint folder).
    let table = ok(&["report", e]);
    assert!(
        table.contains("AG News") && table.contains("transformer, no pre-training"),
        "{table}"
    );
    // An evaluation of a task outside the paper's (a task file's) gets a column under its
    // own name, with its F1 where scored (the table was empty: a study's report too).
    let other = tmp_path("eval-task-file");
    std::fs::create_dir_all(&other).unwrap();
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(eval.join("metrics.json")).unwrap()).unwrap();
    m["task"] = "my_trec".into();
    m["scores"]["f1"] = 0.5.into();
    std::fs::write(other.join("metrics.json"), m.to_string()).unwrap();
    let table = ok(&["report", other.to_str().unwrap(), e]);
    let header = table.lines().next().unwrap();
    assert_eq!(
        header, "| model | AG News | my_trec | my_trec F1 |",
        "{table}"
    );
    assert!(table.contains("| 50.00 |"), "{table}");
    // A task file's task named like a paper column gets a column of its own.
    m["task"] = "TREC".into();
    std::fs::write(other.join("metrics.json"), m.to_string()).unwrap();
    let table = ok(&["report", other.to_str().unwrap()]);
    let header = table.lines().next().unwrap();
    assert_eq!(header, "| model | task TREC | task TREC F1 |", "{table}");
    // A task name that is not a plain name (an edited metrics.json) is refused, not put
    // into the table's markup.
    m["task"] = "a | b".into();
    std::fs::write(other.join("metrics.json"), m.to_string()).unwrap();
    let o = conveyor(&["report", other.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("not a plain name"),
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
    // A checkpoint trained on data of another vocabulary (its record edited here) is refused
    // by eval, as by model loss and --init: its ids would stand for other pieces.
    let foreign = tmp_dir("ag-foreign-vocab");
    for e in std::fs::read_dir(&ckpt).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), foreign.join(e.file_name())).unwrap();
        }
    }
    let state = foreign.join("trainer_state.json");
    let mut s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert!(s["vocab_sha256"].is_string(), "{s}");
    s["vocab_sha256"] = "0".repeat(64).into();
    std::fs::write(&state, s.to_string()).unwrap();
    let o = conveyor(&[
        "eval",
        "--checkpoint",
        foreign.to_str().unwrap(),
        "--data",
        d,
        "--out",
        foreign.join("eval").to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("made with another one"),
        "{err}"
    );
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
    // A file as --out is named as such ("File exists" before), and --limit 0 is refused.
    let o = eval_to(&mine.join("metrics.json"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("is a file"), "{err}");
    let c = ckpt.to_str().unwrap();
    let o = conveyor(&["eval", "--checkpoint", c, "--data", d, "--limit", "0"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--limit 0"), "{err}");
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
        // The examples `eval_to` last scored into `e`: a report compares models on one
        // split (another --limit is refused).
        "--limit",
        "10",
        "--device",
        "cpu",
    ]);
    let table = ok(&["report", e, e2.to_str().unwrap()]);
    assert!(table.contains("transformer, pre-trained"), "{table}");
    let at = |limit: &str| {
        let out = tmp_path("eval-init-200");
        let c = r2.join("checkpoints/step-00000003");
        let args = ["eval", "--checkpoint", c.to_str().unwrap(), "--data", d];
        ok(&[
            &args[..],
            &[
                "--out",
                out.to_str().unwrap(),
                "--limit",
                limit,
                "--device",
                "cpu",
            ],
        ]
        .concat());
        out
    };
    let o = conveyor(&["report", e, at("200").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("compares models on one split"),
        "{err}"
    );
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
    // Evaluated with the task file it was prepared with only: without it, or with an edited
    // one (another label), the labels and metric would be another task's.
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "--checkpoint", ckpt.to_str().unwrap()];
        args.extend(["--data", spec_out.to_str().unwrap(), "--limit", "4"]);
        args.extend(["--device", "cpu", "--out"]);
        let out = tmp_path("spec-eval");
        args.push(out.to_str().unwrap());
        args.extend(extra);
        conveyor(&args)
    };
    let o = eval(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("give that file with --task-file"),
        "{err}"
    );
    let edited = tmp_path("edited.toml");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&edited, text.replace("Sports", "Sport")).unwrap();
    let o = eval(&["--task-file", edited.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("are not those"),
        "{err}"
    );
    let o = eval(&["--task-file", spec.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A task file may not take a built-in task's name: wherever the file was not given, the
    // built-in task would be taken for it.
    std::fs::write(&edited, text.replace("my_trec", "ag_news")).unwrap();
    let o = conveyor(&[
        "task",
        "show",
        "ag_news",
        "--task-file",
        edited.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("is a built-in task's"),
        "{err}"
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
