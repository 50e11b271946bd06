//! End-to-end tests of a training run's checkpoints: a diverging run stops and keeps its
//! last good checkpoint, weights an update left non-finite are never saved, and
//! `--keep-checkpoints` removes only old checkpoints of its own.

use crate::common::*;
use crate::train::train_args;

#[test]
fn a_diverging_run_stops_and_keeps_its_last_good_checkpoint() {
    let run = tmp_path("nan");
    let mut args = train_args(run.to_str().unwrap(), "transformer", "50");
    let every = args
        .iter()
        .position(|a| *a == "--checkpoint-every")
        .unwrap();
    args[every + 1] = "1";
    args.extend(["--lr", "1e30", "--optimizer", "adamw"]);
    let o = conveyor(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    // At this rate the weights overflow in the update after step 1's, before a loss does.
    assert!(
        err.contains("the loss became") || err.contains("non-finite"),
        "{err}"
    );
    assert!(err.contains("step-0000"), "{err}");
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    assert!(run
        .join("checkpoints")
        .join(latest.trim())
        .join("model.safetensors")
        .exists());
    // The run says it diverged, and where (a study reads this as a result).
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("diverged.json")).unwrap()).unwrap();
    let last: u64 = latest.trim().trim_start_matches("step-").parse().unwrap();
    assert_eq!(d["step"].as_u64(), Some(last + 1), "{d}");
}

/// `--keep-checkpoints N` keeps the N newest checkpoints: older step folders go after each
/// save, except one holding a file of the user's (left whole), and the run resumes.
#[test]
fn keep_checkpoints_removes_only_old_checkpoints_of_its_own() {
    let run = tmp_path("keep");
    let s = run.to_str().unwrap();
    let with = |steps: &'static str, extra: &[&'static str]| {
        let mut args = train_args(s, "transformer", steps);
        let every = args
            .iter()
            .position(|a| *a == "--checkpoint-every")
            .unwrap();
        args[every + 1] = "1";
        args.extend(extra);
        args
    };
    ok(&with("3", &[]));
    let ckpts = run.join("checkpoints");
    let notes = ckpts.join("step-00000001/notes.txt");
    std::fs::write(&notes, "mine").unwrap();
    ok(&with("6", &["--resume", "--keep-checkpoints", "2"]));
    let mut left: Vec<String> = std::fs::read_dir(&ckpts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect();
    left.sort();
    assert_eq!(left, ["step-00000001", "step-00000005", "step-00000006"]);
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "mine");
    assert!(ckpts.join("step-00000001/model.safetensors").exists());
    assert_eq!(
        std::fs::read_to_string(ckpts.join("latest"))
            .unwrap()
            .trim(),
        "step-00000006"
    );
    ok(&with("7", &["--resume", "--keep-checkpoints", "2"]));
    assert!(!ckpts.join("step-00000005").exists());
    assert!(ckpts.join("step-00000007/model.safetensors").exists());
}

/// An update that leaves the weights non-finite while the loss before it was finite (a
/// learning rate beyond float32) is a divergence at that step, not a checkpoint: the
/// trainer used to save it, name it the last good one, and fail at the next step's loss.
#[test]
fn non_finite_weights_are_never_checkpointed() {
    let run = tmp_path("inf-weights");
    let mut args = train_args(run.to_str().unwrap(), "transformer", "5");
    let every = args
        .iter()
        .position(|a| *a == "--checkpoint-every")
        .unwrap();
    args[every + 1] = "1";
    args.extend(["--lr", "1e39", "--optimizer", "adamw"]);
    let o = conveyor(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("at step 1 the update left") && err.contains("non-finite"),
        "{err}"
    );
    assert!(!run.join("checkpoints/latest").exists(), "{err}");
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("diverged.json")).unwrap()).unwrap();
    assert_eq!(d["step"].as_u64(), Some(1), "{d}");
}

/// Data made with another vocabulary of the same size passed every check (the ids then
/// stood for other pieces): the checkpoint records its data's vocabulary, and `--init`,
/// `model loss` (and `eval`) refuse data of another one.
#[test]
fn data_of_another_vocabulary_of_the_same_size_is_refused() {
    let dir = tmp_dir("other-vocab");
    let corpus = root().join("fixtures/corpus");
    let other = dir.join("other");
    let (o, c) = (other.to_str().unwrap(), corpus.to_str().unwrap());
    ok(&[
        "vocab",
        "train",
        c,
        "--vocab-size",
        "400",
        "--character-coverage",
        "0.98",
        "--out",
        o,
    ]);
    let tokens = |name: &str, model: &std::path::Path| {
        let out = dir.join(name);
        let args = [
            "ingest",
            c,
            "--vocab",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "-q",
        ];
        ok(&args);
        out
    };
    let mine = tokens("mine", &root().join("fixtures/vocab/fixture.model"));
    let theirs = tokens("theirs", &dir.join("other.model"));
    let run = dir.join("run");
    let train = |data: &std::path::Path, out: &std::path::Path, init: &[&str]| {
        let mut args = vec![
            "train",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend([
            "--steps",
            "1",
            "--batch-size",
            "2",
            "--inputs-length",
            "32",
            "--device",
            "cpu",
            "-q",
        ]);
        args.extend(init);
        conveyor(&args)
    };
    let tiny = ["--arch", "transformer", "--preset", "tiny"];
    // A run folder inside its data is refused, as ingest and corrupt refuse theirs.
    let o = train(&mine, &mine.join("run"), &tiny);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("inside the input"),
        "{err}"
    );
    assert!(!mine.join("run").exists());
    let o = train(&mine, &run, &tiny);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ckpt = run.join("checkpoints/step-00000001");
    let ckpt = ckpt.to_str().unwrap();
    let loss = |data: &std::path::Path| {
        conveyor(&[
            "model",
            "loss",
            "--checkpoint",
            ckpt,
            "--data",
            data.to_str().unwrap(),
        ])
    };
    assert!(loss(&mine).status.success());
    // export-hf packages only the vocabulary the data was made with (another of the same
    // size made a transformers folder whose tokenizer does not match the model).
    let export = |vocab: &std::path::Path, out: &str| {
        let out = dir.join(out);
        let args = ["model", "export-hf", ckpt, "--out", out.to_str().unwrap()];
        conveyor(&[&args[..], &["--vocab", vocab.to_str().unwrap()]].concat())
    };
    let o = export(&dir.join("other.model"), "hf-other");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("trained on data of another vocabulary"),
        "{err}"
    );
    let o = export(&root().join("fixtures/vocab/fixture.model"), "hf-mine");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for o in [
        loss(&theirs),
        train(&theirs, &dir.join("run2"), &["--init", ckpt]),
    ] {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains("made with another one"),
            "{err}"
        );
    }
}
