//! `--cuda-graph`: the whole step (forward and backward passes of every micro-batch, the
//! gradient norm, the optimiser update) captured once in a CUDA graph and replayed, so a
//! step costs a few launches instead of thousands: what bounds small batches on a GPU.
//!
//! A graph replays fixed tensors, so each step's batches are copied into buffers the graph
//! reads (one device-to-device copy per micro-batch, after an upload that does not wait),
//! its token count likewise, and the optimiser's step-dependent scalars are written before
//! each replay ([`Optimizer::begin_step`]). The first [`WARM_UP`] full-batch steps run
//! eagerly on the graph's stream, the next is captured and replayed, and every later one only
//! replays. A step with a short batch (the last of an epoch) runs eagerly, as the same step.
//!
//! Dropout: libtorch's generator is seeded once per step, before the step's work (a replay
//! takes the generator's seed and offset as it finds them), so an eager step and a replayed
//! one draw the same masks. With one micro-batch per step that is the seed an eager run
//! (without `--cuda-graph`) uses, so both runs take the same steps; with several, the
//! micro-batches continue one random stream instead of being reseeded each. Either way the
//! seed depends only on (seed, step): a resumed run repeats the uninterrupted one.

use conveyor_pipeline::loader::Batch;
use tch::Tensor;

use super::data::{to_device_async, upload, Layout};
use super::step::{forward_backward, grad_norm};
use super::{micro_seed, Counts, TrainConfig, TrainError, Weights};
use crate::cuda::CudaGraph;
use crate::optim::Optimizer;

/// Eager steps before the capture (PyTorch's examples take a few: lazily made state such
/// as cuBLAS workspaces exists before the capture).
const WARM_UP: usize = 3;

/// The buffers a captured step reads, and what it wrote.
struct Captured {
    layouts: Vec<Layout>,
    /// One per micro-batch: what [`upload`] makes.
    flats: Vec<Tensor>,
    /// The step's counts (as `Counts::to_vec`).
    counts: Tensor,
    /// The summed token loss and the gradient norm a replay writes.
    outputs: Option<(Tensor, Tensor)>,
}

/// The training step of a `--cuda-graph` run (one process on one CUDA device).
pub(super) struct GraphStep {
    /// `None`: every step eager, with the buffers and seeding of a graph (CPU tests).
    graph: Option<CudaGraph>,
    buffers: Option<Captured>,
    /// Eager steps taken on the graph's stream (short batches run on the caller's).
    warm_ups: usize,
    /// Steps run eagerly: the warm-up, and batches of another shape.
    pub eager: u64,
    pub replayed: u64,
    /// The step that was captured.
    pub captured_at: Option<u64>,
}

impl GraphStep {
    /// Refuses what a graph cannot run; the graph is made on the run's CUDA device.
    pub fn new(cfg: &TrainConfig) -> Result<Self, TrainError> {
        if cfg.launch.is_some() {
            return Err(TrainError::Refused(
                "--cuda-graph runs one process: the gradient all-reduce of several ranks is not captured; launch without torchrun/Slurm, or drop --cuda-graph".into(),
            ));
        }
        let graph = CudaGraph::on(cfg.device).map_err(|e| TrainError::Refused(e.to_string()))?;
        Ok(Self::with(Some(graph)))
    }

    fn with(graph: Option<CudaGraph>) -> Self {
        Self {
            graph,
            buffers: None,
            warm_ups: 0,
            eager: 0,
            replayed: 0,
            captured_at: None,
        }
    }

    /// An eager stand-in: the buffers, copies and seeding of a graph run, without a graph.
    #[cfg(test)]
    pub fn eager() -> Self {
        Self::with(None)
    }

