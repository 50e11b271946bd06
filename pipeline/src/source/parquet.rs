//! Parquet files with a string column of text (and optional `url` / `timestamp` columns),
//! read in record batches so memory stays bounded.

use std::fs::File;
use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use parquet::file::reader::ChunkReader;

use super::{Document, ProblemKind, Raw, ReadError, Source};
use crate::error::Error;

pub struct ParquetSource {
    reader: ParquetRecordBatchReader,
    /// Column positions in the projected batches.
    text: usize,
    url: Option<usize>,
    timestamp: Option<usize>,
    pending: Option<(RecordBatch, usize)>,
    records: u64,
    total_rows: u64,
    file_size: u64,
}

fn is_string(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        // A dictionary-encoded string column (pandas' categories, as pyarrow writes them).
        DataType::Dictionary(_, values) => is_string(values),
        _ => false,
    }
}

/// The batch with its dictionary-encoded string columns decoded to plain strings.
fn plain_strings(batch: RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    let dictionary = |t: &DataType| matches!(t, DataType::Dictionary(..));
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| dictionary(f.data_type()))
    {
        return Ok(batch);
    }
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        match f.data_type() {
            DataType::Dictionary(_, values) => {
                columns.push(arrow::compute::cast(c, values)?);
                fields.push(f.as_ref().clone().with_data_type(values.as_ref().clone()));
            }
            _ => {
                columns.push(c.clone());
                fields.push(f.as_ref().clone());
            }
        }
    }
    RecordBatch::try_new(
        std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
        columns,
    )
}

impl ParquetSource {
    pub fn open(path: &Path, text_field: &str) -> Result<Self, Error> {
        match path.to_str().filter(|s| crate::remote::is_url(s)) {
            Some(url) => {
                let file = crate::remote::read::RemoteFile::open(url)?;
                let size = file.size();
                Self::from_reader(path, file, size, text_field)
            }
            None => {
                let file = File::open(path).map_err(|e| Error::io(path, e))?;
                let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                Self::from_reader(path, file, size, text_field)
            }
        }
    }

