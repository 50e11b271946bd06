//! The benchmarks a user compares conveyor with: `bench train` (the paper's Figures 1 and 2,
//! each attention its own series) and `bench step` (conveyor beside the same model in
//! PyTorch), on the CPU with the tiny preset: what each reports, not how fast.

use crate::common::*;

/// `bench train --attention explicit,sdpa` measures every architecture under each attention
/// (each child reports the one it ran) and keeps them apart: the sdpa points are their own
/// series in the table and in the ratios over the explicit transformer.
#[test]
fn bench_train_measures_each_attention_as_its_own_series() {
    let out = tmp_path("bench-train-attention");
    let printed = ok(&[
        "bench",
        "train",
        "--device",
        "cpu",
        "--preset",
        "tiny",
        "--batch-size",
        "2",
        "--steps",
        "1",
        "--lengths",
        "16",
        "--archs",
        "transformer,lightconv",
        "--attention",
        "explicit,sdpa",
        "--out",
        out.to_str().unwrap(),
    ]);
    let points: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join("bench-train.json")).unwrap())
            .unwrap();
    let measured: Vec<(&str, &str)> = points
        .iter()
        .filter(|p| p["examples_per_s"].as_f64().is_some_and(|x| x > 0.0))
        .map(|p| {
            (
                p["arch"].as_str().unwrap(),
                p["attention"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        measured,
        [
            ("transformer", "explicit"),
            ("transformer", "sdpa"),
            ("lightconv", "explicit"),
            ("lightconv", "sdpa")
        ]
    );
    let md = std::fs::read_to_string(out.join("bench-train.md")).unwrap();
    assert!(md.contains("| transformer (sdpa) | 16 |"), "{md}");
    assert!(
        md.contains("| input length | transformer (sdpa) speed | transformer (sdpa) memory | lightconv speed"),
        "{md}"
    );
    // The plots beside them, where Python has matplotlib (`make test`'s environment does).
    assert!(!printed.contains("plotting failed"), "{printed}");
    if !printed.contains("(no plots") {
        for png in ["speed.png", "memory.png"] {
            assert!(out.join(png).is_file(), "no {png}: {printed}");
        }
    }
    // Its own benchmark is replaced by a rerun; a user's file of one of its names is not.
    let again = |dir: &std::path::Path| {
        conveyor(&[
            "bench",
            "train",
            "--device",
            "cpu",
            "--preset",
            "tiny",
            "--batch-size",
            "2",
            "--steps",
            "1",
            "--lengths",
            "16",
            "--archs",
            "lightconv",
            "--out",
            dir.to_str().unwrap(),
        ])
    };
    assert!(again(&out).status.success());
    let mine = tmp_path("bench-train-mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("speed.png"), "mine").unwrap();
    let o = again(&mine);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("speed.png"), "{err}");
    assert_eq!(
        std::fs::read_to_string(mine.join("speed.png")).unwrap(),
        "mine"
    );
    std::fs::remove_dir_all(&out).ok();
    std::fs::remove_dir_all(&mine).ok();
}

/// `bench step` times conveyor beside the same model in PyTorch on the shape, precision and
/// attention asked (each side reports what it ran; a mismatch is an error).
#[test]
fn bench_step_times_both_sides_on_the_asked_shape() {
    // transformers 4 (the environment's) and 5, whose T5 takes sdpa unless told otherwise.
    let cases: [(&[&str], &str, &str); 5] = [
        (&[], "float32, explicit attention", "4.57.6"),
        (
            &["--bf16"],
            "bf16 mixed precision, explicit attention",
            "4.57.6",
        ),
        (
            &["--attention", "sdpa"],
            "float32, sdpa attention",
            "4.57.6",
        ),
        (&[], "float32, explicit attention", "5.17.0"),
        (
            &["--attention", "sdpa"],
            "float32, sdpa attention",
            "5.17.0",
        ),
    ];
    for (flags, says, transformers) in cases {
        let mut args = vec![
            "bench",
            "step",
            "--preset",
            "tiny",
            "--length",
            "16",
            "--targets-length",
            "5",
            "--batch-size",
            "2",
            "--steps",
            "1",
            "--rounds",
            "1",
            "--device",
            "cpu",
        ];
        args.extend(flags);
        let mut c = conveyor_cmd();
        if transformers.starts_with('5') {
            c.env("PYTHONPATH", transformers5_dir());
        }
        let out = ok_with(c, &args);
        assert!(
            out.contains(&format!("batch 2 x 16 / 5 tokens, {says}")),
            "{out}"
        );
        let pytorch = out.lines().find(|l| l.starts_with("PyTorch, same model"));
        assert!(
            pytorch.is_some_and(|l| l.contains("s per step") && l.contains("model TFLOP/s")),
            "{out}"
        );
        // transformers 4's T5 has no sdpa path: its column says why instead of timing
        // another model. Every timed side ran what was asked (checked by `bench step`).
        let hf = out.lines().find(|l| l.starts_with("transformers "));
        match flags.contains(&"sdpa") && transformers.starts_with('4') {
            true => assert!(hf.is_some_and(|l| l.contains("not run")), "{out}"),
            false => assert!(
                hf.is_some_and(
                    |l| l.starts_with(&format!("transformers {transformers} T5"))
                        && l.contains("s per step")
                ),
                "{out}"
            ),
        }
    }
}
