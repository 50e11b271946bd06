//! End-to-end tests of data-parallel training on CPU (Gloo, two processes started by the
//! test, through torchrun's variables and through torchrun itself): the step's gradient is
//! the mean over all its target tokens, so 2 ranks x batch 4 = 1 rank x batch 8 =
//! batch 4 x --accumulate 2 (same losses, same final weights); a rank that dies makes the
//! other stop naming it and `--resume` continues to the uninterrupted result; refusals.

use crate::common;

use common::*;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tch::{Kind, Tensor};

fn tokens() -> &'static Path {
    c4_tokens()
}

/// Dropout (and the conv kernels' weight dropout) off: with it, how a step is split
/// changes which units are dropped.
fn no_dropout() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let d = tmp_dir("config");
        let f = d.join("no-dropout.json");
        std::fs::write(&f, r#"{"dropout": 0.0, "weight_dropout": 0.0}"#).unwrap();
        f
    })
}

fn args(out: &Path, arch: &str, batch: usize, accumulate: usize, steps: usize) -> Vec<String> {
    [
        "train",
        "--data",
        tokens().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--arch",
        arch,
        "--preset",
        "tiny",
        "--config",
        no_dropout().to_str().unwrap(),
        "--steps",
        &steps.to_string(),
        "--batch-size",
        &batch.to_string(),
        "--accumulate",
        &accumulate.to_string(),
        "--inputs-length",
        "64",
        "--checkpoint-every",
        "4",
        "--device",
        "cpu",
        "--dist-timeout",
        "60",
        "-q",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts rank `rank` of `world` with torchrun's variables.
fn spawn_rank(args: &[String], rank: usize, world: usize, port: u16) -> Child {
    crate::common::conveyor_cmd()
        .args(args)
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start conveyor")
}

fn check(o: Output, what: &str) -> Output {
    assert!(
        o.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Runs `args` as two ranks; both must succeed.
fn two_ranks(args: &[String]) {
    let port = free_port();
    let children: Vec<Child> = (0..2).map(|r| spawn_rank(args, r, 2, port)).collect();
    for (r, c) in children.into_iter().enumerate() {
        check(c.wait_with_output().unwrap(), &format!("rank {r}"));
    }
}

fn one_rank(args: &[String]) {
    let o = crate::common::conveyor_cmd()
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    check(o, "one process");
}

fn metric(run: &Path, name: &str) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v[name].as_f64().unwrap()
        })
        .collect()
}

fn losses(run: &Path) -> Vec<f64> {
    metric(run, "loss")
}

fn weights(run: &Path, step: usize) -> Vec<(String, Tensor)> {
    let f = run.join(format!("checkpoints/step-{step:08}/model.safetensors"));
    let mut w = Tensor::read_safetensors(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

/// The largest element-wise difference between two runs' weights at `step`.
fn max_weight_diff(a: &Path, b: &Path, step: usize) -> f64 {
    weight_diffs(a, b, step)
        .into_iter()
        .map(|d| d.1)
        .fold(0.0, f64::max)
}

/// Per weight tensor: (name, largest element-wise difference, ||a - b|| / max(||a||, 1))
/// (the floor keeps tensors that start at zero, such as biases, from dividing by ~0).
fn weight_diffs(a: &Path, b: &Path, step: usize) -> Vec<(String, f64, f64)> {
    let (wa, wb) = (weights(a, step), weights(b, step));
    assert_eq!(wa.len(), wb.len());
    wa.iter()
        .zip(&wb)
        .map(|((na, ta), (nb, tb))| {
            assert_eq!(na, nb);
            let d = ta.to_kind(Kind::Double) - tb.to_kind(Kind::Double);
            let max = d.abs().max().double_value(&[]);
            let rel = d.norm().double_value(&[])
                / ta.to_kind(Kind::Double).norm().double_value(&[]).max(1.0);
            (na.clone(), max, rel)
        })
        .collect()
}

fn assert_close(a: &[f64], b: &[f64], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: step counts");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-5 * x.abs().max(y.abs()),
            "{what}: step {}: {x} vs {y}",
            i + 1
        );
    }
}

fn assert_same_losses(a: &[f64], b: &[f64], what: &str) {
    assert_close(a, b, what)
}

/// The gradient is the mean over the step's target tokens: its norm, the losses and the
/// weights agree however the step is split. Weights are compared per tensor by relative L2
/// distance: Adafactor normalises each row and column of a matrix by its own gradient
/// statistics, so an element whose true gradient is at float32 rounding level (attention
/// key projections have some, as softmax logits' gradients sum to zero) moves by a rounding-
/// dependent amount of order lr; at lr 1e-3 single elements differ by up to ~5e-5 while
/// every tensor stays within 1e-6 relative.
#[test]
fn two_ranks_equal_one_rank_and_accumulation() {
    for arch in ["transformer", "lightconv"] {
        let one = tmp_path(&format!("one-{arch}"));
        let acc = tmp_path(&format!("acc-{arch}"));
        let two = tmp_path(&format!("two-{arch}"));
        let with_lr = |mut a: Vec<String>| {
            a.extend(["--lr".into(), "0.001".into()]);
            a
        };
        one_rank(&with_lr(args(&one, arch, 8, 1, 20)));
        one_rank(&with_lr(args(&acc, arch, 4, 2, 20)));
        two_ranks(&with_lr(args(&two, arch, 4, 1, 20)));
        let l = losses(&one);
        assert_eq!(l.len(), 20);
        assert!(l[19] < l[0], "{arch}: the loss did not go down: {l:?}");
        for (other, what) in [
            (&acc, "batch 4 x accumulate 2"),
            (&two, "2 ranks x batch 4"),
        ] {
            let what = format!("{arch}: {what}");
            assert_same_losses(&l, &losses(other), &what);
            assert_close(
                &metric(&one, "grad_norm"),
                &metric(other, "grad_norm"),
                &what,
            );
            for (name, max, rel) in weight_diffs(&one, other, 20) {
                assert!(
                    rel <= 1e-5,
                    "{what}: {name} differs by {rel} relative (largest element {max})"
                );
            }
        }
        // Only rank 0 writes: one metrics line per step, and the checkpoint holds both
        // ranks' loader states.
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(two.join("checkpoints/step-00000020/trainer_state.json"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(state["world_size"], 2);
        assert_eq!(state["loaders"].as_array().unwrap().len(), 2);
        assert_ne!(state["loaders"][0], state["loaders"][1]);
    }
}

/// 41 TREC questions as example shards: steps of 8 end each epoch with one example.
fn forty_one_examples() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tmp_dir("forty-one");
        // The file is Latin-1: lines as bytes.
        let text = std::fs::read(shared("trec/train_5500.label")).unwrap();
        let rows: Vec<&[u8]> = text.split(|&b| b == b'\n').take(41).collect();
        let file = d.join("trec-41.label");
        std::fs::write(&file, [rows.join(&b'\n'), vec![b'\n']].concat()).unwrap();
        let out = d.join("examples");
        ok(&[
            "task",
            "prepare",
            "trec",
            "--input",
            file.to_str().unwrap(),
            "--vocab",
            shared("spiece/t5-spiece.model").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        out
    })
}

/// Across epoch ends as well: the last step of each epoch of 41 examples holds one, which
/// one of two ranks of batch 4 does not have (it trains on nothing in that step: both ranks
/// start the next epoch together, where that rank used to run ahead into it), and which
/// accumulation takes as a step of its own (it used to pair it with the next epoch's
/// first micro-batch). Losses as one process with batch 8, for two epochs.
#[test]
fn ranks_and_accumulation_end_epochs_together() {
    let data = forty_one_examples();
    let run = |name: &str, batch: usize, accumulate: usize| {
        let out = tmp_path(name);
        let mut a = args(&out, "transformer", batch, accumulate, 12);
        a[0] = "finetune".into();
        a[2] = data.to_str().unwrap().into();
        let at = a.iter().position(|x| x == "--inputs-length").unwrap();
        a.drain(at..at + 2);
        a.extend(["--task".into(), "trec".into()]);
        (out, a)
    };
    let (one, a1) = run("epochs-one", 8, 1);
    let (acc, a2) = run("epochs-acc", 4, 2);
    let (two, a3) = run("epochs-two", 4, 1);
    one_rank(&a1);
    one_rank(&a2);
    two_ranks(&a3);
    let l = losses(&one);
    assert_eq!(l.len(), 12);
    for (other, what) in [
        (&acc, "batch 4 x accumulate 2"),
        (&two, "2 ranks x batch 4"),
    ] {
        assert_same_losses(&l, &losses(other), what);
    }
    // After step 12, the end of the second epoch, both ranks stand at the third's start.
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(two.join("checkpoints/step-00000012/trainer_state.json")).unwrap(),
    )
    .unwrap();
    for r in 0..2 {
        let l = &state["loaders"][r];
        assert_eq!(
            (&l["epoch"], &l["position"]),
            (&2.into(), &0.into()),
            "{state}"
        );
    }
}

/// The user's launcher: torchrun (from the project's Python environment) starts both ranks
/// and hosts the rendezvous store itself.
#[test]
fn torchrun_launches_the_same_training() {
    let python = std::env::var("CONVEYOR_PYTHON").unwrap_or_else(|_| "python3".into());
    let by_env = tmp_path("env-launch");
    let by_torchrun = tmp_path("torchrun-launch");
    two_ranks(&args(&by_env, "lightconv", 4, 1, 8));
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "torch.distributed.run", "--nproc-per-node", "2"])
        .args(["--master-port", &free_port().to_string()])
        .args(["--no-python", env!("CARGO_BIN_EXE_conveyor")])
        .args(args(&by_torchrun, "lightconv", 4, 1, 8));
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (run the tests with `make test`)"));
    check(o, "torchrun");
    assert_same_losses(&losses(&by_env), &losses(&by_torchrun), "torchrun");
    let d = max_weight_diff(&by_env, &by_torchrun, 8);
    assert!(d <= 1e-5, "torchrun: weights differ by {d}");
}

