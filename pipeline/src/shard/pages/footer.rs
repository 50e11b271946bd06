//! What a shard's footer says, checked before anything is read by it: row counts that add
//! up (a page is never allowed more rows than its group claims, which bounds what a damaged
//! file can make the reader allocate), and column chunks inside the file.

use std::path::Path;

use parquet::file::metadata::ParquetMetaData;

use crate::error::Error;

/// Refuses a footer whose row groups' rows do not add up to its total, or whose chunks of
/// `columns` (leaf, wide) do not lie within the file's `file_len` bytes.
pub(super) fn check(
    path: &Path,
    meta: &ParquetMetaData,
    columns: &[(usize, bool)],
    file_len: u64,
) -> Result<(), Error> {
    let mut sum = 0u64;
    for g in meta.row_groups() {
        let rows = u64::try_from(g.num_rows()).ok();
        sum = rows.and_then(|r| sum.checked_add(r)).ok_or_else(|| {
            Error::parquet(
                path,
                "a row group with a negative row count; re-create the shard",
            )
        })?;
    }
    let total = meta.file_metadata().num_rows();
    if u64::try_from(total).ok() != Some(sum) {
        return Err(Error::parquet(
            path,
            format!("its row groups hold {sum} rows, its footer says {total}; re-create the shard"),
        ));
    }
    // Every column chunk read lies inside the file (the parquet crate panics on a
    // negative offset or length: a damaged footer, whatever checksum a manifest gives).
    for (g, group) in meta.row_groups().iter().enumerate() {
        for &(leaf, _) in columns {
            let Some(c) = group.columns().get(leaf) else {
                return Err(Error::parquet(
                    path,
                    format!("row group {g} lacks column {leaf}; re-create the shard"),
                ));
            };
            let data = c.data_page_offset();
            let start = c.dictionary_page_offset().map_or(data, |d| d.min(data));
            let inside = u64::try_from(start)
                .ok()
                .zip(u64::try_from(c.compressed_size()).ok())
                .and_then(|(s, n)| s.checked_add(n))
                .is_some_and(|end| end <= file_len);
            if !inside {
                return Err(Error::parquet(
                    path,
                    format!(
                        "row group {g}'s column {leaf} lies outside the file (offset {start}, {} bytes, file {} bytes); re-create the shard",
                        c.compressed_size(),
                        file_len
                    ),
                ));
            }
        }
    }
    Ok(())
}
