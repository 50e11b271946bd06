//! The optimisers against references: Adafactor written plainly on f64 values, the
//! multi-tensor step against the per-tensor one, schedules and moment round trips.

use super::*;
use tch::Device;

/// Adafactor written plainly on f64 values, as the references describe it.
struct Reference {
    v: Vec<f64>,
    row: Vec<f64>,
    col: Vec<f64>,
}

fn rms64(v: &[f64]) -> f64 {
    (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt()
}

impl Reference {
    /// One step on a (rows x cols) matrix (factored) or a vector (cols == 0).
    fn step(&mut self, p: &mut [f64], g: &[f64], t: f64, lr: f64, rows: usize, cols: usize) {
        let b2 = 1.0 - t.powf(-0.8);
        let sq: Vec<f64> = g.iter().map(|x| x * x + 1e-30).collect();
        let u: Vec<f64> = if cols == 0 {
            for (v, s) in self.v.iter_mut().zip(&sq) {
                *v = b2 * *v + (1.0 - b2) * s;
            }
            g.iter().zip(&self.v).map(|(g, v)| g / v.sqrt()).collect()
        } else {
            for r in 0..rows {
                let mean = (0..cols).map(|c| sq[r * cols + c]).sum::<f64>() / cols as f64;
                self.row[r] = b2 * self.row[r] + (1.0 - b2) * mean;
            }
            for c in 0..cols {
                let mean = (0..rows).map(|r| sq[r * cols + c]).sum::<f64>() / rows as f64;
                self.col[c] = b2 * self.col[c] + (1.0 - b2) * mean;
            }
            let row_mean = self.row.iter().sum::<f64>() / rows as f64;
            (0..rows * cols)
                .map(|i| {
                    let (r, c) = (i / cols, i % cols);
                    let v_hat = self.row[r] / row_mean * self.col[c];
                    g[i] / v_hat.sqrt()
                })
                .collect()
        };
        let clip = (rms64(&u) / 1.0).max(1.0);
        let alpha = lr * rms64(p).max(1e-3);
        for (p, u) in p.iter_mut().zip(&u) {
            *p -= alpha * u / clip;
        }
    }
}

fn run(shape: &[i64], rows: usize, cols: usize) {
    let n: i64 = shape.iter().product();
    let init: Vec<f64> = (0..n).map(|i| 0.5 - 0.13 * i as f64).collect();
    let mut p = Tensor::from_slice(&init)
        .to_kind(Kind::Float)
        .view(shape)
        .set_requires_grad(true);
    let mut params = vec![p.shallow_clone()];
    let sched = Schedule::Constant { lr: 0.01 };
    // Every matrix factored, so that these small ones take the factored path.
    let mut opt = Optimizer::new(OptimizerKind::adafactor_hf(), sched, &params);
    let mut reference = Reference {
        v: vec![0.0; n as usize],
        row: vec![0.0; rows],
        col: vec![0.0; cols],
    };
    let mut want: Vec<f64> = init.clone();
    for step in 1..=4u64 {
        let g: Vec<f64> = (0..n)
            .map(|i| ((i * 7 + step as i64 * 3) % 5) as f64 * 0.1 - 0.2)
            .collect();
        let gt = Tensor::from_slice(&g).to_kind(Kind::Float).view(shape);
        // Set the gradient through a loss whose gradient is g.
        let loss = (&p * &gt).sum(Kind::Float);
        loss.backward();
        let grads = vec![params[0].grad()];
        opt.step(&mut params, &grads);
        crate::cuda::clear_grad(&params[0]);
        reference.step(&mut want, &g, step as f64, 0.01, rows, cols);
        p = params[0].shallow_clone();
        let got: Vec<f64> = Vec::try_from(p.to_kind(Kind::Double).view([-1])).unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "step {step}: {got:?} vs {want:?}");
        }
    }
}

#[test]
fn adafactor_matches_the_reference_unfactored_and_factored() {
    run(&[5], 0, 0);
    run(&[3, 4], 3, 4);
}

