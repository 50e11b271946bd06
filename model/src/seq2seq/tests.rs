//! The model's properties for every architecture: parameter counts, causality, padding,
//! packing, bfloat16 weights, learning.

use super::*;
use tch::nn::OptimizerConfig;
use tch::Device;

pub(super) fn model(arch: Arch) -> (nn::VarStore, Seq2Seq) {
    build(ModelConfig::preset(arch, "tiny", 60).unwrap())
}

/// Every architecture, and each conv one in the Mesh TensorFlow form too (a kernel per
/// channel, a pointwise map after the convolution).
pub(super) fn every_form() -> impl Iterator<Item = (nn::VarStore, Seq2Seq)> {
    let mesh_tf = Arch::ALL.into_iter().filter(|a| a.is_conv()).map(|a| {
        let mut cfg = ModelConfig::preset(a, "tiny", 60).unwrap();
        cfg.conv_heads = cfg.d_model;
        cfg.conv_pointwise = true;
        cfg
    });
    Arch::ALL
        .into_iter()
        .map(|a| ModelConfig::preset(a, "tiny", 60).unwrap())
        .chain(mesh_tf)
        .map(build)
}

fn build(cfg: ModelConfig) -> (nn::VarStore, Seq2Seq) {
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let m = Seq2Seq::new(&vs.root(), &cfg).unwrap();
    (vs, m)
}

pub(super) fn ids(b: i64, t: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randint_low(3, 60, [b, t], (Kind::Int64, Device::Cpu))
}

#[test]
fn variables_match_the_parameter_count() {
    let _rng = crate::test_rng();
    for (vs, m) in every_form() {
        let n: i64 = vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
        assert_eq!(n as usize, m.cfg.parameter_count(), "{:?}", m.cfg);
    }
}

/// T5 v1.1's variants (gated-GELU feed-forward, a separate lm_head, heads wider than
/// d_model / num_heads) for every architecture: the count from the shapes, the names
/// docs/formats.md lists, and a model that still learns.
#[test]
fn v1_1_variants_build_count_and_learn_for_every_arch() {
    let _rng = crate::test_rng();
    for arch in Arch::ALL {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let mut cfg = ModelConfig::preset(arch, "tiny", 60).unwrap();
        cfg.ffn = crate::config::Ffn::GatedGelu;
        cfg.tie_embeddings = false;
        cfg.d_kv = Some(24);
        let m = Seq2Seq::new(&vs.root(), &cfg).unwrap();
        let vars = vs.variables();
        let n: usize = vars.values().map(|t| t.numel()).sum();
        assert_eq!(n, cfg.parameter_count(), "{}", arch.name());
        assert_eq!(vars["lm_head.weight"].size(), [60, 64]);
        assert_eq!(vars["encoder.layers.1.ffn.wi_1.weight"].size(), [128, 64]);
        assert_eq!(vars["decoder.layers.0.cross.q.weight"].size(), [96, 64]);
        let mut opt = nn::Adam::default().build(&vs, 3e-3).unwrap();
        let (x, y) = (ids(4, 10, 5), ids(4, 6, 6));
        let mi = Tensor::ones([4, 10], (Kind::Float, Device::Cpu));
        let mt = Tensor::ones([4, 6], (Kind::Float, Device::Cpu));
        let first = m.loss(&x, &mi, &y, &mt, false).double_value(&[]);
        for _ in 0..60 {
            opt.backward_step(&m.loss(&x, &mi, &y, &mt, true));
        }
        let last = m.loss(&x, &mi, &y, &mt, false).double_value(&[]);
        assert!(last < 0.5 * first, "{}: {first} -> {last}", arch.name());
    }
}

#[test]
fn decoder_position_t_ignores_later_targets() {
    let _rng = crate::test_rng();
    for arch in Arch::ALL {
        let (_vs, m) = model(arch);
        let x = ids(2, 9, 1);
        let mask = Tensor::ones([2, 9], (Kind::Float, Device::Cpu));
        let enc = m.encode(&x, &mask, false);
        let y = ids(2, 8, 2);
        let y2 = y.copy();
        let _ = y2.narrow(1, 5, 3).fill_(7);
        let a = m.logits(&m.decode(&y, &enc, &mask, false));
        let b = m.logits(&m.decode(&y2, &enc, &mask, false));
        assert_eq!(a.size(), vec![2, 8, 60]);
        assert!(
            a.narrow(1, 0, 5)
                .allclose(&b.narrow(1, 0, 5), 1e-5, 1e-5, false),
            "{}",
            arch.name()
        );
        assert!(!a
            .narrow(1, 5, 3)
            .allclose(&b.narrow(1, 5, 3), 1e-5, 1e-5, false));
    }
}

