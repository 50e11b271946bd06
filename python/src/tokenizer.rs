//! `conveyor.Tokenizer`: conveyor's native SentencePiece unigram encoder (ids identical to the
//! library's), one document or many in parallel with the GIL released.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use conveyor_pipeline::tokenize::{load, TokenizerKind};
use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;
use rayon::prelude::*;

use crate::ConveyorError;

#[pyclass(module = "conveyor", frozen)]
pub struct Tokenizer {
    inner: Box<dyn conveyor_pipeline::tokenize::Tokenizer>,
    path: PathBuf,
}

fn encode_one(t: &dyn conveyor_pipeline::tokenize::Tokenizer, text: &str) -> PyResult<Vec<u32>> {
    let mut ids = Vec::new();
    t.encode_into(text, &mut ids)
        .map_err(|e| crate::ConveyorError::new_err(e.to_string()))?;
    Ok(ids)
}

/// The most threads a batch call may ask for (far past any machine's cores).
const MAX_THREADS: usize = 1024;

/// The thread pool of `n` threads, built on first use in this process and kept: a batch call
/// should not start and stop threads each time. A pool is this process's own: a child forked
/// after it was built (a DataLoader worker, `datasets.map(num_proc=...)`) has none of its
/// threads, and a call through it waited forever, so the child builds its own (rayon's
/// global pool is never used, for the same reason).
fn pool(n: usize) -> PyResult<Arc<rayon::ThreadPool>> {
    if n > MAX_THREADS {
        return Err(crate::ConveyorError::new_err(format!(
            "threads={n}: at most {MAX_THREADS}"
        )));
    }
    type Pools = HashMap<(u32, usize), Arc<rayon::ThreadPool>>;
    static POOLS: OnceLock<Mutex<Pools>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let me = std::process::id();
    // Another process's pools (a parent's, before the fork) have no threads here; they are
    // forgotten, not dropped (dropping would signal threads that do not exist).
    let theirs: Vec<_> = pools.keys().filter(|k| k.0 != me).copied().collect();
    for k in theirs {
        std::mem::forget(pools.remove(&k));
    }
    if let Some(p) = pools.get(&(me, n)) {
        return Ok(p.clone());
    }
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(n.max(1))
        .build()
        .map_err(|e| crate::ConveyorError::new_err(e.to_string()))?;
    Ok(pools.entry((me, n)).or_insert(Arc::new(p)).clone())
}

/// The process that imported conveyor; a forked child of it is one of several workers
/// sharing the cores.
static IMPORTER: OnceLock<u32> = OnceLock::new();

pub(crate) fn note_importing_process() {
    IMPORTER.get_or_init(std::process::id);
}

/// Threads of a batch call that does not say: every core, or one in a forked child (a
/// DataLoader worker, `datasets.map(num_proc=N)`: N children of all cores each would run
/// N x cores threads).
fn default_threads() -> usize {
    match IMPORTER.get() {
        Some(&pid) if pid != std::process::id() => 1,
        _ => std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_THREADS),
    }
}

#[pymethods]
impl Tokenizer {
    /// Opens a SentencePiece unigram model file (e.g. the T5 vocabulary).
    #[staticmethod]
    fn from_file(path: PathBuf) -> PyResult<Self> {
        let inner = load(&path, TokenizerKind::Native).map_err(crate::error)?;
        // Absolute, so that a pickle opens it from another working folder too.
        let path = std::path::absolute(&path).unwrap_or(path);
        Ok(Self { inner, path })
    }

    /// The ids of `text` (no EOS appended), as SentencePiece's `encode` gives them.
    fn encode(&self, py: Python<'_>, text: &str) -> PyResult<Vec<u32>> {
        py.detach(|| encode_one(self.inner.as_ref(), text))
    }

    /// The ids of every text, one int32 array each, encoded on `threads` threads (default:
    /// every core; one in a forked child) with the GIL released. The result does not depend
    /// on `threads`.
    #[pyo3(signature = (texts, threads = None))]
    fn encode_batch<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
        threads: Option<usize>,
    ) -> PyResult<Vec<Bound<'py, PyArray1<i32>>>> {
        let t = self.inner.as_ref();
        let run = || -> PyResult<Vec<Vec<i32>>> {
            texts
                .par_iter()
                .map(|s| Ok(encode_one(t, s)?.into_iter().map(|i| i as i32).collect()))
                .collect()
        };
        let n = threads.unwrap_or_else(default_threads);
        let ids = py.detach(|| pool(n)?.install(run))?;
        Ok(ids.into_iter().map(|v| v.into_pyarray(py)).collect())
    }

    /// The text of `ids`: pieces joined, `▁` as spaces, control pieces dropped (`<unk>` as
    /// ` ⁇ `), as SentencePiece's `decode` renders them.
    /// `ids`: a list, a 1-D numpy array or CPU tensor (`generate()`'s rows).
    fn decode(&self, ids: &Bound<'_, PyAny>) -> PyResult<String> {
        let ids: Vec<u32> = crate::as_array(ids)?.extract().map_err(|e| {
            ConveyorError::new_err(format!(
                "decode takes the ids of one sequence (a list, a 1-D array or tensor of ids >= 0): {e}"
            ))
        })?;
        Ok(self.inner.vocab().decode(&ids))
    }

    /// Pieces in the model (extra ids not included).
    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab().len()
    }

    #[getter]
    fn pad_id(&self) -> Option<u32> {
        self.inner.vocab().pad_id
    }

    #[getter]
    fn eos_id(&self) -> Option<u32> {
        self.inner.vocab().eos_id
    }

    #[getter]
    fn unk_id(&self) -> u32 {
        self.inner.vocab().unk_id
    }

    /// sha256 of the model file (what conveyor's manifests record as the vocabulary).
    #[getter]
    fn sha256(&self) -> &str {
        &self.inner.vocab().sha256
    }

    /// Pickled as its model file's path and sha256 (a DataLoader worker under spawn,
    /// `datasets.map(num_proc=...)`, whose cache keys on the pickle): unpickled, the file is
    /// opened again and must still be that model.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, (PathBuf, String))> {
        let open = py.get_type::<Tokenizer>().getattr("_unpickle")?;
        Ok((open, (self.path.clone(), self.sha256().to_string())))
    }

    #[staticmethod]
    fn _unpickle(path: PathBuf, sha256: &str) -> PyResult<Self> {
        let t = Self::from_file(path)?;
        if t.sha256() != sha256 {
            return Err(crate::ConveyorError::new_err(format!(
                "{}: not the SentencePiece model this Tokenizer was pickled with (sha256 {sha256}, the file's is now {}): restore that model, or make the Tokenizer again",
                t.path.display(),
                t.sha256()
            )));
        }
        Ok(t)
    }

    fn __repr__(&self) -> String {
        format!(
            "Tokenizer.from_file({:?}) ({} pieces)",
            self.path.display().to_string(),
            self.inner.vocab().len()
        )
    }
}
