//! `conveyor bench step`: one transformer training step of conveyor beside the same model
//! written in PyTorch (scripts/torch_t5_step.py) and transformers' T5, side by side on one
//! shape, precision and attention.

use std::process::Command;

use clap::Args;
use conveyor_model::{select_device, Arch, ModelConfig};

use super::child::{child_json, failure_reason};
use super::{device_name, AttentionArg};
use crate::train::DeviceArg;

#[derive(Args)]
pub struct StepBench {
    #[arg(long, default_value = "tiny")]
    preset: String,
    #[arg(long, default_value_t = 512)]
    length: usize,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Where both sides run (`cuda` needs a GPU on both libtorch and PyTorch).
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    /// Target length; a quarter of the input length when not given.
    #[arg(long)]
    targets_length: Option<usize>,
    /// Mixed precision: conveyor's `--bf16` (float32 masters, a bfloat16 copy) beside
    /// PyTorch's autocast to bfloat16 (float32 weights).
    #[arg(long)]
    bf16: bool,
    /// Rounds of the three runs; each side's best round is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// How attention is computed on every side (transformers 4's T5 has no sdpa path: its
    /// column then says so; 5's takes it).
    #[arg(long, value_enum, default_value = "explicit")]
    attention: AttentionArg,
}

/// The PyTorch side of `bench step`, carried inside the binary so that it runs from any folder.
const TORCH_T5_STEP: &str = include_str!("../../../../scripts/torch_t5_step.py");

/// The same transformer step in tch, in plain PyTorch and in transformers' T5, in turn, three
/// rounds each (machines here are noisy: side by side in one run).
pub(super) fn step_vs_pytorch(a: StepBench) -> anyhow::Result<i32> {
    let exe = std::env::current_exe()?;
    let python = std::env::var("CONVEYOR_PYTHON").unwrap_or_else(|_| "python3".into());
    let targets = a.targets_length.unwrap_or(a.length / 4).max(1);
    let shape = |c: &mut Command| {
        c.args(["--preset", &a.preset])
            .args(["--length", &a.length.to_string()])
            .args(["--targets-length", &targets.to_string()])
            .args(["--batch-size", &a.batch_size.to_string()])
            .args(["--steps", &a.steps.to_string()])
            .args(["--device", device_name(a.device)])
            .args(["--attention", a.attention.name()]);
        if a.bf16 {
            c.arg("--bf16");
        }
    };
    let mut seconds = [Vec::new(), Vec::new(), Vec::new()];
    // transformers is optional where only PyTorch is installed: its column then says why.
    let mut missing = None;
    let mut hf_version = None;
    for _ in 0..a.rounds.max(1) {
        let mut ours = Command::new(&exe);
        ours.args(["bench", "train-one", "--arch", "transformer"]);
        shape(&mut ours);
        let mut runs = vec![ours];
        for implementation in ["plain", "transformers"] {
            let mut c = Command::new(&python);
            c.args(["-c", TORCH_T5_STEP, "--impl", implementation]);
            shape(&mut c);
            runs.push(c);
        }
        for (i, (times, mut c)) in seconds.iter_mut().zip(runs).enumerate() {
            match child_json(&mut c) {
                Ok(v) => {
                    same_step(&v, targets, a.bf16, a.attention)?;
                    if let Some(version) = v["transformers"].as_str() {
                        hf_version = Some(version.to_string());
                    }
                    times.push(v["seconds_per_step"].as_f64().unwrap_or(f64::NAN))
                }
                Err(e) if i == 2 => missing = Some(failure_reason(&e.to_string())),
                Err(e) => return Err(e),
            }
        }
    }
    let best = |v: &[f64]| v.iter().cloned().fold(f64::INFINITY, f64::min);
    println!(
        "transformer {} preset, batch {} x {} / {} tokens, {}, {} attention, {}, best of {} runs of {} steps:",
        a.preset,
        a.batch_size,
        a.length,
        targets,
        if a.bf16 {
            "bf16 mixed precision"
        } else {
            "float32"
        },
        a.attention.name(),
        device_name(a.device),
        a.rounds.max(1),
        a.steps
    );
    let ours = best(&seconds[0]);
    // The same model on every side: one analytic FLOP count, and the MFU where the GPU is
    // known by name.
    let cfg = ModelConfig::preset(Arch::Transformer, &a.preset, 32_100)?;
    let flops = conveyor_model::peak::train_flops(&cfg, a.batch_size, a.length, targets);
    let peak = conveyor_model::peak::Peak::of(select_device(a.device.into())?, None);
    let hf_name = match &hf_version {
        Some(v) => format!("transformers {v} T5 + its Adafactor"),
        None => "transformers T5 + its Adafactor".into(),
    };
    for (name, times) in [
        ("conveyor (tch)", &seconds[0]),
        ("PyTorch, same model in Python", &seconds[1]),
        (hf_name.as_str(), &seconds[2]),
    ] {
        let secs = best(times);
        let mfu = peak
            .as_ref()
            .map(|p| format!(", MFU {:.1}%", 100.0 * p.mfu(flops, secs)))
            .unwrap_or_default();
        match (times.is_empty(), &missing) {
            (true, Some(why)) => println!("{name:<39} not run: {why}"),
            _ => println!(
                "{name:<39} {secs:.4} s per step ({:.2}x conveyor's time), {:.2} model TFLOP/s{mfu}",
                secs / ours,
                flops / secs / 1e12
            ),
        }
    }
    Ok(0)
}

/// Each side says what it ran: a side that took another target length, precision or
/// attention than asked would make the comparison meaningless.
fn same_step(
    v: &serde_json::Value,
    targets: usize,
    bf16: bool,
    attention: AttentionArg,
) -> anyhow::Result<()> {
    let (t, b, at) = (
        v["targets_length"].as_u64(),
        v["bf16"].as_bool(),
        v["attention"].as_str(),
    );
    anyhow::ensure!(
        t == Some(targets as u64) && b == Some(bf16) && at == Some(attention.name()),
        "bench step: a side ran {t:?} targets, bf16 {b:?}, attention {at:?}, not {targets} targets, bf16 {bf16}, attention {}: {v}",
        attention.name()
    );
    Ok(())
}
