//! `conveyor.read_manifest`: a token, example or clean output folder's manifest, checked as
//! conveyor's readers check it (format, version, plain shard names), as a dict.

use std::path::{Path, PathBuf};

use conveyor_pipeline::examples::ExamplesManifest;
use conveyor_pipeline::manifest::Manifest;
use pyo3::prelude::*;

use crate::ConveyorError;

/// Reads FOLDER/manifest.json (or the manifest file itself) as the kind its `format` names.
#[pyfunction]
pub fn read_manifest<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyAny>> {
    let value = read(&path)?;
    py.import("json")?
        .call_method1("loads", (value.to_string(),))
}

/// The folder a path names: itself, or the folder of the manifest.json it names.
pub(crate) fn folder_of(path: &Path) -> PathBuf {
    match path.file_name().is_some_and(|n| n == "manifest.json") {
        true => path.parent().map(PathBuf::from).unwrap_or_default(),
        false => path.to_path_buf(),
    }
}

/// A token, example or clean folder's manifest, read and checked by its typed reader.
pub(crate) fn read(path: &Path) -> PyResult<serde_json::Value> {
    // Named as given: "x.parquet/manifest.json: Not a directory" said less.
    let why = |what: &str| {
        format!(
            "{}: {what}; give the folder conveyor wrote (the one holding manifest.json), or that manifest.json",
            path.display()
        )
    };
    if !path.exists() {
        return Err(pyo3::exceptions::PyFileNotFoundError::new_err(why(
            "does not exist",
        )));
    }
    if path.is_file() && path.file_name().is_some_and(|n| n != "manifest.json") {
        return Err(ConveyorError::new_err(why(
            "is a file, not a dataset folder",
        )));
    }
    let dir = folder_of(path);
    let file = dir.join("manifest.json");
    let format = conveyor_pipeline::manifest::format_of(&dir).map_err(crate::error)?;
    match format.as_str() {
        conveyor_pipeline::manifest::TOKENS_FORMAT => to_value(Manifest::read(&dir)),
        conveyor_pipeline::examples::EXAMPLES_FORMAT => to_value(ExamplesManifest::read(&dir)),
        conveyor_pipeline::clean::CLEAN_FORMAT => {
            to_value(conveyor_pipeline::clean::read_manifest(&dir))
        }
        other => Err(ConveyorError::new_err(format!(
            "{}: format {other:?} is not a conveyor token, example or clean manifest",
            file.display()
        ))),
    }
}

fn to_value<T: serde::Serialize>(
    m: Result<T, conveyor_pipeline::Error>,
) -> PyResult<serde_json::Value> {
    serde_json::to_value(m.map_err(crate::error)?)
        .map_err(|e| ConveyorError::new_err(e.to_string()))
}
