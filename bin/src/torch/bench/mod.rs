//! `conveyor bench train`: the paper's Figures 1 and 2 — training speed (examples per second)
//! and peak memory of each architecture at the same width and depth, for input lengths from
//! 64 to 4096 (targets a quarter as long), plus FLOPs per example counted analytically.
//! Every (architecture, length) point runs in its own child process (`bench train-one`), so
//! peak memory is measured per point and a point that runs out of memory or time is reported
//! as such without ending the benchmark. Writes JSON and a markdown table; PNG plots are drawn
//! by `scripts/plot_bench_train.py` when matplotlib is available.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use conveyor_model::optim::{Optimizer, OptimizerKind, Schedule};
use conveyor_model::train::{Precision, Weights};
use conveyor_model::{select_device, Arch, ModelConfig};
use tch::{nn, Kind, Tensor};

use crate::train::DeviceArg;

mod child;
mod optim;
mod step;
mod table;

use child::{failure_reason, watch};
use step::{step_vs_pytorch, StepBench};
use table::{peak_mb, plot, write_table};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Training speed and memory per architecture and input length (Figures 1 and 2).
    Train(TrainBench),
    /// One training step of the transformer in tch beside the same model in PyTorch and
    /// transformers' T5.
    Step(StepBench),
    /// The lightweight convolution's three implementations, forward + backward, per length.
    Conv(ConvBench),
    /// The optimiser step alone: per-tensor beside multi-tensor kernels.
    Optim(optim::OptimBench),
    /// One point of `bench train` (run as a child process).
    #[command(hide = true)]
    TrainOne(TrainOne),
}

#[derive(Args)]
pub struct TrainBench {
    /// Model size preset shared by every architecture.
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Input lengths (targets are a quarter as long).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "64,128,256,512,1024,2048,4096"
    )]
    lengths: Vec<usize>,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Timed steps per point (after four untimed ones: `bench train-one`'s warm-up).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Give up on a point after this many seconds.
    #[arg(long, default_value_t = 300)]
    max_seconds: u64,
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
    #[command(flatten)]
    precision: PrecisionFlags,
    /// The device's peak dense bf16 TFLOP/s for the MFU column (known GPUs are looked up by
    /// name without it).
    #[arg(long)]
    peak_tflops: Option<f64>,
    /// How attention is computed (the model config's `attention`); several (`explicit,sdpa`)
    /// measure every architecture under each, as separate series (Figure 2 with
    /// memory-efficient attention beside the explicit one).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "explicit")]
    attention: Vec<AttentionArg>,
    /// Replay each point's step from a CUDA graph (`bench train-one --cuda-graph`).
    #[arg(long)]
    cuda_graph: bool,
    /// Architectures to measure (default: all four).
    #[arg(long, value_delimiter = ',')]
    archs: Vec<String>,
    /// Output folder for bench-train.json and bench-train.md.
    #[arg(long, default_value = "target/bench/train")]
    out: PathBuf,
}

#[derive(Args)]
pub struct ConvBench {
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "32,64,128,256,512,1024,2048"
    )]
    lengths: Vec<usize>,
    #[arg(long, default_value_t = 512)]
    d_model: usize,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    #[arg(long, default_value_t = 5)]
    reps: usize,
}

#[derive(Args)]
pub struct TrainOne {
    #[arg(long)]
    arch: String,
    #[arg(long)]
    preset: String,
    #[arg(long)]
    length: usize,
    #[arg(long)]
    batch_size: usize,
    #[arg(long)]
    steps: usize,
    #[arg(long, value_enum)]
    device: DeviceArg,
    /// Target length; a quarter of the input length when not given.
    #[arg(long)]
    targets_length: Option<usize>,
    #[command(flatten)]
    precision: PrecisionFlags,
    /// The device's peak dense bf16 TFLOP/s, for the MFU (known GPUs: looked up by name).
    #[arg(long)]
    peak_tflops: Option<f64>,
    #[arg(long, value_enum, default_value = "explicit")]
    attention: AttentionArg,
    /// Replay the step from a CUDA graph (captured after 3 warm-up steps): one launch a
    /// step instead of one per kernel. The learning rate and Adafactor's beta2 still move
    /// with the step; the loss is read back every step, as without it.
    #[arg(long)]
    cuda_graph: bool,
}

/// `--bf16` / `--pure-bf16`, as `train` takes them, for a benchmark and its child points.
#[derive(Args, Clone, Copy)]
pub struct PrecisionFlags {
    /// Mixed precision as `train --bf16`: bfloat16 compute, float32 master weights.
    #[arg(long)]
    bf16: bool,
    /// bfloat16 weights themselves, as `train --pure-bf16`.
    #[arg(long, conflicts_with = "bf16")]
    pure_bf16: bool,
}

