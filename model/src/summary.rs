//! `conveyor model summary`: the layers, parameter counts and FLOPs per example of a model
//! configuration, computed from the shapes (nothing allocated). FLOPs count a multiply-add as
//! two operations; a training step costs about three forward passes.

use crate::config::{Arch, Ffn, ModelConfig};

/// Multiply-adds of one forward pass for an input of `inputs` and a target of `targets`
/// tokens.
pub fn forward_macs(cfg: &ModelConfig, inputs: usize, targets: usize) -> f64 {
    let (d, ff, v) = (cfg.d_model as f64, cfg.d_ff as f64, cfg.vocab_size as f64);
    // Attention projections are heads x d_kv wide (d_model unless d_kv is set).
    let a = cfg.attention_inner() as f64;
    let (l, t) = (inputs as f64, targets as f64);
    let mixer = |n: f64, layer: usize| -> f64 {
        match cfg.arch {
            Arch::Transformer => 4.0 * n * d * a + 2.0 * n * n * a,
            _ => {
                let k = match cfg.arch {
                    Arch::Dilatedconv => cfg.dilated_layer(layer).0,
                    _ => cfg.kernel_size,
                } as f64;
                let predict = if cfg.arch == Arch::Dynamicconv {
                    n * d * (cfg.conv_heads as f64) * k
                } else {
                    0.0
                };
                let pointwise = if cfg.conv_pointwise { n * d * d } else { 0.0 };
                2.0 * n * d * d + n * d * k + predict + pointwise + n * d * d
            }
        }
    };
    let ffn = |n: f64| match cfg.ffn {
        Ffn::Relu => 2.0 * n * d * ff,
        Ffn::GatedGelu => 3.0 * n * d * ff,
    };
    let enc: f64 = (0..cfg.encoder_layers).map(|i| mixer(l, i) + ffn(l)).sum();
    let cross = 2.0 * t * d * a + 2.0 * l * d * a + 2.0 * t * l * a;
    let dec: f64 = (0..cfg.decoder_layers)
        .map(|i| mixer(t, i) + cross + ffn(t))
        .sum();
    enc + dec + t * d * v
}

/// A readable summary.
pub fn describe(cfg: &ModelConfig, inputs: usize, targets: usize) -> String {
    let mut s = String::new();
    let p = cfg.parameter_count();
    let tables = if cfg.tie_embeddings { 1 } else { 2 };
    let emb = tables * cfg.vocab_size * cfg.d_model;
    s += &format!(
        "{} model: {} encoder + {} decoder layers, d_model {}, d_ff {} ({}), {} heads of {}, vocab {}\n",
        cfg.arch.name(),
        cfg.encoder_layers,
        cfg.decoder_layers,
        cfg.d_model,
        cfg.d_ff,
        cfg.ffn.name(),
        cfg.num_heads,
        cfg.d_kv(),
        cfg.vocab_size
    );
    match cfg.arch {
        Arch::Transformer => {
            s += &format!(
            "self-attention with a shared relative position bias ({} buckets, max distance {})\n",
            cfg.relative_buckets, cfg.relative_max_distance
        )
        }
        Arch::Lightconv | Arch::Dynamicconv => {
            s += &format!(
                "{} convolution: kernel {}, {} unique filters, DropConnect {}\n",
                if cfg.arch == Arch::Lightconv {
                    "lightweight"
                } else {
                    "dynamic"
                },
                cfg.kernel_size,
                cfg.conv_heads,
                cfg.weight_dropout
            )
        }
        Arch::Dilatedconv => {
            let layers: Vec<String> = (0..cfg.encoder_layers.max(cfg.decoder_layers))
                .map(|l| {
                    let (k, r) = cfg.dilated_layer(l);
                    format!("{k}x{r}")
                })
                .collect();
            s += &format!(
                "dilated depthwise convolution, kernel x dilation per layer: {}\n",
                layers.join(" ")
            )
        }
    }
    if cfg.conv_pointwise {
        s += "then a pointwise d_model x d_model map (conv_pointwise, the Mesh TensorFlow form)\n";
    }
    s += &format!(
        "parameters: {p} ({:.1} M): embedding {emb} ({}), the rest {}\n",
        p as f64 / 1e6,
        cfg.head(),
        p - emb
    );
    let f = 2.0 * forward_macs(cfg, inputs, targets);
    s += &format!(
        "FLOPs per example at {inputs} input / {targets} target tokens: {:.3} G forward, {:.3} G per training step\n",
        f / 1e9,
        3.0 * f / 1e9
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_flops_grow_linearly_and_attention_quadratically() {
        let t = ModelConfig::preset(Arch::Transformer, "base", 32_100).unwrap();
        let c = ModelConfig::preset(Arch::Lightconv, "base", 32_100).unwrap();
        // With the target length fixed, conv models cost an affine function of the input
        // length (zero second difference); attention adds a quadratic term.
        let second = |cfg: &ModelConfig| {
            let f = |l| forward_macs(cfg, l, 128);
            f(3072) - 2.0 * f(2048) + f(1024)
        };
        assert_eq!(second(&c), 0.0);
        assert!(second(&t) > 1e9);
        assert!(describe(&c, 512, 128).contains("parameters"));
        // The pointwise map costs d x d per position in every conv layer of both stacks.
        let mut p = c.clone();
        p.conv_pointwise = true;
        let d2 = (c.d_model * c.d_model) as f64;
        let extra = forward_macs(&p, 512, 128) - forward_macs(&c, 512, 128);
        assert_eq!(extra, 12.0 * 512.0 * d2 + 12.0 * 128.0 * d2);
        assert!(describe(&p, 512, 128).contains("pointwise"));
    }
}
