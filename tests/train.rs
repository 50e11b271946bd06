//! End-to-end tests of `conveyor train` (run through `conveyor`, which hands it to
//! `conveyor-torch`): exact resume on CPU (with and without --deterministic), checkpoints readable by Python's safetensors,
//! a NaN stop that keeps the last good checkpoint, figures read back in windows
//! (`--sync-every`) equal to every step's (divergence and checkpoint keeping: checkpoints.rs), refusals (train/refusals.rs), mixed precision (float32 masters
//! that move where pure bfloat16 stalls, a loss curve that follows float32), and the analytic FLOPs against
//! PyTorch's FLOP counter.

use crate::common;

use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

mod refusals;

fn tokens() -> &'static Path {
    c4_tokens()
}

pub(crate) fn train_args<'a>(out: &'a str, arch: &'a str, steps: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        tokens().to_str().unwrap(),
        "--out",
        out,
        "--arch",
        arch,
        "--preset",
        "tiny",
        "--steps",
        steps,
        "--batch-size",
        "4",
        "--inputs-length",
        "64",
        "--checkpoint-every",
        "3",
        "--device",
        "cpu",
        "-q",
    ]
}

fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

/// The libtorch commands' help and usage errors name them as users run them (they said
/// `conveyor-torch train`, a binary users never call).
#[test]
fn help_names_the_commands_as_users_run_them() {
    for cmd in [&["train"][..], &["finetune"], &["eval"], &["model", "loss"]] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let help = ok(&args);
        let usage = format!("Usage: conveyor {} ", cmd.join(" "));
        assert!(help.contains(&usage), "{help}");
        assert!(!help.contains("conveyor-torch"), "{help}");
    }
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    for arch in ["transformer", "lightconv"] {
        let a = tmp_path(&format!("straight-{arch}"));
        let b = tmp_path(&format!("resumed-{arch}"));
        let (sa, sb) = (a.to_str().unwrap(), b.to_str().unwrap());
        ok(&train_args(sa, arch, "9"));
        // The interrupted run also asks for deterministic kernels: on CPU that changes no
        // number, and no op of either model may be refused in that mode (CUDA needs it for
        // bit-exact resumption; docs/bench/h200/gpu-checks-log.txt shows it there).
        let mut first = train_args(sb, arch, "6");
        first.push("--deterministic");
        ok(&first);
        let mut again = train_args(sb, arch, "9");
        again.extend(["--resume", "--deterministic"]);
        ok(&again);
        let (la, lb) = (losses(&a), losses(&b));
        assert_eq!(la.len(), 9);
        assert_eq!(la, lb, "{arch}: losses after resuming differ");
        let w = |r: &Path| {
            std::fs::read(r.join("checkpoints/step-00000009/model.safetensors")).unwrap()
        };
        assert!(w(&a) == w(&b), "{arch}: final weights differ");
        assert!(la[8].1 < la[0].1, "{arch}: the loss did not go down");
    }
}

#[test]
fn checkpoints_are_readable_by_python_safetensors() {
    let run = tmp_path("python");
    ok(&train_args(run.to_str().unwrap(), "dynamicconv", "3"));
    let ckpt = run.join("checkpoints/step-00000003");
    let python = std::env::var("CONVEYOR_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import json, sys
from safetensors.numpy import load_file
w = load_file(sys.argv[1] + "/model.safetensors")
cfg = json.load(open(sys.argv[1] + "/model_config.json"))
n = sum(v.size for v in w.values())
print(cfg["arch"], w["shared.weight"].shape, n, "encoder.layers.0.mixer.conv_proj.weight" in w)
"#;
    let o = Command::new(&python)
        .args(["-c", script, ckpt.to_str().unwrap()])
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (run the tests with `make test`)"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    let summary = ok(&[
        "model",
        "summary",
        "--arch",
        "dynamicconv",
        "--preset",
        "tiny",
        "--vocab-size",
        "32100",
    ]);
    let params = summary
        .lines()
        .find_map(|l| l.strip_prefix("parameters: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    assert_eq!(out.trim(), format!("dynamicconv (32100, 64) {params} True"));
}

/// Each line of metrics.jsonl as [step, loss, grad_norm, lr, fill_rate, eval_loss] (JSON
/// values: a gradient norm that overflowed is written as null).
fn figures(run: &Path) -> Vec<[serde_json::Value; 6]> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            ["step", "loss", "grad_norm", "lr", "fill_rate", "eval_loss"].map(|k| v[k].clone())
        })
        .collect()
}

