//! `conveyor train` and `conveyor model summary` (run by `conveyor-torch`).

pub(crate) mod flags;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use conveyor_model::dist::Launch;
use conveyor_model::optim::{OptimizerKind, Schedule};
use conveyor_model::train::{
    data_vocab_size, train, Precision, StepMetrics, TrainConfig, TrainProgress, TrainSummary,
};
use conveyor_model::{select_device, Arch, DeviceChoice, ModelConfig};
use conveyor_pipeline::remote::sync::local_dataset;

#[derive(Clone, Copy, ValueEnum)]
pub enum ArchArg {
    Transformer,
    Lightconv,
    Dynamicconv,
    Dilatedconv,
}

impl From<ArchArg> for Arch {
    fn from(a: ArchArg) -> Self {
        match a {
            ArchArg::Transformer => Arch::Transformer,
            ArchArg::Lightconv => Arch::Lightconv,
            ArchArg::Dynamicconv => Arch::Dynamicconv,
            ArchArg::Dilatedconv => Arch::Dilatedconv,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DeviceArg {
    Auto,
    Cpu,
    Cuda,
}

impl From<DeviceArg> for DeviceChoice {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Auto => DeviceChoice::Auto,
            DeviceArg::Cpu => DeviceChoice::Cpu,
            DeviceArg::Cuda => DeviceChoice::Cuda,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum OptimizerArg {
    Adafactor,
    Adamw,
}

#[derive(Args)]
pub struct ModelArgs {
    /// Architecture (with --init, taken from the checkpoint when left out).
    #[arg(long, value_enum)]
    arch: Option<ArchArg>,
    /// Size preset: tiny (default), small or base (with --init, needs --arch: the
    /// checkpoint's own model is taken otherwise).
    #[arg(long)]
    preset: Option<String>,
    /// JSON or TOML file of config fields to override.
    #[arg(long)]
    config: Option<PathBuf>,
}

impl ModelArgs {
    fn build(&self, vocab_size: usize) -> anyhow::Result<ModelConfig> {
        let arch = self.arch.ok_or_else(|| {
            anyhow::anyhow!(
                "--arch is required (transformer, lightconv, dynamicconv or dilatedconv)"
            )
        })?;
        let preset = self.preset.as_deref().unwrap_or("tiny");
        let mut cfg = ModelConfig::preset(arch.into(), preset, vocab_size)?;
        if let Some(p) = &self.config {
            cfg = cfg.with_overrides(p)?;
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

#[derive(Args)]
pub struct TrainArgs {
    /// Token shards (span-corrupted on the fly) or example shards: a folder, or a URL
    /// (downloaded into a local cache first).
    #[arg(long)]
    data: PathBuf,
    /// Held-out data for the evaluation loss.
    #[arg(long)]
    eval_data: Option<PathBuf>,
    /// Run folder (checkpoints, metrics.jsonl, model_config.json).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, default_value_t = 1000)]
    steps: u64,
    /// Rows per micro-batch on each rank (a step sees batch size x --accumulate x ranks).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Micro-batches per optimiser step (gradient accumulation).
    #[arg(long, default_value_t = 1)]
    accumulate: u64,
    /// Input length when corrupting token shards on the fly (default 512; a resumed run's
    /// own); example shards carry their own (given here, it must be theirs).
    #[arg(long)]
    inputs_length: Option<usize>,
    /// Pack several examples into each row (attention and convolutions stay within each
    /// example; fewer padding tokens). Example shards written with `corrupt --pack` are
    /// read packed without it.
    #[arg(long)]
    pack: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_enum, default_value = "adafactor")]
    optimizer: OptimizerArg,
    /// Adafactor factors a matrix's second moment only when both its dimensions are at
    /// least this (default T5's min_dim_size_to_factor, 128; a resumed run's own); 0 factors
    /// every matrix, as transformers' Adafactor (and conveyor before this flag) does.
    #[arg(long)]
    factor_min_dim: Option<usize>,
    /// Mesh TF's z-loss: add Z x logsumexp² of each target position's logits to the
    /// objective (T5 trained with 1e-4); the logged loss stays the cross-entropy.
    #[arg(long, default_value_t = 0.0, value_parser = z_loss)]
    z_loss: f64,
    /// Constant learning rate (fine-tuning); default: T5's 1/sqrt(max(step, warmup)), a
    /// relative step for Adafactor only (--optimizer adamw needs --lr).
    #[arg(long)]
    lr: Option<f64>,
    /// Warm-up steps of T5's default schedule (default 10,000); not with --lr, which is
    /// constant from the first step.
    #[arg(long)]
    warmup: Option<u64>,
    /// Save a checkpoint every N steps (and at the last).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_every: u64,
    /// Keep only the N newest checkpoints: older step folders are removed after each save
    /// (only those holding nothing but checkpoint files; the one `latest` names stays).
    /// Default: every checkpoint stays.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    keep_checkpoints: Option<u64>,
    /// Evaluate the loss on --eval-data every N steps (0: never).
    #[arg(long, default_value_t = 0)]
    eval_every: u64,
    /// Batches of --eval-data per evaluation.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    eval_batches: u64,
    #[arg(long, default_value_t = 10_000)]
    shuffle_buffer: usize,
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
    /// Mixed precision: forward and backward in bfloat16, float32 master weights updated by
    /// the optimiser and saved in checkpoints (norms, softmax and loss stay float32).
    #[arg(long)]
    bf16: bool,
    /// bfloat16 weights themselves (less memory; updates under half a bfloat16 step are
    /// lost, so small learning rates stall). Prefer --bf16.
    #[arg(long, conflicts_with = "bf16")]
    pure_bf16: bool,
    /// Seconds a collective or the rendezvous of a multi-process run may wait before the run
    /// stops with an error (torchrun / Slurm launches).
    #[arg(long, default_value_t = 600)]
    dist_timeout: u64,
    /// Deterministic kernels only, so a CUDA run (and its resumption) repeats bit for bit;
    /// slower. CPU runs are deterministic without it.
    #[arg(long)]
    deterministic: bool,
    /// The device's peak dense bf16 TFLOP/s, for the MFU in metrics.jsonl and the progress
    /// line; known GPUs (H100, H200, A100, L4, L40S, ...) are looked up by name without it.
    #[arg(long)]
    peak_tflops: Option<f64>,
    /// Read the loss and gradient norm back from the device every N steps (each step still
    /// gets its line in metrics.jsonl, with the same figures; timings are the window's
    /// average). Default: 16 on CUDA, where each read waits for the GPU; 1 on CPU.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    sync_every: Option<u64>,
    /// Capture the training step in a CUDA graph after 3 eager steps and replay it: a step
    /// costs a few launches instead of one per kernel, which bounds small batches. One
    /// process on one GPU. With --accumulate 1 the same steps as without; with more, the
    /// micro-batches of a step share one dropout seed (docs/training.md).
    #[arg(long)]
    cuda_graph: bool,
    /// Fail the run if a step (after the first 4; with --cuda-graph, after the capture)
    /// makes the host wait for the GPU: libtorch's sync debug mode at "error" while each
    /// step runs. A check for the step path's launch overhead; CUDA only.
    #[arg(long)]
    check_syncs: bool,
    /// Start from this checkpoint folder's weights (fine-tuning).
    #[arg(long)]
    init: Option<PathBuf>,
    /// Continue the run in --out from its latest checkpoint.
    #[arg(long)]
    resume: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// No progress lines.
    #[arg(long, short)]
    quiet: bool,
}

/// A progress bar (steps, loss, throughput) on a terminal; log lines otherwise.
struct Lines {
    quiet: bool,
    every: u64,
    bar: Option<indicatif::ProgressBar>,
    /// The first and last step of this invocation (for the ETA of log lines).
    span: std::cell::Cell<(u64, u64)>,
}

impl Lines {
    fn new(quiet: bool, steps: u64) -> Self {
        use std::io::IsTerminal;
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(steps);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} step {pos}/{len} ETA {eta} {msg}",
                )
                .expect("valid template"),
            );
            b
        });
        Self {
            quiet,
            every: (steps / 20).max(1),
            bar,
            span: std::cell::Cell::new((1, steps)),
        }
    }
}

