//! A direct page decoder for the shape conveyor writes its id columns in: a required list of
//! required unsigned 16- or 32-bit integers (definition and repetition levels of at most 1),
//! values PLAIN or BYTE_STREAM_SPLIT, levels RLE, any codec, data pages v1 or v2.
//!
//! The generic Arrow list reader decodes every level into an i16 array, builds offsets from
//! them, then casts the i32 values to the item type: about 5 ns an id, most of a loader's
//! epoch. Here the levels are walked run by run (a row of 512 ids is two runs), and the
//! values go from the page straight to u16/u32, so a shard reads in about the time its pages
//! take to decompress. Files of any other shape (dictionary pages, optional lists, other
//! encodings) are read by the Arrow reader instead (`ListRows` decides).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use parquet::basic::{ConvertedType, Encoding, LogicalType, Type as PhysicalType};
use parquet::column::page::{Page, PageReader};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::reader::Length;
use parquet::file::serialized_reader::SerializedPageReader;
use parquet::schema::types::ColumnDescriptor;

use arrow::datatypes::{DataType, Schema};

use super::pread::Positioned;
use super::Ids;
use crate::error::Error;

/// Rows of some id-list columns, decoded from their pages.
pub(super) struct PageRows {
    path: PathBuf,
    /// The file as opened once, read at offsets, and its footer as parsed then.
    file: Positioned,
    meta: Arc<ParquetMetaData>,
    /// Leaf column index of each requested column, and whether its ids are 32-bit.
    columns: Vec<(usize, bool)>,
    /// Read and decompress each column's pages on a thread of its own, a few pages ahead.
    pub(super) read_ahead: bool,
}

/// The leaf columns of `roots` when every one has the shape this decoder reads, with their
/// width (true: 32-bit ids); None sends the file to the Arrow reader. The Parquet column
/// and the Arrow type the file declares for it must agree: a required list (not large, not
/// fixed-size) of required uint16 or uint32, PLAIN or BYTE_STREAM_SPLIT, no dictionary.
pub(super) fn fast_columns(
    meta: &ParquetMetaData,
    arrow: &Schema,
    roots: &[usize],
) -> Option<Vec<(usize, bool)>> {
    let schema = meta.file_metadata().schema_descr();
    let mut out = Vec::new();
    for &root in roots {
        let leaves: Vec<usize> = (0..schema.num_columns())
            .filter(|&l| schema.get_column_root_idx(l) == root)
            .collect();
        let [leaf] = leaves[..] else { return None };
        let wide = id_width(&schema.column(leaf))?;
        let field = arrow.fields().get(root)?;
        let DataType::List(item) = field.data_type() else {
            return None;
        };
        let item_kind = if wide {
            DataType::UInt32
        } else {
            DataType::UInt16
        };
        if field.is_nullable() || item.is_nullable() || *item.data_type() != item_kind {
            return None;
        }
        let plain_chunks = meta.row_groups().iter().all(|g| {
            g.column(leaf).encodings().all(|e| {
                matches!(
                    e,
                    Encoding::PLAIN | Encoding::RLE | Encoding::BYTE_STREAM_SPLIT
                )
            })
        });
        if !plain_chunks {
            return None;
        }
        out.push((leaf, wide));
    }
    Some(out)
}

/// Some(true) for a u32 list, Some(false) for u16, None for any other column.
fn id_width(c: &ColumnDescriptor) -> Option<bool> {
    if c.max_def_level() != 1 || c.max_rep_level() != 1 || c.physical_type() != PhysicalType::INT32
    {
        return None;
    }
    let unsigned = match (c.logical_type_ref(), c.converted_type()) {
        (Some(LogicalType::Integer(t)), _) if !t.is_signed => Some(t.bit_width),
        (None, ConvertedType::UINT_16) => Some(16),
        (None, ConvertedType::UINT_32) => Some(32),
        _ => None,
    };
    match unsigned? {
        16 => Some(false),
        32 => Some(true),
        _ => None,
    }
}

