//! Reading helpers shared by the tasks: CSV/TSV rows with their line numbers (quoted fields
//! may span lines), latin-1 text, file names for messages.

use std::path::Path;

use crate::TaskError;

/// The file name used in messages and example origins.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

pub fn io_error(path: &Path, e: impl std::fmt::Display) -> TaskError {
    TaskError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The longest row a task file may hold, as a document may (a row past it would be
/// tokenized into more than the 2^24 tokens an example may have; a 3 GB line aborted on
/// its allocation).
pub const MAX_ROW_BYTES: u64 = conveyor_pipeline::source::MAX_DOCUMENT_BYTES as u64;

/// The largest task file read whole (TREC's are 0.3 MB).
const MAX_WHOLE_FILE_BYTES: u64 = 1 << 30;

/// A file decoded as latin-1 (every byte one character), as the TREC files are.
pub fn read_latin1(path: &Path) -> Result<String, TaskError> {
    let bytes = conveyor_pipeline::regular::read(path, MAX_WHOLE_FILE_BYTES)
        .map_err(|e| io_error(path, e))?;
    Ok(bytes.iter().map(|&b| b as char).collect())
}

/// A reader that fails once more than [`MAX_ROW_BYTES`] pass without the parser above it
/// finishing a row (it resets `since_row`), so that no row, quoted across lines or not, is
/// buffered without end.
/// It also notes where the line breaks are, for [`Lines::line_at`].
struct RowCap<R> {
    inner: R,
    since_row: std::rc::Rc<std::cell::Cell<u64>>,
    lines: std::rc::Rc<std::cell::RefCell<Lines>>,
}

/// Line numbers from byte offsets. The csv crate's own line count is wrong for CRLF files
/// (their first row after the header was "line 1"), and a row's offset may be that of the
/// line break, or blank lines, before it; the row starts at the first byte after those.
#[derive(Default)]
struct Lines {
    /// Bytes read so far.
    read: u64,
    /// Offsets of the line-break bytes (`\n`: true, `\r`: false) read but not yet passed.
    ahead: std::collections::VecDeque<(u64, bool)>,
    /// Lines passed.
    passed: u64,
}

impl Lines {
    /// The 1-based line of the row whose offset is `at`. Offsets only grow.
    fn line_at(&mut self, mut at: u64) -> u64 {
        while let Some(&(b, newline)) = self.ahead.front() {
            if b > at {
                break;
            }
            // A break at the row's offset is not the row's: step over it.
            if b == at {
                at += 1;
            }
            self.ahead.pop_front();
            self.passed += u64::from(newline);
        }
        self.passed + 1
    }
}

impl<R: std::io::Read> std::io::Read for RowCap<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut lines = self.lines.borrow_mut();
        let start = lines.read;
        lines.ahead.extend(
            buf[..n]
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == b'\n' || b == b'\r')
                .map(|(i, &b)| (start + i as u64, b == b'\n')),
        );
        lines.read += n as u64;
        drop(lines);
        let seen = self.since_row.get() + n as u64;
        self.since_row.set(seen);
        if seen > MAX_ROW_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "a row runs past {MAX_ROW_BYTES} bytes: not a task file (or split that row)"
                ),
            ));
        }
        Ok(n)
    }
}

/// Calls `f` with each line of `path` that is not blank: its 1-based number and bytes (a
/// byte-order mark before it dropped: Windows tools write one, and files joined by `cat`
/// have one on later lines too). A line past `max` bytes is an error naming it, and `what`
/// the file then is not.
pub fn each_line(
    path: &Path,
    max: u64,
    what: &str,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), TaskError>,
) -> Result<(), TaskError> {
    use std::io::{BufRead, Read};
    let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    let mut reader = std::io::BufReader::new(file);
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        let n = reader
            .by_ref()
            .take(max + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| io_error(path, format!("line {number}: {e}")))?;
        if n == 0 {
            break;
        }
        if n as u64 > max {
            return Err(io_error(
                path,
                format!("line {number} runs past {max} bytes: {what}"),
            ));
        }
        let text = line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&line);
        if !text.iter().all(u8::is_ascii_whitespace) {
            f(number, text)?;
        }
    }
    Ok(())
}

/// How a delimited file is laid out.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub delimiter: u8,
    pub headers: bool,
    /// Quoted fields (CSV) or none at all (GLUE/COGS TSV, where quotes are text).
    pub quoting: bool,
    /// Fields are latin-1 (every byte one character), not UTF-8.
    pub latin1: bool,
}

