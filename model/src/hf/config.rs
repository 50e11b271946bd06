//! Hugging Face's T5 `config.json` and conveyor's [`ModelConfig`], both ways: what maps to
//! what, and the settings conveyor cannot represent, refused by name.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};
use tch::{Kind, Tensor};

use super::HfError;
use crate::config::{Arch, Ffn, ModelConfig, PositionEmbedding};

/// The `model_type` of folders conveyor writes for its convolutional architectures.
pub const CONVEYOR_MODEL_TYPE: &str = "conveyor";

/// Classes whose checkpoints hold a whole T5 encoder-decoder.
const T5_CLASSES: [&str; 4] = [
    "T5ForConditionalGeneration",
    "T5WithLMHeadModel",
    "T5Model",
    "MT5ForConditionalGeneration",
];

/// The conveyor configuration of a `config.json` (`path` names it in errors): a T5 or mT5
/// encoder-decoder, or a folder conveyor exported for a convolutional architecture.
pub fn from_hf(v: &Value, path: &Path) -> Result<ModelConfig, HfError> {
    let refuse = |m: String| HfError::Refused(format!("{}: {m}", path.display()));
    let model_type = v["model_type"].as_str().unwrap_or("");
    match model_type {
        "t5" | "mt5" => {}
        CONVEYOR_MODEL_TYPE => {
            let cfg: ModelConfig = serde_json::from_value(v["conveyor"].clone())
                .map_err(|e| refuse(format!("its `conveyor` settings do not read ({e})")))?;
            cfg.validate().map_err(|e| refuse(e.to_string()))?;
            if !cfg.arch.is_conv() {
                return Err(refuse(
                    "model_type conveyor is for convolutional models; a transformer is a t5 folder"
                        .into(),
                ));
            }
            return Ok(cfg);
        }
        "umt5" => return Err(refuse("model_type umt5 gives every layer its own relative attention bias; conveyor shares the first layer's, as T5 does".into())),
        "longt5" => return Err(refuse("model_type longt5 uses local and transient-global attention, which conveyor does not have".into())),
        other => return Err(refuse(format!("model_type {other:?} is not T5: conveyor imports t5 and mt5 checkpoints"))),
    }
    if let Some(classes) = v["architectures"].as_array() {
        for c in classes.iter().filter_map(Value::as_str) {
            if !T5_CLASSES.contains(&c) {
                return Err(refuse(format!(
                    "architecture {c} is not a T5 encoder-decoder (conveyor imports {})",
                    T5_CLASSES.join(", ")
                )));
            }
        }
    }
    if v["is_encoder_decoder"] == json!(false) {
        return Err(refuse("is_encoder_decoder is false".into()));
    }
    let num = |k: &str, default: Option<u64>| -> Result<usize, HfError> {
        match (&v[k], default) {
            (Value::Number(n), _) => n
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| refuse(format!("{k} is {n}, not a count"))),
            (Value::Null, Some(d)) => Ok(d as usize),
            (other, _) => Err(refuse(format!("{k} is {other}, expected a count"))),
        }
    };
    // A number, or absent for the class's default (a string was taken for that default).
    let real = |k: &str, default: f64| -> Result<f64, HfError> {
        match &v[k] {
            Value::Number(n) => Ok(n.as_f64().unwrap_or(f64::NAN)),
            Value::Null => Ok(default),
            other => Err(refuse(format!("{k} is {other}, expected a number"))),
        }
    };
    let eps = real("layer_norm_epsilon", 1e-6)?;
    if (eps - 1e-6).abs() > 1e-12 {
        return Err(refuse(format!(
            "layer_norm_epsilon {eps}: conveyor's RMS norm uses T5's 1e-6"
        )));
    }
    // mT5's config class defaults to T5 v1.1's choices; T5's to v1.0's.
    let mt5 = model_type == "mt5";
    let ffn = ffn(v, if mt5 { "gated-gelu" } else { "relu" }).map_err(refuse)?;
    let eos = num("eos_token_id", Some(1))?;
    if eos != 1 {
        return Err(refuse(format!(
            "eos_token_id {eos}: conveyor's vocabularies end sequences with id 1"
        )));
    }
    let layers = num("num_layers", None)?;
    let (d_model, num_heads, d_kv) = (
        num("d_model", None)?,
        num("num_heads", None)?,
        num("d_kv", None)?,
    );
    let mut cfg = ModelConfig::preset(Arch::Transformer, "tiny", num("vocab_size", None)?)
        .expect("the tiny preset exists");
    cfg.d_model = d_model;
    cfg.d_ff = num("d_ff", None)?;
    cfg.num_heads = num_heads;
    cfg.d_kv = (d_kv * num_heads != d_model).then_some(d_kv);
    cfg.encoder_layers = layers;
    cfg.decoder_layers = num("num_decoder_layers", Some(layers as u64))?;
    cfg.relative_buckets = num("relative_attention_num_buckets", Some(32))?;
    cfg.relative_max_distance = num("relative_attention_max_distance", Some(128))?;
    cfg.dropout = real("dropout_rate", 0.1)?;
    cfg.decoder_start_id = num("decoder_start_token_id", Some(0))? as i64;
    cfg.pad_id = num("pad_token_id", Some(0))? as i64;
    cfg.ffn = ffn;
    cfg.tie_embeddings = v["tie_word_embeddings"].as_bool().unwrap_or(!mt5);
    if let Some(scale) = transformers5_scaling(v).map_err(refuse)? {
        cfg.set_head(cfg.tie_embeddings, scale);
    }
    cfg.validate().map_err(|e| refuse(e.to_string()))?;
    Ok(cfg)
}

