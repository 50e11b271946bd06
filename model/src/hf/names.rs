//! Tensor names: conveyor's transformer variables and transformers' `T5ForConditionalGeneration`
//! parameters, one to one (docs/formats.md lists both).

/// Names transformers writes that hold no tensor of their own: the stacks' embeddings are the
/// shared one; old checkpoints carry a cross-attention bias table transformers ignores too.
pub const TIED_COPIES: [&str; 2] = ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight"];
pub const IGNORED: [&str; 1] =
    ["decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"];

/// transformers' name of a conveyor transformer variable, or `None` for a name the T5
/// layout has no place for.
pub fn to_hf(name: &str) -> Option<String> {
    match name {
        "shared.weight" | "lm_head.weight" => return Some(name.into()),
        "encoder.final_norm.weight" => return Some("encoder.final_layer_norm.weight".into()),
        "decoder.final_norm.weight" => return Some("decoder.final_layer_norm.weight".into()),
        _ => {}
    }
    let (stack, rest) = name.split_once(".layers.")?;
    let decoder = match stack {
        "encoder" => false,
        "decoder" => true,
        _ => return None,
    };
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (sub, tail) = rest.split_once('.')?;
    let ffn = if decoder { 2 } else { 1 };
    let projection = matches!(tail, "q.weight" | "k.weight" | "v.weight" | "o.weight");
    let hf = match sub {
        "mixer" if projection || tail == "relative_attention_bias.weight" => {
            format!("layer.0.SelfAttention.{tail}")
        }
        "cross" if decoder && projection => format!("layer.1.EncDecAttention.{tail}"),
        "norm_mix" if tail == "weight" => "layer.0.layer_norm.weight".into(),
        "norm_cross" if decoder && tail == "weight" => "layer.1.layer_norm.weight".into(),
        "norm_ffn" if tail == "weight" => format!("layer.{ffn}.layer_norm.weight"),
        "ffn"
            if matches!(
                tail,
                "wi.weight" | "wi_0.weight" | "wi_1.weight" | "wo.weight"
            ) =>
        {
            format!("layer.{ffn}.DenseReluDense.{tail}")
        }
        _ => return None,
    };
    Some(format!("{stack}.block.{layer}.{hf}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_t5s_layout() {
        for (ours, theirs) in [
            ("shared.weight", "shared.weight"),
            (
                "encoder.layers.0.mixer.relative_attention_bias.weight",
                "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            ),
            (
                "encoder.layers.3.mixer.q.weight",
                "encoder.block.3.layer.0.SelfAttention.q.weight",
            ),
            (
                "encoder.layers.3.ffn.wi.weight",
                "encoder.block.3.layer.1.DenseReluDense.wi.weight",
            ),
            (
                "encoder.layers.1.norm_ffn.weight",
                "encoder.block.1.layer.1.layer_norm.weight",
            ),
            (
                "decoder.layers.2.cross.o.weight",
                "decoder.block.2.layer.1.EncDecAttention.o.weight",
            ),
            (
                "decoder.layers.2.norm_cross.weight",
                "decoder.block.2.layer.1.layer_norm.weight",
            ),
            (
                "decoder.layers.2.ffn.wi_1.weight",
                "decoder.block.2.layer.2.DenseReluDense.wi_1.weight",
            ),
            (
                "decoder.layers.0.norm_ffn.weight",
                "decoder.block.0.layer.2.layer_norm.weight",
            ),
            (
                "decoder.final_norm.weight",
                "decoder.final_layer_norm.weight",
            ),
        ] {
            assert_eq!(to_hf(ours).as_deref(), Some(theirs), "{ours}");
        }
        for none in [
            "encoder.layers.0.mixer.glu.weight",
            "encoder.layers.0.cross.q.weight",
            "encoder.position_embedding.weight",
            "encoder.layers.x.ffn.wi.weight",
        ] {
            assert_eq!(to_hf(none), None, "{none}");
        }
    }
}
