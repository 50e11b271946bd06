//! `train`/`finetune` flags that a combination would ignore, refused before any work: a run
//! that silently did otherwise than asked is worse than one refused.

use super::{OptimizerArg, TrainArgs};

/// Refuses flags that this combination would ignore: a run that silently did otherwise than
/// asked is worse than one refused.
pub(super) fn unused(a: &TrainArgs) -> anyhow::Result<()> {
    if let (Some(w), Some(lr)) = (a.warmup, a.lr) {
        anyhow::bail!(
            "--warmup {w} shapes T5's default schedule, 1/sqrt(max(step, warmup)), used without --lr; the rate {lr} (--lr, or fine-tuning's default) is constant from the first step. Leave out --warmup (or, with train, --lr)"
        );
    }
    match (&a.eval_data, a.eval_every) {
        (Some(d), 0) => anyhow::bail!(
            "--eval-data {} is evaluated every --eval-every N steps, and --eval-every is 0 (never): give --eval-every",
            d.display()
        ),
        (None, n) if n > 0 => {
            anyhow::bail!("--eval-every {n} evaluates --eval-data, which is not given")
        }
        _ => {}
    }
    if let (Some(n), OptimizerArg::Adamw) = (a.factor_min_dim, a.optimizer) {
        anyhow::bail!(
            "--factor-min-dim {n} is Adafactor's; --optimizer adamw factors nothing: leave it out"
        );
    }
    if let (Some(init), Some(p), None) = (&a.init, &a.model.preset, a.model.arch) {
        anyhow::bail!(
            "--preset {p} with --init {} but no --arch: the checkpoint's own model is fine-tuned, whatever the preset. Leave out --preset, or give --arch and --preset of the checkpoint's model",
            init.display()
        );
    }
    Ok(())
}

/// Refuses `--inputs-length` over example shards: they were written at their own length, and
/// the flag (which shapes token shards corrupted on the fly) would be ignored.
pub(crate) fn inputs_length_fits(data: &std::path::Path, n: Option<usize>) -> anyhow::Result<()> {
    let (Some(n), Ok(m)) = (n, conveyor_pipeline::examples::ExamplesManifest::read(data)) else {
        return Ok(());
    };
    let have = m.settings.lengths.inputs_length;
    anyhow::ensure!(
        n == have,
        "--inputs-length {n}: {} holds example shards written at inputs length {have}, and they are read at that length (--inputs-length shapes token shards corrupted on the fly): leave it out, or write the examples again at {n} (corrupt or task prepare --inputs-length {n})",
        data.display()
    );
    Ok(())
}
