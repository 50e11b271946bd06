//! Starting a run's state: fresh, or restored from a checkpoint (refusing a resume whose
//! optimiser, schedule, batch split or world size differs from the checkpoint's), and making
//! every rank start from the same weights.

use std::path::Path;

use conveyor_pipeline::loader::LoaderState;
use tch::{Kind, Tensor};

use super::{Precision, Ranks, TrainConfig, TrainError, Weights};
use crate::checkpoint::{self, TrainerState};
use crate::optim::{Optimizer, OptimizerKind};

pub(super) fn fresh_state(cfg: &TrainConfig, world: usize) -> TrainerState {
    TrainerState {
        step: 0,
        loader: Default::default(),
        optimizer: cfg.optimizer,
        schedule: cfg.schedule,
        seed: cfg.seed,
        tokens_seen: 0,
        examples_seen: 0,
        world_size: world,
        accumulate: cfg.accumulate,
        batch_size: cfg.batch_size,
        loaders: Vec::new(),
        inputs_length: Some(cfg.inputs_length),
        precision: Some(cfg.precision),
        cuda_graph: Some(cfg.cuda_graph),
        z_loss: cfg.z_loss,
        vocab_sha256: None,
        files: Default::default(),
    }
}

/// Loads the checkpoint's weights, moments and state; returns the state and this rank's
/// loader state.
pub(super) fn restore(
    cfg: &TrainConfig,
    ckpt: &Path,
    w: &mut Weights,
    opt: &mut Optimizer,
    rank: usize,
    world: usize,
) -> Result<(TrainerState, LoaderState), TrainError> {
    let (moments, saved) = checkpoint::load(ckpt, &mut w.master, &cfg.model)?;
    check(cfg, &saved, world, ckpt)?;
    w.refresh();
    let by_index: Vec<(String, Tensor)> = moments
        .into_iter()
        .filter_map(|(k, t)| {
            let (name, part) = k.rsplit_once(':')?;
            let i = w.names.iter().position(|n| n == name)?;
            Some((format!("{i}.{part}"), t.to(cfg.device)))
        })
        .collect();
    opt.load_moments(&by_index, &w.names).map_err(|m| {
        TrainError::Refused(format!(
            "{}: {m}: the checkpoint is damaged; resume from an earlier one (its step-* name into checkpoints/latest), or start the run again",
            ckpt.join("optimizer.safetensors").display()
        ))
    })?;
    opt.step = saved.step;
    let mine = match saved.loaders.get(rank) {
        Some(s) => *s,
        None => saved.loader,
    };
    let mut state = saved;
    state.inputs_length = Some(cfg.inputs_length);
    Ok((state, mine))
}

/// A resumed run must step exactly as the interrupted one would have.
fn check(
    cfg: &TrainConfig,
    saved: &TrainerState,
    world: usize,
    ckpt: &Path,
) -> Result<(), TrainError> {
    let restart = "or start a new --out with --init CHECKPOINT to continue from its weights with a fresh optimiser and data order";
    let refuse = |what: String| {
        Err(TrainError::Refused(format!(
            "{}: {what}; resume with the checkpoint's settings, {restart}",
            ckpt.display()
        )))
    };
    // A state conveyor wrote never says zero of these (an edited one read "launch 0 ranks").
    if saved.world_size == 0 || saved.accumulate == 0 {
        return refuse(format!(
            "its trainer_state.json says world_size {} and accumulate {}: not a state conveyor wrote",
            saved.world_size, saved.accumulate
        ));
    }
    if saved.world_size != world {
        return refuse(format!(
            "the run was trained by {} processes and this one has {world}: launch {} ranks (torchrun --nproc-per-node / srun --ntasks)",
            saved.world_size, saved.world_size
        ));
    }
    // Token shards are cut into examples of this length: another one is another data order
    // (the loader refused it without saying which setting).
    if let Some(l) = saved.inputs_length.filter(|&l| l != cfg.inputs_length) {
        if matches!(super::data_kind(&cfg.data)?, super::DataKind::Tokens(_)) {
            return refuse(format!(
                "the run corrupted its token shards at --inputs-length {l} and this one asks for {}",
                cfg.inputs_length
            ));
        }
    }
    if saved.accumulate != cfg.accumulate {
        return refuse(format!(
            "the run accumulated {} micro-batches per step and this one asks for {} (--accumulate {})",
            saved.accumulate, cfg.accumulate, saved.accumulate
        ));
    }
    if saved.batch_size != 0 && saved.batch_size != cfg.batch_size {
        return refuse(format!(
            "the run used --batch-size {} per rank and this one {}",
            saved.batch_size, cfg.batch_size
        ));
    }
    if saved.optimizer != cfg.optimizer {
        let hint = match (saved.optimizer, cfg.optimizer) {
            (
                OptimizerKind::Adafactor {
                    min_dim_to_factor: was,
                    ..
                },
                OptimizerKind::Adafactor { .. },
            ) => format!(" (resume with --factor-min-dim {was}; runs from before the flag factored every matrix: 0)"),
            _ => String::new(),
        };
        return refuse(format!(
            "the run's optimiser was {} and this one is {}{hint}",
            saved.optimizer, cfg.optimizer
        ));
    }
    if saved.schedule != cfg.schedule {
        return refuse(format!(
            "the run's learning-rate schedule was {} and this one is {}",
            saved.schedule, cfg.schedule
        ));
    }
    if saved.precision.is_some_and(|p| p != cfg.precision) {
        let flag = |p: Precision| match p {
            Precision::F32 => "neither --bf16 nor --pure-bf16",
            Precision::Bf16 => "--bf16",
            Precision::PureBf16 => "--pure-bf16",
        };
        let saved = saved.precision.expect("checked");
        return refuse(format!(
            "the run trained in {} and this one in {}: resume with {}",
            saved.name(),
            cfg.precision.name(),
            flag(saved)
        ));
    }
    if saved.z_loss != cfg.z_loss {
        return refuse(format!(
            "the run trained with --z-loss {} and this one with {}: resume with --z-loss {}",
            saved.z_loss, cfg.z_loss, saved.z_loss
        ));
    }
    if cfg.accumulate > 1 && saved.cuda_graph.is_some_and(|g| g != cfg.cuda_graph) {
        return refuse(format!(
            "the run {} --cuda-graph, which with --accumulate above 1 draws other dropout masks",
            if cfg.cuda_graph {
                "ran without"
            } else {
                "ran with"
            }
        ));
    }
    if saved.seed != cfg.seed {
        return refuse(format!(
            "the run's seed was {} and this one is {}",
            saved.seed, cfg.seed
        ));
    }
    Ok(())
}