fn with_flag<'a>(mut args: Vec<&'a str>, flag: &str, value: &'a str) -> Vec<&'a str> {
    let i = args.iter().position(|a| *a == flag).unwrap();
    args[i + 1] = value;
    args
}

/// --sync-every N (the CUDA default is 16) reads the loss and gradient norm back in windows:
/// every step keeps its line and its figures (evaluations too), the weights are the same,
/// and a divergence inside a window is reported at the same step with the same last good
/// checkpoint.
#[test]
fn reading_figures_back_in_windows_changes_nothing() {
    let a = tmp_path("sync-every-1");
    let b = tmp_path("sync-every-4");
    let run = |p: &Path, extra: &[&str]| {
        let mut args = with_flag(
            train_args(p.to_str().unwrap(), "lightconv", "9"),
            "--checkpoint-every",
            "9",
        );
        args.extend(extra);
        ok(&args);
    };
    let eval = [
        "--eval-data",
        tokens().to_str().unwrap(),
        "--eval-every",
        "3",
        "--eval-batches",
        "2",
    ];
    run(&a, &eval);
    run(&b, &[&eval[..], &["--sync-every", "4"]].concat());
    let (fa, fb) = (figures(&a), figures(&b));
    assert_eq!(fa.len(), 9);
    assert!(fa[5][5].is_f64() && fa[4][5].is_null(), "{:?}", fa[5]);
    assert_eq!(fa, fb, "figures differ when read back every 4 steps");
    let w =
        |r: &Path| std::fs::read(r.join("checkpoints/step-00000009/model.safetensors")).unwrap();
    assert!(
        w(&a) == w(&b),
        "weights differ when read back every 4 steps"
    );

    let diverge = |name: &str, every: &str| {
        let p = tmp_path(name);
        // AdamW at 1e3 diverges after a few steps: past the checkpoint at step 5, inside
        // the window of steps 6-9 when reading back every 4.
        let mut args = with_flag(
            train_args(p.to_str().unwrap(), "transformer", "30"),
            "--checkpoint-every",
            "5",
        );
        args.extend(["--lr", "1e3", "--optimizer", "adamw", "--sync-every", every]);
        let o = conveyor(&args);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let d = std::fs::read_to_string(p.join("diverged.json")).unwrap();
        let latest = std::fs::read_to_string(p.join("checkpoints/latest")).unwrap_or_default();
        (d, latest, figures(&p))
    };
    let (d1, l1, f1) = diverge("nan-every-1", "1");
    let (d4, l4, f4) = diverge("nan-every-4", "4");
    assert_eq!(d1, d4);
    assert_eq!(l1, l4);
    assert_eq!(f1, f4);
    let step = serde_json::from_str::<serde_json::Value>(&d4).unwrap()["step"]
        .as_u64()
        .unwrap();
    assert!(
        (6..=9).contains(&step),
        "{d4}: not inside the window of steps 6-9"
    );
    assert_eq!(l4.trim(), "step-00000005");
    assert_eq!(f4.len() as u64, step - 1);
}

/// `bench train-one` of the tiny transformer on the CPU.
fn train_one_args<'a>(length: &'a str, batch: &'a str, steps: &'a str) -> Vec<&'a str> {
    vec![
        "bench",
        "train-one",
        "--arch",
        "transformer",
        "--preset",
        "tiny",
        "--length",
        length,
        "--batch-size",
        batch,
        "--steps",
        steps,
        "--device",
        "cpu",
    ]
}

