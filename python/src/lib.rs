//! `conveyor._native`: the Python extension behind the `conveyor` package. It wraps the
//! pipeline crate as it is (no libtorch): the SentencePiece-exact tokenizer, T5 span
//! corruption, the streaming loader and manifest reading. Errors carry the CLI's messages.

mod corrupt;
mod loader;
mod manifest;
mod tokenizer;

/// The loader allocates and frees a few hundred MB an epoch across its threads (pages,
/// items, batches); glibc's malloc hands much of it back to the kernel and faults it in
/// again (~6,000 page faults an epoch of the benchmark), mimalloc keeps and reuses it: an
/// epoch of `make bench-python`'s example shards took 80-107 ms with glibc and 60-68 ms with
/// mimalloc, side by side on the 2-core development machine. Only the extension's own
/// allocations go through it (numpy frees the arrays it hands out through it as well).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

create_exception!(
    conveyor,
    ConveyorError,
    PyValueError,
    "An error from conveyor: bad input, a foreign state or another vocabulary. Its message names the file, shard or setting and says what to do."
);

/// A pipeline error as a Python exception: a missing file is a FileNotFoundError, anything
/// else a ConveyorError; both carry the message the CLI prints.
pub(crate) fn error(e: conveyor_pipeline::Error) -> PyErr {
    if let conveyor_pipeline::Error::Io { error, .. } = &e {
        if error.kind() == std::io::ErrorKind::NotFound {
            return pyo3::exceptions::PyFileNotFoundError::new_err(e.to_string());
        }
    }
    ConveyorError::new_err(e.to_string())
}

/// An array-like that is not a numpy array, a list or a tuple (a torch tensor on the CPU, a
/// JAX array) as a numpy array, through `numpy.asarray`; anything else as it is.
pub(crate) fn as_array<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let plain = obj.cast::<numpy::PyUntypedArray>().is_ok()
        || obj.cast::<pyo3::types::PyList>().is_ok()
        || obj.cast::<pyo3::types::PyTuple>().is_ok();
    if !plain && obj.hasattr("__array__")? {
        return obj.py().import("numpy")?.call_method1("asarray", (obj,));
    }
    Ok(obj.clone())
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("ConveyorError", m.py().get_type::<ConveyorError>())?;
    tokenizer::note_importing_process();
    m.add_class::<tokenizer::Tokenizer>()?;
    m.add_class::<loader::Loader>()?;
    m.add_function(wrap_pyfunction!(corrupt::span_corruption, m)?)?;
    m.add_function(wrap_pyfunction!(corrupt::lengths, m)?)?;
    m.add_function(wrap_pyfunction!(manifest::read_manifest, m)?)?;
    Ok(())
}