    /// One optimiser step over `batches` (as `run_step`: the summed token loss, the gradient
    /// norm and the counts, left on the device).
    pub fn run(
        &mut self,
        cfg: &TrainConfig,
        w: &mut Weights,
        opt: &mut Optimizer,
        batches: &[Batch],
        step: u64,
    ) -> Result<(Tensor, Tensor, Tensor), TrainError> {
        let layouts: Vec<Layout> = batches.iter().map(Layout::of).collect();
        let flats: Vec<Tensor> = batches.iter().map(|b| upload(b, cfg.device)).collect();
        let counts = to_device_async(
            Tensor::from_slice(&Counts::all(batches).to_vec()),
            cfg.device,
        );
        opt.begin_step();
        tch::manual_seed(micro_seed(cfg, step, 0, 0));
        // Full batches (every micro-batch at --batch-size rows; widths are the feature
        // lengths) use the buffers; a short one runs eagerly, before or after the capture.
        // (An epoch's last step may also have fewer micro-batches: its empty ones dropped.)
        let full = batches.len() as u64 == cfg.accumulate
            && batches.iter().all(|b| b.rows == cfg.batch_size);
        if !full || self.buffers.as_ref().is_some_and(|b| b.layouts != layouts) {
            self.eager += 1;
            let (nll, norm) = work(w, opt, &layouts, &flats, &counts, cfg.z_loss);
            return Ok((nll, norm, counts));
        }
        let b = self.buffers.get_or_insert_with(|| Captured {
            layouts,
            flats: flats.iter().map(|f| f.empty_like()).collect(),
            counts: counts.empty_like(),
            outputs: None,
        });
        let Captured {
            layouts,
            flats: bufs,
            counts: count_buf,
            outputs,
        } = b;
        for (to, from) in bufs.iter_mut().zip(&flats) {
            to.copy_(from);
        }
        count_buf.copy_(&counts);
        let z = cfg.z_loss;
        let run = |w: &mut Weights| work(w, opt, layouts, bufs, count_buf, z);
        let (nll, norm) = match &mut self.graph {
            None => {
                self.eager += 1;
                run(w)
            }
            Some(g) if self.warm_ups < WARM_UP => {
                self.warm_ups += 1;
                self.eager += 1;
                g.warm_up(|| run(w))?
            }
            Some(g) => {
                if outputs.is_none() {
                    *outputs = Some(g.capture(|| run(w))?);
                    self.captured_at = Some(step);
                }
                g.replay()?;
                self.replayed += 1;
                let (nll, norm) = outputs.as_ref().expect("captured outputs");
                // The next replay overwrites them; the window keeps steps for a while.
                (nll.copy(), norm.copy())
            }
        };
        Ok((nll, norm, counts))
    }
}