/// metrics.jsonl carries the model's TFLOP/s (the analytic FLOPs of the step's padded
/// batches over its time) and, with a peak, the MFU; `bench train-one` reports both.
#[test]
fn steps_report_model_flops_and_mfu() {
    let run = tmp_path("mfu");
    let mut args = train_args(run.to_str().unwrap(), "transformer", "4");
    args.extend(["--peak-tflops", "0.5"]);
    ok(&args);
    let cfg =
        conveyor_model::ModelConfig::preset(conveyor_model::Arch::Transformer, "tiny", 32_100)
            .unwrap();
    let l = conveyor_pipeline::corrupt::random_spans_helper(64, 0.15, 3.0).unwrap();
    let per_step = conveyor_model::peak::train_flops(&cfg, 4, l.inputs_length, l.targets_length);
    for line in std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
    {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        let (tflops, mfu) = (
            m["model_tflops"].as_f64().unwrap(),
            m["mfu"].as_f64().unwrap(),
        );
        assert!((mfu - tflops / 0.5).abs() < 1e-9 * mfu.max(1.0), "{m}");
        // Four rows a step: the step took 4 / examples_per_s seconds.
        let flops = tflops * 1e12 * 4.0 / m["examples_per_s"].as_f64().unwrap();
        assert!(
            (flops / per_step - 1.0).abs() < 1e-6,
            "{flops} vs {per_step}"
        );
    }
    // No peak on a CPU unless given: no MFU.
    let plain = tmp_path("mfu-none");
    ok(&train_args(plain.to_str().unwrap(), "lightconv", "2"));
    let first = std::fs::read_to_string(plain.join("metrics.jsonl")).unwrap();
    assert!(
        first.contains("model_tflops") && !first.contains("\"mfu\""),
        "{first}"
    );
    let mut args = train_one_args("64", "2", "1");
    args.extend(["--peak-tflops", "2", "--attention", "sdpa"]);
    let o = conveyor(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tflops = v["model_tflops"].as_f64().unwrap();
    assert!(
        tflops > 0.0 && (v["mfu"].as_f64().unwrap() - tflops / 2.0).abs() < 1e-12,
        "{v}"
    );
    assert_eq!(v["attention"], "sdpa");
    // A CUDA graph needs a CUDA device: refused with the reason, nothing run.
    let mut args = train_one_args("16", "1", "1");
    args.push("--cuda-graph");
    let o = conveyor(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--cuda-graph needs a CUDA device"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A steady training step reuses the memory the step before freed: with glibc's trim
/// threshold frozen at its 128 KB default (what setting only the mmap threshold did), the
/// free top of the heap went back to the kernel after every step and each step faulted its
/// temporaries in again (~9,500 faults a step here); conveyor-torch raises both thresholds.
#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn steady_steps_do_not_fault_their_memory_in_again() {
    let faults = |trim: Option<&str>| {
        let mut c = conveyor_cmd();
        c.args(train_one_args("16", "1", "10"));
        if let Some(t) = trim {
            c.env("MALLOC_TRIM_THRESHOLD_", t);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["page_faults_per_step"].as_f64().expect("faults counted")
    };
    let trimming = faults(Some("131072"));
    let kept = faults(None);
    // The measurement sees the faults when memory is handed back (a pair of 8 MB embedding
    // gradients alone is ~4,000 pages)...
    assert!(
        trimming > 2_000.0,
        "with trimming: {trimming} faults a step"
    );
    // ...and conveyor-torch's own setting keeps them away.
    assert!(
        kept < 500.0 && kept * 4.0 < trimming,
        "conveyor-torch's default: {kept} faults a step (with trimming {trimming})"
    );
}

#[test]
fn analytic_flops_match_pytorchs_flop_counter() {
    // `model summary --json` counts FLOPs from the shapes; scripts/flop_count.py runs the same
    // transformer in PyTorch under torch.utils.flop_counter for one forward + backward pass.
    let python = std::env::var("CONVEYOR_PYTHON").unwrap_or_else(|_| "python3".into());
    for (preset, length, targets) in [("tiny", "128", "32"), ("small", "512", "114")] {
        let ours: serde_json::Value = serde_json::from_str(&ok(&[
            "model",
            "summary",
            "--arch",
            "transformer",
            "--preset",
            preset,
            "--length",
            length,
            "--targets-length",
            targets,
            "--json",
        ]))
        .unwrap();
        let o = Command::new(&python)
            .current_dir(root())
            .args(["scripts/flop_count.py", "--preset", preset])
            .args(["--length", length, "--targets-length", targets])
            .output()
            .unwrap_or_else(|e| panic!("{python}: {e} (run the tests with `make test`)"));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let theirs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        for k in ["forward_flops", "train_flops"] {
            let (a, b) = (ours[k].as_f64().unwrap(), theirs[k].as_f64().unwrap());
            assert!(
                (a - b).abs() <= 1e-3 * b,
                "{preset}/{length}: {k} analytic {a} vs PyTorch's counter {b}"
            );
        }
    }
}

fn metric(run: &Path, name: &str) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()[name]
                .as_f64()
                .unwrap()
        })
        .collect()
}

