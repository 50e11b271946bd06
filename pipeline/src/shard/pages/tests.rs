//! The direct page decoder against the Arrow reader on shards written every way a Parquet
//! writer may (page versions, encodings, codecs, page and row group sizes, widths, empty
//! rows), and on hand-made pages the Rust writer no longer makes (a row split across pages,
//! bit-packed runs everywhere) and damaged ones.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::column::page::{Page, PageMetadata, PageReader};
use parquet::file::properties::{WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;
use proptest::prelude::*;

use super::{Cursor, Pages};
use crate::shard::{id_list_type, IdList, ListRows};

/// How a test shard is written.
#[derive(Debug, Clone)]
struct Layout {
    narrow: bool,
    v2: bool,
    split: bool,
    codec: u8,
    page_bytes: usize,
    group_rows: usize,
}

fn layout() -> impl Strategy<Value = Layout> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0u8..3,
        prop_oneof![Just(64usize), Just(1000), Just(1 << 20)],
        prop_oneof![Just(3usize), Just(50), Just(100_000)],
    )
        .prop_map(
            |(narrow, v2, split, codec, page_bytes, group_rows)| Layout {
                narrow,
                v2,
                split,
                codec,
                page_bytes,
                group_rows,
            },
        )
}

/// Rows of two columns, a fifth of them empty (runs of empty rows included), ids up to the
/// width's maximum.
fn rows() -> impl Strategy<Value = Vec<(Vec<u32>, Vec<u32>)>> {
    let ids = prop_oneof![
        1 => Just(Vec::new()),
        4 => prop::collection::vec(prop_oneof![0u32..40, Just(65_535u32), Just(u32::MAX)], 0..40),
    ];
    prop::collection::vec((ids.clone(), ids), 1..120)
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("conveyor-pages-{}-{name}", std::process::id()))
}

fn write(path: &Path, l: &Layout, rows: &[(Vec<u32>, Vec<u32>)]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("inputs", id_list_type(l.narrow), false),
        Field::new("note", DataType::Utf8, true),
        Field::new("targets", id_list_type(l.narrow), false),
    ]));
    let mut props = WriterProperties::builder()
        .set_writer_version(if l.v2 {
            WriterVersion::PARQUET_2_0
        } else {
            WriterVersion::PARQUET_1_0
        })
        .set_dictionary_enabled(false)
        .set_compression(match l.codec {
            0 => Compression::UNCOMPRESSED,
            1 => Compression::SNAPPY,
            _ => Compression::ZSTD(ZstdLevel::try_new(1).unwrap()),
        })
        .set_data_page_size_limit(l.page_bytes)
        .set_write_batch_size(7)
        .set_max_row_group_row_count(Some(l.group_rows));
    // Set either way: the v2 writer's default for integers is DELTA_BINARY_PACKED.
    let encoding = if l.split {
        Encoding::BYTE_STREAM_SPLIT
    } else {
        Encoding::PLAIN
    };
    for name in ["inputs", "targets"] {
        let path = ColumnPath::new(vec![name.into(), "list".into(), "item".into()]);
        props = props.set_column_encoding(path, encoding);
    }
    let file = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props.build())).unwrap();
    let (mut a, mut b) = (IdList::new(l.narrow), IdList::new(l.narrow));
    let fit = |v: &[u32]| -> Vec<u32> {
        v.iter()
            .map(|&x| if l.narrow { x & 0xffff } else { x })
            .collect()
    };
    for (x, y) in rows {
        a.append(&fit(x));
        b.append(&fit(y));
    }
    let note = Arc::new(arrow::array::StringArray::from(vec![Some("n"); rows.len()]));
    let batch = RecordBatch::try_new(schema, vec![a.finish(), note, b.finish()]).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// Every row of `path` through one reader, as u32.
fn read_all(path: &Path, direct: bool, read_ahead: bool, stop: usize) -> Vec<Vec<Vec<u32>>> {
    let mut rows = ListRows::open_with(path, &["inputs", "targets"], 0, direct).unwrap();
    assert_eq!(rows.direct(), direct, "the reader asked for");
    if read_ahead {
        rows = rows.read_ahead();
    }
    let mut out = Vec::new();
    rows.for_each(|r| {
        out.push(
            r.iter()
                .map(|ids| {
                    let mut v = Vec::new();
                    ids.extend_into(&mut v);
                    v
                })
                .collect(),
        );
        out.len() < stop
    })
    .unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn reads_what_the_arrow_reader_reads(l in layout(), rows in rows(), stop in 1usize..200) {
        let path = scratch(&format!("{}.parquet", rand_name(&l, rows.len())));
        write(&path, &l, &rows);
        let want = read_all(&path, false, false, usize::MAX);
        prop_assert_eq!(want.len(), rows.len());
        prop_assert_eq!(&read_all(&path, true, false, usize::MAX), &want);
        prop_assert_eq!(&read_all(&path, true, true, usize::MAX), &want);
        // Stopping early hands out exactly the first rows (and a reader running ahead
        // is stopped, not waited for).
        let n = stop.min(want.len());
        prop_assert_eq!(&read_all(&path, true, true, stop)[..], &want[..n]);
        std::fs::remove_file(&path).unwrap();
    }
}

