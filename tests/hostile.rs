//! Untrusted datasets and careless commands (issue 14): every case runs the CLI as a user
//! would inside a sandbox holding a work folder and a `victim/` folder beside it, and checks
//! the exit status, a message naming the offending file or value, and that nothing outside
//! the work folder changed (the whole sandbox is hashed before and after).

use crate::common;
mod run_folders;
mod sandbox;
mod settings;
mod split_jobs;
mod terminal;
mod vocab_info;

use std::path::Path;

use common::{c4_tokens, ok, shared};
use sandbox::*;

#[test]
fn split_names_from_flags_and_manifests_stay_inside() {
    let sb = Sandbox::new("split");
    let tokens = sb.tokens("tokens");
    let out = sb.work.join("ex");
    let abs = sb.victim.join("abs");
    fails(
        &["corrupt", s(&tokens), "--out", s(&out), "--split", s(&abs)],
        &["--split", "split name"],
    );
    fails(
        &["corrupt", s(&tokens), "--out", s(&out), "--split", "../x"],
        &["--split", "\"../x\""],
    );
    let c4 = shared("c4/c4-train.00000-of-01024.first600.json.gz");
    fails(
        &refs(&ingest_args(&c4, &out, &["--split", "../victim/train"])),
        &["--split"],
    );
    fails(
        &[
            "task",
            "prepare",
            "sst2",
            "--input",
            s(&shared("sst2/train.tsv")),
            "--vocab",
            &vocab(),
            "--out",
            s(&out),
            "--split",
            "/tmp/x",
        ],
        &["--split"],
    );
    // A token manifest whose split leads elsewhere: corrupt would name its shards after it.
    edit_json(&tokens.join("manifest.json"), |m| {
        m["settings"]["split"] = "../victim/train".into()
    });
    fails(
        &["corrupt", s(&tokens), "--out", s(&out)],
        &["manifest.json", "split name"],
    );
    sb.assert_outside_unchanged();
}

#[test]
fn shard_names_in_manifests_are_refused_by_every_reader() {
    let sb = Sandbox::new("shards");
    let outside = s(&sb.victim.join("x.parquet")).to_string();
    // From work/tokens-0/, `../../victim` is the sandbox's victim folder.
    for (i, name) in ["../../victim/x.parquet", outside.as_str()]
        .iter()
        .enumerate()
    {
        let tokens = sb.tokens(&format!("tokens-{i}"));
        edit_json(&tokens.join("manifest.json"), |m| {
            m["shards"][0]["file"] = (*name).into()
        });
        let needles = ["manifest.json", "file name", name];
        fails(&["inspect", s(&tokens), "--verify"], &needles);
        let ex = sb.work.join(format!("ex-{i}"));
        fails(&["corrupt", s(&tokens), "--out", s(&ex)], &needles);
        let run = sb.work.join(format!("run-{i}"));
        fails(&train_args(s(&tokens), s(&run), "1"), &needles);
    }
    // An example manifest naming an outside shard.
    let tokens = sb.tokens("tokens");
    let ex = sb.work.join("ex");
    ok(&["corrupt", s(&tokens), "--out", s(&ex), "-q"]);
    edit_json(&ex.join("manifest.json"), |m| {
        m["shards"][0]["file"] = outside.clone().into()
    });
    let run = sb.work.join("run-ex");
    fails(
        &train_args(s(&ex), s(&run), "1"),
        &["manifest.json", "file name"],
    );
    sb.assert_outside_unchanged();
}

