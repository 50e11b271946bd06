//! The weight files of a Hugging Face folder: `model.safetensors`, or shards listed by
//! `model.safetensors.index.json` (names in the index never lead outside the folder); pickled
//! weights are refused with the conversion to run. Writing: safetensors with the
//! `{"format": "pt"}` metadata transformers checks for.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::Value;
use tch::{Kind, Tensor};

use super::{io, HfError};

/// Every tensor of the folder's weights, by name.
pub fn read_weights(dir: &Path) -> Result<BTreeMap<String, Tensor>, HfError> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    let files = if single.exists() {
        vec![single]
    } else if index.exists() {
        shard_files(dir, &index)?
    } else {
        return Err(missing(dir));
    };
    let mut out = BTreeMap::new();
    for file in &files {
        regular(file, u64::MAX)?;
        let tensors = Tensor::read_safetensors(file).map_err(|e| {
            // tch's message repeats the path and gives the reader's Debug name only.
            let why = e.to_string();
            let why = why.rsplit(": ").next().unwrap_or(&why).to_string();
            io(
                file,
                format!("is not a readable safetensors file ({why}); download it again, or save the model again with save_pretrained(..., safe_serialization=True)"),
            )
        })?;
        for (name, t) in tensors {
            if out.insert(name.clone(), t).is_some() {
                return Err(io(file, format!("holds {name} a second time")));
            }
        }
    }
    if index.exists() && !dir.join("model.safetensors").exists() {
        let listed = weight_map(&index)?;
        if let Some(name) = listed.keys().find(|n| !out.contains_key(*n)) {
            return Err(io(
                &index,
                format!(
                    "lists {name}, which none of its shards holds (a shard missing or damaged?)"
                ),
            ));
        }
    }
    Ok(out)
}

fn weight_map(index: &Path) -> Result<serde_json::Map<String, Value>, HfError> {
    regular(index, conveyor_pipeline::regular::MAX_JSON_BYTES)?;
    let text = std::fs::read_to_string(index).map_err(|e| io(index, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| io(index, e))?;
    match v.get("weight_map") {
        Some(Value::Object(m)) => Ok(m.clone()),
        _ => Err(io(index, "has no weight_map object")),
    }
}

/// The distinct shard files the index names, each inside `dir`.
fn shard_files(dir: &Path, index: &Path) -> Result<Vec<std::path::PathBuf>, HfError> {
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    for (name, file) in weight_map(index)? {
        let file = file
            .as_str()
            .ok_or_else(|| io(index, format!("names no file for {name}")))?;
        let path = conveyor_pipeline::contain::join(dir, file, index).map_err(|e| io(index, e))?;
        if !files.contains(&path) {
            files.push(path);
        }
    }
    Ok(files)
}

/// Refuses what is not a regular file of at most `max` bytes before reading it
/// ([`conveyor_pipeline::regular`]: a named FIFO hung the import, a link to /dev/zero read
/// until memory ran out); a file an index names that is missing is said so.
pub fn regular(path: &Path, max: u64) -> Result<(), HfError> {
    match conveyor_pipeline::regular::refusal(path, max) {
        Ok(None) => Ok(()),
        Ok(Some(why)) => Err(io(path, why)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(io(
            path,
            "is missing: download every file of the model (config.json, the .safetensors files and their index)",
        )),
        Err(e) => Err(io(path, e)),
    }
}

/// No safetensors weights: say what the folder holds instead and how to convert it.
fn missing(dir: &Path) -> HfError {
    let pickled = ["pytorch_model.bin", "pytorch_model.bin.index.json"]
        .iter()
        .find(|f| dir.join(f).exists());
    let message = match pickled {
        Some(f) => format!(
            "holds {f}, a pickle, which conveyor does not read (unpickling runs code); convert it to safetensors first: python -c \"from transformers import T5ForConditionalGeneration as M; M.from_pretrained('{d}').save_pretrained('{d}', safe_serialization=True)\"",
            d = dir.display()
        ),
        None => "holds neither model.safetensors nor model.safetensors.index.json: download the safetensors weights too (huggingface-cli download MODEL --include '*.json' '*.safetensors')".into(),
    };
    io(dir, message)
}

/// Writes float32 `tensors` as a safetensors file that transformers loads.
pub fn write_weights(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), HfError> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let t = t.to_kind(Kind::Float).contiguous();
            let values = Vec::<f32>::try_from(t.flatten(0, -1)).map_err(|e| io(path, e))?;
            let shape = t.size().iter().map(|&s| s as usize).collect();
            let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            Ok((name.clone(), shape, raw))
        })
        .collect::<Result<_, HfError>>()?;
    let views = bytes
        .iter()
        .map(|(name, shape, raw)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), raw)
                .map(|v| (name.as_str(), v))
                .map_err(|e| io(path, format!("{name}: {e:?}")))
        })
        .collect::<Result<Vec<_>, HfError>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::tensor::serialize_to_file(views, &Some(metadata), path)
        .map_err(|e| io(path, format!("{e:?}")))
}
