//! `conveyor._native.Loader`: conveyor's streaming loader (seeded shard order, windowed
//! shuffle, rank sharding, packing, span corruption on the fly, exact resume) handing out
//! batches as dicts of numpy arrays. The Python class `conveyor.Loader` wraps it.

use std::path::PathBuf;
use std::sync::Mutex;

use conveyor_pipeline::corrupt::CorruptConfig;
use conveyor_pipeline::loader::{Batch, Loader as Inner, LoaderConfig, LoaderInput, LoaderState};
use numpy::ndarray::Array2;
use numpy::IntoPyArray;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::ConveyorError;

#[pyclass(module = "conveyor._native")]
pub struct Loader {
    cfg: LoaderConfig,
    inner: std::mem::ManuallyDrop<Mutex<Inner>>,
    /// The process that made it: its reading thread exists there only.
    pid: u32,
}

impl Loader {
    /// Refuses work in a forked child, where the reading thread does not exist (a restart
    /// there waited forever for it to stop).
    fn check_process(&self) -> PyResult<()> {
        if std::process::id() != self.pid {
            return Err(ConveyorError::new_err(
                "a conveyor.Loader cannot be used in another process (a fork, a DataLoader worker): make it in the process that reads it, or use DataLoader(loader, batch_size=None, num_workers=0)",
            ));
        }
        Ok(())
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // In a forked child the reading thread is the parent's: stopping it would wait
        // forever (or panic), so the child's copy is left as it is.
        if std::process::id() == self.pid {
            // SAFETY: dropped once, here, and never used after.
            unsafe { std::mem::ManuallyDrop::drop(&mut self.inner) };
        }
    }
}

/// Example shards as they are, or token shards span-corrupted on the fly (which needs
/// `inputs_length`; the noise settings default to T5's), by the folder's manifest.
fn input(
    path: PathBuf,
    inputs_length: Option<usize>,
    noise_density: Option<f64>,
    mean_span_length: Option<f64>,
) -> PyResult<LoaderInput> {
    let manifest = crate::manifest::read(&path)?;
    // A folder's manifest.json names the folder.
    let path = crate::manifest::folder_of(&path);
    match manifest["format"].as_str() {
        Some(conveyor_pipeline::manifest::TOKENS_FORMAT) => {
            let n = inputs_length.ok_or_else(|| {
                ConveyorError::new_err(format!(
                    "{}: token shards are span-corrupted on the fly: give inputs_length (e.g. 512)",
                    path.display()
                ))
            })?;
            let mut c = CorruptConfig::new(path, PathBuf::new(), n);
            c.noise_density = noise_density.unwrap_or(c.noise_density);
            c.mean_span_length = mean_span_length.unwrap_or(c.mean_span_length);
            Ok(LoaderInput::Tokens(c))
        }
        Some(conveyor_pipeline::examples::EXAMPLES_FORMAT) => {
            let written = manifest["settings"]["inputs_length"].as_u64();
            if let (Some(asked), Some(w)) = (inputs_length, written) {
                if asked as u64 != w {
                    return Err(ConveyorError::new_err(format!(
                        "{}: its examples were written with inputs_length {w}, not {asked}: leave inputs_length out, or corrupt the token shards again with --inputs-length {asked}",
                        path.display()
                    )));
                }
            }
            // Examples keep the noise they were written with: another asked for is refused,
            // not ignored.
            for (name, asked) in [
                ("noise_density", noise_density),
                ("mean_span_length", mean_span_length),
            ] {
                let Some(asked) = asked else { continue };
                let written = manifest["settings"][name].as_f64();
                if written.is_none_or(|w| (w - asked).abs() > 1e-9) {
                    return Err(ConveyorError::new_err(format!(
                        "{}: its examples were written {}, not with {name} {asked}: leave {name} out, or corrupt the token shards again with --{} {asked}",
                        path.display(),
                        written.map_or("without span corruption".into(), |w| format!("with {name} {w}")),
                        name.replace('_', "-")
                    )));
                }
            }
            Ok(LoaderInput::Examples(path))
        }
        other => Err(ConveyorError::new_err(format!(
            "{}: a {} folder cannot be loaded: give token shards (conveyor ingest) or example shards (conveyor corrupt, task prepare)",
            path.display(),
            other.unwrap_or("?")
        ))),
    }
}

