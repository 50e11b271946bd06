//! Writes one token shard: rows are buffered into bounded row groups, written through a
//! hashing writer (so the sha256 costs no second read) to a temporary path.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, ListBuilder, RecordBatch, StringBuilder, UInt16Builder, UInt32Builder,
    UInt64Builder,
};
use arrow::datatypes::Schema;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use sha2::{Digest, Sha256};

use crate::error::Error;

/// Tokens buffered before a record batch is handed to the Parquet writer.
const BATCH_TOKENS: usize = 1 << 20;
/// Tokens per row group (about 8-16 MB of ids before compression).
const ROW_GROUP_TOKENS: u64 = 1 << 22;

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

enum Ids {
    U16(ListBuilder<UInt16Builder>),
    U32(ListBuilder<UInt32Builder>),
}

pub struct TokenShardWriter {
    path: PathBuf,
    schema: Arc<Schema>,
    writer: ArrowWriter<Hashing<BufWriter<File>>>,
    ids: Ids,
    url: StringBuilder,
    timestamp: StringBuilder,
    source: StringBuilder,
    index: UInt64Builder,
    buffered_tokens: usize,
    group_tokens: u64,
    rows: u64,
    tokens: u64,
}

impl TokenShardWriter {
    /// Creates (truncating) the shard file at `path`.
    pub fn create(path: &Path, narrow: bool) -> Result<Self, Error> {
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let sink = Hashing {
            inner: BufWriter::with_capacity(1 << 20, file),
            hash: Sha256::new(),
            written: 0,
        };
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).expect("valid level"),
            ))
            .set_created_by(format!("conveyor {}", env!("CARGO_PKG_VERSION")))
            .set_max_row_group_row_count(None)
            .build();
        let schema = super::token_schema(narrow);
        let writer = ArrowWriter::try_new(sink, schema.clone(), Some(props))
            .map_err(|e| Error::parquet(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            schema,
            writer,
            ids: if narrow {
                Ids::U16(ListBuilder::new(UInt16Builder::new()).with_field(item_field(narrow)))
            } else {
                Ids::U32(ListBuilder::new(UInt32Builder::new()).with_field(item_field(narrow)))
            },
            url: StringBuilder::new(),
            timestamp: StringBuilder::new(),
            source: StringBuilder::new(),
            index: UInt64Builder::new(),
            buffered_tokens: 0,
            group_tokens: 0,
            rows: 0,
            tokens: 0,
        })
    }

    /// Adds one document. Ids must fit the shard's id width.
    pub fn push(
        &mut self,
        tokens: &[u32],
        url: Option<&str>,
        timestamp: Option<&str>,
        source: &str,
        source_index: u64,
    ) -> Result<(), Error> {
        match &mut self.ids {
            Ids::U16(b) => {
                b.values().extend(tokens.iter().map(|&t| Some(t as u16)));
                b.append(true);
            }
            Ids::U32(b) => {
                b.values().append_slice(tokens);
                b.append(true);
            }
        }
        self.url.append_option(url);
        self.timestamp.append_option(timestamp);
        self.source.append_value(source);
        self.index.append_value(source_index);
        self.buffered_tokens += tokens.len();
        self.group_tokens += tokens.len() as u64;
        self.rows += 1;
        self.tokens += tokens.len() as u64;
        if self.buffered_tokens >= BATCH_TOKENS {
            self.write_batch()?;
        }
        if self.group_tokens >= ROW_GROUP_TOKENS {
            self.write_batch()?;
            self.writer
                .flush()
                .map_err(|e| Error::parquet(&self.path, e))?;
            self.group_tokens = 0;
        }
        Ok(())
    }

    fn write_batch(&mut self) -> Result<(), Error> {
        if self.index.len() == 0 {
            return Ok(());
        }
        let ids: ArrayRef = match &mut self.ids {
            Ids::U16(b) => Arc::new(b.finish()),
            Ids::U32(b) => Arc::new(b.finish()),
        };
        let batch = RecordBatch::try_new(
            self.schema.clone(),
            vec![
                ids,
                Arc::new(self.url.finish()),
                Arc::new(self.timestamp.finish()),
                Arc::new(self.source.finish()),
                Arc::new(self.index.finish()),
            ],
        )
        .map_err(|e| Error::parquet(&self.path, e))?;
        self.writer
            .write(&batch)
            .map_err(|e| Error::parquet(&self.path, e))?;
        self.buffered_tokens = 0;
        Ok(())
    }

    /// Rows and tokens so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// The shard's size so far: bytes written plus the encoder's estimate of what is
    /// buffered (rows not yet handed over count two bytes per token).
    pub fn approx_bytes(&self) -> u64 {
        self.writer.bytes_written() as u64
            + self.writer.in_progress_size() as u64
            + 2 * self.buffered_tokens as u64
    }

    /// Writes the footer, syncs the file and returns what it holds.
    pub fn finish(mut self) -> Result<ShardStats, Error> {
        self.write_batch()?;
        let sink = self
            .writer
            .into_inner()
            .map_err(|e| Error::parquet(&self.path, e))?;
        let Hashing {
            inner,
            hash,
            written,
        } = sink;
        let file = inner
            .into_inner()
            .map_err(|e| Error::io(&self.path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.path, e))?;
        Ok(ShardStats {
            rows: self.rows,
            tokens: self.tokens,
            bytes: written,
            sha256: crate::spm::hex(&hash.finalize()),
        })
    }
}

fn item_field(narrow: bool) -> Arc<arrow::datatypes::Field> {
    match super::token_schema(narrow).field(0).data_type() {
        arrow::datatypes::DataType::List(f) => f.clone(),
        _ => unreachable!("tokens is a list"),
    }
}
