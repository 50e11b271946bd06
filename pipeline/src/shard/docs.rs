//! Streams rows of list-of-id columns from a shard (token shards' `tokens`, example shards'
//! `inputs`, `targets`, ...): only the named columns are decoded, a record batch at a time,
//! and each row is handed out as slices of ids without copying. Leading rows can be skipped
//! without decoding the pages that hold only them. Columns of the shape conveyor writes are
//! decoded from their pages directly (`pages.rs`), others by the Arrow reader.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, ListArray};
use arrow::datatypes::{DataType, UInt16Type, UInt32Type};
use parquet::arrow::arrow_reader::{
    ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::arrow::ProjectionMask;

use super::pages::{fast_columns, PageRows};
use crate::error::Error;

/// Rows decoded per record batch.
const BATCH_ROWS: usize = 1024;

/// One row's ids in one column, at the width the shard stores them.
#[derive(Clone, Copy)]
pub enum Ids<'a> {
    U16(&'a [u16]),
    U32(&'a [u32]),
}

impl Ids<'_> {
    pub fn len(&self) -> usize {
        match self {
            Ids::U16(v) => v.len(),
            Ids::U32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the ids to `out` as u32.
    pub fn extend_into(&self, out: &mut Vec<u32>) {
        match self {
            Ids::U16(v) => out.extend(v.iter().map(|&x| x as u32)),
            Ids::U32(v) => out.extend_from_slice(v),
        }
    }
}

/// Rows of some list-of-id columns of one shard, in order.
pub struct ListRows {
    path: PathBuf,
    reader: Reader,
    rows: u64,
    columns: usize,
}

/// Who decodes the pages.
enum Reader {
    Arrow(ParquetRecordBatchReader),
    Pages(PageRows),
}

impl ListRows {
    /// Opens `columns` of the shard at `path`, starting after its first `skip` rows.
    pub fn open(path: &Path, columns: &[&str], skip: u64) -> Result<Self, Error> {
        Self::open_with(path, columns, skip, true)
    }

    /// `open`, choosing whether the direct page decoder may be used (the tests compare the
    /// two readers).
    pub(crate) fn open_with(
        path: &Path,
        columns: &[&str],
        skip: u64,
        direct: bool,
    ) -> Result<Self, Error> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // The footer is parsed once, from this open file, whichever reader decodes it.
        let footer = file.try_clone().map_err(|e| Error::io(path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(footer)
            .map_err(|e| Error::parquet(path, e))?;
        let rows = builder.metadata().file_metadata().num_rows() as u64;
        let mut roots = Vec::new();
        for name in columns {
            let i = builder.schema().index_of(name).map_err(|_| {
                Error::parquet(
                    path,
                    format!("no `{name}` column: not the kind of shard expected"),
                )
            })?;
            roots.push(i);
        }
        // The projection keeps schema order; callers get columns in the order they asked.
        let mut order: Vec<usize> = (0..roots.len()).collect();
        order.sort_by_key(|&i| roots[i]);
        if order.iter().enumerate().any(|(a, &b)| a != b) {
            return Err(Error::parquet(
                path,
                "columns must be asked for in schema order",
            ));
        }
        // The direct decoder reads from the first row; resuming inside a shard is rare
        // enough to leave to the Arrow reader's row selection.
        if let Some(leaves) = fast_columns(builder.metadata(), builder.schema(), &roots)
            .filter(|_| direct && skip == 0)
        {
            let meta = builder.metadata().clone();
            return Ok(Self {
                path: path.to_path_buf(),
                reader: Reader::Pages(PageRows::open(path, file, meta, leaves)?),
                rows,
                columns: columns.len(),
            });
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let mut builder = builder.with_projection(mask).with_batch_size(BATCH_ROWS);
        let skip = skip.min(rows);
        if skip > 0 {
            builder = builder.with_row_selection(RowSelection::from(vec![
                RowSelector::skip(skip as usize),
                RowSelector::select((rows - skip) as usize),
            ]));
        }
        let reader = builder.build().map_err(|e| Error::parquet(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            reader: Reader::Arrow(reader),
            rows,
            columns: columns.len(),
        })
    }

    /// Reads and decompresses each column's pages on a thread of its own, a couple of pages
    /// ahead of the rows handed out (the loader does; commands that already run a reader
    /// per core do not). Only the direct page decoder does this.
    pub fn read_ahead(mut self) -> Self {
        if let Reader::Pages(p) = &mut self.reader {
            p.read_ahead = true;
        }
        self
    }

    /// Whether the direct page decoder reads this shard.
    #[cfg(test)]
    pub(crate) fn direct(&self) -> bool {
        matches!(self.reader, Reader::Pages(_))
    }

    /// Rows the shard holds, from its footer (skipped ones included).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Calls `f` with every (remaining) row's columns in order; `f` returns false to stop.
    /// Returns how many rows were handed out.
    pub fn for_each(self, mut f: impl FnMut(&[Ids<'_>]) -> bool) -> Result<u64, Error> {
        let reader = match self.reader {
            Reader::Pages(p) => return p.for_each(f),
            Reader::Arrow(r) => r,
        };
        let path = self.path;
        let mut n = 0u64;
        for batch in reader {
            let batch = batch.map_err(|e| Error::parquet(&path, e))?;
            // A column of another type (a shard rewritten by another tool) is named, not a
            // panic of the thread reading it.
            let lists: Vec<&ListArray> = (0..self.columns)
                .map(|c| {
                    let column = batch.column(c);
                    column.as_list_opt::<i32>().ok_or_else(|| {
                        Error::parquet(
                            &path,
                            format!(
                                "column {} is {}, not a list of uint16 or uint32 ids: not a shard conveyor wrote; write it again with conveyor",
                                batch.schema().field(c).name(),
                                column.data_type()
                            ),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
            for l in &lists {
                if !matches!(l.values().data_type(), DataType::UInt16 | DataType::UInt32) {
                    return Err(Error::parquet(
                        &path,
                        format!("ids of type {}", l.values().data_type()),
                    ));
                }
            }
            let mut row: Vec<Ids<'_>> = Vec::with_capacity(self.columns);
            for r in 0..batch.num_rows() {
                row.clear();
                for l in &lists {
                    let offsets = l.value_offsets();
                    let (a, b) = (offsets[r] as usize, offsets[r + 1] as usize);
                    let values = l.values();
                    row.push(match values.data_type() {
                        DataType::UInt16 => {
                            Ids::U16(&values.as_primitive::<UInt16Type>().values()[a..b])
                        }
                        _ => Ids::U32(&values.as_primitive::<UInt32Type>().values()[a..b]),
                    });
                }
                n += 1;
                if !f(&row) {
                    return Ok(n);
                }
            }
        }
        Ok(n)
    }
}

/// The documents of one token shard, in order.
pub struct TokenDocs(ListRows);

impl TokenDocs {
    pub fn open(path: &Path) -> Result<Self, Error> {
        ListRows::open(path, &["tokens"], 0).map(Self)
    }

    /// Rows the shard holds, from its footer.
    pub fn rows(&self) -> u64 {
        self.0.rows()
    }

    /// Calls `f` with every document in order; returns how many there were.
    pub fn for_each(self, mut f: impl FnMut(Ids<'_>)) -> Result<u64, Error> {
        self.0.for_each(|row| {
            f(row[0]);
            true
        })
    }
}
