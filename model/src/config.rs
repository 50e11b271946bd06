//! Model configuration: the architecture, its shapes, presets (`tiny`, `small`, `base`),
//! overrides from a JSON or TOML file, validation with messages that say what is wrong, and the
//! parameter count computed from the shapes alone (no tensors allocated).

use serde::{Deserialize, Serialize};

/// The most layers a stack may have.
const MAX_LAYERS: usize = 4096;
/// The most parameters a model may have (2^40, ~1.1 trillion).
const MAX_PARAMETERS: usize = 1 << 40;
/// The largest relative distance, kernel size or dilation a config may name (far past any
/// real model; far inside libtorch's 64-bit indices).
const MAX_DISTANCE: usize = 1 << 24;

/// Which mixing sublayer the encoder and decoder use in place of self-attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// The T5 baseline: self-attention with a shared relative position bias.
    Transformer,
    /// Lightweight convolution: softmax-normalised kernels, H filters shared across channel
    /// groups, DropConnect on the kernel.
    Lightconv,
    /// Dynamic convolution: per-position kernels predicted from the block input.
    Dynamicconv,
    /// Depthwise convolution with dilation, kernel size per layer.
    Dilatedconv,
}

impl Arch {
    pub const ALL: [Arch; 4] = [
        Arch::Transformer,
        Arch::Lightconv,
        Arch::Dynamicconv,
        Arch::Dilatedconv,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Arch::Transformer => "transformer",
            Arch::Lightconv => "lightconv",
            Arch::Dynamicconv => "dynamicconv",
            Arch::Dilatedconv => "dilatedconv",
        }
    }

    pub fn parse(s: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.name() == s)
    }

    pub fn is_conv(self) -> bool {
        self != Arch::Transformer
    }
}

/// Absolute position embeddings added to the token embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionEmbedding {
    /// No absolute positions: the transformer's relative bias is its only position signal,
    /// and a conv model only has the order its kernels see.
    #[default]
    None,
    /// One learned table of `max_positions` rows per stack (encoder, decoder), as the
    /// paper's Mesh TensorFlow code gives its convolutional models.
    Learned,
}

/// The feed-forward sublayer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Ffn {
    /// T5 v1.0: `wo(relu(wi(x)))`.
    #[default]
    #[serde(rename = "relu")]
    Relu,
    /// T5 v1.1 and flan-T5: `wo(gelu_tanh(wi_0(x)) * wi_1(x))`, the tanh approximation of
    /// GELU (transformers' `gelu_new`).
    #[serde(rename = "gated-gelu")]
    GatedGelu,
}

impl Ffn {
    pub fn name(self) -> &'static str {
        match self {
            Ffn::Relu => "relu",
            Ffn::GatedGelu => "gated-gelu",
        }
    }
}

/// How attention is computed (the same function either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AttentionImpl {
    /// Scores, bias and masks as a (batch, heads, q, k) float32 tensor, softmax, weights
    /// times values: every score matrix is materialised.
    #[default]
    #[serde(rename = "explicit")]
    Explicit,
    /// libtorch's `scaled_dot_product_attention` with the relative position bias and masks
    /// as one additive mask and no 1/sqrt(d_kv) scaling: on a GPU it may pick a
    /// memory-efficient kernel that never holds the whole score matrix.
    #[serde(rename = "sdpa")]
    Sdpa,
}

impl AttentionImpl {
    pub fn is_default(&self) -> bool {
        *self == AttentionImpl::Explicit
    }
}

/// The paper's dilated-convolution filter sizes: 11 values for 12 layers. conveyor repeats the
/// last value for the 12th layer (the paper does not say how it is set).
pub const PAPER_DILATED_KERNELS: [usize; 11] = [4, 4, 7, 7, 15, 15, 15, 15, 31, 31, 31];