fn rand_name(l: &Layout, n: usize) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}-{}-{n}",
        l.narrow,
        l.codec,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[test]
fn other_shapes_go_to_the_arrow_reader() {
    // A dictionary-encoded column: the Arrow reader, same rows.
    let path = scratch("dictionary.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("inputs", id_list_type(true), false),
        Field::new("targets", id_list_type(true), false),
    ]));
    let props = WriterProperties::builder()
        .set_dictionary_enabled(true)
        .build();
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(&path).unwrap(),
        schema.clone(),
        Some(props),
    )
    .unwrap();
    let (mut a, mut b) = (IdList::new(true), IdList::new(true));
    for i in 0..50u32 {
        a.append(&[i % 3, 1, 2]);
        b.append(&[i % 5]);
    }
    w.write(&RecordBatch::try_new(schema, vec![a.finish(), b.finish()]).unwrap())
        .unwrap();
    w.close().unwrap();
    let rows = ListRows::open(&path, &["inputs", "targets"], 0).unwrap();
    assert!(!rows.direct());
    assert_eq!(
        read_all(&path, false, false, usize::MAX)[7],
        [vec![1, 1, 2], vec![2]]
    );
    // Resuming inside a shard is left to the Arrow reader's row selection.
    let l = Layout {
        narrow: true,
        v2: false,
        split: true,
        codec: 2,
        page_bytes: 1 << 20,
        group_rows: 100,
    };
    write(&path, &l, &[(vec![1], vec![2]), (vec![3], vec![4])]);
    assert!(ListRows::open(&path, &["inputs", "targets"], 0)
        .unwrap()
        .direct());
    assert!(!ListRows::open(&path, &["inputs", "targets"], 1)
        .unwrap()
        .direct());
    std::fs::remove_file(&path).unwrap();
}

/// A shard of one `inputs` column of list type `list` (nullable or not), no dictionary.
fn write_shape(path: &Path, list: DataType, nullable: bool) {
    let schema = Arc::new(Schema::new(vec![Field::new("inputs", list, nullable)]));
    let values = vec![Some(vec![Some(1u8), Some(2)]), Some(vec![Some(3)])];
    let array: arrow::array::ArrayRef = match schema.field(0).data_type() {
        DataType::List(item) => {
            let a = arrow::array::ListArray::from_iter_primitive::<arrow::datatypes::UInt8Type, _, _>(
                values,
            );
            arrow::compute::cast(&a, &DataType::List(item.clone())).unwrap()
        }
        DataType::LargeList(item) => {
            let a = arrow::array::LargeListArray::from_iter_primitive::<
                arrow::datatypes::UInt8Type,
                _,
                _,
            >(values);
            arrow::compute::cast(&a, &DataType::LargeList(item.clone())).unwrap()
        }
        _ => unreachable!(),
    };
    let props = WriterProperties::builder()
        .set_dictionary_enabled(false)
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props)).unwrap();
    w.write(&RecordBatch::try_new(schema, vec![array]).unwrap())
        .unwrap();
    w.close().unwrap();
}

#[test]
fn only_the_exact_shape_takes_the_direct_path() {
    let path = scratch("shape.parquet");
    let item = |kind: DataType, nullable: bool| Arc::new(Field::new("item", kind, nullable));
    let direct = |list: DataType, nullable: bool| {
        write_shape(&path, list, nullable);
        ListRows::open(&path, &["inputs"], 0).unwrap().direct()
    };
    assert!(direct(DataType::List(item(DataType::UInt16, false)), false));
    assert!(direct(DataType::List(item(DataType::UInt32, false)), false));
    for (list, nullable) in [
        (DataType::List(item(DataType::UInt16, false)), true),
        (DataType::List(item(DataType::UInt16, true)), false),
        (DataType::List(item(DataType::Int32, false)), false),
        (DataType::List(item(DataType::Int16, false)), false),
        (DataType::List(item(DataType::UInt8, false)), false),
        (DataType::List(item(DataType::UInt64, false)), false),
        (DataType::LargeList(item(DataType::UInt16, false)), false),
    ] {
        assert!(
            !direct(list.clone(), nullable),
            "{list} (nullable: {nullable})"
        );
    }
    std::fs::remove_file(&path).unwrap();
}

/// Hand-made pages, for what today's Rust writer does not write.
struct Fake(std::vec::IntoIter<Page>);

