//! `conveyor bench optim`: the optimiser step alone, per-tensor beside multi-tensor
//! (`_foreach_*` kernels), Adafactor and AdamW, over a real model's parameters with random
//! gradients. Rounds alternate between the two so that a noisy machine slows both alike; the
//! two copies of the weights, after the same steps, are compared at the end (exit status 1
//! when they differ by more than 1e-4, 5e-2 with bf16 weights).

use std::time::Instant;

use clap::Args;
use conveyor_model::optim::{Optimizer, OptimizerKind, Schedule};
use conveyor_model::train::{Precision, Weights};
use conveyor_model::{select_device, Arch, ModelConfig};
use tch::{Device, Tensor};

use crate::train::DeviceArg;

#[derive(Args)]
pub struct OptimBench {
    #[arg(long, default_value = "transformer")]
    arch: String,
    #[arg(long, default_value = "base")]
    preset: String,
    /// Steps per round (after one warm-up step of each).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Alternating rounds of each implementation; the median round is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
    /// bfloat16 weights (the step updates them from float32 arithmetic).
    #[arg(long)]
    pure_bf16: bool,
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Milliseconds per step of `step`, the median of `rounds` rounds, each in turn.
fn time_pair(a: &OptimBench, device: Device, mut steps: [&mut dyn FnMut(); 2]) -> [f64; 2] {
    let mut times = [Vec::new(), Vec::new()];
    for s in steps.iter_mut() {
        s();
    }
    for _ in 0..a.rounds.max(1) {
        for (k, s) in steps.iter_mut().enumerate() {
            sync(device);
            let t0 = Instant::now();
            for _ in 0..a.steps.max(1) {
                s();
            }
            sync(device);
            times[k].push(t0.elapsed().as_secs_f64() * 1e3 / a.steps.max(1) as f64);
        }
    }
    times.map(|mut t| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    })
}

pub fn run(a: OptimBench) -> anyhow::Result<i32> {
    let arch = Arch::parse(&a.arch).ok_or_else(|| anyhow::anyhow!("unknown arch {}", a.arch))?;
    let device = select_device(a.device.into())?;
    let cfg = ModelConfig::preset(arch, &a.preset, 32_100)?;
    conveyor_model::seed_everything(0);
    let precision = if a.pure_bf16 {
        Precision::PureBf16
    } else {
        Precision::F32
    };
    let w = Weights::new(&cfg, device, precision)?;
    let grads: Vec<Tensor> = w
        .params
        .iter()
        .map(|p| p.to_kind(tch::Kind::Float).randn_like() * 1e-3)
        .collect();
    println!(
        "{} {} ({} tensors, {:.1} M parameters) on {device:?}, {} steps x {} rounds",
        a.arch,
        a.preset,
        w.params.len(),
        cfg.parameter_count() as f64 / 1e6,
        a.steps,
        a.rounds
    );
    println!(
        "| optimiser | per-tensor ms/step | multi-tensor ms/step | speed-up | largest weight difference |"
    );
    println!("|---|---|---|---|---|");
    let mut rows = Vec::new();
    let mut mismatch = None;
    for (name, kind) in [
        ("Adafactor", OptimizerKind::adafactor()),
        ("AdamW", OptimizerKind::adamw()),
    ] {
        let sched = Schedule::Constant { lr: 1e-4 };
        let copy = || -> Vec<Tensor> { w.params.iter().map(|p| p.copy()).collect() };
        let (mut pa, mut pb) = (copy(), copy());
        let mut oa = Optimizer::new(kind, sched, &pa);
        let mut ob = Optimizer::new(kind, sched, &pb);
        let [single, multi] = time_pair(
            &a,
            device,
            [&mut || oa.step_per_tensor(&mut pa, &grads), &mut || {
                ob.step_multi_tensor(&mut pb, &grads)
            }],
        );
        // Both took the same steps from the same weights with the same gradients.
        let diff = pa
            .iter()
            .zip(&pb)
            .map(|(x, y)| {
                (x.to_kind(tch::Kind::Double) - y.to_kind(tch::Kind::Double))
                    .abs()
                    .max()
                    .double_value(&[])
            })
            .fold(0.0, |a: f64, d| if d.is_nan() || d > a { d } else { a });
        println!(
            "| {name} | {single:.2} | {multi:.2} | {:.2}x | {diff:.1e} |",
            single / multi
        );
        let limit = if a.pure_bf16 { 5e-2 } else { 1e-4 };
        if diff.is_nan() || diff > limit {
            mismatch = Some(format!(
                "{name}: the two steps' weights differ by {diff:e} (limit {limit:e})"
            ));
        }
        rows.push(serde_json::json!({
            "optimizer": name, "per_tensor_ms": single, "multi_tensor_ms": multi,
            "max_abs_weight_difference": diff,
        }));
    }
    println!(
        "{}",
        serde_json::json!({
            "arch": a.arch, "preset": a.preset, "device": format!("{device:?}"),
            "pure_bf16": a.pure_bf16, "tensors": w.params.len(), "results": rows,
        })
    );
    if let Some(m) = mismatch {
        eprintln!("{m}");
        return Ok(1);
    }
    Ok(0)
}
