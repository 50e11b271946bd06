//! `conveyor model import-hf` and `export-hf`: Hugging Face T5 folders to conveyor checkpoints
//! and back (conveyor_model::hf holds the mapping; docs/formats.md lists it).

use std::path::PathBuf;

use clap::Args;

#[derive(Args)]
pub struct ImportArgs {
    /// A folder with config.json and model.safetensors (or safetensors shards and their
    /// index) of a T5ForConditionalGeneration (t5-*, google/t5-v1_1-*, flan-t5-*).
    hf_dir: PathBuf,
    /// The checkpoint folder to write (new, or empty).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub struct ExportArgs {
    /// A conveyor checkpoint folder (RUN/checkpoints/step-N, or an import).
    checkpoint: PathBuf,
    /// The folder to write (new, or empty).
    #[arg(long)]
    out: PathBuf,
    /// The SentencePiece model the checkpoint was trained with: copied as spiece.model with
    /// T5Tokenizer's config, so that the folder holds the tokenizer too.
    #[arg(long)]
    vocab: Option<PathBuf>,
}

pub fn import(a: ImportArgs) -> anyhow::Result<i32> {
    let cfg = conveyor_model::hf::import(&a.hf_dir, &a.out)?;
    println!(
        "imported {} as a conveyor {} checkpoint: {} parameters, {} + {} layers, d_model {}, {} feed-forward, embeddings {}, vocab {}",
        a.hf_dir.display(),
        cfg.arch.name(),
        cfg.parameter_count(),
        cfg.encoder_layers,
        cfg.decoder_layers,
        cfg.d_model,
        cfg.ffn.name(),
        cfg.head(),
        cfg.vocab_size
    );
    println!("wrote {}", a.out.display());
    Ok(0)
}

pub fn export(a: ExportArgs) -> anyhow::Result<i32> {
    let cfg = conveyor_model::hf::export(&a.checkpoint, &a.out, a.vocab.as_deref())?;
    let class = if cfg.arch.is_conv() {
        "a conveyor convolutional model (conveyor's tensor names; docs/formats.md)"
    } else {
        "T5ForConditionalGeneration"
    };
    println!(
        "exported {} to {} as {class}{}",
        a.checkpoint.display(),
        a.out.display(),
        if a.vocab.is_some() {
            ", with its T5Tokenizer"
        } else {
            ""
        }
    );
    // T5's config says only "tied and scaled" or "separate and unscaled".
    if !cfg.arch.is_conv() && cfg.tie_embeddings != cfg.scaled_logits() {
        println!(
            "note: the model's head is {}, which a T5 config cannot say: the export has a separate lm_head giving the same logits ({})",
            cfg.head(),
            if cfg.tie_embeddings {
                "a copy of the embedding: transformers 4 trains the two apart, 5 ties them back"
            } else {
                "stored times d_model^-0.5"
            }
        );
    }
    Ok(0)
}
