//! Parquet token shards: the sink stage that writes them and the reader that checks and
//! decodes them. Layout (DESIGN.md "Formats"): one row per document with `tokens`
//! (list<uint16> for vocabularies up to 65,536 ids, else list<uint32>), `url`, `timestamp`,
//! `source`, `source_index`; zstd compression.

mod reader;
mod writer;

pub use reader::{read_shard_head, verify_shard, ShardRow};
pub use writer::{ShardStats, TokenShardWriter};

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};

/// Whether ids fit 16 bits for a vocabulary of `vocab_size` ids.
pub fn narrow_ids(vocab_size: usize) -> bool {
    vocab_size <= 1 << 16
}

/// The token shard schema.
pub fn token_schema(narrow: bool) -> Arc<Schema> {
    let id = if narrow {
        DataType::UInt16
    } else {
        DataType::UInt32
    };
    Arc::new(Schema::new(vec![
        Field::new(
            "tokens",
            DataType::List(Arc::new(Field::new("item", id, false))),
            false,
        ),
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
