//! Reads token shards back: the first rows for `inspect`, and a full check of a shard's
//! checksum and row count for `inspect --verify`.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, UInt16Type, UInt32Type, UInt64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha2::{Digest, Sha256};

use crate::error::Error;

/// One decoded row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRow {
    pub tokens: Vec<u32>,
    pub url: Option<String>,
    pub source: String,
    pub source_index: u64,
}

/// The first `n` rows of a shard.
pub fn read_shard_head(path: &Path, n: usize) -> Result<Vec<ShardRow>, Error> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(n.clamp(1, 1024)).build())
        .map_err(|e| Error::parquet(path, e))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| Error::parquet(path, e))?;
        let col = |name: &str| {
            batch.column_by_name(name).ok_or_else(|| {
                Error::parquet(path, format!("no `{name}` column: not a token shard"))
            })
        };
        let typed = |name: &str, ok: bool| {
            match ok {
            true => Ok(()),
            false => Err(Error::parquet(
                path,
                format!("column `{name}` has another type than conveyor writes: not a token shard of conveyor's"),
            )),
        }
        };
        let (tokens, url) = (col("tokens")?, col("url")?);
        let (source, index) = (col("source")?, col("source_index")?);
        typed("tokens", tokens.as_list_opt::<i32>().is_some())?;
        typed("url", url.as_string_opt::<i32>().is_some())?;
        typed("source", source.as_string_opt::<i32>().is_some())?;
        typed(
            "source_index",
            index.as_primitive_opt::<UInt64Type>().is_some(),
        )?;
        let tokens = tokens.as_list::<i32>().clone();
        let url = url.as_string::<i32>().clone();
        let source = source.as_string::<i32>().clone();
        let index = index.as_primitive::<UInt64Type>().clone();
        for row in 0..batch.num_rows() {
            if out.len() == n {
                return Ok(out);
            }
            let ids = tokens.value(row);
            let ids: Vec<u32> = match ids.data_type() {
                DataType::UInt16 => ids
                    .as_primitive::<UInt16Type>()
                    .values()
                    .iter()
                    .map(|&v| v as u32)
                    .collect(),
                DataType::UInt32 => ids.as_primitive::<UInt32Type>().values().to_vec(),
                t => return Err(Error::parquet(path, format!("token ids of type {t}"))),
            };
            out.push(ShardRow {
                tokens: ids,
                url: (!url.is_null(row)).then(|| url.value(row).to_string()),
                source: source.value(row).to_string(),
                source_index: index.value(row),
            });
        }
    }
    Ok(out)
}

/// Checks a shard's sha256 and its row count against what the manifest says.
pub fn verify_shard(path: &Path, sha256: &str, rows: u64) -> Result<(), Error> {
    let got = file_sha256(path)?;
    if got != sha256 {
        return Err(Error::Verify {
            path: path.to_path_buf(),
            message: format!(
                "sha256 is {got}, the manifest says {sha256}: the file was changed or damaged; rerun the command that wrote it with --overwrite"
            ),
        });
    }
    check_rows(path, rows)
}

/// The sha256 of a file, read once from start to end.
pub fn file_sha256(path: &Path) -> Result<String, Error> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(crate::manifest::hex(&hash.finalize()))
}

/// The cheap check every reader makes before using a shard: its size and the row count in
/// its footer are the manifest's. Catches truncated, replaced and half-copied files.
pub fn check_shape(path: &Path, bytes: u64, rows: u64) -> Result<(), Error> {
    check_size(path, bytes)?;
    check_rows(path, rows)
}

/// The whole-file check of a read that reads every byte anyway (corrupt, merge, download):
/// size, then sha256.
pub fn check_file(path: &Path, sha256: &str, bytes: u64) -> Result<(), Error> {
    check_size(path, bytes)?;
    let got = file_sha256(path)?;
    if got != sha256 {
        return Err(Error::Verify {
            path: path.to_path_buf(),
            message: format!(
                "sha256 is {got}, the manifest says {sha256}: the file was changed or damaged. {RERUN}"
            ),
        });
    }
    Ok(())
}

const RERUN: &str = "Rerun the command that wrote it (with --overwrite), or run `conveyor inspect DIR --verify` to list every damaged shard";

fn check_size(path: &Path, bytes: u64) -> Result<(), Error> {
    let got = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if got != bytes {
        return Err(Error::Verify {
            path: path.to_path_buf(),
            message: format!(
                "{got} bytes, the manifest says {bytes}: the file is truncated or was replaced. {RERUN}"
            ),
        });
    }
    Ok(())
}

fn check_rows(path: &Path, rows: u64) -> Result<(), Error> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::Verify {
        path: path.to_path_buf(),
        message: format!("not a readable Parquet file ({e}). {RERUN}"),
    })?;
    let got = meta.metadata().file_metadata().num_rows() as u64;
    if got != rows {
        return Err(Error::Verify {
            path: path.to_path_buf(),
            message: format!("{got} rows, the manifest says {rows}. {RERUN}"),
        });
    }
    Ok(())
}
