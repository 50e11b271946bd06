//! The Parquet file behind every shard conveyor writes: zstd, bounded row groups, written
//! through a hashing writer (so the sha256 costs no second read), synced on finish.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use sha2::{Digest, Sha256};

use crate::error::Error;

/// A `Write` that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    written: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What a finished shard holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardStats {
    pub rows: u64,
    pub tokens: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// An open Parquet shard.
pub struct ParquetSink {
    path: PathBuf,
    schema: Arc<Schema>,
    writer: ArrowWriter<Hashing<BufWriter<File>>>,
}

impl ParquetSink {
    /// Creates (truncating) the file at `path`, zstd at `level` (3 for shards that are kept,
    /// 1 where writing speed matters more than 5% of size).
    pub fn create(path: &Path, schema: Arc<Schema>, level: i32) -> Result<Self, Error> {
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let sink = Hashing {
            inner: BufWriter::with_capacity(1 << 20, file),
            hash: Sha256::new(),
            written: 0,
        };
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(level).map_err(|e| Error::parquet(path, e))?,
            ))
            // Min/max of token ids help no reader and cost time.
            .set_statistics_enabled(EnabledStatistics::None)
            .set_created_by(format!("conveyor {}", env!("CARGO_PKG_VERSION")))
            .set_max_row_group_row_count(None);
        // Lists of ids: byte-stream-split (the high bytes of 16-bit ids stored as 32-bit
        // integers become runs zstd removes almost for free) instead of a dictionary, which
        // is slower to build and compresses token ids less.
        for field in schema.fields() {
            if let DataType::List(item) = field.data_type() {
                if item.data_type().is_integer() {
                    let path = ColumnPath::new(vec![
                        field.name().clone(),
                        "list".into(),
                        item.name().clone(),
                    ]);
                    props = props
                        .set_column_dictionary_enabled(path.clone(), false)
                        .set_column_encoding(path, Encoding::BYTE_STREAM_SPLIT);
                }
            }
        }
        let props = props.build();
        let writer = ArrowWriter::try_new(sink, schema.clone(), Some(props))
            .map_err(|e| Error::parquet(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            schema,
            writer,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// Writes a batch of columns (in schema order).
    pub fn write(&mut self, columns: Vec<arrow::array::ArrayRef>) -> Result<(), Error> {
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| Error::parquet(&self.path, e))?;
        self.writer
            .write(&batch)
            .map_err(|e| Error::parquet(&self.path, e))
    }

    /// Ends the current row group.
    pub fn end_row_group(&mut self) -> Result<(), Error> {
        self.writer
            .flush()
            .map_err(|e| Error::parquet(&self.path, e))
    }

    /// Bytes written so far plus the encoder's estimate of what is buffered.
    pub fn approx_bytes(&self) -> u64 {
        self.writer.bytes_written() as u64 + self.writer.in_progress_size() as u64
    }

    /// Writes the footer and syncs the file; `rows` and `tokens` are the caller's counts.
    pub fn finish(self, rows: u64, tokens: u64) -> Result<ShardStats, Error> {
        let path = self.path;
        let sink = self
            .writer
            .into_inner()
            .map_err(|e| Error::parquet(&path, e))?;
        let Hashing {
            inner,
            hash,
            written,
        } = sink;
        let file = inner
            .into_inner()
            .map_err(|e| Error::io(&path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&path, e))?;
        Ok(ShardStats {
            rows,
            tokens,
            bytes: written,
            sha256: crate::manifest::hex(&hash.finalize()),
        })
    }
}

/// What a writer does after adding a row (see [`RowCounts::add`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Keep buffering.
    Nothing,
    /// Hand the buffered rows to the Parquet writer as a record batch.
    Batch,
    /// Hand them over and end the row group.
    BatchAndGroup,
}

/// A shard's row and token counts, and when its buffered rows become a record batch
/// (`batch_tokens`) and its row group ends (`group_tokens`): the batching rule every shard
/// writer follows.
#[derive(Debug)]
pub struct RowCounts {
    pub rows: u64,
    pub tokens: u64,
    buffered_rows: usize,
    buffered_tokens: usize,
    group_tokens: u64,
    batch_tokens: usize,
    group_limit: u64,
}

impl RowCounts {
    pub fn new(batch_tokens: usize, group_tokens: u64) -> RowCounts {
        RowCounts {
            rows: 0,
            tokens: 0,
            buffered_rows: 0,
            buffered_tokens: 0,
            group_tokens: 0,
            batch_tokens,
            group_limit: group_tokens,
        }
    }

    /// Counts a row of `tokens` tokens; what to do now.
    pub fn add(&mut self, tokens: usize) -> Flush {
        self.rows += 1;
        self.tokens += tokens as u64;
        self.buffered_rows += 1;
        self.buffered_tokens += tokens;
        self.group_tokens += tokens as u64;
        if self.group_tokens >= self.group_limit {
            self.group_tokens = 0;
            Flush::BatchAndGroup
        } else if self.buffered_tokens >= self.batch_tokens {
            Flush::Batch
        } else {
            Flush::Nothing
        }
    }

    /// Rows buffered since the last batch.
    pub fn buffered_rows(&self) -> usize {
        self.buffered_rows
    }

    /// Tokens buffered since the last batch.
    pub fn buffered_tokens(&self) -> usize {
        self.buffered_tokens
    }

    /// The buffered rows were handed over.
    pub fn batch_written(&mut self) {
        self.buffered_rows = 0;
        self.buffered_tokens = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_and_row_groups_end_where_their_tokens_reach_the_limits() {
        let mut c = RowCounts::new(10, 25);
        let mut seen = Vec::new();
        for tokens in [4, 4, 4, 4, 4, 4, 4, 30, 1] {
            let f = c.add(tokens);
            if f != Flush::Nothing {
                c.batch_written();
            }
            seen.push(f);
        }
        use Flush::*;
        // Batches at 12 and 24 buffered tokens (limit 10); the group ends at 28 (limit 25)
        // and again at once with the 30-token row.
        assert_eq!(
            seen,
            [
                Nothing,
                Nothing,
                Batch,
                Nothing,
                Nothing,
                Batch,
                BatchAndGroup,
                BatchAndGroup,
                Nothing
            ]
        );
        assert_eq!((c.rows, c.tokens), (9, 59));
        assert_eq!((c.buffered_rows(), c.buffered_tokens()), (1, 1));
    }
}