/// Whether the logits are scaled, for a config transformers 5 wrote (`None` for one of
/// transformers 4, where tied means scaled). transformers 5 says it apart from the tying: in
/// `scale_decoder_outputs` for T5, and its mT5 never scales; it writes
/// `tie_word_embeddings: true` for both (see [`separate_head`]).
fn transformers5_scaling(v: &Value) -> Result<Option<bool>, String> {
    match &v["scale_decoder_outputs"] {
        Value::Bool(scale) => return Ok(Some(*scale)),
        Value::Null => {}
        other => {
            return Err(format!(
                "scale_decoder_outputs is {other}, expected true or false"
            ))
        }
    }
    let major = v["transformers_version"]
        .as_str()
        .and_then(|s| s.split('.').next()?.parse::<u32>().ok());
    Ok((v["model_type"] == "mt5" && major.is_some_and(|m| m >= 5)).then_some(false))
}

/// transformers 5 writes `tie_word_embeddings: true` for every T5 and mT5 it saves (its
/// models tie the head unless the weight files hold an `lm_head.weight` of their own, whose
/// values then win): in its configs, a head in the files that is not the embedding is a
/// separate head. Configs of transformers 4 keep their meaning (tied: the head is the
/// embedding; another head there is refused when the weights are filled).
pub(super) fn separate_head(v: &Value, cfg: &mut ModelConfig, weights: &BTreeMap<String, Tensor>) {
    if !matches!(transformers5_scaling(v), Ok(Some(_))) || !cfg.tie_embeddings {
        return;
    }
    let differs = match (weights.get("lm_head.weight"), weights.get("shared.weight")) {
        (Some(head), Some(shared)) => {
            head.size() != shared.size()
                || !head
                    .to_kind(Kind::Float)
                    .equal(&shared.to_kind(Kind::Float))
        }
        _ => false,
    };
    if differs {
        cfg.set_head(false, cfg.scaled_logits());
    }
}