#[test]
fn merges_move_only_listed_files_whose_checksum_matches() {
    let sb = Sandbox::new("merge");
    let out = sb.work.join("split");
    let inputs = sb.work.join("in");
    std::fs::create_dir_all(&inputs).unwrap();
    for f in ["a.json.gz", "b.json.gz"] {
        let c4 = shared("c4/c4-train.00000-of-01024.first600.json.gz");
        std::fs::copy(c4, inputs.join(f)).unwrap();
    }
    for w in ["0", "1"] {
        let worker = ["--worker-index", w, "--num-workers", "2", "-q"];
        ok(&refs(&ingest_args(&inputs, &out, &worker)));
    }
    let part = out.join("parts/worker-00000-of-00002/part.json");
    let good = std::fs::read(&part).unwrap();
    edit_json(&part, |p| {
        p["manifest"]["shards"][0]["file"] = "../../../../victim/x.parquet".into()
    });
    let before = snapshot(&out);
    fails(
        &["manifest", "merge", s(&out)],
        &["part.json", "file name", "../../../../victim/x.parquet"],
    );
    assert_eq!(
        snapshot(&out),
        before,
        "a refused merge changed the dataset"
    );

    // A damaged worker shard (of the last worker, so that others come first) is named and
    // nothing is merged.
    std::fs::write(&part, good).unwrap();
    let last = out.join("parts/worker-00001-of-00002");
    let shard = last.join(
        read_json(&last.join("part.json"))["manifest"]["shards"][0]["file"]
            .as_str()
            .unwrap(),
    );
    flip(&shard, 4);
    let before = snapshot(&out);
    fails(
        &["manifest", "merge", s(&out)],
        &[s(&shard), "sha256", "rerun that worker"],
    );
    assert_eq!(snapshot(&out), before, "a refused merge moved shards");
    flip(&shard, 4);

    // A part whose input list was cut: named, not an index out of bounds mid-merge.
    let last_part = last.join("part.json");
    edit_json(&last_part, |p| {
        p["manifest"]["inputs"].as_array_mut().unwrap().truncate(1)
    });
    let before = snapshot(&out);
    fails(
        &["manifest", "merge", s(&out)],
        &[s(&last_part), "says the job has 1 inputs", "--overwrite"],
    );
    assert_eq!(snapshot(&out), before, "a refused merge moved shards");
    sb.assert_outside_unchanged();
}

#[test]
fn overwrite_decides_before_it_deletes() {
    let sb = Sandbox::new("overwrite");
    let c4 = shared("c4/c4-train.00000-of-01024.first600.json.gz");
    // A folder of the user's, with files that look like conveyor's.
    let mine = sb.work.join("mine");
    std::fs::create_dir_all(mine.join("parts")).unwrap();
    for f in [
        "notes.txt",
        "train-00000-of-00001.parquet",
        "parts/keep.txt",
    ] {
        std::fs::write(mine.join(f), f).unwrap();
    }
    let before = snapshot(&mine);
    let ingest =
        |out: &Path, split: &str| ingest_args(&c4, out, &["--split", split, "--overwrite", "-q"]);
    let args = ingest(&mine, "train");
    let args = refs(&args);
    fails(&args, &["nothing was removed"]);
    assert_eq!(
        snapshot(&mine),
        before,
        "--overwrite removed the user's files"
    );

    // A manifest.json that is not conveyor's is not a licence to delete.
    std::fs::write(mine.join("manifest.json"), "{\"shards\": []}").unwrap();
    let before = snapshot(&mine);
    fails(&args, &["manifest.json", "nothing was removed"]);
    assert_eq!(snapshot(&mine), before);

    // `corrupt X --out X --overwrite` keeps its input.
    let tokens = sb.tokens("tokens");
    let before = snapshot(&tokens);
    fails(
        &["corrupt", s(&tokens), "--out", s(&tokens), "--overwrite"],
        &["input"],
    );
    fails(
        &[
            "corrupt",
            s(&tokens),
            "--out",
            s(&tokens.join("inside")),
            "--overwrite",
        ],
        &["input"],
    );
    assert_eq!(snapshot(&tokens), before);

    // What conveyor wrote is replaced: the old shards go, the new ones come.
    let out = sb.work.join("tokens-again");
    let args = ingest(&out, "train");
    ok(&refs(&args));
    let args = ingest(&out, "other");
    ok(&refs(&args));
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with("train-")), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("other-")), "{names:?}");

    // Killed between the shards' final renames and the manifest: the claimed work folder
    // vouches for the shards, which --overwrite may then replace.
    std::fs::remove_file(out.join("manifest.json")).unwrap();
    std::fs::create_dir_all(out.join(".conveyor-ingest")).unwrap();
    std::fs::write(out.join(".conveyor-ingest/job.json"), "an-earlier-job").unwrap();
    let args = ingest(&out, "third");
    ok(&refs(&args));
    assert!(first_shard(&out).to_str().unwrap().contains("third-"));
    assert!(!std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("other-")));

    // A manifest listing a folder, even under a shard's name, does not get it removed; nor a
    // file by a name conveyor never gives its outputs.
    let data = "data-00000-of-00001.parquet";
    std::fs::create_dir_all(out.join(data)).unwrap();
    std::fs::write(out.join(data).join("mine.txt"), "mine").unwrap();
    edit_json(&out.join("manifest.json"), |m| {
        m["shards"][0]["file"] = data.into()
    });
    fails(&refs(&args), &[data, "not a file"]);
    assert!(out.join(data).join("mine.txt").exists());
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    edit_json(&out.join("manifest.json"), |m| {
        m["shards"][0]["file"] = "notes.txt".into()
    });
    fails(&refs(&args), &["notes.txt", "nothing was removed"]);
    assert!(out.join("notes.txt").exists());

    // parts/ goes only when it holds finished worker parts and drop lists, by their names.
    let split = sb.work.join("split");
    for (f, why) in [
        (
            "parts/worker-notes/thesis.tex",
            "a folder that is no worker's part",
        ),
        ("parts/dedup-mine.txt", "a file that is no drop list"),
    ] {
        let f = split.join(f);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, "mine").unwrap();
        let before = snapshot(&split);
        fails(
            &refs(&ingest(&split, "train")),
            &["parts", "nothing was removed"],
        );
        assert_eq!(snapshot(&split), before, "{why}");
        std::fs::remove_dir_all(split.join("parts")).unwrap();
    }

    // An --out inside an input folder as given.
    let inputs = sb.work.join("in");
    std::fs::create_dir_all(&inputs).unwrap();
    std::fs::copy(&c4, inputs.join("a.json.gz")).unwrap();
    fails(
        &[
            "ingest",
            s(&inputs),
            "--vocab",
            &vocab(),
            "--out",
            s(&inputs.join("tokens")),
        ],
        &["input", s(&inputs)],
    );
    sb.assert_outside_unchanged();
}

