//! Optimisers written on tensors (tch has no Adafactor, and its built-in optimisers do not
//! expose their state for exact checkpoints): Adafactor as T5 uses it and AdamW for
//! comparison, plus the learning-rate schedules.
//!
//! Adafactor (docs/upstream.md, section 4): beta2_t = 1 - t^-0.8; eps1 = 1e-30 added to g^2;
//! matrices keep row and column means of g^2 (factored second moment), other shapes the full
//! one; U = g / sqrt(v_hat), clipped by max(1, RMS(U) / 1.0); step size lr * max(1e-3,
//! RMS(param)) with parameter scaling; no momentum (beta1 = 0), as in T5.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

pub(crate) mod foreach;

/// How the learning rate moves with the step (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// T5's pre-training schedule: 1 / sqrt(max(step, warmup)).
    InverseSqrt { warmup: u64 },
    /// Fine-tuning: the same rate at every step.
    Constant { lr: f64 },
}

impl Schedule {
    pub fn lr(&self, step: u64) -> f64 {
        match *self {
            Schedule::InverseSqrt { warmup } => 1.0 / (step.max(warmup).max(1) as f64).sqrt(),
            Schedule::Constant { lr } => lr,
        }
    }
}

/// In the flags that choose it (resume refusals name the run's schedule so).
impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Schedule::InverseSqrt { warmup } => {
                write!(
                    f,
                    "1/sqrt(max(step, {warmup})) (no --lr, --warmup {warmup})"
                )
            }
            Schedule::Constant { lr } => write!(f, "a constant rate (--lr {lr})"),
        }
    }
}

/// Which update rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerKind {
    Adafactor {
        /// Scale the step by the parameter's RMS (T5: on).
        scale_parameter: bool,
        /// A matrix's second moment is factored only when both its (last two) dimensions
        /// are at least this: Mesh TF's `min_dim_size_to_factor`, 128 in T5 (a 32 x 12
        /// relative-position table or a convolution's kernel weights keep a full moment); 0
        /// factors every matrix, as transformers' Adafactor does. States written before the
        /// field read as 0, what those runs did.
        #[serde(default)]
        min_dim_to_factor: usize,
    },
    AdamW {
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
}

impl OptimizerKind {
    pub fn adafactor() -> Self {
        OptimizerKind::Adafactor {
            scale_parameter: true,
            min_dim_to_factor: T5_MIN_DIM_TO_FACTOR,
        }
    }

    /// Adafactor as transformers' implements it: every matrix factored.
    pub fn adafactor_hf() -> Self {
        OptimizerKind::Adafactor {
            scale_parameter: true,
            min_dim_to_factor: 0,
        }
    }

    pub fn adamw() -> Self {
        OptimizerKind::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// In the flags that choose it, with any setting no flag reaches spelled out.
impl std::fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            OptimizerKind::Adafactor {
                scale_parameter,
                min_dim_to_factor,
            } => {
                write!(f, "Adafactor (--factor-min-dim {min_dim_to_factor}")?;
                if !scale_parameter {
                    write!(f, ", steps not scaled by the parameters' RMS")?;
                }
                write!(f, ")")
            }
            OptimizerKind::AdamW {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => write!(
                f,
                "AdamW (--optimizer adamw: betas {beta1}, {beta2}, eps {eps}, weight decay {weight_decay})"
            ),
        }
    }
}

/// T5's `AdafactorOptimizer.min_dim_size_to_factor`.
pub const T5_MIN_DIM_TO_FACTOR: usize = 128;

const EPS1: f64 = 1e-30;
const EPS2: f64 = 1e-3;
const CLIP: f64 = 1.0;
const DECAY: f64 = -0.8;

/// The state kept for one parameter.
#[derive(Debug)]
pub enum Moments {
    /// Row and column running means of g^2 (matrices under Adafactor).
    Factored {
        row: Tensor,
        col: Tensor,
    },
    /// A full running mean of g^2 (Adafactor vectors), or AdamW's (m, v).
    Full {
        v: Tensor,
    },
    Adam {
        m: Tensor,
        v: Tensor,
    },
}