/// For every weight matrix, the fraction of its elements that differ between checkpoints
/// `a` and `b` of `run`, and the checkpoint's dtype.
fn moved(run: &Path, a: u64, b: u64) -> Vec<(String, f64, tch::Kind)> {
    let read = |s: u64| {
        let f = run.join(format!("checkpoints/step-{s:08}/model.safetensors"));
        let mut w = tch::Tensor::read_safetensors(&f).unwrap();
        w.sort_by(|x, y| x.0.cmp(&y.0));
        w
    };
    read(a)
        .into_iter()
        .zip(read(b))
        .filter(|((_, t), _)| t.dim() == 2)
        .map(|((n, x), (_, y))| {
            let changed = x
                .ne_tensor(&y)
                .to_kind(tch::Kind::Float)
                .mean(tch::Kind::Float)
                .double_value(&[]);
            (n, changed, x.kind())
        })
        .collect()
}

/// `--bf16` is mixed precision: at a fine-tuning learning rate (1e-4, parameter-scaled
/// Adafactor) the float32 masters move almost everywhere in 5 steps, where pure bfloat16
/// weights round most updates away; checkpoints hold float32; the loss follows float32's.
#[test]
fn bf16_trains_float32_master_weights() {
    for arch in ["lightconv", "transformer"] {
        let runs: Vec<PathBuf> = ["f32", "bf16", "pure"]
            .iter()
            .map(|m| tmp_path(&format!("precision-{arch}-{m}")))
            .collect();
        for (run, flag) in runs.iter().zip([None, Some("--bf16"), Some("--pure-bf16")]) {
            let mut a = train_args(run.to_str().unwrap(), arch, "10");
            let every = a.iter().position(|x| *x == "--checkpoint-every").unwrap();
            a[every + 1] = "5";
            a.extend(["--lr", "1e-4"]);
            a.extend(flag);
            let o = conveyor(&a);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let warned = String::from_utf8_lossy(&o.stderr).contains("warning: --pure-bf16");
            assert_eq!(warned, flag == Some("--pure-bf16"));
        }
        for (name, changed, kind) in moved(&runs[1], 5, 10) {
            assert_eq!(
                kind,
                tch::Kind::Float,
                "{arch}: {name} is not saved as float32"
            );
            // The relative position table has buckets no distance under 64 reaches, and the
            // learned position tables (512 rows) rows no position under 64 reaches: no
            // gradient, no update (in any precision).
            if name.contains("relative_attention_bias") || name.contains("position_embedding") {
                continue;
            }
            assert!(changed >= 0.95, "{arch}: only {changed} of {name} changed");
        }
        let pure = moved(&runs[2], 5, 10);
        let stuck = pure.iter().filter(|(_, c, _)| *c < 0.5).count();
        assert!(
            stuck * 2 > pure.len(),
            "{arch}: pure bf16 moved most matrices: {pure:?}"
        );
    }
}

/// The bf16 loss curve follows float32's: within 1% at every step of 30 at T5's
/// pre-training rate (measured: within 0.05%; pure bf16 within 0.2%).
#[test]
fn bf16_loss_follows_float32() {
    let f32_run = tmp_path("curve-f32");
    let bf16_run = tmp_path("curve-bf16");
    ok(&train_args(f32_run.to_str().unwrap(), "lightconv", "30"));
    let mut a = train_args(bf16_run.to_str().unwrap(), "lightconv", "30");
    a.push("--bf16");
    ok(&a);
    let (x, y) = (metric(&f32_run, "loss"), metric(&bf16_run, "loss"));
    assert_eq!(x.len(), 30);
    for (i, (a, b)) in x.iter().zip(&y).enumerate() {
        assert!(
            (a - b).abs() <= 0.01 * a,
            "step {}: float32 {a}, bf16 {b}",
            i + 1
        );
    }
    assert!(x[29] < x[0] - 1.0, "the loss did not go down: {x:?}");
}