#[test]
fn damaged_shards_are_named_not_consumed() {
    let sb = Sandbox::new("damaged");
    let tokens = sb.tokens("tokens");
    let shard = first_shard(&tokens);
    flip(&shard, 4);
    let ex = sb.work.join("ex");
    fails(
        &["corrupt", s(&tokens), "--out", s(&ex)],
        &[s(&shard), "sha256", "inspect"],
    );
    // The hint's `inspect --verify` reads example folders too (it refused them: "missing
    // field text_field"), and names their damaged shards.
    let good = sb.tokens("tokens-ex");
    let ex_ok = sb.work.join("ex-ok");
    ok(&[
        "corrupt",
        s(&good),
        "--out",
        s(&ex_ok),
        "--inputs-length",
        "64",
    ]);
    let out = ok(&["inspect", s(&ex_ok), "--verify"]);
    assert!(
        out.contains("span corruption") && out.contains("shards ok"),
        "{out}"
    );
    let ex_shard = first_shard(&ex_ok);
    flip(&ex_shard, 4);
    fails(
        &["inspect", s(&ex_ok), "--verify"],
        &[s(&ex_shard), "sha256"],
    );
    // A shard gone: named as missing, with what to do (it was the bare "No such file").
    std::fs::remove_file(&ex_shard).unwrap();
    fails(
        &["inspect", s(&ex_ok), "--verify"],
        &[
            s(&ex_shard),
            "missing, though the manifest lists it",
            "--overwrite",
        ],
    );
    // A truncated shard stops the loader before training.
    let tokens = sb.tokens("tokens-cut");
    let shard = first_shard(&tokens);
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 100]).unwrap();
    let run = sb.work.join("run");
    fails(&train_args(s(&tokens), s(&run), "1"), &[s(&shard), "bytes"]);
    sb.assert_outside_unchanged();
}