#[test]
fn encoder_outputs_ignore_padding() {
    let _rng = crate::test_rng();
    for arch in Arch::ALL {
        let (_vs, m) = model(arch);
        let x = ids(1, 6, 3);
        let mask = Tensor::ones([1, 6], (Kind::Float, Device::Cpu));
        let a = m.encode(&x, &mask, false);
        // The same sequence with 5 padding positions of junk after it.
        let padded = Tensor::cat(&[&x, &ids(1, 5, 4)], 1);
        let pmask = Tensor::cat(
            &[&mask, &Tensor::zeros([1, 5], (Kind::Float, Device::Cpu))],
            1,
        );
        let b = m.encode(&padded, &pmask, false).narrow(1, 0, 6);
        assert!(a.allclose(&b, 1e-5, 1e-5, false), "{}", arch.name());
    }
}

#[test]
fn bfloat16_weights_train() {
    let _rng = crate::test_rng();
    for arch in Arch::ALL {
        let (mut vs, m) = model(arch);
        vs.bfloat16();
        let mut params = vs.trainable_variables();
        let mut opt = crate::optim::Optimizer::new(
            crate::optim::OptimizerKind::adafactor(),
            crate::optim::Schedule::Constant { lr: 0.01 },
            &params,
        );
        let x = ids(2, 8, 5);
        let y = ids(2, 5, 6);
        let mi = Tensor::ones([2, 8], (Kind::Float, Device::Cpu));
        let mt = Tensor::ones([2, 5], (Kind::Float, Device::Cpu));
        let first = m.loss(&x, &mi, &y, &mt, false).double_value(&[]);
        for _ in 0..30 {
            m.loss(&x, &mi, &y, &mt, true).backward();
            let grads: Vec<Tensor> = params.iter().map(|p| p.grad()).collect();
            opt.step(&mut params, &grads);
            params.iter().for_each(crate::cuda::clear_grad);
        }
        let last = m.loss(&x, &mi, &y, &mt, false).double_value(&[]);
        assert_eq!(params[0].kind(), Kind::BFloat16);
        assert!(
            last.is_finite() && last < first,
            "{}: {first} -> {last}",
            arch.name()
        );
    }
}

/// Examples (inputs, targets) of the given lengths, random ids.
fn examples(lens: &[(i64, i64)], seed: i64) -> Vec<(Vec<i64>, Vec<i64>)> {
    lens.iter()
        .enumerate()
        .map(|(i, &(a, b))| {
            let v = |n, s| Vec::<i64>::try_from(ids(1, n, s).view([-1])).unwrap();
            (v(a, seed + 2 * i as i64), v(b, seed + 2 * i as i64 + 1))
        })
        .collect()
}

/// Rows of `groups` of examples packed end to end, padded to the widths: (ids, mask,
/// segments, positions) for inputs and targets.
fn packed(
    exs: &[(Vec<i64>, Vec<i64>)],
    groups: &[&[usize]],
    wi: i64,
    wt: i64,
) -> (Tensor, Tensor, Tensor, Tensor, Segments) {
    let mut cols: [Vec<i64>; 6] = Default::default();
    for g in groups {
        for (feature, width) in [(0usize, wi), (1, wt)] {
            let (mut ids, mut seg, mut pos) = (vec![], vec![], vec![]);
            for (k, &e) in g.iter().enumerate() {
                let x = if feature == 0 { &exs[e].0 } else { &exs[e].1 };
                ids.extend(x);
                seg.extend(std::iter::repeat_n(k as i64 + 1, x.len()));
                pos.extend(0..x.len() as i64);
            }
            for v in [&mut ids, &mut seg, &mut pos] {
                v.resize(width as usize, 0);
            }
            cols[feature * 3].extend(ids);
            cols[feature * 3 + 1].extend(seg);
            cols[feature * 3 + 2].extend(pos);
        }
    }
    let rows = groups.len() as i64;
    let t = |v: &Vec<i64>, w: i64| Tensor::from_slice(v).view([rows, w]);
    let (si, st) = (t(&cols[1], wi), t(&cols[4], wt));
    (
        t(&cols[0], wi),
        si.ne(0).to_kind(Kind::Float),
        t(&cols[3], wt),
        st.ne(0).to_kind(Kind::Float),
        Segments {
            inputs: si,
            targets: st,
            input_positions: t(&cols[2], wi),
            target_positions: t(&cols[5], wt),
        },
    )
}