impl Layout {
    pub const CSV: Layout = Layout {
        delimiter: b',',
        headers: true,
        quoting: true,
        latin1: false,
    };
    pub const CSV_NO_HEADER: Layout = Layout {
        delimiter: b',',
        headers: false,
        quoting: true,
        latin1: false,
    };
    pub const TSV: Layout = Layout {
        delimiter: b'\t',
        headers: true,
        quoting: false,
        latin1: false,
    };
    pub const TSV_NO_HEADER: Layout = Layout {
        delimiter: b'\t',
        headers: false,
        quoting: false,
        latin1: false,
    };

    /// The same layout with latin-1 fields.
    pub const fn latin1(self) -> Layout {
        Layout {
            latin1: true,
            ..self
        }
    }
}

/// A record's fields as text: latin-1, or UTF-8 (a field that is not is the row's error).
fn fields(rec: &csv::ByteRecord, latin1: bool) -> Result<Vec<String>, String> {
    rec.iter()
        .enumerate()
        .map(|(i, f)| match latin1 {
            true => Ok(f.iter().map(|&b| b as char).collect()),
            false => String::from_utf8(f.to_vec())
                .map_err(|e| format!("field {} is not UTF-8 ({e})", i + 1)),
        })
        .collect()
}

/// One parsed row: its 1-based starting line and fields, or why it could not be parsed.
pub type Row = (u64, Result<Vec<String>, String>);

/// The header (if the layout has one) and the rows of a delimited file.
pub fn rows(path: &Path, layout: Layout) -> Result<(Vec<String>, Vec<Row>), TaskError> {
    let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    let since_row = std::rc::Rc::new(std::cell::Cell::new(0));
    let lines = std::rc::Rc::new(std::cell::RefCell::new(Lines::default()));
    let line_at = |at: u64| lines.borrow_mut().line_at(at);
    let mut r = csv::ReaderBuilder::new()
        .delimiter(layout.delimiter)
        .has_headers(layout.headers)
        .quoting(layout.quoting)
        .flexible(true)
        .from_reader(RowCap {
            inner: file,
            since_row: since_row.clone(),
            lines: lines.clone(),
        });
    let header = if layout.headers {
        let h = r.byte_headers().map_err(|e| io_error(path, e))?;
        fields(h, layout.latin1)
            .map_err(|e| io_error(path, format!("header: {e}")))?
            .iter()
            .map(|s| s.trim().to_string())
            .collect()
    } else {
        Vec::new()
    };
    let mut out = Vec::new();
    let mut rec = csv::ByteRecord::new();
    // Where the last record read starts (the header's, before any row).
    let mut last = (0, 1);
    loop {
        since_row.set(0);
        let at = r.position().byte();
        match r.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {
                let start = rec.position().map_or(at, |p| p.byte());
                let line = line_at(start);
                last = (start, line);
                out.push((line, fields(&rec, layout.latin1)));
            }
            // The file cannot be read on (a row past the bound included): an error, not a
            // skipped row with every row after it silently lost.
            Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => {
                let line = line_at(e.position().map_or(at, |p| p.byte()));
                return Err(io_error(path, format!("line {line}: {e}")));
            }
            Err(e) => {
                let line = line_at(e.position().map_or(at, |p| p.byte()));
                out.push((line, Err(e.to_string())));
            }
        }
    }
    if layout.quoting {
        unclosed_quote(path, layout.delimiter, last)?;
    }
    Ok((header, out))
}