/// A state dict from Python: {"epoch", "position", "fingerprint" (hex), "ending" (hex)},
/// and "padding" where it is not 0 (a state without "ending" was saved before it was kept).
fn state_of(d: &Bound<'_, PyDict>) -> PyResult<LoaderState> {
    let get = |k: &str| -> PyResult<Bound<'_, PyAny>> {
        d.get_item(k)?.ok_or_else(|| {
            ConveyorError::new_err(format!(
                "not a conveyor loader state: no {k:?} (use the dict state_dict() returns)"
            ))
        })
    };
    let bad = |k: &str| ConveyorError::new_err(format!("not a conveyor loader state: bad {k:?}"));
    // As torch's strict load_state_dict: a key this version does not know is a setting it
    // could not honour (a newer version's state, or another object's).
    const KEYS: [&str; 5] = ["epoch", "position", "fingerprint", "padding", "ending"];
    for k in d.keys() {
        let name = k.str()?.to_string();
        if !KEYS.contains(&name.as_str()) {
            return Err(ConveyorError::new_err(format!(
                "not a conveyor loader state: unknown key {name:?} (a state holds {}; use the dict state_dict() returns)",
                KEYS.join(", ")
            )));
        }
    }
    let fp: String = get("fingerprint")?
        .extract()
        .map_err(|_| bad("fingerprint"))?;
    let fingerprint = u64::from_str_radix(&fp, 16).map_err(|_| bad("fingerprint"))?;
    let padding = match d.get_item("padding")? {
        Some(v) => v.extract().map_err(|_| bad("padding"))?,
        None => 0,
    };
    let ending = match d.get_item("ending")? {
        Some(v) => {
            let hex: String = v.extract().map_err(|_| bad("ending"))?;
            u64::from_str_radix(&hex, 16).map_err(|_| bad("ending"))?
        }
        None => 0,
    };
    Ok(LoaderState {
        epoch: get("epoch")?.extract().map_err(|_| bad("epoch"))?,
        position: get("position")?.extract().map_err(|_| bad("position"))?,
        fingerprint,
        padding,
        ending,
    })
}

/// A batch as a dict of int32 numpy arrays (rows x width for the ids, rows for the lengths),
/// each owning its buffer (no copy on the way to torch.from_numpy).
fn batch_dict<'py>(py: Python<'py>, b: Batch) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let ints = |v: Vec<u32>| -> Vec<i32> { v.into_iter().map(|x| x as i32).collect() };
    // Built in its shape: one array object per feature, owning the batch's buffer.
    let grid = |v: Vec<u32>, width: usize| {
        Array2::from_shape_vec((b.rows, width), ints(v))
            .map(|a| a.into_pyarray(py))
            .map_err(|e| ConveyorError::new_err(e.to_string()))
    };
    d.set_item("inputs", grid(b.inputs, b.inputs_width)?)?;
    d.set_item("targets", grid(b.targets, b.targets_width)?)?;
    d.set_item("inputs_lengths", ints(b.input_lengths).into_pyarray(py))?;
    d.set_item("targets_lengths", ints(b.target_lengths).into_pyarray(py))?;
    if let Some(p) = b.packing {
        d.set_item(
            "inputs_segment_ids",
            grid(p.inputs_segment_ids, b.inputs_width)?,
        )?;
        d.set_item(
            "inputs_positions",
            grid(p.inputs_positions, b.inputs_width)?,
        )?;
        d.set_item(
            "targets_segment_ids",
            grid(p.targets_segment_ids, b.targets_width)?,
        )?;
        d.set_item(
            "targets_positions",
            grid(p.targets_positions, b.targets_width)?,
        )?;
    }
    Ok(d)
}