/// A 62-bit digest of what every rank must agree on: what decides the collectives' steps
/// (--sync-every and the checkpoint and evaluation intervals among them) and the data each
/// rank's share is drawn from (its shards, and the shuffle).
fn settings_digest(cfg: &TrainConfig, data: &str) -> i64 {
    let text = format!(
        "{}|{}|{}|{}|{:?}|{:?}|{}|{:?}|{}|{}|{}|{}|{}|{:?}|{}|{}|{}",
        serde_json::to_string(&cfg.model).expect("config serialises"),
        cfg.batch_size,
        cfg.accumulate,
        cfg.steps,
        cfg.optimizer,
        cfg.schedule,
        cfg.seed,
        cfg.precision,
        cfg.inputs_length,
        cfg.pack,
        cfg.checkpoint_every,
        cfg.eval_every,
        cfg.eval_data.is_some(),
        cfg.sync_every,
        cfg.shuffle_buffer,
        data,
        // The objective: ranks on different z-losses would all-reduce different gradients.
        cfg.z_loss,
    );
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in text.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 2) as i64
}

/// Every rank checks the others were started with its settings and resumed from the same
/// step, takes rank 0's weights, and verifies by checksum that they now hold the same
/// weights.
pub(super) fn agree(
    cfg: &TrainConfig,
    ranks: &Ranks,
    w: &mut Weights,
    step: u64,
) -> Result<(), TrainError> {
    let Some(pg) = &ranks.pg else { return Ok(()) };
    // The data by content (its shards' names, rows and sha256 sums), not by path or job:
    // copies on each node's disk, or ingests of one corpus from different paths, agree.
    let shards: Vec<String> = match super::data_kind(&cfg.data)? {
        super::DataKind::Tokens(m) => m
            .shards
            .iter()
            .map(|s| format!("{}:{}:{}", s.file, s.rows, s.sha256))
            .collect(),
        super::DataKind::Examples(m) => m
            .shards
            .iter()
            .map(|s| format!("{}:{}:{}", s.file, s.rows, s.sha256))
            .collect(),
    };
    let digests = ranks.gather(&[settings_digest(cfg, &shards.join(",")), step as i64])?;
    if let Some(r) = digests.iter().position(|d| d[1] != digests[0][1]) {
        return Err(TrainError::Refused(format!(
            "rank {r} starts at step {} and rank 0 at step {}: every rank must see the same run folder (a shared file system) to resume from the same checkpoint",
            digests[r][1], digests[0][1]
        )));
    }
    if let Some(r) = digests.iter().position(|d| d[0] != digests[0][0]) {
        return Err(TrainError::Refused(format!(
            "rank {r} was started with other settings than rank 0 (model, --batch-size, --accumulate, --steps, optimiser, schedule, seed, precision, --inputs-length, --pack, --checkpoint-every, --eval-every, --sync-every, --shuffle-buffer, or other data: a stale copy on one node?): the ranks must run the same collectives at the same steps over one dataset: give every rank the same command and data"
        )));
    }
    {
        let _guard = tch::no_grad_guard();
        for p in &w.params {
            pg.broadcast(p, 0)?;
        }
    }
    w.refresh();
    let sum: f64 = w
        .params
        .iter()
        .map(|p| {
            let f = p.to_kind(Kind::Double);
            (f.sum(Kind::Double) + f.abs().sum(Kind::Double) * 0.5).double_value(&[])
        })
        .sum();
    let sums = ranks.gather(&[sum.to_bits() as i64])?;
    if let Some(r) = sums.iter().position(|s| s[0] != sums[0][0]) {
        return Err(TrainError::Refused(format!(
            "rank {r}'s weights differ from rank 0's after the broadcast; this is a bug in conveyor's process group, please report it"
        )));
    }
    Ok(())
}

/// Refuses a resume whose `--steps` is below the step the run reached (`at`): nothing would
/// be trained (it exited 0 having done nothing).
pub(super) fn within_steps(cfg: &TrainConfig, at: u64) -> Result<(), TrainError> {
    if at <= cfg.steps {
        return Ok(());
    }
    Err(TrainError::Refused(format!(
        "{}: the run is at step {at} already, past --steps {}: nothing would be trained. Give --steps above {at} to train on (--steps {at} finds it complete; its checkpoints are kept)",
        cfg.out.display(),
        cfg.steps,
    )))
}
