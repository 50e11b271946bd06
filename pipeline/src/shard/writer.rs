//! Writes one token shard: rows are buffered into bounded row groups of a [`ParquetSink`]
//! ([`RowCounts`] says when).

use std::path::Path;
use std::sync::Arc;

use arrow::array::{StringBuilder, UInt64Builder};

use super::sink::{Flush, ParquetSink, RowCounts, ShardStats};
use super::IdList;
use crate::error::Error;

/// Tokens buffered before a record batch is handed to the Parquet writer.
const BATCH_TOKENS: usize = 1 << 20;
/// Tokens per row group (about 8-16 MB of ids before compression).
const ROW_GROUP_TOKENS: u64 = 1 << 22;

pub struct TokenShardWriter {
    sink: ParquetSink,
    ids: IdList,
    url: StringBuilder,
    timestamp: StringBuilder,
    source: StringBuilder,
    index: UInt64Builder,
    counts: RowCounts,
}

impl TokenShardWriter {
    /// Creates (truncating) the shard file at `path`.
    pub fn create(path: &Path, narrow: bool) -> Result<Self, Error> {
        Ok(Self {
            sink: ParquetSink::create(path, super::token_schema(narrow), 3)?,
            ids: IdList::new(narrow),
            url: StringBuilder::new(),
            timestamp: StringBuilder::new(),
            source: StringBuilder::new(),
            index: UInt64Builder::new(),
            counts: RowCounts::new(BATCH_TOKENS, ROW_GROUP_TOKENS),
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
        self.ids.append(tokens);
        self.url.append_option(url);
        self.timestamp.append_option(timestamp);
        self.source.append_value(source);
        self.index.append_value(source_index);
        let flush = self.counts.add(tokens.len());
        if flush != Flush::Nothing {
            self.write_batch()?;
        }
        if flush == Flush::BatchAndGroup {
            self.sink.end_row_group()?;
        }
        Ok(())
    }

    fn write_batch(&mut self) -> Result<(), Error> {
        if self.counts.buffered_rows() == 0 {
            return Ok(());
        }
        let ids = self.ids.finish();
        self.sink.write(vec![
            ids,
            Arc::new(self.url.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.index.finish()),
        ])?;
        self.counts.batch_written();
        Ok(())
    }

    /// Rows and tokens so far.
    pub fn rows(&self) -> u64 {
        self.counts.rows
    }

    pub fn tokens(&self) -> u64 {
        self.counts.tokens
    }

    /// The shard's size so far: bytes written plus the encoder's estimate of what is
    /// buffered (rows not yet handed over count two bytes per token).
    pub fn approx_bytes(&self) -> u64 {
        self.sink.approx_bytes() + 2 * self.counts.buffered_tokens() as u64
    }

    /// Writes the footer, syncs the file and returns what it holds.
    pub fn finish(mut self) -> Result<ShardStats, Error> {
        self.write_batch()?;
        self.sink.finish(self.counts.rows, self.counts.tokens)
    }
}