/// T5's config says "tied" for a head that is the embedding and logits scaled by
/// d_model^-0.5, and "not tied" for a separate head and unscaled logits (transformers 4 has
/// no other way to say it). A model of the other two kinds exports as an untied T5 giving
/// the same logits: the embedding copied into `lm_head.weight` (tied, unscaled; transformers
/// 4 trains the two apart, 5 ties an equal copy back), or the separate head times
/// d_model^-0.5 (untied, scaled).
pub(super) fn t5_head(cfg: &ModelConfig, tensors: &mut Vec<(String, Tensor)>) {
    let find = |tensors: &[(String, Tensor)], name: &str| {
        tensors
            .iter()
            .position(|(n, _)| n == name)
            .expect("a T5 model has this tensor")
    };
    match (cfg.tie_embeddings, cfg.scaled_logits()) {
        (true, false) => {
            let shared = tensors[find(tensors, "shared.weight")].1.copy();
            tensors.push(("lm_head.weight".into(), shared));
        }
        (false, true) => {
            let i = find(tensors, "lm_head.weight");
            tensors[i].1 = &tensors[i].1 * (cfg.d_model as f64).powf(-0.5);
        }
        _ => {}
    }
}

/// Whether an exported T5 config says "tied": only for T5's own tied kind (see [`t5_head`]).
fn t5_tied(cfg: &ModelConfig) -> bool {
    cfg.tie_embeddings && cfg.scaled_logits()
}

/// The feed-forward of a T5 config: `feed_forward_proj`, checked against `dense_act_fn` and
/// `is_gated_act` where the file has them (transformers writes both and reads them back over
/// what `feed_forward_proj` implies).
fn ffn(v: &Value, default: &str) -> Result<Ffn, String> {
    let proj = v["feed_forward_proj"].as_str().unwrap_or(default);
    let ffn = match proj {
        "relu" => Ffn::Relu,
        "gated-gelu" => Ffn::GatedGelu,
        other => {
            return Err(format!(
                "feed_forward_proj {other:?}: conveyor has \"relu\" (T5 v1.0) and \"gated-gelu\" (T5 v1.1, flan-T5)"
            ))
        }
    };
    let (act, gated) = match ffn {
        Ffn::Relu => ("relu", false),
        Ffn::GatedGelu => ("gelu_new", true),
    };
    if let Some(a) = v["dense_act_fn"].as_str().filter(|a| *a != act) {
        return Err(format!(
            "dense_act_fn {a:?} with feed_forward_proj {proj:?}: conveyor's {proj} uses {act}"
        ));
    }
    if let Some(g) = v["is_gated_act"].as_bool().filter(|g| *g != gated) {
        return Err(format!(
            "is_gated_act {g} with feed_forward_proj {proj:?}: conveyor's {proj} is {}gated",
            if gated { "" } else { "not " }
        ));
    }
    Ok(ffn)
}