impl PrecisionFlags {
    fn precision(self) -> Precision {
        match (self.bf16, self.pure_bf16) {
            (_, true) => Precision::PureBf16,
            (true, _) => Precision::Bf16,
            _ => Precision::F32,
        }
    }

    /// The same flags for a child process.
    fn args(self) -> impl Iterator<Item = &'static str> {
        [
            self.bf16.then_some("--bf16"),
            self.pure_bf16.then_some("--pure-bf16"),
        ]
        .into_iter()
        .flatten()
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum AttentionArg {
    Explicit,
    Sdpa,
}

impl AttentionArg {
    pub(super) fn name(self) -> &'static str {
        match self {
            AttentionArg::Explicit => "explicit",
            AttentionArg::Sdpa => "sdpa",
        }
    }
}

impl From<AttentionArg> for conveyor_model::AttentionImpl {
    fn from(a: AttentionArg) -> Self {
        match a {
            AttentionArg::Explicit => conveyor_model::AttentionImpl::Explicit,
            AttentionArg::Sdpa => conveyor_model::AttentionImpl::Sdpa,
        }
    }
}

pub fn run(c: BenchCommand) -> anyhow::Result<i32> {
    match c {
        BenchCommand::Train(a) => bench(a),
        BenchCommand::TrainOne(a) => one(a),
        BenchCommand::Step(a) => step_vs_pytorch(a),
        BenchCommand::Conv(a) => conv_impls(a),
        BenchCommand::Optim(a) => optim::run(a),
    }
}

/// Times forward + backward of each lightweight implementation (CPU), best of `reps`.
fn conv_impls(a: ConvBench) -> anyhow::Result<i32> {
    use conveyor_model::conv::{ConvBlock, LightImpl};
    let mut cfg = ModelConfig::preset(Arch::Lightconv, "tiny", 100)?;
    cfg.d_model = a.d_model;
    cfg.num_heads = 8;
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let block = ConvBlock::new(vs.root(), &cfg, 0, false);
    let w = Tensor::randn(
        [cfg.conv_heads as i64, cfg.kernel_size as i64],
        (Kind::Float, tch::Device::Cpu),
    )
    .softmax(-1, Kind::Float);
    print!("{:>7}", "length");
    for how in LightImpl::ALL {
        print!(" {:>16}", how.name());
    }
    println!(
        "   (ms per forward + backward, batch {} x d {})",
        a.batch_size, a.d_model
    );
    for &t in &a.lengths {
        print!("{t:>7}");
        for how in LightImpl::ALL {
            let h = Tensor::randn(
                [a.batch_size as i64, t as i64, a.d_model as i64],
                (Kind::Float, tch::Device::Cpu),
            )
            .set_requires_grad(true);
            let mut best = f64::INFINITY;
            for _ in 0..a.reps {
                let t0 = Instant::now();
                let y = block.lightweight(&h, &w, how);
                y.sum(Kind::Float).backward();
                best = best.min(t0.elapsed().as_secs_f64());
            }
            print!(" {:>16.2}", best * 1e3);
        }
        println!();
    }
    Ok(0)
}

pub(super) fn device_name(d: DeviceArg) -> &'static str {
    match d {
        DeviceArg::Auto => "auto",
        DeviceArg::Cpu => "cpu",
        DeviceArg::Cuda => "cuda",
    }
}

/// What `bench train` writes into its --out.
const OUTPUTS: [&str; 4] = [
    "bench-train.json",
    "bench-train.md",
    "speed.png",
    "memory.png",
];

/// The bench replaces its outputs only where --out holds none or a benchmark of its own (a
/// `bench-train.json` of points): a user's files of those names were overwritten.
fn check_out(out: &std::path::Path) -> anyhow::Result<()> {
    let ours = conveyor_pipeline::regular::read(
        &out.join(OUTPUTS[0]),
        conveyor_pipeline::regular::MAX_JSON_BYTES,
    )
    .ok()
    .and_then(|b| serde_json::from_slice::<Vec<serde_json::Value>>(&b).ok())
    .is_some_and(|points| {
        points
            .iter()
            .all(|p| p["arch"].is_string() && p["length"].is_u64())
    });
    for name in OUTPUTS {
        let Ok(meta) = std::fs::symlink_metadata(out.join(name)) else {
            continue;
        };
        anyhow::ensure!(
            ours && meta.is_file(),
            "{} holds {name}, which is not a benchmark conveyor wrote there; choose another --out",
            out.display()
        );
    }
    Ok(())
}