    fn from_reader<R: ChunkReader + 'static>(
        path: &Path,
        file: R,
        file_size: u64,
        text_field: &str,
    ) -> Result<Self, Error> {
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| Error::Parquet {
                path: path.to_path_buf(),
                message: format!("not a readable Parquet file: {e}"),
            })?;
        let schema = builder.schema().clone();
        let find = |name: &str| {
            schema
                .fields()
                .iter()
                .position(|f| f.name() == name && is_string(f.data_type()))
        };
        let text_col = find(text_field).ok_or_else(|| Error::Parquet {
            path: path.to_path_buf(),
            message: format!(
                "no string column `{text_field}`; columns are: {} (choose one with --text-field)",
                schema
                    .fields()
                    .iter()
                    .map(|f| format!("{} ({})", f.name(), f.data_type()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
        let mut wanted = vec![text_col];
        let url_col = find("url").filter(|&c| c != text_col);
        let ts_col = find("timestamp").filter(|&c| c != text_col);
        wanted.extend(url_col);
        wanted.extend(ts_col);
        // Projected batches keep the file's column order.
        let mut sorted = wanted.clone();
        sorted.sort();
        let pos = |c: usize| sorted.iter().position(|&x| x == c).unwrap();
        let total_rows = builder.metadata().file_metadata().num_rows() as u64;
        let mask = ProjectionMask::roots(builder.parquet_schema(), wanted.iter().copied());
        let reader = builder
            .with_projection(mask)
            .with_batch_size(1024)
            .build()
            .map_err(|e| Error::parquet(path, e))?;
        Ok(Self {
            reader,
            text: pos(text_col),
            url: url_col.map(pos),
            timestamp: ts_col.map(pos),
            pending: None,
            records: 0,
            total_rows,
            file_size,
        })
    }

    fn next_batch(&mut self) -> Result<Option<(RecordBatch, usize)>, ReadError> {
        if let Some(p) = self.pending.take() {
            return Ok(Some(p));
        }
        match self.reader.next() {
            None => Ok(None),
            Some(Ok(b)) => plain_strings(b).map(|b| Some((b, 0))).map_err(|e| {
                ReadError::new(
                    self.records,
                    format!("a dictionary column after row {}: {e}", self.records),
                )
            }),
            Some(Err(e)) => Err(match crate::remote::read::unreachable_in(&e) {
                Some(message) => ReadError {
                    records: self.records,
                    message,
                    unreachable: true,
                },
                None => ReadError::new(
                    self.records,
                    format!("read failed after row {}: {e}", self.records),
                ),
            }),
        }
    }
}

fn string_at(batch: &RecordBatch, col: usize, row: usize) -> Option<String> {
    let a = batch.column(col);
    if a.is_null(row) {
        return None;
    }
    Some(match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().value(row).to_string(),
        DataType::LargeUtf8 => a.as_string::<i64>().value(row).to_string(),
        DataType::Utf8View => a.as_string_view().value(row).to_string(),
        _ => return None,
    })
}

impl Source for ParquetSource {
    fn read_batch(&mut self, out: &mut Vec<Raw>, budget: usize) -> Result<bool, ReadError> {
        let mut used = 0;
        while used < budget {
            let Some((batch, start)) = self.next_batch()? else {
                return Ok(false);
            };
            let mut row = start;
            while row < batch.num_rows() && used < budget {
                self.records += 1;
                out.push(match string_at(&batch, self.text, row) {
                    Some(text) => {
                        used += text.len() + 1;
                        Raw::Doc(Document {
                            text,
                            url: self.url.and_then(|c| string_at(&batch, c, row)),
                            timestamp: self.timestamp.and_then(|c| string_at(&batch, c, row)),
                        })
                    }
                    None => Raw::Bad(ProblemKind::MissingText, "the text column is null".into()),
                });
                row += 1;
            }
            if row < batch.num_rows() {
                self.pending = Some((batch, row));
            }
        }
        Ok(true)
    }

    fn skip(&mut self, mut n: u64) -> Result<(), ReadError> {
        while n > 0 {
            let Some((batch, start)) = self.next_batch()? else {
                return Ok(());
            };
            let left = (batch.num_rows() - start) as u64;
            if left > n {
                self.pending = Some((batch, start + n as usize));
                self.records += n;
                return Ok(());
            }
            self.records += left;
            n -= left;
        }
        Ok(())
    }

    fn bytes_read(&self) -> u64 {
        if self.total_rows == 0 {
            return self.file_size;
        }
        self.file_size * self.records / self.total_rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{DictionaryArray, StringArray};
    use arrow::datatypes::{Field, Int32Type, Schema};
    use std::sync::Arc;

    /// A dictionary-encoded text column (pandas categories, as pyarrow writes them) reads as
    /// its strings; it was refused as "no string column".
    #[test]
    fn a_dictionary_encoded_text_column_is_read() {
        let path =
            std::env::temp_dir().join(format!("conveyor-dict-{}.parquet", std::process::id()));
        let text: DictionaryArray<Int32Type> = vec![
            Some("spam and eggs"),
            None,
            Some("spam and eggs"),
            Some("ham"),
        ]
        .into_iter()
        .collect();
        let url = StringArray::from(vec!["a", "b", "c", "d"]);
        let schema = Schema::new(vec![
            Field::new("text", text.data_type().clone(), true),
            Field::new("url", DataType::Utf8, false),
        ]);
        let batch =
            RecordBatch::try_new(Arc::new(schema), vec![Arc::new(text), Arc::new(url)]).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            File::create(&path).unwrap(),
            batch.schema(),
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let mut source = ParquetSource::open(&path, "text").unwrap();
        let mut out = Vec::new();
        while source.read_batch(&mut out, 1 << 20).unwrap() {}
        std::fs::remove_file(&path).ok();
        let got: Vec<String> = out
            .into_iter()
            .map(|r| match r {
                Raw::Doc(d) => format!("{} {}", d.text, d.url.unwrap_or_default()),
                Raw::Bad(kind, _) => format!("<{}>", kind.name()),
                Raw::Json(_) => unreachable!(),
            })
            .collect();
        assert_eq!(
            got,
            [
                "spam and eggs a",
                "<missing_text>",
                "spam and eggs c",
                "ham d"
            ]
        );
    }
}
