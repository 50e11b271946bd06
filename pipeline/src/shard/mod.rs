//! Parquet token shards: the sink stage that writes them and the reader that checks and
//! decodes them. Layout (docs/formats.md): one row per document with `tokens`
//! (list<uint16> for vocabularies up to 65,536 ids, else list<uint32>), `url`, `timestamp`,
//! `source`, `source_index`; zstd compression.

mod docs;
mod pages;
mod pread;
mod reader;
pub mod sink;
mod writer;

pub use docs::{Ids, ListRows, TokenDocs};
pub use reader::{check_file, check_shape, file_sha256, read_shard_head, verify_shard, ShardRow};
pub use sink::{ParquetSink, ShardStats};
pub use writer::TokenShardWriter;

use std::sync::Arc;

use arrow::array::{ArrayRef, ListBuilder, UInt16Builder, UInt32Builder};
use arrow::datatypes::{DataType, Field, Schema};

/// Whether ids fit 16 bits for a vocabulary of `vocab_size` ids.
pub fn narrow_ids(vocab_size: usize) -> bool {
    vocab_size <= 1 << 16
}

/// A list<uint16> (`narrow`) or list<uint32> column type with non-null items.
pub fn id_list_type(narrow: bool) -> DataType {
    DataType::List(Arc::new(id_item_field(narrow)))
}

fn id_item_field(narrow: bool) -> Field {
    let id = if narrow {
        DataType::UInt16
    } else {
        DataType::UInt32
    };
    Field::new("item", id, false)
}

/// Builds a column of id lists at either width.
pub enum IdList {
    U16(ListBuilder<UInt16Builder>),
    U32(ListBuilder<UInt32Builder>),
}

impl IdList {
    pub fn new(narrow: bool) -> Self {
        let field = Arc::new(id_item_field(narrow));
        if narrow {
            Self::U16(ListBuilder::new(UInt16Builder::new()).with_field(field))
        } else {
            Self::U32(ListBuilder::new(UInt32Builder::new()).with_field(field))
        }
    }

    /// Appends one row. Ids must fit the width (the caller checked the vocabulary size).
    #[inline]
    pub fn append(&mut self, ids: &[u32]) {
        match self {
            Self::U16(b) => append_u16(b, ids),
            Self::U32(b) => {
                b.values().append_slice(ids);
                b.append(true);
            }
        }
    }

    pub fn finish(&mut self) -> ArrayRef {
        match self {
            Self::U16(b) => Arc::new(b.finish()),
            Self::U32(b) => Arc::new(b.finish()),
        }
    }
}

/// Appends `ids` narrowed to 16 bits as one list row, in blocks (the builder's per-value
/// path is several times slower).
pub(crate) fn append_u16(b: &mut ListBuilder<UInt16Builder>, ids: &[u32]) {
    let mut block = [0u16; 256];
    for chunk in ids.chunks(256) {
        for (d, &s) in block.iter_mut().zip(chunk) {
            *d = s as u16;
        }
        b.values().append_slice(&block[..chunk.len()]);
    }
    b.append(true);
}

/// The token shard schema.
pub fn token_schema(narrow: bool) -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("tokens", id_list_type(narrow), false),
        Field::new("url", DataType::Utf8, true),
        Field::new("timestamp", DataType::Utf8, true),
        Field::new("source", DataType::Utf8, false),
        Field::new("source_index", DataType::UInt64, false),
    ]))
}

/// `{split}-{index:05}-of-{count:05}.parquet`
pub fn shard_name(split: &str, index: usize, count: usize) -> String {
    format!("{split}-{index:05}-of-{count:05}.parquet")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_c4_pattern() {
        assert_eq!(shard_name("train", 3, 12), "train-00003-of-00012.parquet");
        assert!(narrow_ids(32_100));
        assert!(!narrow_ids(65_537));
    }
}
