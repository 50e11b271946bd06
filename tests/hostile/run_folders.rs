//! Training run folders: the trainer rewrites metrics.jsonl, run.json and model_config.json
//! and replaces checkpoint folders, so it must only ever do that to a run of its own, and a
//! damaged checkpoint pointer must be named, not read as "start again".

use super::sandbox::*;
use crate::common::{c4_tokens, ok};

/// A run of 4 steps with checkpoints at 2 and 4.
fn four_steps_saved_every_two<'a>(data: &'a str, run: &'a std::path::Path) -> Vec<&'a str> {
    let mut args = train_args(data, s(run), "4");
    let every = args
        .iter()
        .position(|a| *a == "--checkpoint-every")
        .unwrap();
    args[every + 1] = "2";
    args
}

#[test]
fn train_rewrites_only_a_run_of_its_own() {
    let sb = Sandbox::new("runs");
    let data = s(c4_tokens());
    let write = |p: &std::path::Path, text: &str| std::fs::write(p, text).unwrap();
    // A user's folder holding files a run would write, and one it would not.
    let mine = sb.work.join("mine");
    std::fs::create_dir_all(mine.join("checkpoints/step-00000002")).unwrap();
    for f in [
        "metrics.jsonl",
        "run.json",
        "checkpoints/step-00000002/thesis.tex",
    ] {
        write(&mine.join(f), "mine\n");
    }
    let before = snapshot(&mine);
    fails(
        &train_args(data, s(&mine), "2"),
        &[s(&mine), "not a conveyor training run", "--out"],
    );
    assert_eq!(snapshot(&mine), before);

    // A run of 4 steps with checkpoints at 2 and 4, then its pointer damaged: named, with
    // or without --resume, and nothing in the run touched.
    let run = sb.work.join("run");
    let args = four_steps_saved_every_two(data, &run);
    ok(&args);
    let resume = [args.clone(), vec!["--resume"]].concat();
    let ckpts = run.join("checkpoints");
    let pointer = ckpts.join("latest");
    for bad in [
        "",
        "step-00000009",
        "../../victim",
        "step-00000004/../../../victim",
    ] {
        write(&pointer, bad);
        let before = snapshot(&run);
        fails(&resume, &["checkpoints/latest", "step-* folder"]);
        fails(&args, &["checkpoints/latest", "step-* folder"]);
        assert_eq!(snapshot(&run), before, "{bad:?}");
    }
    // A missing pointer beside finished checkpoints: a resume started again from step 0,
    // writing over them with whatever flags it was given.
    std::fs::remove_file(&pointer).unwrap();
    let before = snapshot(&run);
    fails(
        &resume,
        &["checkpoints/latest", "is missing", "step-00000004"],
    );
    assert_eq!(snapshot(&run), before);
    // The checkpoint it names lost its trainer state.
    write(&pointer, "step-00000004");
    let state = ckpts.join("step-00000004/trainer_state.json");
    let saved = std::fs::read(&state).unwrap();
    std::fs::remove_file(&state).unwrap();
    fails(&resume, &["step-00000004", "not a finished checkpoint"]);
    std::fs::write(&state, &saved).unwrap();
    // Resumed from step 2, the run writes step 4 again: a file of the user's in that folder
    // stops it, kept; without it, step 4 comes back bit for bit.
    let weights = std::fs::read(ckpts.join("step-00000004/model.safetensors")).unwrap();
    write(&pointer, "step-00000002");
    let thesis = ckpts.join("step-00000004/thesis.tex");
    write(&thesis, "mine\n");
    fails(&resume, &["thesis.tex", "move it away"]);
    assert_eq!(std::fs::read_to_string(&thesis).unwrap(), "mine\n");
    std::fs::remove_file(&thesis).unwrap();
    // A link in the place of the step folder to write again is not followed: the files of
    // its target (named like checkpoint files) used to be removed before the save failed.
    let step4 = ckpts.join("step-00000004");
    let kept = ckpts.join("kept-step-4");
    std::fs::rename(&step4, &kept).unwrap();
    let victim = sb.work.join("victim-folder");
    std::fs::create_dir_all(&victim).unwrap();
    write(&victim.join("model.safetensors"), "mine\n");
    std::os::unix::fs::symlink(&victim, &step4).unwrap();
    write(&pointer, "step-00000002");
    fails(&resume, &["step-00000004", "link or file has the name"]);
    assert_eq!(
        std::fs::read_to_string(victim.join("model.safetensors")).unwrap(),
        "mine\n"
    );
    std::fs::remove_file(&step4).unwrap();
    std::fs::rename(&kept, &step4).unwrap();
    // Sums of files that are not the checkpoint's (a device's, a FIFO's) are refused before
    // anything is read: a FIFO with a sum of 0 bytes in the place of a checkpoint file is
    // named, not read forever.
    let state2 = ckpts.join("step-00000002/trainer_state.json");
    let saved2 = std::fs::read(&state2).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&saved2).unwrap();
    v["files"]["../../victim"] = serde_json::json!({"bytes": 0, "sha256": "00"});
    write(&state2, &v.to_string());
    fails(
        &resume,
        &["lists a sum for ../../victim", "not a checkpoint file"],
    );
    let moments = ckpts.join("step-00000002/optimizer.safetensors");
    let saved_moments = std::fs::read(&moments).unwrap();
    std::fs::remove_file(&moments).unwrap();
    assert!(std::process::Command::new("mkfifo")
        .arg(&moments)
        .status()
        .unwrap()
        .success());
    let mut v: serde_json::Value = serde_json::from_slice(&saved2).unwrap();
    v["files"]["optimizer.safetensors"]["bytes"] = 0.into();
    write(&state2, &v.to_string());
    fails(&resume, &["optimizer.safetensors", "not a regular file"]);
    std::fs::remove_file(&moments).unwrap();
    std::fs::write(&moments, &saved_moments).unwrap();
    std::fs::write(&state2, &saved2).unwrap();
    write(&pointer, "step-00000002");
    ok(&resume);
    assert!(std::fs::read(ckpts.join("step-00000004/model.safetensors")).unwrap() == weights);
    sb.assert_outside_unchanged();
}