/// Every shape and setting of a model. Serialised as the model config JSON of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub arch: Arch,
    /// Ids the embedding holds: SentencePiece pieces + extra ids (sentinels).
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_ff: usize,
    pub num_heads: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    /// Kernel size of every conv layer (lightconv, dynamicconv).
    pub kernel_size: usize,
    /// Unique filters H of lightweight and dynamic convolutions.
    pub conv_heads: usize,
    /// Per-layer kernel sizes of the dilated convolution (one per layer; a shorter list
    /// repeats its last value).
    pub dilated_kernels: Vec<usize>,
    /// Per-layer dilation rates of the dilated convolution (a shorter list repeats its last).
    pub dilations: Vec<usize>,
    /// Dropout on sublayer outputs and embeddings.
    pub dropout: f64,
    /// DropConnect rate on lightweight/dynamic kernels.
    pub weight_dropout: f64,
    pub relative_buckets: usize,
    pub relative_max_distance: usize,
    pub decoder_start_id: i64,
    pub pad_id: i64,
    /// Absolute position embeddings (configs written before the field existed: none).
    #[serde(default)]
    pub position_embedding: PositionEmbedding,
    /// Rows of each learned position table: the longest inputs and targets the model takes.
    #[serde(default = "default_max_positions")]
    pub max_positions: usize,
    /// The feed-forward sublayer of every layer (configs written before the field: relu).
    #[serde(default)]
    pub ffn: Ffn,
    /// Logits from the token embedding, scaled by d_model^-0.5 (T5 v1.0), or from a separate
    /// `lm_head` without scaling (T5 v1.1); `scale_logits` says otherwise where it is set.
    #[serde(default = "yes")]
    pub tie_embeddings: bool,
    /// Whether the logits are scaled by d_model^-0.5, where that differs from what
    /// `tie_embeddings` implies (`None`: scaled exactly when tied). transformers 5 keeps the
    /// two apart (`scale_decoder_outputs`): a T5 v1.1 model it makes is tied and unscaled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_logits: Option<bool>,
    /// Width of each attention head; `None`: d_model / num_heads. t5-3b and t5-11b use 128
    /// with d_model 1024 (32 and 128 heads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d_kv: Option<usize>,
    /// How attention is computed: `explicit` or `sdpa` (not a property of the weights: a
    /// checkpoint loads into either).
    #[serde(default, skip_serializing_if = "AttentionImpl::is_default")]
    pub attention: AttentionImpl,
    /// A pointwise d x d map (with bias) after the depthwise convolution, before the conv
    /// block's output projection, as the separable convolution of the public Mesh
    /// TensorFlow block has (with `conv_heads = d_model`, its per-channel kernels too).
    /// The paper's text has none; configs without the field: none.
    #[serde(default, skip_serializing_if = "no")]
    pub conv_pointwise: bool,
}

fn yes() -> bool {
    true
}

fn no(b: &bool) -> bool {
    !*b
}

fn default_max_positions() -> usize {
    512
}

/// Why a configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown preset {0:?}: use tiny, small or base")]
    Preset(String),
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("impossible model shape: {0}")]
    Shape(String),
}

impl ModelConfig {
    /// A preset for `arch`: `tiny` (CPU-fast, tests and the demo), `small`, `base` (the
    /// paper's 12+12 layers, d_model 768, d_ff 3072, 12 heads, kernel 7, H = 2).
    pub fn preset(arch: Arch, preset: &str, vocab_size: usize) -> Result<Self, ConfigError> {
        let (d, ff, heads, layers) = match preset {
            "tiny" => (64, 128, 4, 2),
            "small" => (512, 2048, 8, 6),
            "base" => (768, 3072, 12, 12),
            other => return Err(ConfigError::Preset(other.into())),
        };
        Ok(Self {
            arch,
            vocab_size,
            d_model: d,
            d_ff: ff,
            num_heads: heads,
            encoder_layers: layers,
            decoder_layers: layers,
            kernel_size: 7,
            conv_heads: 2,
            dilated_kernels: PAPER_DILATED_KERNELS.to_vec(),
            dilations: vec![2],
            dropout: 0.1,
            weight_dropout: 0.1,
            relative_buckets: 32,
            relative_max_distance: 128,
            decoder_start_id: 0,
            pad_id: 0,
            position_embedding: if arch.is_conv() {
                PositionEmbedding::Learned
            } else {
                PositionEmbedding::None
            },
            max_positions: default_max_positions(),
            ffn: Ffn::Relu,
            tie_embeddings: true,
            scale_logits: None,
            d_kv: None,
            attention: AttentionImpl::Explicit,
            conv_pointwise: false,
        })
    }

    /// Whether the logits are scaled by d_model^-0.5 (T5 v1.0; not v1.1).
    pub fn scaled_logits(&self) -> bool {
        self.scale_logits.unwrap_or(self.tie_embeddings)
    }

    /// Sets the head: tied to the embedding or not, logits scaled or not (`scale_logits`
    /// only where it says something `tie_embeddings` does not).
    pub fn set_head(&mut self, tie: bool, scaled: bool) {
        self.tie_embeddings = tie;
        self.scale_logits = (scaled != tie).then_some(scaled);
    }