impl PageRows {
    /// Reads `columns` (from `fast_columns`) of `file`, whose footer is `meta` (checked first:
    /// [`footer::check`]).
    pub(super) fn open(
        path: &Path,
        file: File,
        meta: Arc<ParquetMetaData>,
        columns: Vec<(usize, bool)>,
    ) -> Result<Self, Error> {
        let file = Positioned::new(file).map_err(|e| Error::io(path, e))?;
        footer::check(path, &meta, &columns, file.len())?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            meta,
            columns,
            read_ahead: false,
        })
    }

    /// Calls `f` with every row's columns in order; `f` returns false to stop. Returns how
    /// many rows were handed out.
    pub(super) fn for_each(self, mut f: impl FnMut(&[Ids<'_>]) -> bool) -> Result<u64, Error> {
        let mut n = 0u64;
        for g in 0..self.meta.num_row_groups() {
            let expected = self.meta.row_group(g).num_rows() as u64;
            let readers = self
                .columns
                .iter()
                .map(|&(leaf, _)| self.page_reader(g, leaf))
                .collect::<Result<Vec<_>, _>>()?;
            let more = if self.read_ahead {
                // Dropping the receivers (when `group_rows` returns) stops the threads at
                // their next page, so the scope's join never waits on a full queue.
                std::thread::scope(|scope| {
                    let sources = readers
                        .into_iter()
                        .map(|r| {
                            let (tx, rx) = sync_channel(PAGES_AHEAD);
                            std::thread::Builder::new()
                                .name("conveyor-pages".into())
                                .spawn_scoped(scope, move || {
                                    for page in r {
                                        if tx.send(page).is_err() {
                                            return;
                                        }
                                    }
                                })
                                .map(|_| Pages::Ahead(rx))
                                .map_err(|e| {
                                    Error::parquet(
                                        &self.path,
                                        format!("cannot start a reader thread: {e}"),
                                    )
                                })
                        })
                        .collect::<Result<Vec<_>, Error>>()?;
                    self.group_rows(g, expected, sources, &mut n, &mut f)
                })?
            } else {
                let sources = readers.into_iter().map(Pages::Inline).collect();
                self.group_rows(g, expected, sources, &mut n, &mut f)?
            };
            if !more {
                break;
            }
        }
        Ok(n)
    }

    /// The pages of one column chunk, read at offsets of the one open file (readers running
    /// ahead on their own threads share it without sharing a position).
    fn page_reader(&self, g: usize, leaf: usize) -> Result<Box<dyn PageReader>, Error> {
        let group = self.meta.row_group(g);
        SerializedPageReader::new(
            Arc::new(self.file.clone()),
            group.column(leaf),
            group.num_rows() as usize,
            None,
        )
        .map(|r| Box::new(r) as Box<dyn PageReader>)
        .map_err(|e| Error::parquet(&self.path, e))
    }

    /// Hands out the rows of row group `g` from its columns' pages; false when `f` stopped.
    fn group_rows(
        &self,
        g: usize,
        expected: u64,
        sources: Vec<Pages>,
        n: &mut u64,
        f: &mut impl FnMut(&[Ids<'_>]) -> bool,
    ) -> Result<bool, Error> {
        let path = &self.path;
        let mut cursors: Vec<Cursor> = sources
            .into_iter()
            .zip(&self.columns)
            .map(|(pages, &(_, wide))| Cursor::new(pages, wide, expected))
            .collect();
        let mut got = 0u64;
        loop {
            for c in cursors.iter_mut() {
                while c.ready() == 0 && !c.done {
                    c.read_page().map_err(|m| damaged(path, g, m))?;
                }
            }
            let k = cursors.iter().map(Cursor::ready).min().unwrap_or(0);
            if k == 0 {
                if cursors.iter().any(|c| c.ready() > 0) {
                    return Err(damaged(path, g, "its columns hold different row counts"));
                }
                break;
            }
            let mut row: Vec<Ids<'_>> = Vec::with_capacity(cursors.len());
            for j in 0..k {
                row.clear();
                row.extend(cursors.iter().map(|c| c.row(j)));
                *n += 1;
                if !f(&row) {
                    return Ok(false);
                }
            }
            drop(row);
            got += k as u64;
            for c in cursors.iter_mut() {
                c.consume(k);
            }
        }
        if got != expected {
            return Err(damaged(
                path,
                g,
                format!("its pages hold {got} rows, its footer says {expected}"),
            ));
        }
        Ok(true)
    }
}

/// Decompressed pages a column chunk's reader may hold ready.
const PAGES_AHEAD: usize = 2;

/// Where a cursor's pages come from: its reader, or a thread running it ahead.
enum Pages {
    Inline(Box<dyn PageReader>),
    Ahead(Receiver<parquet::errors::Result<Page>>),
}

impl Pages {
    fn next(&mut self) -> Result<Option<Page>, String> {
        let page = match self {
            Pages::Inline(r) => r.next(),
            Pages::Ahead(rx) => rx.recv().ok(),
        };
        page.transpose().map_err(|e| e.to_string())
    }
}

fn damaged(path: &Path, group: usize, m: impl std::fmt::Display) -> Error {
    Error::parquet(
        path,
        format!("row group {group} is damaged: {m}; re-create the shard"),
    )
}

/// The ids of one column chunk, a page at a time: complete rows are handed out, the row a
/// page ends inside waits for the next page.
struct Cursor {
    pages: Pages,
    wide: bool,
    narrow_ids: Vec<u16>,
    wide_ids: Vec<u32>,
    /// End (in ids of the buffer) of each complete row in it.
    ends: Vec<usize>,
    /// Rows of `ends` already handed out.
    taken: usize,
    /// A row has started and is not complete yet.
    open: bool,
    /// The chunk's pages are all read.
    done: bool,
    /// Runs (first level, count) of empty rows' levels (definition level 0) in the page
    /// being read.
    empty: Vec<(usize, usize)>,
    /// Rows started in the chunk, and how many its row group holds (a page claiming more
    /// is damaged, and is not allowed to make that many).
    rows: u64,
    limit: u64,
}

impl Cursor {
    fn new(pages: Pages, wide: bool, limit: u64) -> Self {
        Self {
            pages,
            wide,
            narrow_ids: Vec::new(),
            wide_ids: Vec::new(),
            ends: Vec::new(),
            taken: 0,
            open: false,
            done: false,
            empty: Vec::new(),
            rows: 0,
            limit,
        }
    }

    /// Complete rows waiting.
    fn ready(&self) -> usize {
        self.ends.len() - self.taken
    }

    fn ids_len(&self) -> usize {
        if self.wide {
            self.wide_ids.len()
        } else {
            self.narrow_ids.len()
        }
    }

    /// Row `j` of the waiting ones.
    fn row(&self, j: usize) -> Ids<'_> {
        let j = self.taken + j;
        let a = if j == 0 { 0 } else { self.ends[j - 1] };
        let b = self.ends[j];
        if self.wide {
            Ids::U32(&self.wide_ids[a..b])
        } else {
            Ids::U16(&self.narrow_ids[a..b])
        }
    }

    /// Drops the first `k` waiting rows. Their ids are freed once every complete row is
    /// taken (when the next page is read), so only a row split across pages is moved.
    fn consume(&mut self, k: usize) {
        self.taken += k;
        if self.taken < self.ends.len() {
            return;
        }
        let cut = self.ends.last().copied().unwrap_or(0);
        if self.wide {
            self.wide_ids.drain(..cut);
        } else {
            self.narrow_ids.drain(..cut);
        }
        self.ends.clear();
        self.taken = 0;
    }

    /// Decodes the next page (or notes the end of the chunk, closing its last row).
    fn read_page(&mut self) -> Result<(), String> {
        let Some(page) = self.pages.next()? else {
            if self.open {
                self.ends.push(self.ids_len());
                self.open = false;
            }
            self.done = true;
            return Ok(());
        };
        let (levels, encoding, rep, def, values) = match &page {
            Page::DataPage {
                buf,
                num_values,
                encoding,
                def_level_encoding,
                rep_level_encoding,
                ..
            } => {
                if *def_level_encoding != Encoding::RLE || *rep_level_encoding != Encoding::RLE {
                    return Err(format!(
                        "levels encoded {rep_level_encoding}/{def_level_encoding}, not RLE"
                    ));
                }
                let (rep, rest) = prefixed(buf)?;
                let (def, values) = prefixed(rest)?;
                (*num_values as usize, *encoding, rep, def, values)
            }
            Page::DataPageV2 {
                buf,
                num_values,
                encoding,
                def_levels_byte_len,
                rep_levels_byte_len,
                ..
            } => {
                let (r, d) = (*rep_levels_byte_len as usize, *def_levels_byte_len as usize);
                if r + d > buf.len() {
                    return Err("level lengths past the page's end".into());
                }
                let (rep, rest) = buf.split_at(r);
                let (def, values) = rest.split_at(d);
                (*num_values as usize, *encoding, rep, def, values)
            }
            Page::DictionaryPage { .. } => return Err("a dictionary page".into()),
        };
        self.empty.clear();
        let empty = &mut self.empty;
        let mut absent = 0;
        runs(def, levels, |at, n, bit| {
            if !bit {
                absent += n;
                match empty.last_mut() {
                    Some((s, c)) if *s + *c == at => *c += n,
                    _ => empty.push((at, n)),
                }
            }
            Ok(())
        })?;
        let base = self.ids_len();
        self.values(encoding, values, levels - absent)?;
        // Every repetition level 0 starts a row, closing the one before it at the ids
        // before that level (levels of empty rows hold no id).
        let (empty, ends, open) = (&self.empty, &mut self.ends, &mut self.open);
        let (rows, limit) = (&mut self.rows, self.limit);
        // Empty levels in the runs wholly before the level looked at, and the first run
        // that is not.
        let (mut before, mut next) = (0, 0);
        let mut first = true;
        runs(rep, levels, |at, n, bit| {
            if first && bit && !*open {
                return Err("its first row starts inside a list".into());
            }
            first = false;
            if bit {
                return Ok(());
            }
            *rows += n as u64;
            if *rows > limit {
                return Err(format!("more rows than the {limit} its footer says"));
            }
            for start in at..at + n {
                while next < empty.len() && empty[next].0 + empty[next].1 <= start {
                    before += empty[next].1;
                    next += 1;
                }
                let partial = match empty.get(next) {
                    Some(&(s, _)) if s < start => start - s,
                    _ => 0,
                };
                if *open {
                    ends.push(base + start - before - partial);
                }
                *open = true;
            }
            Ok(())
        })
    }

    /// Appends the page's `n` ids.
    fn values(&mut self, encoding: Encoding, bytes: &[u8], n: usize) -> Result<(), String> {
        // Byte-stream-split streams are a quarter of the section each (as Parquet's own
        // decoder takes them), so the section must be exactly 4n bytes.
        let short = bytes.len() < n * 4;
        if short || (encoding == Encoding::BYTE_STREAM_SPLIT && bytes.len() != n * 4) {
            return Err(format!("{} bytes of values for {n} ids", bytes.len()));
        }
        let word = |i: usize| -> [u8; 4] {
            match encoding {
                Encoding::BYTE_STREAM_SPLIT => {
                    [bytes[i], bytes[n + i], bytes[2 * n + i], bytes[3 * n + i]]
                }
                _ => bytes[4 * i..4 * i + 4].try_into().expect("4 bytes"),
            }
        };
        match encoding {
            Encoding::PLAIN | Encoding::BYTE_STREAM_SPLIT => {}
            e => return Err(format!("values encoded {e}")),
        }
        if self.wide {
            self.wide_ids
                .extend((0..n).map(|i| u32::from_le_bytes(word(i))));
            return Ok(());
        }
        let start = self.narrow_ids.len();
        let mut high = 0u8;
        if encoding == Encoding::BYTE_STREAM_SPLIT {
            let (lo, hi) = (&bytes[..n], &bytes[n..2 * n]);
            self.narrow_ids
                .extend(lo.iter().zip(hi).map(|(&l, &h)| u16::from_le_bytes([l, h])));
            high = bytes[2 * n..4 * n].iter().fold(0, |a, &b| a | b);
        } else {
            self.narrow_ids.extend((0..n).map(|i| {
                let w = word(i);
                high |= w[2] | w[3];
                u16::from_le_bytes([w[0], w[1]])
            }));
        }
        if high != 0 {
            self.narrow_ids.truncate(start);
            return Err("an id above 65,535 in a 16-bit column".into());
        }
        Ok(())
    }
}

/// Splits a v1 page's length-prefixed level section from what follows it.
fn prefixed(buf: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let len = buf
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or("a page shorter than its level lengths")?;
    if 4 + len > buf.len() {
        return Err("level lengths past the page's end".into());
    }
    Ok(buf[4..].split_at(len))
}

/// Walks the first `count` levels of a bit-width-1 RLE/bit-packed hybrid stream as runs:
/// `f(start, length, level)` with consecutive starts from 0.
fn runs(
    mut data: &[u8],
    count: usize,
    mut f: impl FnMut(usize, usize, bool) -> Result<(), String>,
) -> Result<(), String> {
    let mut at = 0;
    while at < count {
        let mut header = 0u64;
        let mut shift = 0;
        loop {
            let (&b, rest) = data.split_first().ok_or("levels end early")?;
            data = rest;
            header |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
            if shift > 63 {
                return Err("a level run's header is too long".into());
            }
        }
        let n = (header >> 1) as usize;
        if header & 1 == 0 {
            let (&v, rest) = data.split_first().ok_or("levels end early")?;
            data = rest;
            if v > 1 {
                return Err(format!("level {v} where at most 1 is allowed"));
            }
            let len = n.min(count - at);
            if len > 0 {
                f(at, len, v == 1)?;
            }
            at += len;
        } else {
            // n groups of 8 levels, one byte each at bit width 1.
            let bytes = data.get(..n).ok_or("levels end early")?;
            data = &data[n..];
            for &byte in bytes {
                let len = 8.min(count - at);
                let mut bit = 0;
                while bit < len {
                    let v = byte >> bit & 1 == 1;
                    let mut end = bit + 1;
                    while end < len && (byte >> end & 1 == 1) == v {
                        end += 1;
                    }
                    f(at + bit, end - bit, v)?;
                    bit = end;
                }
                at += len;
                if at == count {
                    break;
                }
            }
        }
    }
    Ok(())
}

mod footer;

#[cfg(test)]
mod tests;
