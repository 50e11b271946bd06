//! The model's weights in the precision the run asks for.
//!
//! - `F32`: one float32 copy; autograd accumulates micro-batch gradients in `.grad`.
//! - `Bf16` (mixed precision, as T5/Mesh TF, HF accelerate and nanoT5 train): the optimiser
//!   updates float32 master weights; forward and backward run on a bfloat16 copy refreshed
//!   from the masters after every update; each micro-batch's bfloat16 gradients are added
//!   into float32 accumulators. Checkpoints hold the float32 masters. The refresh and each
//!   parameter's first gradient of a step are multi-tensor copies (one launch for many
//!   parameters); the later micro-batches' sums add bfloat16 into float32, which ATen's
//!   multi-tensor kernels do one parameter at a time (one launch each, no temporary). An update smaller than
//!   half a bfloat16 step still moves the master, and reaches the copy once it adds up.
//! - `PureBf16`: the weights themselves are bfloat16 (half the memory of masters + copy);
//!   updates below half a bfloat16 step are lost, which is why it is not the default.

use tch::{nn, Device, Tensor};

use crate::config::{ConfigError, ModelConfig};
use crate::optim::foreach;
use crate::seq2seq::Seq2Seq;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    F32,
    Bf16,
    PureBf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16 (float32 master weights)",
            Precision::PureBf16 => "pure bf16 (bfloat16 weights)",
        }
    }
}

/// Master weights (what the optimiser updates and checkpoints hold) and the model that
/// computes with them.
pub struct Weights {
    pub precision: Precision,
    /// Variables by name: saved and loaded as the checkpoint's `model.safetensors`.
    pub master: nn::VarStore,
    /// The bfloat16 copy (mixed precision only).
    compute: Option<nn::VarStore>,
    /// Runs forward and backward (on the copy in mixed precision).
    pub model: Seq2Seq,
    /// Parameter names, sorted: the order of every list below and of the optimiser.
    pub names: Vec<String>,
    pub params: Vec<Tensor>,
    compute_params: Vec<Tensor>,
    /// Mixed precision: the float32 sum of the micro-batch gradients so far (made after
    /// the step's first backward pass, freed by `finish_step`: the peak memory of the
    /// forward and backward passes does not hold them).
    acc: Vec<Tensor>,
    /// Which accumulators hold a gradient of this step: a parameter that got none in every
    /// micro-batch has none, as in float32, and the optimiser skips it.
    summed: Vec<bool>,
}

fn sorted(vs: &nn::VarStore) -> (Vec<String>, Vec<Tensor>) {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.into_iter().unzip()
}

impl Weights {
    /// Fresh weights from libtorch's generator as seeded by the caller.
    pub fn new(
        cfg: &ModelConfig,
        device: Device,
        precision: Precision,
    ) -> Result<Self, ConfigError> {
        let mut master = nn::VarStore::new(device);
        let master_model = Seq2Seq::new(&master.root(), cfg)?;
        let (compute, model) = match precision {
            Precision::Bf16 => {
                let mut vs = nn::VarStore::new(device);
                let model = Seq2Seq::new(&vs.root(), cfg)?;
                vs.bfloat16();
                (Some(vs), model)
            }
            Precision::PureBf16 => {
                master.bfloat16();
                (None, master_model)
            }
            Precision::F32 => (None, master_model),
        };
        let (names, params) = sorted(&master);
        let compute_params = match &compute {
            Some(vs) => sorted(vs).1,
            None => params.iter().map(|p| p.shallow_clone()).collect(),
        };
        let mut w = Self {
            precision,
            master,
            compute,
            model,
            names,
            params,
            compute_params,
            acc: Vec::new(),
            summed: Vec::new(),
        };
        w.refresh();
        Ok(w)
    }

    /// Copies the masters into the bfloat16 copy (after loading or updating the masters).
    pub fn refresh(&mut self) {
        if self.compute.is_some() {
            let (dst, src) = (refs(&self.compute_params), refs(&self.params));
            foreach::copy(&dst, &src)
                .unwrap_or_else(|e| panic!("refreshing the bfloat16 weights failed: {e}"));
        }
    }

    /// After each micro-batch's backward pass: mixed precision moves the bfloat16 gradients
    /// into the float32 accumulators, copied on a parameter's first gradient of the step and
    /// added after (elsewhere autograd accumulates in `.grad`).
    pub fn collect_grads(&mut self) {
        if self.compute.is_none() {
            return;
        }
        if self.acc.is_empty() {
            // Uninitialised: a parameter's first gradient is copied in, and one that gets
            // none is never read.
            let _guard = tch::no_grad_guard();
            self.acc = self.params.iter().map(|p| p.empty_like()).collect();
            self.summed = vec![false; self.params.len()];
        }
        let grads: Vec<Tensor> = self.compute_params.iter().map(|p| p.grad()).collect();
        let (mut first, mut first_g, mut more, mut more_g) = (vec![], vec![], vec![], vec![]);
        for ((acc, g), summed) in self.acc.iter().zip(&grads).zip(self.summed.iter_mut()) {
            if !g.defined() {
                continue;
            }
            if *summed {
                more.push(acc);
                more_g.push(g);
            } else {
                first.push(acc);
                first_g.push(g);
                *summed = true;
            }
        }
        foreach::copy(&first, &first_g)
            .and_then(|()| foreach::add(&more, &more_g))
            .unwrap_or_else(|e| panic!("summing the bfloat16 gradients failed: {e}"));
        for p in &self.compute_params {
            crate::cuda::clear_grad(p);
        }
    }