fn metrics_steps(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn a_dead_rank_is_named_and_resume_continues_to_the_same_result() {
    let straight = tmp_path("straight");
    let killed = tmp_path("killed");
    two_ranks(&args(&straight, "transformer", 4, 1, 12));
    let a = args(&killed, "transformer", 4, 1, 12);
    let port = free_port();
    let mut r0 = spawn_rank(&a, 0, 2, port);
    let mut r1 = spawn_rank(&a, 1, 2, port);
    // Kill rank 1 once rank 0 has passed the first checkpoint (step 4).
    let t0 = Instant::now();
    while metrics_steps(&killed) < 6 {
        assert!(t0.elapsed() < Duration::from_secs(300), "no progress");
        assert!(r0.try_wait().unwrap().is_none(), "rank 0 ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    r1.kill().unwrap();
    let _ = r1.wait();
    let o = r0.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "rank 0 went on without rank 1");
    assert!(err.contains("rank 1 stopped"), "rank 0 said: {err}");
    assert!(err.contains("--resume"), "{err}");
    assert!(
        t0.elapsed() < Duration::from_secs(120),
        "rank 0 took {:?} to stop",
        t0.elapsed()
    );
    let mut again = a.clone();
    again.push("--resume".into());
    two_ranks(&again);
    let (ls, lk) = (losses(&straight), losses(&killed));
    assert_same_losses(&ls, &lk, "resumed after a dead rank");
    assert_eq!(max_weight_diff(&straight, &killed, 12), 0.0);
    // Rank 0 killed (started by hand, it hosts the rendezvous store): rank 1 names rank 0,
    // not itself ("ranks 0, 1 stopped"), and stops at the first read the store does not
    // answer (each further one logged c10d's warning with its trace: thousands of lines).
    let dead0 = tmp_path("killed-rank0");
    let a = args(&dead0, "transformer", 4, 1, 12);
    let port = free_port();
    let mut r0 = spawn_rank(&a, 0, 2, port);
    let r1 = spawn_rank(&a, 1, 2, port);
    let t0 = Instant::now();
    while metrics_steps(&dead0) < 2 {
        assert!(t0.elapsed() < Duration::from_secs(300), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    r0.kill().unwrap();
    let _ = r0.wait();
    let o = r1.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "rank 1 went on without rank 0");
    assert!(
        err.contains("cannot be reached: rank 0") && !err.contains("ranks 0, 1"),
        "rank 1 said: {err}"
    );
    assert!(
        err.lines().count() < 200,
        "{} lines: {err}",
        err.lines().count()
    );
}

fn failing(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(!o.status.success(), "it succeeded");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn launch_mistakes_get_clear_errors() {
    let run = tmp_path("refusals");
    let a = args(&run, "lightconv", 4, 1, 4);
    // No MASTER_ADDR.
    let err = failing(
        crate::common::conveyor_cmd()
            .args(&a)
            .env("RANK", "0")
            .env("WORLD_SIZE", "2")
            .env("MASTER_PORT", "1234"),
    );
    assert!(err.contains("MASTER_ADDR is not set"), "{err}");
    // A port that is taken.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let o = spawn_rank(&a, 0, 2, port).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains(&format!("port {port} is in use")), "{err}");
    // Resuming a two-rank run with one process, or with another --accumulate or --lr.
    two_ranks(&a);
    let mut resume = args(&run, "lightconv", 4, 1, 6);
    resume.push("--resume".into());
    let err = failing(crate::common::conveyor_cmd().args(&resume));
    assert!(
        err.contains("trained by 2 processes and this one has 1"),
        "{err}"
    );
    let mut acc = args(&run, "lightconv", 2, 2, 6);
    acc.push("--resume".into());
    let port = free_port();
    let o = spawn_rank(&acc, 0, 2, port);
    let o1 = spawn_rank(&acc, 1, 2, port);
    let (o, o1) = (
        o.wait_with_output().unwrap(),
        o1.wait_with_output().unwrap(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && !o1.status.success());
    assert!(err.contains("accumulated 1 micro-batches"), "{err}");
    let mut lr = resume.clone();
    lr.extend(["--lr".into(), "0.001".into()]);
    let port = free_port();
    let (o, o1) = (spawn_rank(&lr, 0, 2, port), spawn_rank(&lr, 1, 2, port));
    let (o, _) = (
        o.wait_with_output().unwrap(),
        o1.wait_with_output().unwrap(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("learning-rate schedule"), "{err}");
    // Ranks started with different --sync-every (it decides the steps at which the loss is
    // all-reduced: the ranks' collectives would pair up wrongly) are refused at the start.
    let fresh = tmp_path("refusals-sync");
    let mut r0 = args(&fresh, "lightconv", 4, 1, 4);
    let mut r1 = r0.clone();
    r0.extend(["--sync-every".into(), "2".into()]);
    r1.extend(["--sync-every".into(), "3".into()]);
    let port = free_port();
    let (o, o1) = (spawn_rank(&r0, 0, 2, port), spawn_rank(&r1, 1, 2, port));
    let (o, o1) = (
        o.wait_with_output().unwrap(),
        o1.wait_with_output().unwrap(),
    );
    assert!(!o.status.success() && !o1.status.success());
    let err = String::from_utf8_lossy(&o1.stderr);
    assert!(
        err.contains("rank 1 was started with other settings than rank 0"),
        "{err}"
    );
}

/// `--accumulate` resumes exactly: the checkpoint is written after whole optimiser steps, and
/// the loader continues after the last micro-batch of the step.
#[test]
fn accumulation_resumes_exactly() {
    let straight = tmp_path("acc-straight");
    let resumed = tmp_path("acc-resumed");
    one_rank(&args(&straight, "lightconv", 4, 3, 8));
    one_rank(&args(&resumed, "lightconv", 4, 3, 4));
    let mut again = args(&resumed, "lightconv", 4, 3, 8);
    again.push("--resume".into());
    one_rank(&again);
    assert_eq!(losses(&straight), losses(&resumed));
    assert_eq!(max_weight_diff(&straight, &resumed, 8), 0.0);
}

/// With several ranks the step's token counts are summed on the device and read back with
/// the window, like the loss: reading every 3 steps (windows cut short by the checkpoints
/// every 4) gives every step the same figures, the same weights and the same counts in
/// every checkpoint as reading each step.
#[test]
fn two_ranks_read_back_in_windows_give_the_same_figures() {
    let each = tmp_path("window-1");
    let three = tmp_path("window-3");
    let lr = |mut a: Vec<String>| {
        a.extend(["--lr".into(), "0.001".into()]);
        a
    };
    two_ranks(&lr(args(&each, "transformer", 4, 1, 10)));
    let mut a = lr(args(&three, "transformer", 4, 1, 10));
    a.extend(["--sync-every".into(), "3".into()]);
    two_ranks(&a);
    for name in ["loss", "grad_norm", "lr", "fill_rate"] {
        assert_eq!(metric(&each, name), metric(&three, name), "{name}");
    }
    assert_eq!(max_weight_diff(&each, &three, 10), 0.0);
    let seen = |run: &Path, step: u64| {
        let f = run.join(format!("checkpoints/step-{step:08}/trainer_state.json"));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        (
            v["tokens_seen"].as_u64().unwrap(),
            v["examples_seen"].as_u64().unwrap(),
        )
    };
    for step in [4, 8, 10] {
        let (tokens, examples) = seen(&three, step);
        assert!(
            tokens > 0 && examples == 8 * step,
            "step {step}: {examples} examples"
        );
        assert_eq!(seen(&each, step), (tokens, examples), "step {step}");
    }
}