impl TrainProgress for Lines {
    fn start(&self, first: u64, last: u64) {
        self.span.set((first, last));
        if let Some(b) = &self.bar {
            b.set_position(first.saturating_sub(1));
        } else if !self.quiet && first > last {
            eprintln!(
                "nothing to train: the run is at step {} of {last}",
                first - 1
            );
        } else if !self.quiet {
            eprintln!("training steps {first}..={last}");
        }
    }
    fn step(&self, m: &StepMetrics) {
        if let Some(b) = &self.bar {
            b.set_position(m.step);
            let eval = m
                .eval_loss
                .map(|e| format!(" eval {e:.3}"))
                .unwrap_or_default();
            let mfu = m
                .mfu
                .map(|f| format!(" MFU {:.1}%", 100.0 * f))
                .unwrap_or_default();
            b.set_message(format!(
                "loss {:.3}{eval} {:.0} tok/s {:.1} ex/s{mfu}",
                m.loss, m.tokens_per_s, m.examples_per_s
            ));
            return;
        }
        if !self.quiet && (m.step.is_multiple_of(self.every) || m.eval_loss.is_some()) {
            let eval = m
                .eval_loss
                .map(|e| format!(", eval loss {e:.4}"))
                .unwrap_or_default();
            // Seconds per step so far in this invocation, times the steps left.
            let (first, last) = self.span.get();
            let done = (m.step + 1).saturating_sub(first).max(1);
            let eta = m.elapsed_s / done as f64 * last.saturating_sub(m.step) as f64;
            let mfu = m
                .mfu
                .map(|f| format!("  MFU {:.1}%", 100.0 * f))
                .unwrap_or_default();
            eprintln!(
                "step {:>7}/{last}  loss {:.4}{eval}  lr {:.2e}  {:.0} tokens/s  {:.1} examples/s{mfu}  ETA {}",
                m.step,
                m.loss,
                m.lr,
                m.tokens_per_s,
                m.examples_per_s,
                conveyor_pipeline::progress::human_duration(eta)
            );
        }
    }
    fn note(&self, message: &str) {
        let message = conveyor_pipeline::printable::text(message);
        match &self.bar {
            Some(b) => b.println(message),
            None if !self.quiet => eprintln!("{message}"),
            None => {}
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}

pub fn run(mut a: TrainArgs) -> anyhow::Result<i32> {
    // Before any download (the library checks it too, for its other callers).
    if let Some(lr) = a.lr {
        anyhow::ensure!(
            lr.is_finite() && lr > 0.0,
            "--lr {lr} is not a positive learning rate"
        );
    }
    // T5's default schedule is Adafactor's relative step (1/sqrt(warmup) = 0.01 from the
    // first step, scaled by each parameter's size): as AdamW's absolute rate it diverges.
    anyhow::ensure!(
        a.lr.is_some() || !matches!(a.optimizer, OptimizerArg::Adamw),
        "--optimizer adamw needs --lr (T5's default schedule, 1/sqrt(max(step, --warmup)), is a relative step size for Adafactor: 0.01 from the first step as AdamW's rate); give a rate such as --lr 1e-4"
    );
    flags::unused(&a)?;
    // Datasets at a URL are read from a local copy (shards are read by random access).
    a.data = local_dataset(&a.data)?.0;
    flags::inputs_length_fits(&a.data, a.inputs_length)?;
    a.eval_data = a
        .eval_data
        .map(|d| local_dataset(&d).map(|l| l.0))
        .transpose()?;
    if a.deterministic {
        anyhow::ensure!(
            conveyor_model::cuda::set_deterministic(true),
            "libtorch refused to switch to deterministic algorithms"
        );
    }
    let vocab = data_vocab_size(&a.data)?;
    // A run folder inside the data would be a stranger there (its --overwrite refused).
    conveyor_pipeline::job::outdir::check_not_input(&a.out, std::slice::from_ref(&a.data))?;
    // Resuming without --arch: the run's own model (its latest checkpoint's configuration).
    let resumed = match (a.resume, &a.init, a.model.arch) {
        (true, None, None) => conveyor_model::checkpoint::latest(&a.out)?,
        _ => None,
    };
    let model = match (a.init.as_ref().or(resumed.as_ref()), a.model.arch) {
        // Fine-tuning a checkpoint: its configuration, unless an architecture is named;
        // --config still applies on top (say `attention`, or dropout).
        (Some(init), None) => {
            let saved = conveyor_model::checkpoint::read_config(init)?;
            match &a.model.config {
                Some(p) => saved.with_overrides(p)?,
                None => saved,
            }
        }
        _ => a.model.build(vocab)?,
    };
    // A resume keeps the run's own settings where no flag names others: its inputs length
    // and Adafactor's factoring rule (runs from before that flag factored every matrix).
    if let Some(ckpt) = a
        .resume
        .then(|| conveyor_model::checkpoint::latest(&a.out))
        .transpose()?
        .flatten()
    {
        let saved = conveyor_model::checkpoint::read_state(&ckpt)?;
        a.inputs_length = a.inputs_length.or(saved.inputs_length);
        if let OptimizerKind::Adafactor {
            min_dim_to_factor, ..
        } = saved.optimizer
        {
            a.factor_min_dim = a.factor_min_dim.or(Some(min_dim_to_factor));
        }
    }
    let launch = Launch::from_vars(
        |k| std::env::var(k).ok(),
        std::time::Duration::from_secs(a.dist_timeout.max(1)),
    )?;
    let device = match select_device(a.device.into())? {
        // One GPU per rank on a node: LOCAL_RANK's (or the only one bound to the task).
        tch::Device::Cuda(_) => tch::Device::Cuda(match &launch {
            Some(l) => conveyor_model::rank_gpu(
                l.local_rank,
                tch::Cuda::device_count() as usize,
                std::env::var_os("CUDA_VISIBLE_DEVICES").is_some(),
            )?,
            None => 0,
        }),
        d => d,
    };
    let rank = launch.as_ref().map_or(0, |l| l.rank);
    if a.pure_bf16 && rank == 0 {
        eprintln!("warning: --pure-bf16 keeps the weights in bfloat16: updates smaller than half a bfloat16 step (most of them at fine-tuning learning rates) are lost. --bf16 trains in bfloat16 with float32 master weights");
    }
    let (quiet, json, steps) = (a.quiet, a.json, a.steps);
    let cfg = train_config(a, model, device, launch);
    // Only rank 0 reports.
    let progress = Lines::new(quiet || json || rank != 0, steps);
    let s = train(&cfg, &progress).context(if rank == 0 {
        "training".to_string()
    } else {
        format!("training (rank {rank})")
    })?;
    if rank == 0 {
        report(&s, &cfg, json)?;
    }
    Ok(0)
}

/// `--z-loss`: a finite coefficient of 0 or more.
fn z_loss(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(z) if z.is_finite() && z >= 0.0 => Ok(z),
        _ => Err(format!("{s} is not a coefficient of 0 or more (T5: 1e-4)")),
    }
}

/// The trainer's configuration from the flags.
fn train_config(
    a: TrainArgs,
    model: ModelConfig,
    device: tch::Device,
    launch: Option<Launch>,
) -> TrainConfig {
    TrainConfig {
        data: a.data,
        eval_data: a.eval_data,
        out: a.out,
        model,
        steps: a.steps,
        batch_size: a.batch_size,
        accumulate: a.accumulate,
        inputs_length: a.inputs_length.unwrap_or(512),
        pack: a.pack,
        seed: a.seed,
        optimizer: match a.optimizer {
            OptimizerArg::Adafactor => OptimizerKind::Adafactor {
                scale_parameter: true,
                min_dim_to_factor: a
                    .factor_min_dim
                    .unwrap_or(conveyor_model::optim::T5_MIN_DIM_TO_FACTOR),
            },
            OptimizerArg::Adamw => OptimizerKind::adamw(),
        },
        schedule: match a.lr {
            Some(lr) => Schedule::Constant { lr },
            None => Schedule::InverseSqrt {
                warmup: a.warmup.unwrap_or(10_000),
            },
        },
        checkpoint_every: a.checkpoint_every,
        keep_checkpoints: a.keep_checkpoints.map(|k| k as usize),
        eval_every: a.eval_every,
        eval_batches: a.eval_batches as usize,
        shuffle_buffer: a.shuffle_buffer,
        device,
        precision: match (a.bf16, a.pure_bf16) {
            (_, true) => Precision::PureBf16,
            (true, _) => Precision::Bf16,
            _ => Precision::F32,
        },
        resume: a.resume,
        init: a.init,
        launch,
        peak_tflops: a.peak_tflops,
        sync_every: a.sync_every.map(|n| n as usize),
        cuda_graph: a.cuda_graph,
        check_syncs: a.check_syncs,
        z_loss: a.z_loss,
    }
}

/// The run's summary: JSON, or one line.
fn report(s: &TrainSummary, cfg: &TrainConfig, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    println!(
        "{} steps of a {} model ({} parameters) in {:.1} s; final loss {}; checkpoint {}",
        s.steps,
        cfg.model.arch.name(),
        s.parameters,
        s.seconds,
        s.final_loss
            .map(|l| format!("{l:.4}"))
            .unwrap_or_else(|| "-".into()),
        s.checkpoint
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "-".into())
    );
    Ok(())
}