#[test]
fn first_adafactor_step_is_the_sign_times_the_scaled_rate() {
    // t = 1: beta2 = 0, v = g^2, U = sign(g); RMS(p) = sqrt((1 + 4) / 2).
    let p = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
    let mut params = vec![p.shallow_clone()];
    let mut opt = Optimizer::new(
        OptimizerKind::adafactor(),
        Schedule::Constant { lr: 0.01 },
        &params,
    );
    (&p * Tensor::from_slice(&[0.1f32, -0.2]))
        .sum(Kind::Float)
        .backward();
    let grads = vec![params[0].grad()];
    opt.step(&mut params, &grads);
    let got: Vec<f32> = Vec::try_from(&params[0]).unwrap();
    let a = 0.01 * (2.5f64).sqrt();
    assert!((got[0] as f64 - (1.0 - a)).abs() < 1e-6);
    assert!((got[1] as f64 - (2.0 + a)).abs() < 1e-6);
}

/// Parameters of the shapes models have (matrices, vectors, 3-D convolution kernels,
/// one without a gradient), random, and random gradients for `steps` steps.
fn multi_tensor_matches_per_tensor(kind: OptimizerKind, weights: Kind) {
    let _rng = crate::test_rng();
    // On CPU in one call, and in calls of a tensor or two (the 3 x 4 x 5 kernel is
    // 240 bytes); on CUDA as well when there is one (the multi-tensor kernels proper).
    let mut runs = vec![(Device::Cpu, foreach::CHUNK_BYTES), (Device::Cpu, 256)];
    if tch::Cuda::is_available() {
        runs.push((Device::Cuda(0), foreach::CHUNK_BYTES));
    }
    for (device, chunk) in runs {
        multi_tensor_matches_per_tensor_on(kind, weights, device, chunk);
    }
}

fn multi_tensor_matches_per_tensor_on(
    kind: OptimizerKind,
    weights: Kind,
    device: Device,
    chunk: usize,
) {
    tch::manual_seed(7);
    let shapes: [&[i64]; 5] = [&[6, 5], &[7], &[3, 4, 5], &[2, 3], &[1, 9]];
    let params: Vec<Tensor> = shapes
        .iter()
        .map(|s| Tensor::randn(*s, (Kind::Float, device)).to_kind(weights))
        .collect();
    let mut a: Vec<Tensor> = params.iter().map(|p| p.copy()).collect();
    let mut b: Vec<Tensor> = params.iter().map(|p| p.copy()).collect();
    // A rate that changes with the step, as beta2 and AdamW's corrections do: the
    // multi-tensor kernels read them from a device tensor written before each step.
    let sched = Schedule::InverseSqrt { warmup: 2 };
    let mut multi = Optimizer::new(kind, sched, &a);
    multi.chunk_bytes = chunk;
    let mut single = Optimizer::new(kind, sched, &b);
    // CUDA's kernels round differently (a division may be a multiplication): 1e-6 of
    // the value there, and one bfloat16 step for bfloat16 weights.
    let tolerance = match (device, weights) {
        (Device::Cpu, _) => 1e-6,
        (_, Kind::BFloat16) => 1.0 / 128.0,
        _ => 1e-6,
    };
    for step in 0..6 {
        let grads: Vec<Tensor> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| match i {
                3 => Tensor::new(),
                _ => Tensor::randn(*s, (Kind::Float, device)) * (1.0 + step as f64),
            })
            .collect();
        multi.step_multi_tensor(&mut a, &grads);
        single.step_per_tensor(&mut b, &grads);
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let diff = (x.to_kind(Kind::Double) - y.to_kind(Kind::Double))
                .abs()
                .max()
                .double_value(&[]);
            let scale = match device {
                Device::Cpu => 1.0,
                _ => y
                    .to_kind(Kind::Double)
                    .abs()
                    .max()
                    .double_value(&[])
                    .max(1.0),
            };
            assert!(
                diff <= tolerance * scale,
                "{kind:?}, {weights:?} on {device:?}, chunks of {chunk} bytes, step {step}, parameter {i}: {diff}"
            );
        }
        // The parameter without a gradient did not move.
        assert_eq!(
            a[3].to_kind(Kind::Double)
                .sum(Kind::Double)
                .double_value(&[]),
            params[3]
                .to_kind(Kind::Double)
                .sum(Kind::Double)
                .double_value(&[])
        );
    }
    for ((n, x), (_, y)) in multi.named_moments().iter().zip(single.named_moments()) {
        let diff = (*x - y).abs().max().double_value(&[]);
        let scale = y.abs().max().double_value(&[]).max(1.0);
        assert!(diff <= 1e-6 * scale, "moment {n} differs by {diff}");
    }
    // The parameters moved: a step that did nothing would also agree.
    let moved = (&a[0] - &params[0]).abs().max().double_value(&[]);
    assert!(moved > 1e-3, "the parameters hardly moved ({moved})");
}