/// An optimiser over a list of parameters (their order is the checkpoint's order).
pub struct Optimizer {
    pub kind: OptimizerKind,
    pub schedule: Schedule,
    /// Steps taken so far.
    pub step: u64,
    pub moments: Vec<Moments>,
    /// Gradient bytes (float32) per call of the multi-tensor step: bounds its temporaries.
    pub chunk_bytes: usize,
    /// The multi-tensor step's step-dependent scalars, float32 on the parameters' device,
    /// written by [`Optimizer::begin_step`] and read by the kernels of [`Optimizer::apply`].
    step_scalars: Option<Tensor>,
}

/// Root mean square, as a 0-dim tensor.
fn rms_t(t: &Tensor) -> Tensor {
    // One pass, no temporary: ||t||_2 / sqrt(n).
    t.norm() / (t.numel().max(1) as f64).sqrt()
}

impl Optimizer {
    pub fn new(kind: OptimizerKind, schedule: Schedule, params: &[Tensor]) -> Self {
        let moments = params
            .iter()
            .map(|p| {
                let z = |shape: &[i64]| Tensor::zeros(shape, (Kind::Float, p.device()));
                let size = p.size();
                match kind {
                    OptimizerKind::Adafactor {
                        min_dim_to_factor, ..
                    } if size.len() >= 2
                        && size[size.len() - 2..]
                            .iter()
                            .all(|&d| d as usize >= min_dim_to_factor) =>
                    {
                        let n = size.len();
                        let mut row = size.clone();
                        row.remove(n - 1);
                        let mut col = size.clone();
                        col.remove(n - 2);
                        Moments::Factored {
                            row: z(&row),
                            col: z(&col),
                        }
                    }
                    OptimizerKind::Adafactor { .. } => Moments::Full { v: z(&size) },
                    OptimizerKind::AdamW { .. } => Moments::Adam {
                        m: z(&size),
                        v: z(&size),
                    },
                }
            })
            .collect();
        let step_scalars = params
            .first()
            .map(|p| Tensor::zeros([4], (Kind::Float, p.device())));
        Self {
            kind,
            schedule,
            step: 0,
            moments,
            chunk_bytes: foreach::CHUNK_BYTES,
            step_scalars,
        }
    }

    /// The learning rate of the next step.
    pub fn next_lr(&self) -> f64 {
        self.schedule.lr(self.step + 1)
    }

    /// Applies one update to `params` from `grads` (one per parameter, any float kind; an
    /// undefined gradient leaves its parameter alone). The caller drops the gradients.
    /// The multi-tensor step, but for AdamW off CUDA: the two agree (bit for bit on CPU,
    /// tested); on CPU either costs about the same share of a step (`bench optim`,
    /// docs/benchmarks.md: multi-tensor Adafactor ahead at `tiny`, behind at `small`), and
    /// CUDA needs the multi-tensor one.
    pub fn step(&mut self, params: &mut [Tensor], grads: &[Tensor]) {
        let on_cuda = params.first().is_some_and(|p| p.device().is_cuda());
        match self.kind {
            OptimizerKind::AdamW { .. } if !on_cuda => self.step_per_tensor(params, grads),
            _ => self.step_multi_tensor(params, grads),
        }
    }

    /// [`Optimizer::step`] with multi-tensor kernels (optim/foreach.cpp), reading nothing back
    /// to the host: [`Optimizer::begin_step`], then [`Optimizer::apply`]. Panics when
    /// libtorch fails, as tch's operations do.
    pub fn step_multi_tensor(&mut self, params: &mut [Tensor], grads: &[Tensor]) {
        self.begin_step();
        self.apply(params, grads);
    }

    /// Counts the next step and writes the values that change with it (learning rate,
    /// Adafactor's beta2, AdamW's bias corrections) into the device tensor the multi-tensor
    /// kernels read: a few fill launches, no copy from host memory, so it never waits for
    /// the device. A CUDA graph that captured [`Optimizer::apply`] is replayed after this.
    pub fn begin_step(&mut self) {
        self.step += 1;
        let lr = self.schedule.lr(self.step);
        let t = self.step as f64;
        let values = match self.kind {
            OptimizerKind::Adafactor { .. } => {
                let beta2 = 1.0 - t.powf(DECAY);
                [lr, beta2, 1.0 - beta2, 0.0]
            }
            OptimizerKind::AdamW {
                beta1,
                beta2,
                weight_decay,
                ..
            } => [
                lr,
                1.0 - beta1.powf(t),
                1.0 - beta2.powf(t),
                1.0 - lr * weight_decay,
            ],
        };
        if let Some(s) = &self.step_scalars {
            let _guard = tch::no_grad_guard();
            for (i, v) in values.into_iter().enumerate() {
                let _ = s.get(i as i64).fill_(v);
            }
        }
    }