#[derive(Args)]
pub struct SummaryArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Ids in the vocabulary (T5: 32,000 pieces + 100 extra ids).
    #[arg(long, default_value_t = 32_100)]
    vocab_size: usize,
    /// Input length for the FLOPs estimate (targets: a quarter of it).
    #[arg(long, default_value_t = 512)]
    length: usize,
    /// Target length for the FLOPs estimate (default: a quarter of --length).
    #[arg(long)]
    targets_length: Option<usize>,
    /// A Hugging Face T5 config.json: summarise the model it describes (instead of --arch,
    /// --preset and --config).
    #[arg(long, conflicts_with_all = ["arch", "config"])]
    hf_config: Option<PathBuf>,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

pub fn summary(a: SummaryArgs) -> anyhow::Result<i32> {
    let cfg = match &a.hf_config {
        Some(p) => conveyor_model::hf::read_config_file(p)?,
        None => a.model.build(a.vocab_size)?,
    };
    let targets = a.targets_length.unwrap_or(a.length / 4);
    if a.json {
        let fwd = 2.0 * conveyor_model::summary::forward_macs(&cfg, a.length, targets);
        println!(
            "{}",
            serde_json::json!({
                "arch": cfg.arch.name(),
                "parameters": cfg.parameter_count(),
                "inputs_length": a.length,
                "targets_length": targets,
                "forward_flops": fwd,
                "train_flops": 3.0 * fwd,
            })
        );
    } else {
        print!(
            "{}",
            conveyor_model::summary::describe(&cfg, a.length, targets)
        );
    }
    Ok(0)
}

#[derive(Args)]
pub struct FinetuneArgs {
    /// The task the data was prepared for (checked against its manifest).
    #[arg(long)]
    task: String,
    #[command(flatten)]
    train: TrainArgs,
}

/// Fine-tuning: training on a prepared task, constant learning rate (1e-3 unless --lr),
/// from --init's weights or from scratch.
pub fn finetune(mut a: FinetuneArgs) -> anyhow::Result<i32> {
    a.train.data = local_dataset(&a.train.data)?.0;
    let m = conveyor_pipeline::examples::ExamplesManifest::read(&a.train.data)?;
    let want = conveyor_pipeline::examples::Objective::Task(a.task.clone());
    anyhow::ensure!(
        m.settings.objective == want,
        "{} holds {} examples, not {want}: prepare it with `conveyor task prepare {}`",
        a.train.data.display(),
        m.settings.objective,
        a.task
    );
    if a.train.lr.is_none() {
        a.train.lr = Some(1e-3);
    }
    run(a.train)
}