fn bench(a: TrainBench) -> anyhow::Result<i32> {
    check_out(&a.out)?;
    std::fs::create_dir_all(&a.out)?;
    match a.precision.precision() {
        Precision::Bf16 => println!("mixed precision: bfloat16 compute, float32 master weights"),
        Precision::PureBf16 => println!("pure bfloat16 weights and activations"),
        Precision::F32 => {}
    }
    println!(
        "{:20} {:>6} {:>12} {:>12} {:>14}",
        "series", "length", "examples/s", "peak MB", "GFLOPs/example"
    );
    let mut points = Vec::new();
    let json = a.out.join("bench-train.json");
    let archs: Vec<Arch> = if a.archs.is_empty() {
        Arch::ALL.to_vec()
    } else {
        a.archs
            .iter()
            .map(|n| Arch::parse(n).ok_or_else(|| anyhow::anyhow!("unknown --archs entry {n}")))
            .collect::<anyhow::Result<_>>()?
    };
    let series = archs
        .iter()
        .flat_map(|&arch| a.attention.iter().map(move |&at| (arch, at)));
    for (arch, attention) in series {
        let mut failed = false;
        for &length in &a.lengths {
            let cfg = ModelConfig::preset(arch, &a.preset, 32_100)?;
            let flops = 6.0 * conveyor_model::summary::forward_macs(&cfg, length, length / 4);
            let mut point = serde_json::json!({
                "arch": arch.name(), "length": length, "batch_size": a.batch_size, "attention": attention.name(), "cuda_graph": a.cuda_graph,
                "gflops_per_example": flops / 1e9,
            });
            if failed {
                point["error"] = "skipped: a shorter length already failed".into();
            } else {
                failed = !measure_point(&a, arch, attention, length, &mut point)?;
            }
            points.push(point);
            // After every point: a run stopped from outside keeps what it measured.
            let text = serde_json::to_string_pretty(&points)? + "\n";
            conveyor_pipeline::manifest::write_atomic(&json, text.as_bytes())?;
        }
    }
    let md = a.out.join("bench-train.md");
    write_table(&md, &points)?;
    println!("wrote {} and {}", json.display(), md.display());
    plot(&a.out);
    Ok(0)
}

