//! Streams the documents of a token shard: only the `tokens` column is decoded, a record
//! batch at a time, and each document is handed out as a slice of ids without copying.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, ListArray};
use arrow::datatypes::{DataType, UInt16Type, UInt32Type};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;

use crate::error::Error;

/// Rows decoded per record batch.
const BATCH_ROWS: usize = 1024;

/// One document's ids, at the width the shard stores them.
pub enum Ids<'a> {
    U16(&'a [u16]),
    U32(&'a [u32]),
}

/// The documents of one token shard, in order.
pub struct TokenDocs {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    rows: u64,
}

impl TokenDocs {
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::parquet(path, e))?;
        let rows = builder.metadata().file_metadata().num_rows() as u64;
        let schema = builder.parquet_schema();
        let Some(col) = builder.schema().index_of("tokens").ok() else {
            return Err(Error::parquet(
                path,
                "no `tokens` column: not a token shard",
            ));
        };
        let mask = ProjectionMask::roots(schema, [col]);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| Error::parquet(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            rows,
        })
    }

    /// Rows the shard holds, from its footer.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Calls `f` with every document in order; returns how many there were.
    pub fn for_each(self, mut f: impl FnMut(Ids<'_>)) -> Result<u64, Error> {
        let path = self.path;
        let mut n = 0u64;
        for batch in self.reader {
            let batch = batch.map_err(|e| Error::parquet(&path, e))?;
            let list: &ListArray = batch.column(0).as_list::<i32>();
            let offsets = list.value_offsets();
            let values = list.values();
            match values.data_type() {
                DataType::UInt16 => {
                    let v = values.as_primitive::<UInt16Type>().values();
                    for w in offsets.windows(2) {
                        f(Ids::U16(&v[w[0] as usize..w[1] as usize]));
                    }
                }
                DataType::UInt32 => {
                    let v = values.as_primitive::<UInt32Type>().values();
                    for w in offsets.windows(2) {
                        f(Ids::U32(&v[w[0] as usize..w[1] as usize]));
                    }
                }
                t => return Err(Error::parquet(&path, format!("token ids of type {t}"))),
            }
            n += list.len() as u64;
        }
        Ok(n)
    }
}