/// The device work of a step over the micro-batches in `flats`: forward and backward
/// passes, the gradient norm and the update of the step `opt.begin_step` counted. Nothing
/// here reads back from the device or depends on the step on the host: it is what a graph
/// captures.
fn work(
    w: &mut Weights,
    opt: &Optimizer,
    layouts: &[Layout],
    flats: &[Tensor],
    counts: &Tensor,
    z_loss: f64,
) -> (Tensor, Tensor) {
    let denom = counts.get(0).clamp_min(1.0);
    let nll = forward_backward(w, &denom, z_loss, flats.len(), |k| {
        layouts[k].tensors(&flats[k])
    });
    let g = w.take_grads();
    let norm = grad_norm(&g, counts.device());
    opt.apply(&mut w.params, &g);
    w.finish_step();
    (nll, norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Arch, ModelConfig};
    use crate::optim::{OptimizerKind, Schedule};
    use crate::train::step::run_step;
    use crate::train::{Precision, Ranks};
    use conveyor_pipeline::loader::{LoaderState, Packing};
    use tch::Device;

    fn config(arch: Arch, precision: Precision, optimizer: OptimizerKind) -> TrainConfig {
        TrainConfig {
            data: "unused".into(),
            eval_data: None,
            out: "unused".into(),
            model: ModelConfig::preset(arch, "tiny", 60).unwrap(),
            steps: 10,
            batch_size: 3,
            accumulate: 1,
            inputs_length: 12,
            pack: false,
            seed: 7,
            optimizer,
            schedule: Schedule::InverseSqrt { warmup: 2 },
            checkpoint_every: 10,
            keep_checkpoints: None,
            eval_every: 0,
            eval_batches: 1,
            shuffle_buffer: 0,
            device: Device::Cpu,
            precision,
            resume: false,
            init: None,
            launch: None,
            peak_tflops: None,
            sync_every: None,
            cuda_graph: true,
            check_syncs: false,
            z_loss: 0.0,
        }
    }

    /// Random rows of ids in [3, 60) with lengths in [1, width]; packed rows hold two
    /// segments (the second starting mid-row).
    fn batch(rows: usize, wi: usize, wt: usize, packed: bool, seed: u64) -> Batch {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n) as u32
        };
        let mut b = Batch {
            rows,
            inputs_width: wi,
            targets_width: wt,
            inputs: (0..rows * wi).map(|_| 3 + next(57)).collect(),
            targets: (0..rows * wt).map(|_| 3 + next(57)).collect(),
            input_lengths: (0..rows).map(|_| 1 + next(wi as u64)).collect(),
            target_lengths: (0..rows).map(|_| 1 + next(wt as u64)).collect(),
            packing: None,
            examples: rows,
            state: LoaderState::default(),
        };
        if packed {
            let seg = |w: usize| -> (Vec<u32>, Vec<u32>) {
                let half = w / 2;
                let seg = (0..rows * w).map(|i| 1 + (i % w >= half) as u32).collect();
                let pos = (0..rows * w)
                    .map(|i| (i % w % half.max(1)) as u32)
                    .collect();
                (seg, pos)
            };
            let (si, pi) = seg(wi);
            let (st, pt) = seg(wt);
            b.packing = Some(Packing {
                inputs_segment_ids: si,
                inputs_positions: pi,
                targets_segment_ids: st,
                targets_positions: pt,
            });
            b.examples = 2 * rows;
        }
        b
    }

    /// Per step, (eager, graph) values of the loss, the gradient norm and the counts.
    type Figures = Vec<[(Vec<f64>, Vec<f64>); 3]>;

    fn values(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(tch::Kind::Double).reshape([-1])).unwrap()
    }

    /// Steps 1-8 of an eager run (`run_step`) and of `g`, with one micro-batch per step, full
    /// batches but for short ones at steps 1 and 6; returns each step's figures from both
    /// (loss, norm, counts) and the weights' largest relative distance at the end; checks the
    /// buffers took the full batches' shape (and on CPU that the weights are equal).
    fn both_runs(cfg: &TrainConfig, mut g: GraphStep) -> (Figures, f64) {
        let ranks = Ranks {
            pg: None,
            rank: 0,
            world: 1,
            device: cfg.device,
        };
        let fresh = || {
            tch::manual_seed(1);
            let w = Weights::new(&cfg.model, cfg.device, cfg.precision).unwrap();
            let opt = Optimizer::new(cfg.optimizer, cfg.schedule, &w.params);
            (w, opt)
        };
        let (mut we, mut oe) = fresh();
        let (mut wg, mut og) = fresh();
        let packed = cfg.pack;
        let mut out = Vec::new();
        for step in 1..=8u64 {
            let rows = if step == 1 || step == 6 { 1 } else { 3 };
            let batches = [batch(rows, 12, 6, packed, step)];
            let eager = run_step(cfg, &ranks, &mut we, &mut oe, &batches, step).unwrap();
            let graph = g.run(cfg, &mut wg, &mut og, &batches, step).unwrap();
            out.push([
                (values(&eager.0), values(&graph.0)),
                (values(&eager.1), values(&graph.1)),
                (values(&eager.2), values(&graph.2)),
            ]);
        }
        let full = Layout::of(&batch(3, 12, 6, packed, 0));
        assert_eq!(g.buffers.as_ref().unwrap().layouts, [full]);
        assert_eq!(g.eager + g.replayed, 8);
        if cfg.device.is_cuda() {
            // Steps 2-4 warm up, 5 is captured and replayed, 6 runs eagerly after the
            // capture, 7-8 replay.
            assert_eq!((g.captured_at, g.replayed), (Some(5), 3));
        }
        // The weights' largest relative distance (||a - b|| / max(||a||, 1)), and on CPU equality.
        let mut far = 0f64;
        for ((name, a), b) in we.names.iter().zip(&we.params).zip(&wg.params) {
            let d = (a - b).norm().double_value(&[]) / a.norm().double_value(&[]).max(1.0);
            far = far.max(d);
            if cfg.device == Device::Cpu {
                assert!(a.equal(b), "{name} differs");
            }
        }
        (out, far)
    }

    /// An epoch's last step can have fewer micro-batches than --accumulate (its empty ones
    /// dropped), all full: run first (a resume just before an epoch's end), it must not take
    /// the buffers, or every later whole step would run eagerly and none be captured.
    #[test]
    fn a_step_of_fewer_micro_batches_leaves_the_buffers_to_whole_steps() {
        let _rng = crate::test_rng();
        let mut cfg = config(Arch::Lightconv, Precision::F32, OptimizerKind::adafactor());
        cfg.accumulate = 2;
        let mut w = Weights::new(&cfg.model, cfg.device, cfg.precision).unwrap();
        let mut opt = Optimizer::new(cfg.optimizer, cfg.schedule, &w.params);
        let mut g = GraphStep::eager();
        let full = |seed| batch(3, 12, 6, false, seed);
        let _short = g.run(&cfg, &mut w, &mut opt, &[full(1)], 1).unwrap();
        assert!(g.buffers.is_none());
        let _whole = g
            .run(&cfg, &mut w, &mut opt, &[full(2), full(3)], 2)
            .unwrap();
        assert_eq!(g.buffers.as_ref().unwrap().layouts.len(), 2);
    }

    /// At one micro-batch per step, the steps of a graph run (here its buffers, copies and
    /// seeding without the graph) are those of an eager run: the same losses, gradient
    /// norms, counts and weights, bit for bit, with short batches (run eagerly beside the
    /// buffers) first and in between, in float32 and mixed precision, Adafactor and AdamW,
    /// plain and packed rows.
    #[test]
    fn graph_run_steps_equal_eager_steps() {
        let _rng = crate::test_rng();
        for precision in [Precision::F32, Precision::Bf16] {
            for (arch, optimizer) in [
                (Arch::Transformer, OptimizerKind::adafactor()),
                (Arch::Lightconv, OptimizerKind::adamw()),
            ] {
                for pack in [false, true] {
                    let mut cfg = config(arch, precision, optimizer);
                    cfg.pack = pack;
                    let g = GraphStep::eager();
                    for (step, figures) in both_runs(&cfg, g).0.into_iter().enumerate() {
                        for (what, (a, b)) in ["loss", "norm", "counts"].iter().zip(figures) {
                            assert_eq!(
                                a,
                                b,
                                "{arch:?} {precision:?} pack {pack}, step {}: {what}",
                                step + 1
                            );
                        }
                    }
                }
            }
        }
    }

    /// On a GPU the same with the graph itself: steps 1-8 are a short batch (eager), three
    /// warm-up steps, the capture (replayed), another short batch (eager, after the capture)
    /// and two replays. Not
    /// bit for bit (atomics in the backward pass differ between any two CUDA runs), but
    /// with the same dropout masks: other masks move the loss by percents.
    #[test]
    fn captured_steps_equal_eager_steps_on_a_gpu() {
        if !tch::Cuda::is_available() {
            return;
        }
        let _rng = crate::test_rng();
        let mut cfg = config(
            Arch::Transformer,
            Precision::F32,
            OptimizerKind::adafactor(),
        );
        cfg.device = Device::Cuda(0);
        // A small rate: at large ones, weights whose gradient is at rounding level take
        // Adafactor steps whose sign the rounding decides (docs/training.md).
        cfg.schedule = Schedule::Constant { lr: 1e-3 };
        let g = GraphStep::new(&cfg).unwrap();
        let (figures, far) = both_runs(&cfg, g);
        // Loose: one rounding-level gradient can flip a 1-D weight's Adafactor step (~2e-4).
        assert!(far < 1e-3, "weights {far} apart");
        for (step, figures) in figures.into_iter().enumerate() {
            for (what, (a, b)) in ["loss", "norm", "counts"].iter().zip(figures) {
                for (x, y) in a.iter().zip(&b) {
                    assert!(
                        (x - y).abs() <= 1e-4 * x.abs().max(1e-6),
                        "step {}: {what} {a:?} vs {b:?}",
                        step + 1
                    );
                }
            }
        }
    }

    /// What a graph cannot run is refused with the reason: several processes, no GPU.
    #[test]
    fn graph_runs_refuse_several_ranks_and_the_cpu() {
        let mut cfg = config(
            Arch::Transformer,
            Precision::F32,
            OptimizerKind::adafactor(),
        );
        let refusal = |cfg: &TrainConfig| match GraphStep::new(cfg) {
            Err(TrainError::Refused(m)) => m,
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a graph run on {:?} was accepted", cfg.device),
        };
        assert!(refusal(&cfg).contains("needs a CUDA device"));
        cfg.launch = Some(crate::dist::Launch {
            rank: 0,
            world_size: 2,
            local_rank: 0,
            master_addr: "127.0.0.1".into(),
            master_port: 29500,
            agent_store: false,
            timeout: std::time::Duration::from_secs(1),
            restart: 0,
            source: "test",
        });
        cfg.device = Device::Cuda(0);
        assert!(refusal(&cfg).contains("runs one process"));
    }

    /// The random stream of a graph run depends only on (seed, step): steps 3-4 taken by a
    /// new step runner after the generator moved on (what a resumed process does after
    /// restoring the checkpoint; the restore itself is tested for eager runs) repeat the
    /// uninterrupted run's, with two micro-batches per step sharing the step's seed.
    #[test]
    fn graph_run_resumes_to_the_same_steps() {
        let _rng = crate::test_rng();
        let mut cfg = config(
            Arch::Transformer,
            Precision::F32,
            OptimizerKind::adafactor(),
        );
        cfg.accumulate = 2;
        // Full batches: the buffers are used.
        cfg.batch_size = 2;
        let batches = |step: u64| {
            [
                batch(2, 10, 5, false, 2 * step),
                batch(2, 10, 5, false, 2 * step + 1),
            ]
        };
        let losses = |cfg: &TrainConfig, restart: bool| {
            tch::manual_seed(1);
            let mut w = Weights::new(&cfg.model, Device::Cpu, cfg.precision).unwrap();
            let mut opt = Optimizer::new(cfg.optimizer, cfg.schedule, &w.params);
            let mut g = GraphStep::eager();
            let mut out = Vec::new();
            for step in 1..=4u64 {
                if restart && step == 3 {
                    g = GraphStep::eager();
                    tch::manual_seed(12345);
                }
                let (nll, _, _) = g.run(cfg, &mut w, &mut opt, &batches(step), step).unwrap();
                out.push(nll.double_value(&[]));
            }
            out
        };
        let whole = losses(&cfg, false);
        assert_eq!(whole, losses(&cfg, true));
        // Dropout is on and follows the run's seed: another seed draws other masks.
        cfg.seed += 1;
        let other = losses(&cfg, false);
        assert!(
            whole.iter().zip(&other).all(|(a, b)| a != b),
            "{whole:?} {other:?}"
        );
    }
}
