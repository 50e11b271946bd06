//! Example shards: what span corruption writes and trainers read. One row per example
//! (`inputs`, `targets`: list<uint16>, or list<uint32> above 65,536 ids) or, packed, one row
//! per packed row with `inputs_segment_ids`, `inputs_positions`, `targets_segment_ids`,
//! `targets_positions` (list<uint16>; rows padded to the feature lengths with 0).

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, ListBuilder, StringBuilder, UInt16Builder};
use arrow::datatypes::{DataType, Field, Schema};

use super::{Example, PackedRow};
use crate::error::Error;
use crate::shard::sink::{Flush, ParquetSink, RowCounts, ShardStats};
use crate::shard::{id_list_type, IdList};

/// Tokens buffered before a record batch is handed to the Parquet writer.
const BATCH_TOKENS: usize = 1 << 20;
/// Tokens per row group.
const ROW_GROUP_TOKENS: u64 = 1 << 23;

/// The packing columns, in schema order after `inputs` and `targets`.
pub const PACKING_COLUMNS: [&str; 4] = [
    "inputs_segment_ids",
    "inputs_positions",
    "targets_segment_ids",
    "targets_positions",
];

/// The text columns of task example shards, after `inputs` and `targets`.
pub const TEXT_COLUMNS: [&str; 3] = ["inputs_pretokenized", "targets_pretokenized", "category"];

/// The column of a task's other acceptable answers (list<string>), after the text columns,
/// in the shards of tasks that have them (SQuAD's).
pub const ANSWERS_COLUMN: &str = "answers";

fn answers_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, false)))
}

/// The example shard schema; `text` adds the task columns (strings; `category` nullable),
/// `answers` the answers column.
pub fn example_schema(narrow: bool, packed: bool, text: bool, answers: bool) -> Arc<Schema> {
    let mut fields = vec![
        Field::new("inputs", id_list_type(narrow), false),
        Field::new("targets", id_list_type(narrow), false),
    ];
    if text {
        for (i, name) in TEXT_COLUMNS.iter().enumerate() {
            fields.push(Field::new(*name, DataType::Utf8, i == 2));
        }
    }
    if answers {
        fields.push(Field::new(ANSWERS_COLUMN, answers_type(), false));
    }
    if packed {
        let small = DataType::List(Arc::new(Field::new("item", DataType::UInt16, false)));
        for name in PACKING_COLUMNS {
            fields.push(Field::new(name, small.clone(), false));
        }
    }
    Arc::new(Schema::new(fields))
}

fn small_list() -> ListBuilder<UInt16Builder> {
    ListBuilder::new(UInt16Builder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::UInt16,
        false,
    )))
}

fn append_small(b: &mut ListBuilder<UInt16Builder>, v: &[u32]) {
    crate::shard::append_u16(b, v);
}

/// Writes one example shard.
pub struct ExampleShardWriter {
    sink: ParquetSink,
    inputs: IdList,
    targets: IdList,
    packing: Option<[ListBuilder<UInt16Builder>; 4]>,
    text: Option<[StringBuilder; 3]>,
    answers: Option<ListBuilder<StringBuilder>>,
    counts: RowCounts,
    examples: u64,
}

impl ExampleShardWriter {
    /// Creates (truncating) the shard at `path`. Packed rows need feature lengths that fit
    /// 16 bits (checked by the caller).
    pub fn create(path: &Path, narrow: bool, packed: bool) -> Result<Self, Error> {
        Self::with_columns(path, narrow, packed, false, false)
    }

    /// A shard of task examples: ids plus the texts they came from and a category, and with
    /// `answers` each example's other acceptable answers.
    pub fn create_text(path: &Path, narrow: bool, answers: bool) -> Result<Self, Error> {
        Self::with_columns(path, narrow, false, true, answers)
    }

    fn with_columns(
        path: &Path,
        narrow: bool,
        packed: bool,
        text: bool,
        answers: bool,
    ) -> Result<Self, Error> {
        let schema = example_schema(narrow, packed, text, answers);
        Ok(Self {
            sink: ParquetSink::create(path, schema, 1)?,
            inputs: IdList::new(narrow),
            targets: IdList::new(narrow),
            packing: packed.then(|| std::array::from_fn(|_| small_list())),
            text: text.then(|| std::array::from_fn(|_| StringBuilder::new())),
            answers: answers.then(|| {
                ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
                    "item",
                    DataType::Utf8,
                    false,
                )))
            }),
            counts: RowCounts::new(BATCH_TOKENS, ROW_GROUP_TOKENS),
            examples: 0,
        })
    }

    /// Adds one example as a row (unpacked shards).
    pub fn push_example(&mut self, ex: &Example) -> Result<(), Error> {
        debug_assert!(self.packing.is_none());
        self.inputs.append(&ex.inputs);
        self.targets.append(&ex.targets);
        self.examples += 1;
        self.row_added(ex.inputs.len() + ex.targets.len())
    }

    /// Adds one task example with its texts (text shards), and its other answers if the
    /// shard has the column.
    pub fn push_text(
        &mut self,
        ex: &Example,
        inputs: &str,
        targets: &str,
        category: Option<&str>,
        answers: &[String],
    ) -> Result<(), Error> {
        let t = self.text.as_mut().expect("a text shard");
        t[0].append_value(inputs);
        t[1].append_value(targets);
        t[2].append_option(category);
        if let Some(a) = self.answers.as_mut() {
            for x in answers {
                a.values().append_value(x);
            }
            a.append(true);
        }
        self.inputs.append(&ex.inputs);
        self.targets.append(&ex.targets);
        self.examples += 1;
        self.row_added(ex.inputs.len() + ex.targets.len())
    }

    /// Adds one packed row (packed shards).
    pub fn push_packed(&mut self, row: &PackedRow) -> Result<(), Error> {
        let p = self.packing.as_mut().expect("a packed shard");
        self.inputs.append(&row.inputs);
        self.targets.append(&row.targets);
        append_small(&mut p[0], &row.inputs_segment_ids);
        append_small(&mut p[1], &row.inputs_positions);
        append_small(&mut p[2], &row.targets_segment_ids);
        append_small(&mut p[3], &row.targets_positions);
        self.examples += row.examples as u64;
        let used = row.inputs_segment_ids.iter().filter(|&&s| s > 0).count()
            + row.targets_segment_ids.iter().filter(|&&s| s > 0).count();
        self.row_added(used)
    }

    fn row_added(&mut self, tokens: usize) -> Result<(), Error> {
        let flush = self.counts.add(tokens);
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
        let mut cols: Vec<ArrayRef> = vec![self.inputs.finish(), self.targets.finish()];
        if let Some(t) = self.text.as_mut() {
            for b in t.iter_mut() {
                cols.push(Arc::new(b.finish()));
            }
        }
        if let Some(a) = self.answers.as_mut() {
            cols.push(Arc::new(a.finish()));
        }
        if let Some(p) = self.packing.as_mut() {
            for b in p.iter_mut() {
                cols.push(Arc::new(b.finish()));
            }
        }
        self.sink.write(cols)?;
        self.counts.batch_written();
        Ok(())
    }

    /// Examples written (packed rows hold several).
    pub fn examples(&self) -> u64 {
        self.examples
    }

    /// Writes the footer, syncs, and reports rows and (unpadded) tokens.
    pub fn finish(mut self) -> Result<ShardStats, Error> {
        self.write_batch()?;
        self.sink.finish(self.counts.rows, self.counts.tokens)
    }
}
