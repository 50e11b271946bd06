//! `conveyor model loss`: a checkpoint's token-weighted cross-entropy and perplexity on a
//! dataset (token, example or packed example shards).

use std::path::PathBuf;

use clap::Args;
use conveyor_model::select_device;
use conveyor_model::train::{dataset_loss, LossConfig};
use conveyor_pipeline::remote::sync::local_dataset;

use crate::train::DeviceArg;

#[derive(Args)]
pub struct LossArgs {
    /// A checkpoint folder (RUN/checkpoints/step-N).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Token shards (span-corrupted on the fly), example shards or packed example shards: a
    /// folder or a URL.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Stop after the batch that reaches N examples.
    #[arg(long)]
    limit: Option<usize>,
    /// Input length of on-the-fly corruption (default: the checkpoint's run's).
    #[arg(long)]
    inputs_length: Option<usize>,
    /// Pack examples into rows.
    #[arg(long)]
    pack: bool,
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: LossArgs) -> anyhow::Result<i32> {
    let data = local_dataset(&a.data)?.0;
    crate::train::flags::inputs_length_fits(&data, a.inputs_length)?;
    let device = select_device(a.device.into())?;
    let r = dataset_loss(&LossConfig {
        checkpoint: a.checkpoint,
        data,
        batch_size: a.batch_size,
        limit: a.limit,
        inputs_length: a.inputs_length,
        pack: a.pack,
        device,
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "loss {:.6} (perplexity {:.3}) over {} target tokens of {} examples; fill rate {:.3}",
            r.loss, r.perplexity, r.target_tokens, r.examples, r.fill_rate
        );
    }
    Ok(0)
}