/// The property packing relies on: the summed loss of packed rows equals the summed loss
/// of the same examples one per row, for every architecture (attention masks, relative
/// and learned positions restarting per segment, convolutions that do not cross segments).
#[test]
fn a_packed_batch_has_the_loss_of_its_examples_unpacked() {
    let _rng = crate::test_rng();
    // Lengths around the lightweight implementations' switch (64) are covered in conv.rs;
    // here several kernels' worth of neighbours share a row.
    let lens = [(9, 3), (4, 6), (7, 2), (3, 5), (12, 4)];
    for arch in Arch::ALL {
        let (_vs, m) = model(arch);
        let _guard = tch::no_grad_guard();
        let exs = examples(&lens, 40);
        let (mut sum, mut tokens) = (0.0, 0.0);
        for (x, y) in &exs {
            let (xi, yi) = (
                Tensor::from_slice(x).view([1, -1]),
                Tensor::from_slice(y).view([1, -1]),
            );
            let mi = xi.ones_like().to_kind(Kind::Float);
            let mt = yi.ones_like().to_kind(Kind::Float);
            sum += m.loss_sum(&xi, &mi, &yi, &mt, false).double_value(&[]);
            tokens += y.len() as f64;
        }
        let (x, mi, y, mt, seg) = packed(&exs, &[&[0, 1, 2], &[3, 4]], 22, 12);
        let got = m
            .loss_parts(&x, &mi, &y, &mt, Some(&seg), false, None, 0.0)
            .1
            .double_value(&[]);
        let want = sum / tokens;
        let got = got / mt.sum(Kind::Float).double_value(&[]);
        assert!(
            (got - want).abs() <= 1e-5 * want,
            "{}: packed {got} vs unpacked {want}",
            arch.name()
        );
        // Without the segment ids the same rows give another loss: the test can fail.
        let mixed = m.loss_sum(&x, &mi, &y, &mt, false).double_value(&[])
            / mt.sum(Kind::Float).double_value(&[]);
        assert!((mixed - want).abs() > 1e-4, "{}", arch.name());
    }
}

#[test]
fn shift_right_restarts_segments() {
    let _rng = crate::test_rng();
    let (_vs, m) = model(Arch::Transformer);
    let t = Tensor::from_slice(&[5i64, 6, 7, 8, 9]).view([1, 5]);
    let seg = Tensor::from_slice(&[1i64, 1, 2, 2, 0]).view([1, 5]);
    let s: Vec<i64> = Vec::try_from(m.shift_right(&t, Some(&seg)).view([-1])).unwrap();
    assert_eq!(s, vec![0, 5, 0, 7, 0]);
}

#[test]
fn a_tiny_model_overfits_one_batch() {
    let _rng = crate::test_rng();
    for arch in Arch::ALL {
        let (vs, m) = model(arch);
        let mut opt = nn::Adam::default().build(&vs, 3e-3).unwrap();
        let x = ids(4, 10, 5);
        let y = ids(4, 6, 6);
        let mi = Tensor::ones([4, 10], (Kind::Float, Device::Cpu));
        let mt = Tensor::ones([4, 6], (Kind::Float, Device::Cpu));
        let first = m.loss(&x, &mi, &y, &mt, false).double_value(&[]);
        for _ in 0..150 {
            let l = m.loss(&x, &mi, &y, &mt, true);
            opt.backward_step(&l);
        }
        let last = m.loss(&x, &mi, &y, &mt, false).double_value(&[]);
        assert!(last < 0.1 * first, "{}: {first} -> {last}", arch.name());
    }
}

