//! `conveyor study`: a small grid runs end to end, a rerun redoes nothing, and a cell trained
//! again reproduces bit for bit.

use crate::common::{root, tmp_path};

#[test]
fn a_study_runs_and_resumes_without_redoing_cells() {
    let root = root();
    let out = tmp_path("study");
    let run = || {
        let o = crate::common::conveyor_cmd()
            .current_dir(&root)
            .args([
                "study",
                "studies/smoke.toml",
                "--out",
                out.to_str().unwrap(),
            ])
            .output()
            .expect("run conveyor study");
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        stdout
    };
    let first = run();
    assert!(first.contains("[cell 21/21]"), "{first}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("| trec | lightconv, pre-trained |"),
        "{report}"
    );
    assert!(report.contains("gain from pre-training"), "{report}");
    // A lost cell: its checkpoints removed (run.json and metrics.jsonl left), so the runner
    // trains it again from step 0 with the same seed (the report must not move).
    let runs = out.join("runs");
    let last = runs.join("trec-lightconv-pretrained-lr0.003-s0");
    let weights =
        || std::fs::read(last.join("checkpoints/step-00000020/model.safetensors")).unwrap();
    let losses = || -> Vec<(u64, f64, f64)> {
        std::fs::read_to_string(last.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let f = |k: &str| v[k].as_f64().unwrap();
                (v["step"].as_u64().unwrap(), f("loss"), f("grad_norm"))
            })
            .collect()
    };
    let (weights_before, losses_before) = (weights(), losses());
    std::fs::remove_dir_all(last.join("checkpoints")).unwrap();
    let second = run();
    let redone: Vec<&str> = second
        .lines()
        .filter(|l| l.starts_with("[cell") && !l.ends_with("(done before)"))
        .collect();
    // Only the damaged fine-tuning cell and its evaluation (whose checkpoint moved) reran:
    // a start and an end line for the training, one line for the evaluation.
    assert_eq!(redone.len(), 3, "{redone:?}");
    assert!(
        redone
            .iter()
            .all(|l| l.contains("lightconv pretrained lr 0.003")),
        "{redone:?}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("report.md")).unwrap(),
        report
    );
    // The cell reproduces to the bit: every step's loss and gradient norm, the final weights.
    assert_eq!(losses(), losses_before);
    assert!(
        weights() == weights_before,
        "the retrained cell's weights differ"
    );

    // The folder is this study's: the same study with another pre-training length is
    // refused (its cells would pass for done), and so is a user's folder.
    let smoke = std::fs::read_to_string(root.join("studies/smoke.toml")).unwrap();
    let changed = tmp_path("study-changed.toml");
    std::fs::write(
        &changed,
        smoke.replace("inputs_length = 64", "inputs_length = 32"),
    )
    .unwrap();
    assert_ne!(std::fs::read_to_string(&changed).unwrap(), smoke);
    let record = std::fs::read(out.join("study.toml")).unwrap();
    let study = |file: &std::path::Path, out: &std::path::Path| {
        crate::common::conveyor_cmd()
            .current_dir(&root)
            .arg("study")
            .arg(file)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let o = study(&changed, &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("study.toml") && err.contains("pretrain"),
        "{err}"
    );
    assert_eq!(std::fs::read(out.join("study.toml")).unwrap(), record);
    let mine = tmp_path("study-mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("report.md"), "mine").unwrap();
    let o = study(&root.join("studies/smoke.toml"), &mine);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("not a study's folder"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("report.md")).unwrap(),
        "mine"
    );

    // Task data the folder holds prepared otherwise (as by an earlier conveyor whose reader
    // or default lengths changed): the study says to start again in a new folder, not to
    // pass an --overwrite it does not have, and changes nothing.
    let manifest = out.join("tasks/trec/train/manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    m["job"] = "0123456789abcdef".into();
    let earlier = serde_json::to_vec_pretty(&m).unwrap();
    std::fs::write(&manifest, &earlier).unwrap();
    let o = study(&root.join("studies/smoke.toml"), &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("tasks/trec/train")
            && err.contains("run it again with a new --out")
            && !err.contains("pass --overwrite"),
        "{err}"
    );
    assert_eq!(std::fs::read(&manifest).unwrap(), earlier);
    // The same of its corpus (a corpus file edited in place): the study's own words.
    let manifest = out.join("tokens/manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    m["job"] = "0123456789abcdef".into();
    std::fs::write(&manifest, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let o = study(&root.join("studies/smoke.toml"), &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("holds a corpus ingested otherwise")
            && err.contains("run it again with a new --out")
            && !err.contains("pass --overwrite"),
        "{err}"
    );
}

/// Seeds beyond the search seeds run only at the learning rate those chose, from the one
/// pre-training; a rate whose runs diverge is reported and never chosen; `task_texts` adds
/// exactly the training side of each task's split to the pre-training corpus; a run folder
/// that another cell trained is refused.
#[test]
fn search_seeds_choose_the_rate_and_task_texts_feed_pretraining() {
    let root = root();
    let out = tmp_path("search");
    let file = out.with_extension("toml");
    let study = r#"
name = "search"
seeds = [0, 1]
[corpus]
inputs = ["../shared/data/c4/c4-train.00000-of-01024.first600.json.gz"]
vocab = "../shared/data/spiece/t5-spiece.model"
task_texts = true
[pretrain]
archs = ["transformer"]
preset = "tiny"
seeds = [0]
steps = 10
batch_size = 8
inputs_length = 64
[finetune]
steps = 50
batch_size = 16
learning_rates = [3e-3, 1e-4, 1e30]
search_seeds = [0]
curve = 2
[[tasks]]
name = "trec"
train = ["../shared/data/trec/train_5500.label"]
dev_fraction = 0.1
dev_limit = 100
steps = 12
[reference]
task = "trec"
"#;
    std::fs::write(&file, study).unwrap();
    let study = || {
        crate::common::conveyor_cmd()
            .current_dir(&root)
            .args([
                "study",
                file.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    let o = study();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // 2 + texts + 1 pre-training + prepare + 2 inits x (3 rates + 1 seed) x (train + eval)
    // + 2 inits x 2 seeds evaluated half-way + the reference.
    assert!(stdout.contains("[cell 26/26]"), "{stdout}");
    let runs = out.join("runs");
    assert!(!runs.join("pretrain-transformer-s1").exists());
    let accuracy = |run: &str| -> f64 {
        let m = runs
            .join(run)
            .join("checkpoints/step-00000012/study-eval-trec/metrics.json");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&m).unwrap()).unwrap();
        v["scores"]["accuracy"].as_f64().unwrap()
    };
    for init in ["scratch", "pretrained"] {
        let seed1: Vec<String> = std::fs::read_dir(&runs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("trec-transformer-{init}-")) && n.ends_with("-s1"))
            .collect();
        assert_eq!(seed1.len(), 1, "{seed1:?}");
        let (chosen, other) = if seed1[0].contains("lr0.003") {
            ("0.003", "0.0001")
        } else {
            ("0.0001", "0.003")
        };
        let s0 = |lr: &str| accuracy(&format!("trec-transformer-{init}-lr{lr}-s0"));
        assert!(
            s0(chosen) >= s0(other),
            "{init}: seed 1 ran at the worse rate"
        );
        accuracy(&seed1[0]);
    }
    // The corpus: the C4 sample's 600 documents and the train split's rows, no dev row.
    let texts = std::fs::read_to_string(out.join("corpus/trec.train.jsonl")).unwrap();
    let manifest = |dir: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join(dir).join("manifest.json")).unwrap())
            .unwrap()
    };
    let train = manifest("tasks/trec/train")["examples"].as_u64().unwrap();
    assert_eq!(texts.lines().count() as u64, train);
    // dev_fraction 0.1: exactly a tenth of the rows, rounded.
    let dev = manifest("tasks/trec/dev")["examples"].as_u64().unwrap();
    assert_eq!(dev, ((train + dev) as f64 * 0.1).round() as u64);
    assert_eq!(
        manifest("tokens")["totals"]["documents"].as_u64(),
        Some(600 + train)
    );
    // The reference ran transformers' T5 with both seeds; the report sets it beside
    // conveyor's cell; the accuracy figure has its half-way points.
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("reference/trec.json")).unwrap())
            .unwrap();
    assert_eq!(r["runs"].as_object().unwrap().len(), 2, "{r}");
    assert_eq!(
        (r["steps"].as_u64(), r["batch_size"].as_u64()),
        (Some(12), Some(16))
    );
    let chosen = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("trec-transformer-scratch-") && n.ends_with("-s1"))
        .unwrap();
    let lr = r["lr"].as_f64().unwrap();
    assert!(chosen.contains(&format!("-lr{lr}-")), "{chosen} vs lr {lr}");
    // The accuracy figure's data: each cell evaluated at steps 6 and 12, both seeds.
    let figures: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("figures.json")).unwrap()).unwrap();
    for c in figures["tasks"][0]["cells"].as_array().unwrap() {
        let steps: Vec<u64> = c["curve"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_u64().unwrap())
            .collect();
        assert_eq!(steps, vec![6, 12], "{c}");
        assert!(
            c["curve"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p[1].as_array().unwrap().len() == 2),
            "{c}"
        );
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| transformers (PyTorch) |"), "{report}");
    assert!(out.join("accuracy-curves.png").exists(), "{report}");
    // Both inits diverged at 1e30 (their evaluations skipped, the grid went on); the report
    // lists them apart from the means.
    let huge = "1000000000000000000000000000000";
    for init in ["scratch", "pretrained"] {
        let run = runs.join(format!("trec-transformer-{init}-lr{huge}-s0"));
        assert!(run.join("diverged.json").exists(), "{}", run.display());
    }
    let section = report.split("## Runs that diverged").nth(1).expect(&report);
    assert_eq!(
        section.matches(&format!("| {huge} | 0 |")).count(),
        2,
        "{report}"
    );
    // figures.json names run folders inside the study folder, relative to it.
    for c in figures["tasks"][0]["cells"].as_array().unwrap() {
        for r in c["runs"].as_array().unwrap() {
            let r = r.as_str().unwrap();
            assert!(
                out.join(r).join("metrics.jsonl").exists() && !r.starts_with('/'),
                "{r}"
            );
        }
    }
    // A user's own evaluations (eval's default folder, on other data: 3 train rows) are not
    // taken for the study's: the rerun below reports the same figures (the majority baseline
    // read from the first cell's evaluation was the 3 rows').
    for run in std::fs::read_dir(&runs).unwrap() {
        let ckpt = run.unwrap().path().join("checkpoints/step-00000012");
        if !ckpt.join("study-eval-trec").exists() {
            continue;
        }
        let o = crate::common::conveyor_cmd()
            .current_dir(&root)
            .args([
                "eval",
                "--checkpoint",
                ckpt.to_str().unwrap(),
                "--limit",
                "3",
                "--data",
            ])
            .arg(out.join("tasks/trec/train"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // A rerun redoes nothing: the diverged runs are read as results, not trained again.
    let o = study();
    let again = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{again}");
    assert!(again.contains("[cell 26/26]"), "{again}");
    assert_eq!(again.matches(": diverged at step").count(), 2, "{again}");
    assert!(!again.contains(": steps 1..="), "{again}");
    let again_figures: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("figures.json")).unwrap()).unwrap();
    assert_eq!(again_figures, figures, "the rerun reported other figures");
    // A finished run whose run.json names another starting checkpoint is not reused.
    let moved = runs.join("trec-transformer-scratch-lr0.0001-s0");
    let info = std::fs::read_to_string(moved.join("run.json")).unwrap();
    let info = info.replace("\"init\": null", "\"init\": \"elsewhere\"");
    std::fs::write(moved.join("run.json"), info).unwrap();
    let o = study();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("trec-transformer-scratch-lr0.0001-s0")
            && stderr.contains("--init elsewhere"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_dir_all(&out);
}

/// `score = "best"`: every run is evaluated at each 1/curve of its steps and scores its best
/// checkpoint (the paper's best validation score). Then a task added to the finished study's
/// file runs its own cells only: the pre-training and the first task's cells are kept.
#[test]
fn runs_score_their_best_checkpoint_and_a_finished_study_takes_a_new_task() {
    let root = root();
    let out = tmp_path("best");
    let file = out.with_extension("toml");
    let trec = r#"
name = "best"
[corpus]
inputs = ["../shared/data/c4/c4-train.00000-of-01024.first600.json.gz"]
vocab = "../shared/data/spiece/t5-spiece.model"
[pretrain]
archs = ["transformer"]
preset = "tiny"
steps = 10
batch_size = 8
inputs_length = 64
[finetune]
steps = 12
batch_size = 16
learning_rates = [3e-3]
curve = 2
score = "best"
[[tasks]]
name = "trec"
train = ["../shared/data/trec/train_5500.label"]
dev_fraction = 0.1
dev_limit = 60
"#;
    let study = |text: &str| {
        std::fs::write(&file, text).unwrap();
        let o = crate::common::conveyor_cmd()
            .current_dir(&root)
            .args(["study", file.to_str().unwrap(), "--out"])
            .arg(&out)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        stdout
    };
    let first = study(trec);
    // 2 + 1 pre-training + prepare + 2 inits x (train + eval at 6 + eval at 12).
    assert!(first.contains("[cell 10/10]"), "{first}");
    let metrics = |init: &str, step: &str| {
        out.join(format!(
            "runs/trec-transformer-{init}-lr0.003-s0/checkpoints/step-000000{step}/study-eval-trec/metrics.json"
        ))
    };
    let read = |m: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(m).unwrap()).unwrap()
    };
    // Runs this short score alike at both checkpoints (0 here): the half-way evaluation of
    // one run is given a better score, which the rerun reads back (it names this checkpoint
    // and dev split) and must report.
    let m = metrics("scratch", "06");
    let mut v = read(&m);
    v["scores"]["accuracy"] = serde_json::json!(0.75);
    std::fs::write(&m, v.to_string()).unwrap();
    let rerun = study(trec);
    assert!(
        !rerun
            .lines()
            .any(|l| l.starts_with("[cell") && !l.ends_with("(done before)")),
        "{rerun}"
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("best checkpoint"), "{report}");
    for (init, label) in [
        ("scratch", "no pre-training"),
        ("pretrained", "pre-trained"),
    ] {
        let at = |step: &str| {
            read(&metrics(init, step))["scores"]["accuracy"]
                .as_f64()
                .unwrap()
        };
        let best = at("06").max(at("12"));
        assert!(init == "pretrained" || best == 0.75);
        let line = format!(
            "| trec | transformer, {label} | 0.003 | {:.2} | 1 |",
            100.0 * best
        );
        assert!(report.contains(&line), "{line}\n{report}");
    }
    // One more task: only its cells run.
    let sst2 = "\n[[tasks]]\nname = \"sst2\"\ntrain = [\"../shared/data/sst2/train.tsv\"]\ndev_fraction = 0.01\ndev_limit = 40\n";
    let second = study(&format!("{trec}{sst2}"));
    let ran: Vec<&str> = second
        .lines()
        .filter(|l| l.starts_with("[cell") && !l.ends_with("(done before)"))
        .collect();
    assert!(second.contains("[cell 17/17]"), "{second}");
    assert!(
        !ran.is_empty() && ran.iter().all(|l| l.contains("sst2")),
        "{ran:?}"
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("| sst2 | transformer, pre-trained |"),
        "{report}"
    );
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_dir_all(&out);
}