#[test]
fn a_truncated_data_manifest_is_named() {
    let sb = Sandbox::new("cut-manifest");
    let tokens = sb.tokens("tokens");
    let m = tokens.join("manifest.json");
    let text = std::fs::read(&m).unwrap();
    std::fs::write(&m, &text[..text.len() / 2]).unwrap();
    let run = sb.work.join("run");
    fails(
        &train_args(s(&tokens), s(&run), "1"),
        &[s(&m), "not JSON", "rerun the command that wrote"],
    );
    sb.assert_outside_unchanged();
}

#[test]
fn one_training_process_per_run_folder_and_a_killed_one_lets_go() {
    let sb = Sandbox::new("run-lock");
    let data = s(c4_tokens());
    let run = sb.work.join("run");
    let args = train_args(data, s(&run), "2");
    // A run in progress (here: its lock held) refuses a second trainer on the folder, which
    // writes nothing there.
    std::fs::create_dir_all(&run).unwrap();
    let held = conveyor_pipeline::run_lock::RunLock::take(
        &run,
        conveyor_pipeline::run_lock::RunKind::Train,
    )
    .unwrap();
    fails(&args, &[s(&run), "in use", ".conveyor-train.lock"]);
    assert_eq!(
        std::fs::read_dir(&run).unwrap().count(),
        1,
        "only the lock is there"
    );
    drop(held);
    // A trainer killed mid-run releases the folder: the requeued --resume takes it.
    let long = [train_args(data, s(&run), "100000"), vec!["--resume"]].concat();
    let mut child = crate::common::conveyor_cmd()
        .args(&long)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !run.join("metrics.jsonl").exists() {
        assert!(started.elapsed().as_secs() < 120, "the run never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    fails(&args, &["in use"]);
    child.kill().unwrap();
    child.wait().unwrap();
    ok(&[args.clone(), vec!["--resume"]].concat());
    sb.assert_outside_unchanged();
}

#[test]
fn a_resume_keeps_the_runs_metrics_and_writes_only_inside() {
    let sb = Sandbox::new("metrics");
    let data = s(c4_tokens());
    let run = sb.work.join("run");
    let args = four_steps_saved_every_two(data, &run);
    ok(&args);
    let metrics = run.join("metrics.jsonl");
    let resume = |steps: &'static str| {
        let mut a = [args.clone(), vec!["--resume"]].concat();
        let at = a.iter().position(|x| *x == "--steps").unwrap();
        a[at + 1] = steps;
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    // A line that is not UTF-8 (it made the whole file read as empty and the history of
    // steps 1-4 vanish) and one cut short: they go, every step's line stays, byte for byte,
    // and the new steps follow.
    let history = std::fs::read(&metrics).unwrap();
    let mut bytes = history.clone();
    bytes.extend_from_slice(b"{\"note\": \"caf\xe9\"}\n{\"step\": 3, \"lo");
    std::fs::write(&metrics, &bytes).unwrap();
    ok(&refs(&resume("6")));
    let after = std::fs::read(&metrics).unwrap();
    assert!(
        after.starts_with(&history),
        "the run's history was rewritten"
    );
    let steps = after
        .split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
        .filter_map(|v| v["step"].as_u64())
        .collect::<Vec<_>>();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6]);
    // A link in its place (the resume wrote through it, outside the run): refused, the
    // target untouched.
    let victim = sb.work.join("victim.txt");
    std::fs::write(&victim, "mine\n").unwrap();
    std::fs::remove_file(&metrics).unwrap();
    std::os::unix::fs::symlink(&victim, &metrics).unwrap();
    fails(&refs(&resume("8")), &[s(&metrics), "not a regular file"]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "mine\n");
    sb.assert_outside_unchanged();
}