#[test]
fn multi_tensor_adafactor_matches_the_per_tensor_step() {
    multi_tensor_matches_per_tensor(OptimizerKind::adafactor(), Kind::Float);
    multi_tensor_matches_per_tensor(OptimizerKind::adafactor_hf(), Kind::Float);
    multi_tensor_matches_per_tensor(
        OptimizerKind::Adafactor {
            scale_parameter: false,
            min_dim_to_factor: 0,
        },
        Kind::Float,
    );
}

#[test]
fn multi_tensor_adamw_matches_the_per_tensor_step() {
    multi_tensor_matches_per_tensor(OptimizerKind::adamw(), Kind::Float);
}

#[test]
fn multi_tensor_step_updates_bf16_weights_like_the_per_tensor_step() {
    multi_tensor_matches_per_tensor(OptimizerKind::adafactor_hf(), Kind::BFloat16);
    multi_tensor_matches_per_tensor(OptimizerKind::adamw(), Kind::BFloat16);
}

#[test]
fn schedules() {
    let s = Schedule::InverseSqrt { warmup: 10_000 };
    assert_eq!(s.lr(1), 0.01);
    assert_eq!(s.lr(10_000), 0.01);
    assert_eq!(s.lr(40_000), 0.005);
    assert_eq!(Schedule::Constant { lr: 1e-3 }.lr(123), 1e-3);
}

#[test]
fn moments_round_trip() {
    let params = vec![
        Tensor::zeros([3, 4], (Kind::Float, Device::Cpu)),
        Tensor::zeros([4], (Kind::Float, Device::Cpu)),
    ];
    let a = Optimizer::new(
        OptimizerKind::adafactor_hf(),
        Schedule::Constant { lr: 1.0 },
        &params,
    );
    let named: Vec<(String, Tensor)> = a
        .named_moments()
        .into_iter()
        .map(|(n, t)| (n, t.ones_like()))
        .collect();
    let mut b = Optimizer::new(
        OptimizerKind::adafactor_hf(),
        Schedule::Constant { lr: 1.0 },
        &params,
    );
    let names = ["w".to_string(), "b".to_string()];
    b.load_moments(&named, &names).unwrap();
    assert_eq!(b.named_moments().len(), 3);
    assert!(b
        .named_moments()
        .iter()
        .all(|(_, t)| t.min().double_value(&[]) == 1.0));
    // A moment missing, of another shape or not finite is named by its parameter.
    let mut broken: Vec<(String, Tensor)> =
        named.iter().map(|(n, t)| (n.clone(), t.copy())).collect();
    let _ = broken[2].1.fill_(f64::NAN);
    let e = b.load_moments(&broken, &names).unwrap_err();
    assert!(e.contains("b:v") && e.contains("not finite"), "{e}");
    broken[2].1 = Tensor::ones([5], (Kind::Float, Device::Cpu));
    let e = b.load_moments(&broken, &names).unwrap_err();
    assert!(e.contains("b:v is [5], not [4]"), "{e}");
    broken.pop();
    let e = b.load_moments(&broken, &names).unwrap_err();
    assert!(e.contains("no moment b:v"), "{e}");
}