    /// The multi-tensor update of the step [`Optimizer::begin_step`] counted, its varying
    /// scalars read on the device (the same kernels whatever the step: capturable in a CUDA
    /// graph). The caller drops the gradients.
    pub fn apply(&self, params: &mut [Tensor], grads: &[Tensor]) {
        assert_eq!(params.len(), grads.len(), "one gradient per parameter");
        let Some(step_scalars) = &self.step_scalars else {
            return; // no parameters
        };
        let with_grad = |i: &usize| grads[*i].defined();
        let result = match self.kind {
            OptimizerKind::Adafactor {
                scale_parameter, ..
            } => {
                let (mut f, mut v) = (foreach::Factored::default(), foreach::Full::default());
                for (i, m) in self.moments.iter().enumerate() {
                    if !with_grad(&i) {
                        continue;
                    }
                    match m {
                        Moments::Factored { row, col } => f.push([&params[i], &grads[i], row, col]),
                        Moments::Full { v: full } => v.push([&params[i], &grads[i], full]),
                        Moments::Adam { .. } => unreachable!("Adafactor keeps no Adam moments"),
                    }
                }
                foreach::adafactor(
                    &f,
                    &v,
                    self.chunk_bytes,
                    &foreach::AdafactorScalars {
                        step_scalars,
                        scale_parameter,
                        eps1: EPS1,
                        eps2: EPS2,
                        clip: CLIP,
                    },
                )
            }
            OptimizerKind::AdamW {
                beta1, beta2, eps, ..
            } => {
                let mut a = foreach::Adam::default();
                for (i, m) in self.moments.iter().enumerate() {
                    match m {
                        Moments::Adam { m, v } if with_grad(&i) => {
                            a.push([&params[i], &grads[i], m, v])
                        }
                        Moments::Adam { .. } => {}
                        _ => unreachable!("moments match the optimiser"),
                    }
                }
                foreach::adamw(&a, self.chunk_bytes, [beta1, beta2, eps], step_scalars)
            }
        };
        if let Err(e) = result {
            panic!("optimiser step {} failed: {e}", self.step);
        }
    }