    /// The step's gradients, one per master parameter (undefined where none flowed). In
    /// mixed precision they share the accumulators' storage, which `finish_step` lets go
    /// (they stay valid as long as they are held).
    pub fn take_grads(&mut self) -> Vec<Tensor> {
        if self.compute.is_some() && self.acc.is_empty() {
            // No micro-batch this step (a rank whose epoch ended before the others').
            return self.params.iter().map(|_| Tensor::new()).collect();
        }
        if self.compute.is_some() {
            return self
                .acc
                .iter()
                .zip(&self.summed)
                .map(|(a, &s)| if s { a.shallow_clone() } else { Tensor::new() })
                .collect();
        }
        self.compute_params.iter().map(|p| p.grad()).collect()
    }

    /// Drops the gradients and, in mixed precision, refreshes the copy from the updated
    /// masters.
    pub fn finish_step(&mut self) {
        for p in &self.compute_params {
            crate::cuda::clear_grad(p);
        }
        self.acc.clear();
        self.refresh();
    }
}

fn refs(ts: &[Tensor]) -> Vec<&Tensor> {
    ts.iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Arch;
    use crate::optim::{Optimizer, OptimizerKind, Schedule};
    use tch::Kind;

    /// The property mixed precision exists for: at a small learning rate, float32 masters
    /// move where pure bfloat16 weights round the update away.
    #[test]
    fn small_updates_reach_float32_masters_and_are_lost_in_pure_bf16() {
        let _rng = crate::test_rng();
        let cfg = ModelConfig::preset(Arch::Lightconv, "tiny", 60).unwrap();
        let x = Tensor::randint_low(3, 60, [2, 8], (Kind::Int64, Device::Cpu));
        let y = Tensor::randint_low(3, 60, [2, 5], (Kind::Int64, Device::Cpu));
        let mi = Tensor::ones([2, 8], (Kind::Float, Device::Cpu));
        let mt = Tensor::ones([2, 5], (Kind::Float, Device::Cpu));
        let moved = |precision| {
            tch::manual_seed(3);
            let mut w = Weights::new(&cfg, Device::Cpu, precision).unwrap();
            let before: Vec<Tensor> = w
                .params
                .iter()
                .map(|p| p.to_kind(Kind::Float).copy())
                .collect();
            let mut opt = Optimizer::new(
                OptimizerKind::adafactor(),
                Schedule::Constant { lr: 1e-4 },
                &w.params,
            );
            for _ in 0..5 {
                w.model.loss(&x, &mi, &y, &mt, false).backward();
                w.collect_grads();
                let g = w.take_grads();
                opt.step(&mut w.params, &g);
                w.finish_step();
            }
            // The fraction of the elements of the shared embedding that changed.
            let i = w.names.iter().position(|n| n == "shared.weight").unwrap();
            let changed = w.params[i]
                .to_kind(Kind::Float)
                .ne_tensor(&before[i])
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[]);
            assert_eq!(
                w.params[i].kind(),
                match precision {
                    Precision::PureBf16 => Kind::BFloat16,
                    _ => Kind::Float,
                }
            );
            changed
        };
        let mixed = moved(Precision::Bf16);
        let pure = moved(Precision::PureBf16);
        assert!(mixed > 0.95, "mixed precision moved only {mixed}");
        assert!(pure < 0.5, "pure bf16 moved {pure}");
    }

    /// The multi-tensor bookkeeping equals the per-tensor one bit for bit: over three
    /// micro-batches the float32 sums are the bfloat16 gradients converted and added, a
    /// parameter left out of one micro-batch sums the others, one left out of all has none,
    /// the next step starts from zero, and the refreshed copy is the masters rounded.
    #[test]
    fn mixed_precision_sums_and_copies_equal_the_per_tensor_ones() {
        let _rng = crate::test_rng();
        let cfg = ModelConfig::preset(Arch::Transformer, "tiny", 60).unwrap();
        tch::manual_seed(5);
        let mut w = Weights::new(&cfg, Device::Cpu, Precision::Bf16).unwrap();
        let n = w.params.len();
        let (a, b, c) = (3, n - 2, 7);
        for step in 0..2 {
            let mut want: Vec<Option<Tensor>> = (0..n).map(|_| None).collect();
            for k in 0..3 {
                let x = Tensor::randint_low(3, 60, [2, 8], (Kind::Int64, Device::Cpu));
                let y = Tensor::randint_low(3, 60, [2, 5], (Kind::Int64, Device::Cpu));
                let ones = |t: &Tensor| t.ones_like().to_kind(Kind::Float);
                w.model.loss(&x, &ones(&x), &y, &ones(&y), false).backward();
                // Parameter `a` gets no gradient in micro-batch 1, `c` in micro-batch 0,
                // `b` in none.
                for (i, p) in w.compute_params.iter().enumerate() {
                    if (i == a && k == 1) || (i == c && k == 0) || i == b {
                        crate::cuda::clear_grad(p);
                    }
                    let g = p.grad();
                    if g.defined() {
                        let g = g.to_kind(Kind::Float);
                        want[i] = Some(match want[i].take() {
                            Some(s) => s + g,
                            None => g,
                        });
                    }
                }
                w.collect_grads();
            }
            let got = w.take_grads();
            for (i, (g, want)) in got.iter().zip(&want).enumerate() {
                match want {
                    Some(s) => assert!(g.equal(s), "step {step}, {}", w.names[i]),
                    None => assert!(!g.defined(), "step {step}, {} has a gradient", w.names[i]),
                }
            }
            assert!(!got[b].defined() && got[a].defined() && got[c].defined());
            let _guard = tch::no_grad_guard();
            for p in w.params.iter_mut() {
                let _ = p.g_add_(&(p.randn_like() * 1e-3));
            }
            w.finish_step();
            for (c, m) in w.compute_params.iter().zip(&w.params) {
                assert!(c.equal(&m.to_kind(Kind::BFloat16)));
            }
        }
    }
}