    /// Where the logits come from, in words: "tied", "with a separate lm_head", and the
    /// scaling where it is not the usual one for either.
    pub fn head(&self) -> &'static str {
        match (self.tie_embeddings, self.scaled_logits()) {
            (true, true) => "tied",
            (true, false) => "tied, logits not scaled",
            (false, false) => "with a separate lm_head",
            (false, true) => "with a separate lm_head, logits scaled by d_model^-0.5",
        }
    }

    /// Whether weights saved with the config `other` load into this one: every field agrees
    /// but `attention` (how attention is computed) and the dropout rates (T5 v1.1 pre-trains
    /// without dropout and fine-tunes with 0.1), none of them a property of the weights, and
    /// `scale_logits` where one of them only repeats what its head implies.
    pub fn same_weights(&self, other: &ModelConfig) -> bool {
        let mut o = other.clone();
        o.attention = self.attention;
        o.dropout = self.dropout;
        o.weight_dropout = self.weight_dropout;
        o.normalized() == self.clone().normalized()
    }

    /// The same model with `scale_logits` only where it says something `tie_embeddings`
    /// does not (a `--config` patch can set it to what the head implies anyway).
    fn normalized(mut self) -> Self {
        self.set_head(self.tie_embeddings, self.scaled_logits());
        self
    }

    /// Applies the fields of a JSON or TOML object (by the file's extension) on top.
    pub fn with_overrides(self, path: &std::path::Path) -> Result<Self, ConfigError> {
        let fail = |message: String| ConfigError::File {
            path: path.display().to_string(),
            message,
        };
        let text = conveyor_pipeline::regular::read_to_string(
            path,
            conveyor_pipeline::regular::MAX_JSON_BYTES,
        )
        .map_err(|e| fail(e.to_string()))?;
        let patch: serde_json::Value = if path.extension().is_some_and(|e| e == "toml") {
            let t: toml::Table = toml::from_str(&text).map_err(|e| fail(e.to_string()))?;
            serde_json::to_value(t).map_err(|e| fail(e.to_string()))?
        } else {
            serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?
        };
        let serde_json::Value::Object(patch) = patch else {
            return Err(fail("expected an object of config fields".into()));
        };
        let mut base = serde_json::to_value(&self).expect("config serialises");
        for (k, v) in patch {
            base[k.as_str()] = v;
        }
        let cfg: Self = serde_json::from_value(base).map_err(|e| fail(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Refuses shapes that cannot work (or that no machine could hold).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Shape(m));
        if self.vocab_size == 0 || self.d_model == 0 || self.d_ff == 0 || self.num_heads == 0 {
            return bad("vocab_size, d_model, d_ff and num_heads must be positive".into());
        }
        match self.d_kv {
            Some(0) => return bad("d_kv must be positive".into()),
            Some(_) => {}
            None if !self.d_model.is_multiple_of(self.num_heads) => {
                return bad(format!(
                    "d_model {} is not divisible by num_heads {} (or give d_kv)",
                    self.d_model, self.num_heads
                ))
            }
            None => {}
        }
        if self.encoder_layers == 0 || self.decoder_layers == 0 {
            return bad("encoder_layers and decoder_layers must be positive".into());
        }
        // Bounds far past any real model, so that an edited file cannot ask for a trillion
        // layers (a hang or an abort) instead of being refused.
        if self.encoder_layers.max(self.decoder_layers) > MAX_LAYERS {
            return bad(format!("more than {MAX_LAYERS} layers"));
        }
        // Before the count, which reads the convolutions' lists.
        if matches!(self.arch, Arch::Lightconv | Arch::Dynamicconv) {
            if self.conv_heads == 0 || !self.d_model.is_multiple_of(self.conv_heads) {
                return bad(format!(
                    "d_model {} is not divisible by conv_heads {}",
                    self.d_model, self.conv_heads
                ));
            }
            if self.kernel_size == 0 {
                return bad("kernel_size must be positive".into());
            }
        }
        if self.conv_pointwise && !self.arch.is_conv() {
            return bad(
                "conv_pointwise is a setting of the convolution block, which a transformer does not have"
                    .into(),
            );
        }
        if self.arch == Arch::Dilatedconv
            && (self.dilated_kernels.is_empty()
                || self.dilations.is_empty()
                || self.dilated_kernels.contains(&0)
                || self.dilations.contains(&0))
        {
            return bad("dilated_kernels and dilations need positive values".into());
        }
        if self.parameter_count() > MAX_PARAMETERS {
            return bad(format!(
                "{} parameters, over {MAX_PARAMETERS}: check the sizes",
                self.parameter_count()
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) || !(0.0..1.0).contains(&self.weight_dropout) {
            return bad("dropout rates must be in [0, 1)".into());
        }
        if self.relative_buckets < 4 || self.relative_max_distance < self.relative_buckets {
            return bad("relative_buckets must be >= 4 and <= relative_max_distance".into());
        }
        // Distances and ids go to libtorch as 64-bit integers and index tables: a value past
        // them is refused here, not a panic inside a forward pass.
        if self.relative_max_distance > MAX_DISTANCE {
            return bad(format!(
                "relative_max_distance {} is over {MAX_DISTANCE}",
                self.relative_max_distance
            ));
        }
        if self.kernel_size > MAX_DISTANCE || self.dilations.iter().any(|&d| d > MAX_DISTANCE) {
            return bad(format!(
                "kernel sizes and dilations must be at most {MAX_DISTANCE}"
            ));
        }
        for (name, id) in [
            ("decoder_start_id", self.decoder_start_id),
            ("pad_id", self.pad_id),
        ] {
            if id < 0 || id as u64 >= self.vocab_size as u64 {
                return bad(format!(
                    "{name} {id} is not an id of the vocabulary of {}",
                    self.vocab_size
                ));
            }
        }
        if self.position_embedding == PositionEmbedding::Learned && self.max_positions == 0 {
            return bad("max_positions must be positive with learned position embeddings".into());
        }
        Ok(())
    }

    /// Whether data of `ids` ids (pieces + extra ids) fits this model's embedding: the same
    /// count, or the count padded up to a multiple of 128 as Google's T5 checkpoints are
    /// (32,100 ids in 32,128 rows); other differences mean another vocabulary.
    pub fn takes_vocab(&self, ids: usize) -> bool {
        self.vocab_size == ids
            || (self.vocab_size > ids && self.vocab_size == ids.next_multiple_of(128))
    }

    /// The longest inputs or targets this model can take (`None`: any length).
    pub fn max_length(&self) -> Option<usize> {
        (self.position_embedding == PositionEmbedding::Learned).then_some(self.max_positions)
    }

    /// Width of each attention head.
    pub fn d_kv(&self) -> usize {
        self.d_kv.unwrap_or(self.d_model / self.num_heads)
    }

    /// Width of the attention's projections: heads x d_kv.
    pub fn attention_inner(&self) -> usize {
        self.num_heads * self.d_kv()
    }

    /// (kernel size, dilation) of dilated layer `layer`.
    pub fn dilated_layer(&self, layer: usize) -> (usize, usize) {
        let pick = |v: &[usize]| v[layer.min(v.len() - 1)];
        (pick(&self.dilated_kernels), pick(&self.dilations))
    }

    /// Parameters of the mixing sublayer (self-attention or convolution block) of one layer.
    fn mixer_params(&self, layer: usize) -> f64 {
        let d = self.d_model as f64;
        match self.arch {
            Arch::Transformer => 4.0 * d * self.num_heads as f64 * self.d_kv() as f64,
            _ => {
                // GLU input projection (d -> 2d, bias), output projection (d -> d, bias).
                let glu = 2.0 * d * d + 2.0 * d;
                let out = d * d + d;
                let (heads, k) = (self.conv_heads as f64, self.kernel_size as f64);
                let conv = match self.arch {
                    Arch::Lightconv => heads * k,
                    Arch::Dynamicconv => d * heads * k + heads * k,
                    Arch::Dilatedconv => d * self.dilated_layer(layer).0 as f64 + d,
                    Arch::Transformer => unreachable!(),
                };
                let pointwise = if self.conv_pointwise { d * d + d } else { 0.0 };
                glu + conv + pointwise + out
            }
        }
    }

    /// The number of trainable parameters, from the shapes alone. Counted in f64, exact
    /// below 2^53 (any real model); a config whose count is beyond usize, as a hostile
    /// one's may be, reads as usize::MAX instead of wrapping around to a small number.
    pub fn parameter_count(&self) -> usize {
        // Past a million layers (no model has them) the sum is not even walked.
        if self.encoder_layers.max(self.decoder_layers) > 1 << 20 {
            return usize::MAX;
        }
        let d = self.d_model as f64;
        let d_ff = self.d_ff as f64;
        let ffn = match self.ffn {
            Ffn::Relu => 2.0 * d * d_ff,
            Ffn::GatedGelu => 3.0 * d * d_ff,
        };
        let attn = 4.0 * d * self.num_heads as f64 * self.d_kv() as f64;
        let norm = d;
        let rel = if self.arch == Arch::Transformer {
            2.0 * self.relative_buckets as f64 * self.num_heads as f64
        } else {
            0.0
        };
        let enc: f64 = (0..self.encoder_layers)
            .map(|l| self.mixer_params(l) + ffn + 2.0 * norm)
            .sum();
        let dec: f64 = (0..self.decoder_layers)
            .map(|l| self.mixer_params(l) + attn + ffn + 3.0 * norm)
            .sum();
        let positions = match self.position_embedding {
            PositionEmbedding::Learned => 2.0 * self.max_positions as f64 * d,
            PositionEmbedding::None => 0.0,
        };
        let heads = if self.tie_embeddings { 1.0 } else { 2.0 };
        let embeddings = heads * self.vocab_size as f64 * d;
        // `as` saturates: a count past usize::MAX is usize::MAX.
        (embeddings + enc + dec + 2.0 * norm + rel + positions) as usize
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
