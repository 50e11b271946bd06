//! Settings no run could use, and files no reader should block on, refused before any
//! work: learning rates, vocabulary sizes, bad-words phrases, FIFOs, study files, task rows,
//! trainer states.

use super::sandbox::*;
use crate::common::{self, c4_tokens, ok, shared};

#[test]
fn settings_no_run_could_use_are_refused_before_any_work() {
    let sb = Sandbox::new("settings");
    let data = s(c4_tokens());
    // A learning rate that is not a positive number (NaN was trained and written into the
    // trainer state as null, which its own resume then refused).
    let run = sb.work.join("run");
    let mut args = train_args(data, s(&run), "1");
    args.extend(["--lr", "NaN"]);
    fails(&args, &["--lr NaN", "not a positive learning rate"]);
    assert!(!run.exists());
    // A vocabulary size SentencePiece loops forever on.
    fails(
        &[
            "vocab",
            "train",
            s(&shared("c4/c4-train.00000-of-01024.first600.json.gz")),
            "--out",
            s(&sb.work.join("v/c4")),
            "--vocab-size",
            "2147483647",
        ],
        &["--vocab-size 2147483647", "between 8 and"],
    );
    // A vocabulary training that fails leaves no --out folder behind.
    let empty = sb.work.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let v2 = sb.work.join("v2");
    fails(
        &[
            "vocab",
            "train",
            s(&empty),
            "--out",
            s(&v2.join("c4")),
            "--vocab-size",
            "100",
        ],
        &[],
    );
    assert!(!v2.exists(), "a failed vocab train left its folder");
    // A FIFO given as a config file (the read blocked forever).
    let fifo = sb.work.join("config.json");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    fails(
        &[
            "model",
            "summary",
            "--arch",
            "transformer",
            "--preset",
            "tiny",
            "--config",
            s(&fifo),
        ],
        &[s(&fifo), "not a regular file"],
    );
    let odd_heads = sb.work.join("odd-heads.toml");
    std::fs::write(&odd_heads, "num_heads = 5\n").unwrap();
    // Study files checked when read, before a cell runs: a learning curve of 10^10 points
    // (an 80 GB allocation), a task named twice (found after pre-training).
    let smoke = std::fs::read_to_string(common::root().join("studies/smoke.toml"))
        .unwrap()
        .replace(
            "../shared",
            &format!("{}/../shared", common::root().display()),
        );
    for (name, edit, words) in [
        (
            "curve",
            smoke.replace("[finetune]\n", "[finetune]\ncurve = 10000000000\n"),
            "curve 10000000000",
        ),
        (
            "twice",
            format!("{smoke}\n[[tasks]]\nname = \"trec\"\ntrain = []\ndev_fraction = 0.1\n"),
            "names \"trec\" twice",
        ),
        // What only the models know, asked before the ingest: a misspelt preset or
        // architecture and an override no model can have (found after the ingest), and a
        // task that does not exist (found after the pre-training).
        (
            "preset",
            smoke.replace("preset = \"tiny\"", "preset = \"tinny\""),
            "unknown preset \"tinny\"",
        ),
        (
            "arch",
            smoke.replace("\"lightconv\"]", "\"lightcnv\"]"),
            "arch \"lightcnv\"",
        ),
        (
            "override",
            smoke.replace(
                "preset = \"tiny\"\n",
                &format!("preset = \"tiny\"\nconfig = \"{}\"\n", s(&odd_heads)),
            ),
            "does not make a model",
        ),
        (
            "task",
            smoke.replace("name = \"trec\"", "name = \"trek\""),
            "task \"trek\"",
        ),
        // Settings no run can train with, found after the ingest or the pre-training (and
        // then the study's record refused the corrected file): zero steps or batch, an
        // inputs length with no room for a noise span, an unknown device, a corpus file
        // that is not there, none at all, and a config that is a device (hashing it hung).
        (
            "pretrain-steps",
            smoke.replace("steps = 20\nbatch_size = 8", "steps = 0\nbatch_size = 8"),
            "[pretrain] steps is 0",
        ),
        (
            "finetune-batch",
            smoke.replace("batch_size = 16", "batch_size = 0"),
            "[finetune] batch_size is 0",
        ),
        (
            "task-steps",
            smoke.replace("dev_limit = 50", "dev_limit = 50\nsteps = 0"),
            "task trec steps is 0",
        ),
        (
            "length",
            smoke.replace("inputs_length = 64", "inputs_length = 2"),
            "inputs_length 2",
        ),
        (
            "device",
            smoke.replace("seeds = [0]", "seeds = [0]\ndevice = \"tpu\""),
            "device \"tpu\" is none of auto, cpu, cuda",
        ),
        (
            "corpus",
            smoke.replace("first600.json.gz", "first601.json.gz"),
            "first601.json.gz is not there",
        ),
        (
            "no-corpus",
            smoke
                .lines()
                .map(|l| match l.starts_with("inputs = ") {
                    true => "inputs = []",
                    false => l,
                })
                .collect::<Vec<_>>()
                .join("\n"),
            "[corpus] inputs is empty",
        ),
        (
            "config-device",
            smoke.replace(
                "preset = \"tiny\"\n",
                "preset = \"tiny\"\nconfig = \"/dev/zero\"\n",
            ),
            "/dev/zero is not a regular file",
        ),
    ] {
        let file = sb.work.join(format!("{name}.toml"));
        std::fs::write(&file, edit).unwrap();
        let out = sb.work.join(format!("study-{name}"));
        fails(&["study", s(&file), "--out", s(&out)], &[s(&file), words]);
        assert!(!out.exists(), "{name}: the study wrote before it refused");
    }
    // A task file with a row of 17 MB between good ones (a 300 MB row aborted on a 7 GB
    // allocation): named, not skipped with the rows after it.
    let long = sb.work.join("long.tsv");
    let mut text = b"sentence\tlabel\ngood\t1\n".to_vec();
    text.extend(std::iter::repeat_n(b'a', 17 << 20));
    text.extend_from_slice(b"\t1\nfine\t0\n");
    std::fs::write(&long, text).unwrap();
    fails(
        &[
            "task",
            "prepare",
            "sst2",
            "--input",
            s(&long),
            "--vocab",
            &vocab(),
            "--out",
            s(&sb.work.join("long")),
        ],
        &[s(&long), "line 3", "a row runs past"],
    );
    // The demo over a user's folder: refused with nothing written, not even its lock.
    let mine = sb.work.join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "mine").unwrap();
    fails(&["demo", "--out", s(&mine)], &["holds no demo.toml"]);
    assert_eq!(std::fs::read_dir(&mine).unwrap().count(), 1);
    // A trainer state whose step is not its folder's (2^63 ended the resume at once, "done").
    let run = sb.work.join("run2");
    ok(&train_args(data, s(&run), "2"));
    let state = run.join("checkpoints/step-00000002/trainer_state.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    v["step"] = (1u64 << 63).into();
    std::fs::write(&state, v.to_string()).unwrap();
    let resume = [train_args(data, s(&run), "4"), vec!["--resume"]].concat();
    fails(
        &resume,
        &[s(&state), "says step 9223372036854775808", "step 2"],
    );
    // ... and one saying it was trained by 0 ranks ("launch 0 ranks").
    v["step"] = 2.into();
    v["world_size"] = 0.into();
    std::fs::write(&state, v.to_string()).unwrap();
    fails(&resume, &["world_size 0", "not a state conveyor wrote"]);
    sb.assert_outside_unchanged();
}