impl Iterator for Fake {
    type Item = parquet::errors::Result<Page>;
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(Ok)
    }
}

impl PageReader for Fake {
    fn get_next_page(&mut self) -> parquet::errors::Result<Option<Page>> {
        Ok(self.0.next())
    }
    fn peek_next_page(&mut self) -> parquet::errors::Result<Option<PageMetadata>> {
        unimplemented!("not used by the decoder")
    }
    fn skip_next_page(&mut self) -> parquet::errors::Result<()> {
        unimplemented!("not used by the decoder")
    }
}

/// Bit-width-1 levels as bit-packed runs only (groups of 8, padded with 0s).
fn bit_packed(levels: &[u8]) -> Vec<u8> {
    let groups = levels.len().div_ceil(8);
    let mut out = vec![(groups << 1 | 1) as u8];
    for g in levels.chunks(8) {
        out.push(g.iter().enumerate().map(|(i, &v)| v << i).sum());
    }
    out
}

/// A v1 page of (repetition, definition) levels and PLAIN values.
fn page(rep: &[u8], def: &[u8], values: &[u32]) -> Page {
    let mut buf = Vec::new();
    for levels in [bit_packed(rep), bit_packed(def)] {
        buf.extend((levels.len() as u32).to_le_bytes());
        buf.extend(levels);
    }
    for v in values {
        buf.extend(v.to_le_bytes());
    }
    Page::DataPage {
        buf: Bytes::from(buf),
        num_values: rep.len() as u32,
        encoding: Encoding::PLAIN,
        def_level_encoding: Encoding::RLE,
        rep_level_encoding: Encoding::RLE,
        statistics: None,
    }
}

/// One row of `values` in a v1 page, values byte-stream-split.
fn split_page(values: &[u32]) -> Page {
    let n = values.len();
    let mut rep = vec![1u8; n];
    rep[0] = 0;
    let Page::DataPage { buf, .. } = page(&rep, &vec![1; n], values) else {
        unreachable!()
    };
    let levels = buf.len() - 4 * n;
    let mut split = buf[..levels].to_vec();
    for b in 0..4 {
        split.extend(values.iter().map(|v| v.to_le_bytes()[b]));
    }
    with_buf(split, n)
}

/// A v1 page of `n` levels over `buf`, values byte-stream-split.
fn with_buf(buf: Vec<u8>, n: usize) -> Page {
    Page::DataPage {
        buf: Bytes::from(buf),
        num_values: n as u32,
        encoding: Encoding::BYTE_STREAM_SPLIT,
        def_level_encoding: Encoding::RLE,
        rep_level_encoding: Encoding::RLE,
        statistics: None,
    }
}

fn cursor_rows(pages: Vec<Page>, wide: bool) -> Result<Vec<Vec<u32>>, String> {
    let mut c = Cursor::new(Pages::Inline(Box::new(Fake(pages.into_iter()))), wide, 100);
    let mut out = Vec::new();
    while !c.done {
        c.read_page()?;
        for j in 0..c.ready() {
            let mut v = Vec::new();
            c.row(j).extend_into(&mut v);
            out.push(v);
        }
        let k = c.ready();
        if k > 0 {
            c.consume(k);
        }
    }
    Ok(out)
}

#[test]
fn a_row_split_across_pages_and_empty_rows() {
    // Rows: [1 2 3 4 5], [], [6], [7 8], [] -- the first split over two pages, the fourth
    // over the second and third.
    let pages = vec![
        page(&[0, 1, 1], &[1, 1, 1], &[1, 2, 3]),
        page(&[1, 1, 0, 0, 0], &[1, 1, 0, 1, 1], &[4, 5, 6, 7]),
        page(&[1, 0], &[1, 0], &[8]),
    ];
    let want: Vec<Vec<u32>> = vec![vec![1, 2, 3, 4, 5], vec![], vec![6], vec![7, 8], vec![]];
    assert_eq!(cursor_rows(pages.clone(), true).unwrap(), want);
    assert_eq!(cursor_rows(pages, false).unwrap(), want);
}