/// `attention = "sdpa"` computes the explicit path's function: the loss and every gradient
/// agree within 1e-5 (float32, CPU) for padded rows and for packed rows (segment masks), for
/// the transformer (self, causal and cross attention, relative position bias) and a conv
/// model (cross attention only).
#[test]
fn sdpa_attention_equals_the_explicit_path() {
    let _rng = crate::test_rng();
    let exs = examples(&[(9, 3), (4, 6), (7, 2), (3, 5)], 70);
    let (px, pmi, py, pmt, seg) = packed(&exs, &[&[0, 1], &[2, 3]], 14, 10);
    let (x, y) = (ids(3, 12, 5), ids(3, 7, 6));
    let mi = Tensor::ones([3, 12], (Kind::Float, Device::Cpu));
    let _ = mi.get(1).narrow(0, 8, 4).fill_(0.0);
    let mt = Tensor::ones([3, 7], (Kind::Float, Device::Cpu));
    let _ = mt.get(2).narrow(0, 4, 3).fill_(0.0);
    for arch in [Arch::Transformer, Arch::Lightconv] {
        let run = |how: crate::AttentionImpl, packed_rows: bool| {
            tch::manual_seed(1);
            let vs = nn::VarStore::new(Device::Cpu);
            let mut cfg = ModelConfig::preset(arch, "tiny", 60).unwrap();
            cfg.attention = how;
            // No dropout, so that training-mode passes (and their gradients) compare.
            (cfg.dropout, cfg.weight_dropout) = (0.0, 0.0);
            let m = Seq2Seq::new(&vs.root(), &cfg).unwrap();
            let loss = if packed_rows {
                m.loss_parts(&px, &pmi, &py, &pmt, Some(&seg), true, None, 0.0)
                    .1
            } else {
                m.loss(&x, &mi, &y, &mt, true)
            };
            loss.backward();
            let mut grads: Vec<(String, Tensor)> = vs
                .variables()
                .into_iter()
                .map(|(n, v)| (n, v.grad().copy()))
                .collect();
            grads.sort_by(|a, b| a.0.cmp(&b.0));
            (loss.double_value(&[]), grads)
        };
        for packed_rows in [false, true] {
            let (a, ga) = run(crate::AttentionImpl::Explicit, packed_rows);
            let (b, gb) = run(crate::AttentionImpl::Sdpa, packed_rows);
            let what = format!("{} (packed: {packed_rows})", arch.name());
            assert!(
                (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                "{what}: {a} vs {b}"
            );
            for ((name, u), (_, v)) in ga.iter().zip(&gb) {
                let diff = (u - v).abs().max().double_value(&[]);
                let scale = u.abs().max().double_value(&[]).max(1e-3);
                assert!(
                    diff <= 1e-5 * scale.max(1.0),
                    "{what}: {name} differs by {diff}"
                );
            }
        }
    }
}

/// The float32 path's z-loss: the objective grows by exactly z x the masked sum of the
/// squared logsumexp of the logits; the returned sum (the logged loss) does not move.
#[test]
fn the_z_loss_adds_z_times_the_squared_normaliser_in_float32() {
    let _rng = crate::test_rng();
    let (_vs, m) = model(Arch::Transformer);
    let _guard = tch::no_grad_guard();
    let exs = examples(&[(9, 5)], 40);
    let (x, y) = &exs[0];
    let xi = Tensor::from_slice(x).view([1, -1]);
    let yi = Tensor::from_slice(y).view([1, -1]);
    let mi = xi.ones_like().to_kind(Kind::Float);
    let mt = Tensor::from_slice(&[1.0f32, 1., 0.5, 1., 0.]).view([1, -1]);
    let (s0, v0) = m.loss_parts(&xi, &mi, &yi, &mt, None, false, None, 0.0);
    let (s1, v1) = m.loss_parts(&xi, &mi, &yi, &mt, None, false, None, 0.01);
    let encoded = m.encode_segments(&xi, &mi, None, false);
    let hidden = m.decode_segments(&m.shift_right(&yi, None), &encoded, &mi, None, false);
    let lse = m
        .logits(&hidden)
        .to_kind(Kind::Float)
        .logsumexp([-1], false);
    let z = 0.01 * (lse.square() * &mt).sum(Kind::Float).double_value(&[]);
    assert_eq!(s0.double_value(&[]), s1.double_value(&[]));
    let grew = v1.double_value(&[]) - v0.double_value(&[]);
    assert!(z > 0.0 && (grew - z).abs() <= 1e-5 * z, "{grew} vs {z}");
}