#[pymethods]
impl Loader {
    #[new]
    #[pyo3(signature = (path, batch_size, *, seed, epoch, shuffle_buffer, shuffle_shards, rank, world_size, inputs_length, noise_density, mean_span_length, pack, pad_to_longest, drop_remainder, prefetch, epochs, vocab_size, align_steps, state))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        batch_size: usize,
        seed: u64,
        epoch: u64,
        shuffle_buffer: usize,
        shuffle_shards: bool,
        rank: usize,
        world_size: usize,
        inputs_length: Option<usize>,
        noise_density: Option<f64>,
        mean_span_length: Option<f64>,
        pack: bool,
        pad_to_longest: bool,
        drop_remainder: bool,
        prefetch: usize,
        epochs: Option<u64>,
        vocab_size: Option<u32>,
        align_steps: Option<usize>,
        state: Option<Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let mut cfg = LoaderConfig::new(
            input(path, inputs_length, noise_density, mean_span_length)?,
            batch_size,
        );
        cfg.seed = seed;
        cfg.shuffle_buffer = shuffle_buffer;
        // False reads the shards in the manifest's order (an evaluation lined up with them).
        cfg.shuffle_shards = shuffle_shards;
        (cfg.rank, cfg.world_size) = (rank, world_size);
        cfg.pack = pack;
        cfg.pad_to_longest = pad_to_longest;
        cfg.drop_remainder = drop_remainder;
        cfg.prefetch = prefetch;
        cfg.epochs = epochs;
        // A model's vocabulary: a row holding an id beyond it is an error naming its shard.
        cfg.vocab_limit = vocab_size;
        // Every rank ends each epoch after the same number of batches, a multiple of this
        // (a DDP step's micro-batches), padded with batches of no rows.
        cfg.align_steps = align_steps;
        // `epochs` counts from epoch 0 (so a resumed loader runs the rest of them): one that
        // starts at or past it would give nothing, silently.
        if let Some(n) = epochs.filter(|&n| state.is_none() && n <= epoch) {
            return Err(ConveyorError::new_err(format!(
                "epochs={n} is where the loader stops (epochs 0 to {n} - 1 in all), and it starts at epoch={epoch}: nothing would be read; give epochs above epoch, e.g. epochs={}",
                epoch + n.max(1)
            )));
        }
        let state = state.as_ref().map(state_of).transpose()?;
        let c = cfg.clone();
        let inner = py
            .detach(|| match state {
                Some(s) => Inner::resume(c, Some(s)),
                None => Inner::at_epoch(c, epoch),
            })
            .map_err(crate::error)?;
        if let Some(a) = align_steps {
            // Asked for and not applied, a DDP loop over epochs would wait forever in its
            // last all-reduce: refused instead.
            if a == 0 || !inner.steps_aligned() {
                return Err(ConveyorError::new_err(format!(
                    "align_steps={a}: {}",
                    if a == 0 {
                        "give the batches per optimiser step (1 without gradient accumulation)"
                    } else {
                        "examples packed by the loader make each rank's row count its own: pack them when they are written (conveyor corrupt --pack) or run a fixed number of steps over epochs=None"
                    }
                )));
            }
        }
        Ok(Self {
            cfg,
            inner: std::mem::ManuallyDrop::new(Mutex::new(inner)),
            pid: std::process::id(),
        })
    }

    /// The next batch, or None when the epochs asked for are done.
    fn next_batch<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.check_process()?;
        let next = py.detach(|| self.inner.lock().expect("loader lock").next());
        match next {
            None => Ok(None),
            Some(Ok(b)) => Ok(Some(batch_dict(py, b)?)),
            Some(Err(e)) => Err(crate::error(e)),
        }
    }

    /// Where the loader stands after the last batch handed out.
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.check_process()?;
        // The lock may be held by a next_batch waiting for data: wait without the GIL.
        let s = py.detach(|| self.inner.lock().expect("loader lock").state());
        let d = PyDict::new(py);
        d.set_item("epoch", s.epoch)?;
        d.set_item("position", s.position)?;
        d.set_item("fingerprint", format!("{:016x}", s.fingerprint))?;
        d.set_item("ending", format!("{:016x}", s.ending))?;
        if s.padding > 0 {
            d.set_item("padding", s.padding)?;
        }
        Ok(d)
    }

    /// Continues from a state_dict() (refused if it comes from another configuration).
    fn load_state_dict(&self, py: Python<'_>, state: Bound<'_, PyDict>) -> PyResult<()> {
        self.check_process()?;
        let s = state_of(&state)?;
        let c = self.cfg.clone();
        // Stopping the old loader waits for its thread: without the GIL.
        py.detach(|| {
            let fresh = Inner::resume(c, Some(s))?;
            let old = std::mem::replace(&mut *self.inner.lock().expect("loader lock"), fresh);
            drop(old);
            Ok(())
        })
        .map_err(crate::error)
    }

    /// Batches per epoch for this rank, when known before reading (example shards).
    fn batches_per_epoch(&self, py: Python<'_>) -> Option<u64> {
        py.detach(|| self.inner.lock().expect("loader lock").batches_per_epoch())
    }
}
