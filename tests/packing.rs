//! End-to-end tests of packed batches: for all four architectures `conveyor model loss` of a
//! checkpoint on packed example shards (`corrupt --pack`), and on task examples packed by the
//! loader (`--pack`), equals its loss on the same examples unpacked; training with `--pack`
//! fills more of each batch; rows longer than a model's learned position table are refused.

use crate::common;

use common::*;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn tokens() -> &'static Path {
    c4_tokens()
}

const LENGTH: &str = "512";

/// AG News examples (581 rows of short news texts) at inputs length 128 and targets length 16
/// (labels are a few tokens): variable lengths, so unpacked rows are partly padding and
/// several examples fit in one packed row.
fn ag_news() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tmp_path("ag-news");
        ok(&[
            "task",
            "prepare",
            "ag_news",
            "--input",
            shared("ag_news/train_subset_581rows_noncontiguous.csv")
                .to_str()
                .unwrap(),
            "--vocab",
            shared("spiece/t5-spiece.model").to_str().unwrap(),
            "--out",
            d.to_str().unwrap(),
            "--inputs-length",
            "128",
            "--targets-length",
            "16",
        ]);
        d
    })
}

/// `conveyor train` on the C4 tokens (unless `extra` names other --data).
fn train(out: &Path, arch: &str, steps: &str, extra: &[&str]) {
    let data = match extra.iter().position(|a| *a == "--data") {
        Some(i) => extra[i + 1],
        None => tokens().to_str().unwrap(),
    };
    let extra: Vec<&str> = match extra.iter().position(|a| *a == "--data") {
        Some(i) => [&extra[..i], &extra[i + 2..]].concat(),
        None => extra.to_vec(),
    };
    let mut a = vec![
        "train",
        "--data",
        data,
        "--out",
        out.to_str().unwrap(),
        "--arch",
        arch,
        "--preset",
        "tiny",
        "--steps",
        steps,
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "-q",
    ];
    // The length shapes token shards; example shards carry their own.
    if data == tokens().to_str().unwrap() {
        a.extend(["--inputs-length", LENGTH]);
    }
    a.extend(extra);
    ok(&a);
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn packed_examples_have_the_loss_of_the_same_examples_unpacked() {
    let plain = tmp_path("examples");
    let packed = tmp_path("examples-packed");
    for (out, pack) in [(&plain, false), (&packed, true)] {
        let mut a = vec![
            "corrupt",
            tokens().to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--inputs-length",
            LENGTH,
            "-q",
        ];
        if pack {
            a.push("--pack");
        }
        ok(&a);
    }
    for arch in ["transformer", "lightconv", "dynamicconv", "dilatedconv"] {
        let run = tmp_path(&format!("run-{arch}"));
        train(&run, arch, "4", &[]);
        let ckpt = run.join("checkpoints/step-00000004");
        let loss = |data: &Path, pack: bool| {
            let mut a = vec![
                "model",
                "loss",
                "--checkpoint",
                ckpt.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
                "--batch-size",
                "16",
                "--device",
                "cpu",
                "--json",
            ];
            if pack {
                a.push("--pack");
            }
            json(&ok(&a))
        };
        // Task examples packed by the loader: short examples leave room, so packing fills far
        // more of each row.
        let (a, b) = (loss(ag_news(), false), loss(ag_news(), true));
        same_loss(&a, &b, arch);
        let fill = |v: &serde_json::Value| v["fill_rate"].as_f64().unwrap();
        assert!(
            fill(&b) > fill(&a) + 0.1,
            "{arch}: packed {b}, unpacked {a}"
        );
        // Example shards packed when written (corrupt --pack), and the same token shards
        // corrupted on the fly with the run's input length (566 C4 examples of 512 tokens:
        // one architecture, for time).
        if arch == "lightconv" {
            let unpacked = loss(&plain, false);
            same_loss(&unpacked, &loss(&packed, false), arch);
            same_loss(&unpacked, &loss(tokens(), false), arch);
        }
    }
}

/// Same examples, same target tokens, and losses within 1e-5 relative.
fn same_loss(a: &serde_json::Value, b: &serde_json::Value, arch: &str) {
    assert_eq!(a["examples"], b["examples"], "{arch}");
    assert_eq!(a["target_tokens"], b["target_tokens"], "{arch}");
    let (la, lb) = (a["loss"].as_f64().unwrap(), b["loss"].as_f64().unwrap());
    assert!(
        (la - lb).abs() <= 1e-5 * la,
        "{arch}: unpacked {la}, packed {lb}"
    );
}

#[test]
fn training_with_pack_fills_the_batches() {
    let plain = tmp_path("fill-plain");
    let packed = tmp_path("fill-packed");
    let data = ag_news().to_str().unwrap();
    train(&plain, "lightconv", "3", &["--data", data]);
    train(&packed, "lightconv", "3", &["--data", data, "--pack"]);
    // Another --inputs-length than the example shards' was ignored: refused, naming both.
    let other = tmp_path("fill-other-length");
    let o = conveyor(&[
        "train",
        "--data",
        data,
        "--out",
        other.to_str().unwrap(),
        "--arch",
        "lightconv",
        "--steps",
        "1",
        "--inputs-length",
        "8",
        "--device",
        "cpu",
    ]);
    // model loss refuses it by the same check.
    let latest = plain.join("checkpoints/latest");
    let l = conveyor(&[
        "model",
        "loss",
        "--checkpoint",
        latest.to_str().unwrap(),
        "--data",
        data,
        "--inputs-length",
        "8",
    ]);
    for o in [o, l] {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success()
                && err.contains("--inputs-length 8")
                && err.contains("inputs length 128"),
            "{err}"
        );
    }
    let fill = |run: &Path| -> f64 {
        let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        let v: Vec<f64> = text
            .lines()
            .map(|l| json(l)["fill_rate"].as_f64().unwrap())
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let (a, b) = (fill(&plain), fill(&packed));
    assert!(b > a + 0.1, "packed fill rate {b}, unpacked {a}");
    // More examples per step when packed.
    let examples = |run: &Path| {
        let s: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(run.join("checkpoints/step-00000003/trainer_state.json"))
                .unwrap(),
        )
        .unwrap();
        s["examples_seen"].as_u64().unwrap()
    };
    assert!(examples(&packed) > examples(&plain));
}