/// The trainer's gradient norm: one multi-tensor call equals the float64 sum of squares of
/// every element, for float32 and bfloat16 tensors of several shapes, within float32
/// rounding; no tensors, no norm.
#[test]
fn global_norm_equals_the_float64_norm() {
    let _rng = crate::test_rng();
    tch::manual_seed(11);
    let ts: Vec<Tensor> = [vec![300, 7], vec![5], vec![1], vec![4, 3, 9], vec![70_000]]
        .iter()
        .enumerate()
        .map(|(i, shape)| {
            let t = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)) * (i as f64 + 0.5);
            if i % 2 == 1 {
                t.to_kind(Kind::BFloat16)
            } else {
                t
            }
        })
        .collect();
    let want = ts
        .iter()
        .flat_map(|t| Vec::<f64>::try_from(t.to_kind(Kind::Double).reshape([-1])).unwrap())
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt();
    let refs: Vec<&Tensor> = ts.iter().collect();
    let got = foreach::global_norm(&refs).unwrap().unwrap();
    assert_eq!(got.kind(), Kind::Double);
    let got = got.double_value(&[]);
    assert!((got - want).abs() <= 1e-6 * want, "{got} vs {want}");
    assert!(foreach::global_norm(&[]).unwrap().is_none());
}

/// AdamW's weight decay on bfloat16 weights is applied in float32 and rounded once, by both
/// steps: with a zero gradient the update is zero, so each weight must become
/// bf16(float(w) * (1 - lr * wd)); rounding the factor to bfloat16 first (what ATen's
/// in-place multiplication by a Scalar does) misses that for many of them.
#[test]
fn adamw_decays_bf16_weights_in_float32() {
    let _rng = crate::test_rng();
    tch::manual_seed(3);
    let w0 = Tensor::randn([4000], (Kind::Float, Device::Cpu)).to_kind(Kind::BFloat16);
    let (lr, wd) = (0.7, 0.01);
    let kind = OptimizerKind::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: wd,
    };
    let want = (w0.to_kind(Kind::Float) * (1.0 - lr * wd)).to_kind(Kind::BFloat16);
    let coarse = &w0 * Tensor::from(1.0 - lr * wd).to_kind(Kind::BFloat16);
    assert!(
        coarse.ne_tensor(&want).sum(Kind::Int64).int64_value(&[]) > 100,
        "the two roundings should differ for many weights"
    );
    for multi in [false, true] {
        let mut p = vec![w0.copy()];
        let mut opt = Optimizer::new(kind, Schedule::Constant { lr }, &p);
        let g = vec![Tensor::zeros([4000], (Kind::Float, Device::Cpu))];
        if multi {
            opt.step_multi_tensor(&mut p, &g);
        } else {
            opt.step_per_tensor(&mut p, &g);
        }
        let wrong = p[0].ne_tensor(&want).sum(Kind::Int64).int64_value(&[]);
        assert_eq!(
            wrong, 0,
            "multi-tensor {multi}: {wrong} weights decayed otherwise"
        );
    }
}

/// T5's rule: a matrix is factored only when both dimensions are at least 128 (Mesh TF's
/// min_dim_size_to_factor); transformers' factors every matrix; vectors never are.
#[test]
fn small_matrices_keep_a_full_second_moment_as_in_t5() {
    let shapes: [&[i64]; 4] = [&[32, 12], &[14, 768], &[128, 256], &[768]];
    let params: Vec<Tensor> = shapes
        .iter()
        .map(|s| Tensor::zeros(*s, (Kind::Float, tch::Device::Cpu)))
        .collect();
    let factored = |kind| -> Vec<bool> {
        Optimizer::new(kind, Schedule::Constant { lr: 1e-3 }, &params)
            .moments
            .iter()
            .map(|m| matches!(m, Moments::Factored { .. }))
            .collect()
    };
    assert_eq!(
        factored(OptimizerKind::adafactor()),
        [false, false, true, false]
    );
    assert_eq!(
        factored(OptimizerKind::adafactor_hf()),
        [true, true, true, false]
    );
    // A state written before the field reads as what those runs did: every matrix factored.
    let old: OptimizerKind =
        serde_json::from_str(r#"{"kind": "adafactor", "scale_parameter": true}"#).unwrap();
    assert_eq!(old, OptimizerKind::adafactor_hf());
}