/// The `config.json` of an exported model: transformers' T5 for the transformer, conveyor's
/// own settings (with `architectures = ["Conveyor...ForConditionalGeneration"]`) for the
/// convolutional models. Refuses what a T5 config cannot say.
pub fn to_hf(cfg: &ModelConfig) -> Result<Value, HfError> {
    if cfg.arch.is_conv() {
        let class = match cfg.arch {
            Arch::Lightconv => "ConveyorLightconvForConditionalGeneration",
            Arch::Dynamicconv => "ConveyorDynamicconvForConditionalGeneration",
            Arch::Dilatedconv => "ConveyorDilatedconvForConditionalGeneration",
            Arch::Transformer => unreachable!(),
        };
        return Ok(json!({
            "architectures": [class],
            "model_type": CONVEYOR_MODEL_TYPE,
            "is_encoder_decoder": true,
            "vocab_size": cfg.vocab_size,
            "d_model": cfg.d_model,
            "tie_word_embeddings": cfg.tie_embeddings,
            "decoder_start_token_id": cfg.decoder_start_id,
            "pad_token_id": cfg.pad_id,
            "eos_token_id": 1,
            "conveyor": cfg,
        }));
    }
    if cfg.position_embedding != PositionEmbedding::None {
        return Err(HfError::Refused(
            "this transformer has learned absolute positions, which transformers' T5 has no place for: only position_embedding none exports as T5".into(),
        ));
    }
    Ok(json!({
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "is_encoder_decoder": true,
        "vocab_size": cfg.vocab_size,
        "d_model": cfg.d_model,
        "d_kv": cfg.d_kv(),
        "d_ff": cfg.d_ff,
        "num_heads": cfg.num_heads,
        "num_layers": cfg.encoder_layers,
        "num_decoder_layers": cfg.decoder_layers,
        "relative_attention_num_buckets": cfg.relative_buckets,
        "relative_attention_max_distance": cfg.relative_max_distance,
        "dropout_rate": cfg.dropout,
        "layer_norm_epsilon": 1e-6,
        "initializer_factor": 1.0,
        "feed_forward_proj": cfg.ffn.name(),
        "tie_word_embeddings": t5_tied(cfg),
        "decoder_start_token_id": cfg.decoder_start_id,
        "pad_token_id": cfg.pad_id,
        "eos_token_id": 1,
        "use_cache": true,
        "torch_dtype": "float32",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t5_v1_1_small() -> Value {
        json!({
            "architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
            "d_ff": 1024, "d_kv": 64, "d_model": 512, "num_heads": 6, "num_layers": 8,
            "num_decoder_layers": 8, "vocab_size": 32128, "dropout_rate": 0.1,
            "feed_forward_proj": "gated-gelu", "tie_word_embeddings": false,
            "relative_attention_num_buckets": 32, "layer_norm_epsilon": 1e-6,
            "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1
        })
    }

    #[test]
    fn t5_configs_map_both_ways() {
        let p = Path::new("config.json");
        let cfg = from_hf(&t5_v1_1_small(), p).unwrap();
        assert_eq!(cfg.d_kv(), 64);
        // 6 heads of 64 is 384 wide, not d_model 512: d_kv is kept.
        assert_eq!(cfg.d_kv, Some(64));
        assert_eq!((cfg.ffn, cfg.tie_embeddings), (Ffn::GatedGelu, false));
        assert_eq!(cfg.relative_max_distance, 128);
        let back = to_hf(&cfg).unwrap();
        for k in [
            "d_ff",
            "d_kv",
            "d_model",
            "num_heads",
            "num_layers",
            "vocab_size",
        ] {
            assert_eq!(back[k], t5_v1_1_small()[k], "{k}");
        }
        assert_eq!(from_hf(&back, p).unwrap(), cfg);
    }

    /// transformers 5's form: `tie_word_embeddings` always true, the scaling said apart, and
    /// the head separate where the files hold one of its own.
    #[test]
    fn transformers_5_configs_say_the_scaling_apart() {
        let p = Path::new("config.json");
        let kind = |tie: bool, scale: Option<bool>, head: Option<f64>| {
            let mut v = t5_v1_1_small();
            v["tie_word_embeddings"] = json!(tie);
            if let Some(s) = scale {
                v["scale_decoder_outputs"] = json!(s);
            }
            let mut cfg = from_hf(&v, p).unwrap();
            let mut weights = BTreeMap::new();
            weights.insert(
                "shared.weight".to_string(),
                Tensor::ones([3, 2], (Kind::Float, tch::Device::Cpu)),
            );
            if let Some(h) = head {
                weights.insert(
                    "lm_head.weight".to_string(),
                    Tensor::full([3, 2], h, (Kind::Float, tch::Device::Cpu)),
                );
            }
            separate_head(&v, &mut cfg, &weights);
            (cfg.tie_embeddings, cfg.scaled_logits(), cfg.scale_logits)
        };
        // transformers 4: tied means scaled, whatever the files hold.
        assert_eq!(kind(true, None, Some(2.0)), (true, true, None));
        assert_eq!(kind(false, None, Some(2.0)), (false, false, None));
        // transformers 5: v1.0, v1.1 made there (no head of its own), v1.1 saved again there.
        assert_eq!(kind(true, Some(true), None), (true, true, None));
        assert_eq!(kind(true, Some(false), None), (true, false, Some(false)));
        assert_eq!(
            kind(true, Some(false), Some(1.0)),
            (true, false, Some(false))
        );
        assert_eq!(kind(true, Some(false), Some(2.0)), (false, false, None));
        assert_eq!(kind(true, Some(true), Some(2.0)), (false, true, Some(true)));
        // mT5 of transformers 5: never scaled; tied unless the files hold their own head.
        let mt5 = |version: &str, head: Option<f64>| {
            let mut v = t5_v1_1_small();
            v["model_type"] = json!("mt5");
            v["tie_word_embeddings"] = json!(true);
            v["transformers_version"] = json!(version);
            let mut cfg = from_hf(&v, p).unwrap();
            let mut weights = BTreeMap::new();
            let t = |x: f64| Tensor::full([3, 2], x, (Kind::Float, tch::Device::Cpu));
            weights.insert("shared.weight".to_string(), t(1.0));
            if let Some(h) = head {
                weights.insert("lm_head.weight".to_string(), t(h));
            }
            separate_head(&v, &mut cfg, &weights);
            (cfg.tie_embeddings, cfg.scaled_logits())
        };
        assert_eq!(mt5("5.17.0", None), (true, false));
        assert_eq!(mt5("5.17.0", Some(2.0)), (false, false));
        assert_eq!(mt5("4.57.6", None), (true, true));
        let mut v = t5_v1_1_small();
        v["scale_decoder_outputs"] = json!("no");
        let e = from_hf(&v, p).unwrap_err().to_string();
        assert!(e.contains("scale_decoder_outputs"), "{e}");
    }

    #[test]
    fn what_conveyor_cannot_represent_is_refused_by_name() {
        let p = Path::new("config.json");
        for (key, value, says) in [
            ("feed_forward_proj", json!("gated-silu"), "gated-silu"),
            ("model_type", json!("umt5"), "umt5"),
            ("model_type", json!("bart"), "bart"),
            ("layer_norm_epsilon", json!(1e-5), "layer_norm_epsilon"),
            (
                "layer_norm_epsilon",
                json!("1e-6"),
                "layer_norm_epsilon is \"1e-6\", expected a number",
            ),
            (
                "dropout_rate",
                json!("0.1"),
                "dropout_rate is \"0.1\", expected a number",
            ),
            ("architectures", json!(["T5EncoderModel"]), "T5EncoderModel"),
            ("eos_token_id", json!(2), "eos_token_id"),
            ("dense_act_fn", json!("gelu"), "dense_act_fn"),
            ("is_gated_act", json!(false), "is_gated_act"),
        ] {
            let mut v = t5_v1_1_small();
            v[key] = value;
            let e = from_hf(&v, p).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("config.json"), "{e}");
        }
        // mT5 configs default to the gated GELU and an lm_head of its own.
        let mut mt5 = t5_v1_1_small();
        let m = mt5.as_object_mut().unwrap();
        for k in ["feed_forward_proj", "tie_word_embeddings", "architectures"] {
            m.remove(k);
        }
        mt5["model_type"] = json!("mt5");
        let c = from_hf(&mt5, p).unwrap();
        assert_eq!((c.ffn, c.tie_embeddings), (Ffn::GatedGelu, false));
        let mut v = to_hf(&ModelConfig::preset(Arch::Lightconv, "tiny", 100).unwrap()).unwrap();
        v["conveyor"]["arch"] = json!("transformer");
        assert!(from_hf(&v, p)
            .unwrap_err()
            .to_string()
            .contains("t5 folder"));
        let mut conv = ModelConfig::preset(Arch::Transformer, "tiny", 100).unwrap();
        conv.position_embedding = PositionEmbedding::Learned;
        assert!(to_hf(&conv).is_err());
    }

    #[test]
    fn conv_models_export_their_own_settings_and_read_back() {
        let cfg = ModelConfig::preset(Arch::Dynamicconv, "tiny", 100).unwrap();
        let v = to_hf(&cfg).unwrap();
        assert_eq!(
            v["architectures"][0],
            "ConveyorDynamicconvForConditionalGeneration"
        );
        assert_eq!(from_hf(&v, Path::new("c")).unwrap(), cfg);
    }
}