/// Runs one (architecture, length) point in a child process and fills in its speed and peak
/// memory, or its error; false when it failed or ran out of time.
fn measure_point(
    a: &TrainBench,
    arch: Arch,
    attention: AttentionArg,
    length: usize,
    point: &mut serde_json::Value,
) -> anyhow::Result<bool> {
    let child = Command::new(std::env::current_exe()?)
        .args(["bench", "train-one", "--arch", arch.name()])
        .args(["--preset", &a.preset])
        .args(["--length", &length.to_string()])
        .args(["--batch-size", &a.batch_size.to_string()])
        .args(["--steps", &a.steps.to_string()])
        .args(["--device", device_name(a.device)])
        .args(a.precision.args())
        .args(["--attention", attention.name()])
        .args(a.cuda_graph.then_some("--cuda-graph"))
        .args(
            a.peak_tflops
                .iter()
                .flat_map(|p| ["--peak-tflops".to_string(), p.to_string()]),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let (status, peak_kb, out) = watch(child, Duration::from_secs(a.max_seconds))?;
    match status {
        Some(s) if s.success() => {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            anyhow::ensure!(
                v["attention"] == attention.name(),
                "bench train: the {} point at {length} ran attention {}, not {}",
                arch.name(),
                v["attention"],
                attention.name()
            );
            point["examples_per_s"] = v["examples_per_s"].clone();
            point["seconds_per_step"] = v["seconds_per_step"].clone();
            point["peak_rss_mb"] = (peak_kb as f64 / 1024.0).into();
            point["device"] = v["device"].clone();
            for k in [
                "peak_gpu_allocated_mb",
                "peak_gpu_reserved_mb",
                "model_tflops",
                "mfu",
            ] {
                if !v[k].is_null() {
                    point[k] = v[k].clone();
                }
            }
            println!(
                "{:20} {:>6} {:>12.2} {:>12.0} {:>14.3}",
                table::series(point),
                length,
                v["examples_per_s"].as_f64().unwrap_or(0.0),
                peak_mb(point),
                point["gflops_per_example"].as_f64().unwrap_or(0.0)
            );
            Ok(true)
        }
        Some(_) => {
            let last = failure_reason(&String::from_utf8_lossy(&out.stderr));
            println!("{:20} {:>6} failed: {last}", table::series(point), length);
            point["error"] = last.into();
            Ok(false)
        }
        None => {
            println!(
                "{:20} {:>6} over {} s",
                table::series(point),
                length,
                a.max_seconds
            );
            point["error"] = format!("over {} s", a.max_seconds).into();
            Ok(false)
        }
    }
}

/// One point: a model, random batches, timed training steps.
fn one(a: TrainOne) -> anyhow::Result<i32> {
    let arch = Arch::parse(&a.arch).ok_or_else(|| anyhow::anyhow!("unknown arch {}", a.arch))?;
    let device = select_device(a.device.into())?;
    let mut cfg = ModelConfig::preset(arch, &a.preset, 32_100)?;
    cfg.attention = a.attention.into();
    conveyor_model::seed_everything(0);
    let precision = a.precision.precision();
    let mut w = Weights::new(&cfg, device, precision)?;
    let mut opt = Optimizer::new(
        OptimizerKind::adafactor(),
        Schedule::InverseSqrt { warmup: 10_000 },
        &w.params,
    );
    let (b, l, t) = (
        a.batch_size as i64,
        a.length as i64,
        a.targets_length.unwrap_or(a.length / 4).max(1) as i64,
    );
    let x = Tensor::randint_low(3, 32_000, [b, l], (Kind::Int64, device));
    let y = Tensor::randint_low(3, 32_000, [b, t], (Kind::Int64, device));
    let xm = Tensor::ones([b, l], (Kind::Float, device));
    let ym = Tensor::ones([b, t], (Kind::Float, device));
    // The step's device work; the optimiser's step-dependent scalars are written first,
    // outside it (begin_step), so that a graph of it replays for any step.
    let work = |w: &mut Weights, opt: &Optimizer| {
        let loss = w.model.loss(&x, &xm, &y, &ym, true);
        loss.backward();
        w.collect_grads();
        let g = w.take_grads();
        opt.apply(&mut w.params, &g);
        w.finish_step();
        loss
    };
    // Three eager steps first, with or without a graph (a graph's run them on its side
    // stream before capturing), so that both take the same steps and their final losses
    // can be compared.
    let warm_up = |w: &mut Weights, opt: &mut Optimizer| {
        for _ in 0..3 {
            opt.begin_step();
            let _ = work(w, opt);
        }
    };
    let graph = match a.cuda_graph {
        false => {
            warm_up(&mut w, &mut opt);
            None
        }
        true => {
            let mut g = conveyor_model::cuda::CudaGraph::on(device)?;
            g.warm_up(|| warm_up(&mut w, &mut opt))?;
            let loss = g.capture(|| work(&mut w, &opt))?;
            Some((g, loss))
        }
    };
    // The loss stays on the device until the timed steps are over: no host read per step
    // (the trainer reads its figures back once per window of steps).
    let mut step = || {
        opt.begin_step();
        match &graph {
            Some((g, loss)) => {
                g.replay().expect("replaying the captured step");
                loss.detach()
            }
            None => work(&mut w, &opt).detach(),
        }
    };
    let _ = step();
    if device.is_cuda() {
        tch::Cuda::synchronize(0);
    }
    let faults0 = crate::malloc::minor_faults();
    let t0 = Instant::now();
    let mut last = None;
    for _ in 0..a.steps {
        last = Some(step());
    }
    if device.is_cuda() {
        tch::Cuda::synchronize(0);
    }
    let secs = t0.elapsed().as_secs_f64() / a.steps.max(1) as f64;
    let last_loss = last.map_or(f64::NAN, |l| l.double_value(&[]));
    let faults = faults0
        .zip(crate::malloc::minor_faults())
        .map(|(a0, a1)| a1.saturating_sub(a0) as f64 / a.steps.max(1) as f64);
    let flops = conveyor_model::peak::train_flops(&cfg, b as usize, l as usize, t as usize);
    let mut out = serde_json::json!({
        "arch": arch.name(),
        "length": l,
        "batch_size": b,
        "seconds_per_step": secs,
        "examples_per_s": a.batch_size as f64 / secs,
        "model_tflops": flops / secs / 1e12,
        "device": format!("{device:?}"),
        "bf16": a.precision.bf16,
        "pure_bf16": a.precision.pure_bf16,
        "targets_length": t,
        "attention": a.attention.name(),
        "cuda_graph": a.cuda_graph,
        "final_loss": last_loss,
        "optimizer_steps": opt.step,
        "page_faults_per_step": faults,
    });
    if let Some(p) = conveyor_model::peak::Peak::of(device, a.peak_tflops) {
        out["mfu"] = p.mfu(flops, secs).into();
        out["peak_tflops"] = p.tflops.into();
        out["peak_source"] = p.source.into();
    }
    if let Some(peak) = conveyor_model::cuda::peak_memory(0).filter(|_| device.is_cuda()) {
        out["peak_gpu_allocated_mb"] = (peak.allocated as f64 / 1048576.0).into();
        out["peak_gpu_reserved_mb"] = (peak.reserved as f64 / 1048576.0).into();
    }
    println!("{out}");
    Ok(0)
}
