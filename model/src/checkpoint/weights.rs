//! A checkpoint's weights into a model, tensor by tensor: every variable of the model must
//! find a tensor of its own name and shape, and every tensor a variable (libtorch's loader
//! broadcast a [1, d] tensor over a [vocab, d] one, and skipped tensors the model had no
//! place for, so a checkpoint whose model_config.json was edited loaded as another model).
//! Half-precision or double weights are cast to the model's float32 (they became the
//! variables' own type: training went on in float16, or panicked in double).

use std::collections::BTreeMap;
use std::path::Path;

use tch::{nn, Kind, Tensor};

use super::{damaged, non_finite, verify, CheckpointError};

/// Checks the checkpoint ([`verify`]) and loads its weights into `vs` (whose model has the
/// checkpoint's config), refusing weights that are missing, of another shape, left over, not
/// floating point or not finite.
pub fn load_weights(ckpt: &Path, vs: &mut nn::VarStore) -> Result<(), CheckpointError> {
    verify(ckpt)?;
    let path = ckpt.join("model.safetensors");
    if !path.exists() {
        return Err(damaged(&path, "is missing".into()));
    }
    let refuse = |why: String| {
        damaged(
            &path,
            format!("cannot be read as this model's weights ({why})"),
        )
    };
    let mut held: BTreeMap<String, Tensor> = Tensor::read_safetensors(&path)
        .map_err(|e| {
            // libtorch's message, without the C++ stack trace it carries.
            let e = e.to_string();
            refuse(
                e.split("Exception raised from")
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            )
        })?
        .into_iter()
        .collect();
    let _guard = tch::no_grad_guard();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, mut var) in vars {
        let t = held.remove(&name).ok_or_else(|| {
            refuse(format!(
                "it has no tensor {name}, which the model of its model_config.json has"
            ))
        })?;
        match fits(&t, &var) {
            Err(Misfit::Shape) => {
                return Err(refuse(format!(
                    "{name} has shape {:?}, the model of its model_config.json {:?}",
                    t.size(),
                    var.size()
                )))
            }
            Err(Misfit::Kind) => {
                return Err(damaged(
                    &path,
                    format!(
                        "{name} holds {:?} values, not floating point weights",
                        t.kind()
                    ),
                ))
            }
            Ok(()) => {}
        }
        var.copy_(&t.to_kind(var.kind()));
    }
    if let Some(extra) = held.keys().next() {
        return Err(refuse(format!(
            "it holds {} tensor(s) the model of its model_config.json has no place for, {extra} first: a config edited since, or of another model",
            held.len()
        )));
    }
    match non_finite(vs) {
        Some(name) => Err(damaged(&path, format!("holds non-finite values in {name}"))),
        None => Ok(()),
    }
}

/// Why a tensor cannot fill a model's variable.
pub(crate) enum Misfit {
    /// Another shape (libtorch would broadcast some).
    Shape,
    /// Not floating point: integer tensors would be cast to floats of their bit patterns'
    /// values.
    Kind,
}

/// Whether `t` can fill `var`: the same shape, floating point values (of any precision: they
/// are cast to the variable's).
pub(crate) fn fits(t: &Tensor, var: &Tensor) -> Result<(), Misfit> {
    if t.size() != var.size() {
        return Err(Misfit::Shape);
    }
    match t.kind() {
        Kind::Float | Kind::Half | Kind::BFloat16 | Kind::Double => Ok(()),
        _ => Err(Misfit::Kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint folder holding `tensors` as its model.safetensors.
    fn folder(tag: &str, tensors: &[(&str, Tensor)]) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("conveyor-weights-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Tensor::write_safetensors(tensors, dir.join("model.safetensors")).unwrap();
        dir
    }

    fn model() -> nn::VarStore {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let root = vs.root();
        let _ = (&root / "shared").zeros("weight", &[4, 3]);
        let _ = (&root / "norm").zeros("weight", &[3]);
        vs
    }

    fn load(tag: &str, tensors: &[(&str, Tensor)]) -> (nn::VarStore, Result<(), String>) {
        let dir = folder(tag, tensors);
        let mut vs = model();
        let r = load_weights(&dir, &mut vs).map_err(|e| e.to_string());
        std::fs::remove_dir_all(&dir).unwrap();
        (vs, r)
    }

    fn weights() -> [(&'static str, Tensor); 2] {
        [
            (
                "shared.weight",
                Tensor::arange(12, (Kind::Float, tch::Device::Cpu)).reshape([4, 3]),
            ),
            ("norm.weight", Tensor::from_slice(&[1.0f32, 2.0, 3.0])),
        ]
    }

    #[test]
    fn exact_weights_load_and_half_or_double_ones_become_float32() {
        let [(_, shared), (_, norm)] = weights();
        for kind in [Kind::Float, Kind::Half, Kind::BFloat16, Kind::Double] {
            let t = [
                ("shared.weight", shared.to_kind(kind)),
                ("norm.weight", norm.to_kind(kind)),
            ];
            let (vs, r) = load(&format!("{kind:?}"), &t);
            r.unwrap();
            let v = vs.variables();
            assert_eq!(v["shared.weight"].kind(), Kind::Float, "{kind:?}");
            assert!(v["shared.weight"].equal(&shared), "{kind:?}");
            assert!(v["norm.weight"].equal(&norm), "{kind:?}");
        }
    }

    /// Each of these loaded before, as another model or in another precision.
    #[test]
    fn other_shapes_missing_or_left_over_tensors_and_integers_are_refused() {
        let [(_, shared), (_, norm)] = weights();
        type Case<'a> = (&'a str, Vec<(&'a str, Tensor)>, &'a str);
        let cases: Vec<Case> = vec![
            (
                "broadcast",
                vec![("shared.weight", shared.narrow(0, 0, 1)), ("norm.weight", norm.copy())],
                "shared.weight has shape [1, 3], the model of its model_config.json [4, 3]",
            ),
            (
                "extra",
                vec![
                    ("shared.weight", shared.copy()),
                    ("norm.weight", norm.copy()),
                    ("lm_head.weight", shared.copy()),
                ],
                "1 tensor(s) the model of its model_config.json has no place for, lm_head.weight first",
            ),
            (
                "missing",
                vec![("shared.weight", shared.copy())],
                "no tensor norm.weight",
            ),
            (
                "ints",
                vec![("shared.weight", shared.to_kind(Kind::Int)), ("norm.weight", norm.copy())],
                "not floating point weights",
            ),
        ];
        for (tag, tensors, want) in cases {
            let (_, r) = load(tag, &tensors);
            let e = r.unwrap_err();
            assert!(
                e.contains(want) && e.contains("model.safetensors"),
                "{tag}: {e}"
            );
        }
    }
}