#[test]
fn rows_longer_than_the_position_table_are_refused() {
    let cfg = tmp_dir("short-config").join("short.json");
    std::fs::write(&cfg, r#"{"max_positions": 32}"#).unwrap();
    let run = tmp_path("too-long");
    let o = conveyor(&[
        "train",
        "--data",
        tokens().to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--arch",
        "lightconv",
        "--config",
        cfg.to_str().unwrap(),
        "--inputs-length",
        "64",
        "--steps",
        "1",
        "--device",
        "cpu",
        "--pack",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("learned position table of 32 rows") && err.contains("max_positions"),
        "{err}"
    );
    // Example shards: their feature lengths (128 / 16) are checked, naming the folder.
    let o = conveyor(&[
        "train",
        "--data",
        ag_news().to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--arch",
        "dynamicconv",
        "--config",
        cfg.to_str().unwrap(),
        "--steps",
        "1",
        "--device",
        "cpu",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains(ag_news().to_str().unwrap()) && err.contains("up to 128 input and 16 target"),
        "{err}"
    );
    // Evaluation too (it decoded them, every position past 31 reading row 31).
    ok(&[
        "train",
        "--data",
        tokens().to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--arch",
        "lightconv",
        "--preset",
        "tiny",
        "--config",
        cfg.to_str().unwrap(),
        "--inputs-length",
        "24",
        "--steps",
        "1",
        "--device",
        "cpu",
        "-q",
    ]);
    let eval = tmp_path("too-long-eval");
    let o = conveyor(&[
        "eval",
        "--checkpoint",
        run.join("checkpoints/step-00000001").to_str().unwrap(),
        "--data",
        ag_news().to_str().unwrap(),
        "--out",
        eval.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("learned position table of 32 rows") && err.contains("up to 128 input"),
        "{err}"
    );
}