/// Refuses a file whose last record holds a quote opened and never closed: the parser read
/// every line after it into one field, so the rows there were neither read nor skipped.
/// Only the last record can be such (the quote runs to the end of the file); it is read
/// again from `start` (its byte offset, on `line`) the way the parser reads quotes: one
/// opens a field only at its start, and `""` inside a quoted field is a quote.
fn unclosed_quote(path: &Path, delimiter: u8, (start, line): (u64, u64)) -> Result<(), TaskError> {
    use std::io::{Read, Seek};
    let mut file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    file.seek(std::io::SeekFrom::Start(start))
        .map_err(|e| io_error(path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_ROW_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(path, e))?;
    // The record's offset may be that of the line break before it (CRLF files); the parser
    // passes over a byte-order mark at the file's start.
    let bom = if start == 0 && bytes.starts_with("\u{feff}".as_bytes()) {
        3
    } else {
        0
    };
    let skip = bom
        + bytes[bom..]
            .iter()
            .take_while(|&&b| b == b'\n' || b == b'\r')
            .count();
    let (mut quoted, mut field_start, mut i) = (false, true, skip);
    while i < bytes.len() {
        let b = bytes[i];
        match (quoted, b) {
            (true, b'"') if bytes.get(i + 1) == Some(&b'"') => i += 1,
            (true, b'"') => quoted = false,
            (true, _) => {}
            (false, b'"') if field_start => quoted = true,
            (false, b'\n' | b'\r') => {
                // The record ends here: the rest of the file is other records.
                return Ok(());
            }
            _ => {}
        }
        field_start = !quoted && b == delimiter;
        i += 1;
    }
    // The lines after the row's own that the field took (the file's last line break aside):
    // none is a last row cut short, malformed like any other.
    let body = bytes[skip..]
        .strip_suffix(b"\n")
        .map_or(&bytes[skip..], |b| b.strip_suffix(b"\r").unwrap_or(b));
    let lines = body.iter().filter(|&&b| b == b'\n').count();
    if !quoted || lines == 0 {
        return Ok(());
    }
    Err(io_error(
        path,
        format!(
            "line {line}: a quoted field opened in this row is never closed, so the {lines} line(s) after it were read as that one field: close the quote (a quote inside a quoted field is written twice, \"\")"
        ),
    ))
}

/// The index of the first of `names` present in `header`.
pub fn column(header: &[String], names: &[&str]) -> Option<usize> {
    names
        .iter()
        .find_map(|n| header.iter().position(|h| h.eq_ignore_ascii_case(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(text: &str, layout: Layout) -> Vec<u64> {
        let dir = std::env::temp_dir().join(format!("conveyor-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.csv", text.len()));
        std::fs::write(&path, text).unwrap();
        let (_, rows) = rows(&path, layout).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        rows.into_iter().map(|(line, _)| line).collect()
    }

    /// A quote never closed swallowed every line after it into one field: the file is
    /// refused, naming the row; quotes closed, doubled or inside an unquoted field are not.
    #[test]
    fn a_quote_never_closed_is_named_not_read_over() {
        let dir = std::env::temp_dir().join(format!("conveyor-quote-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let read = |text: &str, layout: Layout| {
            let path = dir.join("q.csv");
            std::fs::write(&path, text).unwrap();
            rows(&path, layout).map(|(_, r)| r.len())
        };
        for end in ["\n", "\r\n"] {
            let open = ["q,a", "one,1", "\"two,2", "three,3", "four,4", ""].join(end);
            let e = read(&open, Layout::CSV).unwrap_err().to_string();
            assert!(
                e.contains("line 3: a quoted field opened in this row is never closed")
                    && e.contains("the 2 line(s) after it"),
                "{e}"
            );
            // Without a header, and in the header itself (after a byte-order mark too).
            assert!(read(&open[4..], Layout::CSV_NO_HEADER).is_err());
            assert!(read(&format!("\"q,a{end}one,1{end}"), Layout::CSV).is_err());
            assert!(read(&format!("\u{feff}\"q,a{end}one,1{end}"), Layout::CSV).is_err());
            // A last row cut short in its quote (a truncated download) takes no other row:
            // read as before, a malformed row of its own.
            assert_eq!(
                read(&format!("q,a{end}one,1{end}\"two,2{end}"), Layout::CSV).unwrap(),
                2
            );
            let fine = [
                "q,a",
                "\"one, \"\"quoted\"\"\",1",
                "two \"inch\",2",
                "\"three",
                "lines\",3",
                "\"four\"",
            ]
            .join(end);
            assert_eq!(read(&fine, Layout::CSV).unwrap(), 4, "{end:?}");
            assert_eq!(read(&(fine + end), Layout::CSV).unwrap(), 4, "{end:?}");
            // Quotes are text in TSV files without quoting.
            assert_eq!(
                read(&["q\ta", "\"one\t1", "two\t2"].join(end), Layout::TSV).unwrap(),
                2
            );
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Each row's line is where it starts, whatever ends the lines: CRLF files (what
    /// Python's csv module and Windows tools write) got one line too few per row before.
    #[test]
    fn rows_are_numbered_by_their_first_line_with_any_line_ending() {
        for end in ["\n", "\r\n"] {
            // A header, a quoted field across two lines, an empty line, a short row.
            let text = ["q,a", "one,1", "\"two", "lines\",2", "", "three,3", "four"].join(end);
            assert_eq!(
                lines_of(&(text.clone() + end), Layout::CSV),
                [2, 3, 6, 7],
                "{end:?}"
            );
            assert_eq!(
                lines_of(&text, Layout::CSV_NO_HEADER),
                [1, 2, 3, 6, 7],
                "{end:?}"
            );
        }
    }
}