#[test]
fn damaged_pages_are_errors() {
    let bad = |pages: Vec<Page>, wide: bool| cursor_rows(pages, wide).unwrap_err();
    // The chunk starts inside a list.
    assert!(bad(vec![page(&[1, 0], &[1, 1], &[1, 2])], true).contains("starts inside"));
    // Fewer value bytes than present levels.
    assert!(bad(vec![page(&[0, 1, 1], &[1, 1, 1], &[1, 2])], true).contains("bytes of values"));
    // An id that does not fit the 16-bit column it is in.
    assert!(bad(vec![page(&[0], &[1], &[70_000])], false).contains("65,535"));
    assert!(bad(vec![split_page(&[5, 70_000, 9])], false).contains("65,535"));
    // Byte-stream-split values must fill their section exactly (the streams are quarters).
    let Page::DataPage { buf, .. } = split_page(&[5, 6]) else {
        unreachable!()
    };
    let mut longer = buf.to_vec();
    longer.extend([0, 0, 0, 0]);
    assert!(bad(vec![with_buf(longer, 2)], false).contains("bytes of values"));
    // Levels cut short.
    let Page::DataPage { buf, .. } = page(&[0, 1], &[1, 1], &[1, 2]) else {
        unreachable!()
    };
    let short = Page::DataPage {
        buf,
        num_values: 20,
        encoding: Encoding::PLAIN,
        def_level_encoding: Encoding::RLE,
        rep_level_encoding: Encoding::RLE,
        statistics: None,
    };
    assert!(bad(vec![short], true).contains("levels end early"));
    // A level above 1 in an RLE run.
    let mut buf = Vec::new();
    for levels in [vec![2u8, 0], vec![2u8, 2]] {
        buf.extend(2u32.to_le_bytes());
        buf.extend(levels);
    }
    buf.extend(5u32.to_le_bytes());
    let big = Page::DataPage {
        buf: Bytes::from(buf),
        num_values: 1,
        encoding: Encoding::PLAIN,
        def_level_encoding: Encoding::RLE,
        rep_level_encoding: Encoding::RLE,
        statistics: None,
    };
    assert!(bad(vec![big], true).contains("level 2"));
    // A few bytes claiming four billion empty rows: refused at the row group's count
    // (100 here), without making them.
    let mut buf = Vec::new();
    for _ in 0..2 {
        buf.extend(6u32.to_le_bytes());
        buf.extend([0xfe, 0xff, 0xff, 0xff, 0x1f, 0]);
    }
    let many = Page::DataPage {
        buf: Bytes::from(buf),
        num_values: u32::MAX,
        encoding: Encoding::PLAIN,
        def_level_encoding: Encoding::RLE,
        rep_level_encoding: Encoding::RLE,
        statistics: None,
    };
    assert!(bad(vec![many], true).contains("more rows than the 100"));
}

/// Read ahead on another thread, a damaged page is an error where it occurs, and dropping
/// the cursor stops the thread feeding it (it is not left blocked on a full queue).
#[test]
fn a_damaged_page_read_ahead_is_an_error_and_stops_its_reader() {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let feeder = std::thread::spawn(move || {
        let pages = [
            page(&[0, 1], &[1, 1], &[1, 2]),
            page(&[0, 1, 1], &[1, 1, 1], &[3, 4]),
        ];
        let more = (0..10).map(|_| page(&[0], &[1], &[5]));
        for p in pages.into_iter().chain(more) {
            if tx.send(Ok(p)).is_err() {
                return "stopped";
            }
        }
        "sent everything"
    });
    let mut c = Cursor::new(Pages::Ahead(rx), true, 100);
    c.read_page().unwrap();
    let e = c.read_page().unwrap_err();
    assert!(e.contains("bytes of values"), "{e}");
    drop(c);
    assert_eq!(feeder.join().unwrap(), "stopped");
}

/// No change of one footer byte makes the reader panic (the parquet crate asserts on a
/// column chunk's negative offset or length; a manifest may carry the damaged file's sum):
/// every such shard reads, or is an error.
#[test]
fn a_damaged_footer_is_an_error_never_a_panic() {
    let l = Layout {
        narrow: true,
        v2: false,
        codec: 0,
        page_bytes: 64,
        group_rows: 5,
        split: false,
    };
    let rows: Vec<(Vec<u32>, Vec<u32>)> = (0..12u32).map(|i| (vec![i; 3], vec![i + 1])).collect();
    let path = scratch("footer.parquet");
    write(&path, &l, &rows);
    let good = std::fs::read(&path).unwrap();
    let n = good.len();
    let footer = u32::from_le_bytes(good[n - 8..n - 4].try_into().unwrap()) as usize;
    let damaged = scratch("footer-damaged.parquet");
    let mut panics = Vec::new();
    for pos in n - 8 - footer..n - 8 {
        for v in [0x00u8, 0x7f, 0x80, 0xff] {
            let mut b = good.clone();
            b[pos] = v;
            std::fs::write(&damaged, &b).unwrap();
            let read = std::panic::catch_unwind(|| {
                ListRows::open_with(&damaged, &["inputs", "targets"], 0, true)
                    .and_then(|r| r.for_each(|_| true))
                    .map(|_| ())
            });
            if read.is_err() {
                panics.push((pos, v));
            }
        }
    }
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(&damaged).unwrap();
    assert!(panics.is_empty(), "panicked at (byte, value) {panics:?}");
}