    /// [`Optimizer::step`] one parameter at a time with single-tensor operations (several
    /// kernel launches per tensor): the reference the multi-tensor step is tested against.
    pub fn step_per_tensor(&mut self, params: &mut [Tensor], grads: &[Tensor]) {
        assert_eq!(params.len(), grads.len(), "one gradient per parameter");
        self.step += 1;
        let t = self.step as f64;
        let lr = self.schedule.lr(self.step);
        let _guard = tch::no_grad_guard();
        for ((p, m), g) in params.iter_mut().zip(self.moments.iter_mut()).zip(grads) {
            if !g.defined() {
                continue;
            }
            let g = g.to_kind(Kind::Float);
            let update = match (self.kind, m) {
                (
                    OptimizerKind::Adafactor {
                        scale_parameter, ..
                    },
                    m,
                ) => {
                    let beta2 = 1.0 - t.powf(DECAY);
                    let mut sq = g.square();
                    let _ = sq.g_add_scalar_(EPS1);
                    let u = match m {
                        Moments::Factored { row, col } => {
                            let _ = row
                                .g_mul_scalar_(beta2)
                                .g_add_(&(sq.mean_dim(-1, false, Kind::Float) * (1.0 - beta2)));
                            let _ = col
                                .g_mul_scalar_(beta2)
                                .g_add_(&(sq.mean_dim(-2, false, Kind::Float) * (1.0 - beta2)));
                            let r = (&*row / row.mean_dim(-1, true, Kind::Float))
                                .rsqrt()
                                .unsqueeze(-1);
                            let c = col.unsqueeze(-2).rsqrt();
                            &g * r * c
                        }
                        Moments::Full { v } => {
                            let _ = v.g_mul_scalar_(beta2).g_add_(&(sq * (1.0 - beta2)));
                            &g * v.rsqrt()
                        }
                        Moments::Adam { .. } => unreachable!("Adafactor keeps no Adam moments"),
                    };
                    // Clipping, learning rate and parameter scale folded into one scalar
                    // tensor, kept on the device (no host round trip per parameter), so the
                    // update costs one pass over `u`.
                    let mut factor = (rms_t(&u) / CLIP).clamp_min(1.0).reciprocal() * lr;
                    if scale_parameter {
                        factor *= rms_t(&p.to_kind(Kind::Float)).clamp_min(EPS2);
                    }
                    u * factor
                }
                (
                    OptimizerKind::AdamW {
                        beta1,
                        beta2,
                        eps,
                        weight_decay,
                    },
                    Moments::Adam { m, v },
                ) => {
                    let _ = m.g_mul_scalar_(beta1).g_add_(&(&g * (1.0 - beta1)));
                    let _ = v.g_mul_scalar_(beta2).g_add_(&(g.square() * (1.0 - beta2)));
                    let mh = &*m / (1.0 - beta1.powf(t));
                    let vh = &*v / (1.0 - beta2.powf(t));
                    // In float32 and rounded once: ATen's in-place multiplication by a
                    // Scalar rounds the Scalar to a bfloat16 weight's kind first (0.99293
                    // becomes 0.99219: 10% more decay there).
                    if p.kind() == Kind::Float {
                        let _ = p.g_mul_scalar_(1.0 - lr * weight_decay);
                    } else {
                        let decayed = p.to_kind(Kind::Float) * (1.0 - lr * weight_decay);
                        p.copy_(&decayed);
                    }
                    mh / (vh.sqrt() + eps) * lr
                }
                _ => unreachable!("moments match the optimiser"),
            };
            let _ = p.g_sub_(&update.to_kind(p.kind()));
        }
    }

    /// The moments as named tensors, for a checkpoint (`{index}.row`, `.col`, `.v`, `.m`).
    pub fn named_moments(&self) -> Vec<(String, &Tensor)> {
        let mut out = Vec::new();
        for (i, m) in self.moments.iter().enumerate() {
            match m {
                Moments::Factored { row, col } => {
                    out.push((format!("{i}.row"), row));
                    out.push((format!("{i}.col"), col));
                }
                Moments::Full { v } => out.push((format!("{i}.v"), v)),
                Moments::Adam { m, v } => {
                    out.push((format!("{i}.m"), m));
                    out.push((format!("{i}.v"), v));
                }
            }
        }
        out
    }

    /// Restores the moments from named tensors written by [`Optimizer::named_moments`];
    /// `names` are the parameters' (what the messages say: `{name}:{part}`, as the file
    /// holds them). A moment that is missing, of another shape or not finite is refused.
    pub fn load_moments(
        &mut self,
        named: &[(String, Tensor)],
        names: &[String],
    ) -> Result<(), String> {
        let _guard = tch::no_grad_guard();
        for (i, m) in self.moments.iter_mut().enumerate() {
            let label = |part: &str| {
                let name = names.get(i).map_or_else(|| i.to_string(), String::clone);
                format!("{name}:{part}")
            };
            let copy = |dst: &mut Tensor, part: &str| -> Result<(), String> {
                let key = format!("{i}.{part}");
                let src = named
                    .iter()
                    .find(|(n, _)| *n == key)
                    .map(|(_, t)| t)
                    .ok_or_else(|| format!("holds no moment {}", label(part)))?;
                if src.size() != dst.size() {
                    return Err(format!(
                        "its moment {} is {:?}, not {:?}",
                        label(part),
                        src.size(),
                        dst.size()
                    ));
                }
                // A NaN here made every later step's loss NaN, and the message then called
                // this checkpoint the last good one.
                if !bool::try_from(src.isfinite().all()).unwrap_or(false) {
                    return Err(format!(
                        "its moment {} holds a value that is not finite",
                        label(part)
                    ));
                }
                dst.copy_(src);
                Ok(())
            };
            match m {
                Moments::Factored { row, col } => {
                    copy(row, "row")?;
                    copy(col, "col")?;
                }
                Moments::Full { v } => copy(v, "v")?,
                Moments::Adam { m, v } => {
                    copy(m, "m")?;
                    copy(v, "v")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
