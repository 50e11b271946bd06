//! Where this process stands in a multi-process launch, read from the variables torchrun
//! sets (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`,
//! `TORCHELASTIC_USE_AGENT_STORE`) or, when those are absent, Slurm's (`SLURM_PROCID`,
//! `SLURM_NTASKS`, `SLURM_LOCALID`, with `MASTER_ADDR`/`MASTER_PORT` set by the job script).

use std::time::Duration;

/// One rank's view of the launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub world_size: usize,
    /// The rank's index on its node: the GPU it uses.
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's agent already runs the TCPStore at MASTER_ADDR:MASTER_PORT (every rank is
    /// a client of it); otherwise rank 0 runs it.
    pub agent_store: bool,
    /// How long a collective (and the rendezvous) may wait before failing.
    pub timeout: Duration,
    /// torchrun's restart count (`TORCHELASTIC_RESTART_COUNT`): each attempt rendezvouses
    /// under its own store prefix, as PyTorch does.
    pub restart: u64,
    /// Which launcher's variables were read, for messages.
    pub source: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{0}")]
    Invalid(String),
}

impl Launch {
    /// Reads the launch from `var` (the process environment in the binary, a map in tests).
    /// `None` when neither torchrun's nor Slurm's variables say there are several ranks.
    pub fn from_vars(
        var: impl Fn(&str) -> Option<String>,
        timeout: Duration,
    ) -> Result<Option<Self>, LaunchError> {
        let num = |name: &str| -> Result<Option<usize>, LaunchError> {
            var(name)
                .map(|v| {
                    v.trim().parse::<usize>().map_err(|_| {
                        LaunchError::Invalid(format!("{name}={v:?} is not a whole number"))
                    })
                })
                .transpose()
        };
        let (rank, world, local, source) = if var("WORLD_SIZE").is_some() {
            let world = num("WORLD_SIZE")?.unwrap_or(1);
            let rank = num("RANK")?.ok_or_else(|| {
                LaunchError::Invalid("WORLD_SIZE is set but RANK is not: launch with torchrun, or set RANK for every process".into())
            })?;
            (rank, world, num("LOCAL_RANK")?.unwrap_or(0), "torchrun")
        } else if var("SLURM_NTASKS").is_some() && var("SLURM_PROCID").is_some() {
            (
                num("SLURM_PROCID")?.unwrap_or(0),
                num("SLURM_NTASKS")?.unwrap_or(1),
                num("SLURM_LOCALID")?.unwrap_or(0),
                "Slurm",
            )
        } else {
            return Ok(None);
        };
        // One rank joins a process group only when a launcher set the rendezvous up (torchrun
        // --nproc-per-node 1 does: NCCL with WORLD_SIZE=1 on a single GPU).
        if world == 0 {
            return Err(LaunchError::Invalid(format!(
                "the world size is 0 ({source}'s variables): a launch has at least one rank"
            )));
        }
        if world == 1 && (var("MASTER_ADDR").is_none() || var("MASTER_PORT").is_none()) {
            return Ok(None);
        }
        if rank >= world {
            return Err(LaunchError::Invalid(format!(
                "rank {rank} is not below the world size {world} ({source}'s variables)"
            )));
        }
        let master_addr = var("MASTER_ADDR").filter(|a| !a.is_empty()).ok_or_else(|| {
            LaunchError::Invalid(format!(
                "{world} ranks ({source}) but MASTER_ADDR is not set: set MASTER_ADDR to the host of rank 0 (in an sbatch script: MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)) and MASTER_PORT to a free port, or launch with torchrun"
            ))
        })?;
        let port = var("MASTER_PORT").ok_or_else(|| {
            LaunchError::Invalid(format!(
                "{world} ranks ({source}) but MASTER_PORT is not set: set it to a free TCP port on {master_addr}, the same for every rank"
            ))
        })?;
        let master_port = port
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| {
                LaunchError::Invalid(format!("MASTER_PORT={port:?} is not a TCP port (1-65535)"))
            })?;
        Ok(Some(Self {
            rank,
            world_size: world,
            local_rank: local,
            master_addr,
            master_port,
            agent_store: var("TORCHELASTIC_USE_AGENT_STORE").as_deref() == Some("True"),
            timeout,
            restart: var("TORCHELASTIC_RESTART_COUNT")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0),
            source,
        }))
    }

    /// Whether this process runs the rendezvous store's server.
    pub fn hosts_store(&self) -> bool {
        self.rank == 0 && !self.agent_store
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Result<Option<Launch>, LaunchError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Launch::from_vars(|k| m.get(k).cloned(), Duration::from_secs(60))
    }

    #[test]
    fn torchrun_variables() {
        let l = launch(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((l.rank, l.world_size, l.local_rank), (3, 8, 1));
        assert_eq!((l.master_addr.as_str(), l.master_port), ("node0", 29500));
        assert!(l.agent_store && !l.hosts_store());
    }

    #[test]
    fn slurm_variables_and_rank_zero_hosts_the_store() {
        let l = launch(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_LOCALID", "0"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "12345"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((l.rank, l.world_size, l.source), (0, 4, "Slurm"));
        assert!(l.hosts_store());
    }

    #[test]
    fn one_process_is_no_launch_unless_a_launcher_set_up_the_rendezvous() {
        assert!(launch(&[]).unwrap().is_none());
        assert!(launch(&[("RANK", "0"), ("WORLD_SIZE", "1")])
            .unwrap()
            .is_none());
        let one = launch(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "1"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29500"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((one.rank, one.world_size), (0, 1));
    }

    #[test]
    fn missing_or_bad_variables_say_what_to_set() {
        let e = launch(&[("RANK", "1"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("MASTER_ADDR is not set"), "{e}");
        let e = launch(&[("RANK", "1"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("MASTER_PORT is not set"), "{e}");
        let e = launch(&[
            ("RANK", "2"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("not below the world size"), "{e}");
        let e = launch(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "99999"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("not a TCP port"), "{e}");
        // A world of no ranks is a launch mistake, not one process.
        let e = launch(&[("RANK", "0"), ("WORLD_SIZE", "0")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("world size is 0"), "{e}");
    }
}