#[test]
fn out_of_vocabulary_ids_and_empty_data_are_errors_at_start() {
    let sb = Sandbox::new("vocab-ids");
    // Data that claims a 1,000-piece vocabulary but holds T5 ids.
    let tokens = sb.tokens("tokens");
    edit_json(&tokens.join("manifest.json"), |m| {
        m["vocab"]["size"] = 1000.into()
    });
    let run = sb.work.join("run");
    let err = fails(
        &train_args(s(&tokens), s(&run), "1"),
        &["token id", "vocabulary size", "row"],
    );
    assert!(err.contains(".parquet"), "{err}");

    // A dataset without a document: an error at start, not an endless loop.
    let empty_in = sb.work.join("empty.jsonl");
    std::fs::write(&empty_in, "{\"text\": \"\"}\n{\"text\": \"   \"}\n").unwrap();
    let empty = sb.work.join("empty");
    ok(&refs(&ingest_args(&empty_in, &empty, &["-q"])));
    let run = sb.work.join("run-empty");
    let mut child = crate::common::conveyor_cmd()
        .args(train_args(s(&empty), s(&run), "1"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if started.elapsed().as_secs() > 300 {
            child.kill().unwrap();
            panic!("train on an empty dataset did not end");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success() && err.contains("no rows"), "{err}");
    sb.assert_outside_unchanged();
}

#[test]
fn damaged_checkpoints_are_named() {
    let sb = Sandbox::new("ckpt");
    let run = sb.work.join("run");
    ok(&train_args(s(c4_tokens()), s(&run), "2"));
    let ckpt = run.join("checkpoints/step-00000002");
    let weights = ckpt.join("model.safetensors");
    let good = std::fs::read(&weights).unwrap();
    let loss = |c: &Path| {
        vec![
            "model".to_string(),
            "loss".into(),
            "--checkpoint".into(),
            s(c).to_string(),
            "--data".into(),
            s(c4_tokens()).to_string(),
            "--limit".into(),
            "8".into(),
            "--inputs-length".into(),
            "64".into(),
            "--device".into(),
            "cpu".into(),
        ]
    };
    let args = loss(&ckpt);
    let args = refs(&args);
    ok(&args);

    // 64 bytes of 0xFF inside the weights.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid..mid + 64].fill(0xFF);
    std::fs::write(&weights, &bad).unwrap();
    fails(&args, &[s(&weights), "sha256"]);
    let resume = [train_args(s(c4_tokens()), s(&run), "4"), vec!["--resume"]].concat();
    fails(&resume, &[s(&weights), "sha256"]);
    // Without the trainer state (weights from elsewhere), NaN weights are still refused.
    let bare = sb.work.join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::write(bare.join("model.safetensors"), &bad).unwrap();
    std::fs::copy(
        ckpt.join("model_config.json"),
        bare.join("model_config.json"),
    )
    .unwrap();
    let bare_args = loss(&bare);
    let bare_args = refs(&bare_args);
    fails(&bare_args, &["model.safetensors", "non-finite"]);
    // A config asking for more than the weights hold, or for a shape that cannot work, is
    // named before anything is allocated (it was a libtorch allocation panic).
    let config = bare.join("model_config.json");
    let saved = std::fs::read(&config).unwrap();
    edit_json(&config, |c| c["d_ff"] = 100_000.into());
    fails(&bare_args, &[s(&config), "implies", "values"]);
    edit_json(&config, |c| c["d_ff"] = 1_000_000_000_000u64.into());
    fails(&bare_args, &[s(&config), "parameters, over"]);
    edit_json(&config, |c| c["encoder_layers"] = u64::MAX.into());
    fails(&bare_args, &[s(&config), "layers"]);
    edit_json(&config, |c| c["d_model"] = 0.into());
    fails(&bare_args, &[s(&config), "not a usable model"]);
    // Fewer parameters than held, of other shapes: libtorch's message without its C++ trace.
    std::fs::write(&config, &saved).unwrap();
    edit_json(&config, |c| c["d_ff"] = 8.into());
    let err = fails(
        &bare_args,
        &[
            "model.safetensors",
            "cannot be read as this model's weights",
        ],
    );
    assert!(!err.contains("Exception raised from"), "{err}");
    std::fs::write(&config, &saved).unwrap();
    // The same bytes declared as integers (they were cast to floats of their bit patterns),
    // and a FIFO for the config (the read blocked forever): named.
    let mut ints = good.clone();
    let n = u64::from_le_bytes(ints[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(ints[8..8 + n].to_vec()).unwrap();
    ints[8..8 + n].copy_from_slice(header.replace("\"F32\"", "\"I32\"").as_bytes());
    std::fs::write(bare.join("model.safetensors"), &ints).unwrap();
    fails(
        &bare_args,
        &["model.safetensors", "not floating point weights"],
    );
    std::fs::write(bare.join("model.safetensors"), &good).unwrap();
    std::fs::remove_file(&config).unwrap();
    assert!(std::process::Command::new("mkfifo")
        .arg(&config)
        .status()
        .unwrap()
        .success());
    fails(&bare_args, &[s(&config), "not a regular file"]);
    std::fs::remove_file(&config).unwrap();
    std::fs::write(&config, saved).unwrap();
    // A truncated file.
    std::fs::write(&weights, &good[..100]).unwrap();
    fails(&args, &[s(&weights), "bytes"]);
    std::fs::write(bare.join("model.safetensors"), &good[..6]).unwrap();
    let err = fails(&bare_args, &["model.safetensors", "cannot be read"]);
    assert!(!err.contains("HeaderTooSmall\n"), "{err}");
    // A missing file.
    std::fs::remove_file(&weights).unwrap();
    fails(&args, &[s(&weights), "missing"]);
    // A checkpoint from before the sums loads unchecked.
    std::fs::write(&weights, &good).unwrap();
    edit_json(&ckpt.join("trainer_state.json"), |t| {
        t.as_object_mut().unwrap().remove("files");
    });
    ok(&args);
    sb.assert_outside_unchanged();
}

#[test]
fn huge_records_are_skipped_and_small_faults_counted() {
    let sb = Sandbox::new("huge");
    // One 64 MiB "word" (64 KiB compressed), a BOM before the first record, a null text.
    let input = sb.work.join("bomb.jsonl.gz");
    {
        use std::io::Write;
        let f = std::fs::File::create(&input).unwrap();
        let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::best());
        gz.write_all("\u{feff}{\"text\": \"first record\"}\n".as_bytes())
            .unwrap();
        gz.write_all(b"{\"text\": \"").unwrap();
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..64 {
            gz.write_all(&chunk).unwrap();
        }
        gz.write_all(b"\"}\n{\"text\": null}\n{\"text\": \"last record\"}\n")
            .unwrap();
        gz.finish().unwrap();
    }
    let out = sb.work.join("tokens");
    let limit = ["--max-document-bytes", "1048576", "-q"];
    ok(&refs(&ingest_args(&input, &out, &limit)));
    let m = read_json(&out.join("manifest.json"));
    let t = &m["totals"];
    assert_eq!(t["documents"], 2, "{t}");
    assert_eq!(t["skipped"]["too_long"], 1, "{t}");
    assert_eq!(t["skipped"]["null_text"], 1, "{t}");
    assert!(t["skipped"].get("malformed_json").is_none(), "{t}");
    sb.assert_outside_unchanged();
}

#[test]
fn a_task_file_naming_no_column_fails_and_leaves_nothing() {
    let sb = Sandbox::new("task");
    let spec = sb.work.join("spec.toml");
    std::fs::write(
        &spec,
        "name = \"my_sst2\"\nformat = \"tsv\"\nheader = true\ninput_template = \"sst2 sentence: {sentnce}\"\nlabel_column = \"label\"\nmetric = \"accuracy\"\n[label_map]\n\"0\" = \"negative\"\n\"1\" = \"positive\"\n",
    )
    .unwrap();
    let out = sb.work.join("out");
    fails(
        &[
            "task",
            "prepare",
            "my_sst2",
            "--task-file",
            s(&spec),
            "--input",
            s(&shared("sst2/train.tsv")),
            "--vocab",
            &vocab(),
            "--out",
            s(&out),
        ],
        &["{sentnce} is not one of its columns sentence, label"],
    );
    assert!(!out.exists(), "the failed run left its --out");
    sb.assert_outside_unchanged();
}

#[test]
fn a_second_job_on_the_same_out_is_refused_by_its_lock() {
    let sb = Sandbox::new("lock");
    let out = sb.work.join("tokens");
    std::fs::create_dir_all(&out).unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let me = std::process::id().to_string();
    let lock = out.join(".conveyor-ingest.lock");
    std::fs::write(&lock, format!("{} {me}\n", host.trim())).unwrap();
    let c4 = shared("c4/c4-train.00000-of-01024.first600.json.gz");
    let args = ingest_args(&c4, &out, &["-q"]);
    let args = refs(&args);
    fails(&args, &["in use", &me]);
    assert!(lock.exists() && !out.join("manifest.json").exists());
    // A live job of another kind holds the folder too.
    std::fs::rename(&lock, out.join(".conveyor-corrupt.lock")).unwrap();
    fails(&args, &["in use", &me, ".conveyor-corrupt.lock"]);
    std::fs::rename(out.join(".conveyor-corrupt.lock"), &lock).unwrap();
    // The lock of a process that is gone (pid 0 never runs) is taken over.
    std::fs::write(&lock, format!("{} 0\n", host.trim())).unwrap();
    ok(&args);
    assert!(!lock.exists(), "the lock stays after the job");
    sb.assert_outside_unchanged();
}

#[test]
fn os_errors_are_printed_once() {
    let sb = Sandbox::new("once");
    let err = fails(
        &["inspect", s(&sb.work.join("nothing"))],
        &["manifest.json"],
    );
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    let _ = sb.root;
}
