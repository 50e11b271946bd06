//! Files conveyor reads whole (models, configs, weights) are checked first: a path from a
//! manifest or a downloaded folder may name a FIFO (the read blocks forever), a device such
//! as /dev/zero (it reads until memory runs out) or a file far larger than any real one.

use std::path::Path;

/// Why `path` cannot be read whole: `Ok(Some(reason))` for something other than a regular
/// file of at most `max` bytes (symbolic links are followed), `Ok(None)` when it can be,
/// `Err` when it cannot even be looked at (missing, no permission).
pub fn refusal(path: &Path, max: u64) -> std::io::Result<Option<String>> {
    let meta = std::fs::metadata(path)?;
    Ok(if !meta.is_file() {
        Some("is not a regular file".into())
    } else if meta.len() > max {
        Some(format!(
            "is {} bytes, more than such a file holds",
            meta.len()
        ))
    } else {
        None
    })
}

/// The largest JSON file conveyor reads whole (configs, indexes, trainer states).
pub const MAX_JSON_BYTES: u64 = 64 << 20;

/// `std::fs::read` for a file that must be a regular one of at most `max` bytes: anything
/// else is an `InvalidInput` error saying why, before a byte is read.
pub fn read(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    match refusal(path, max)? {
        Some(why) => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, why)),
        None => std::fs::read(path),
    }
}

/// [`read`] as UTF-8 text.
pub fn read_to_string(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read(path, max)?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_of_a_bounded_size() {
        let dir = std::env::temp_dir().join(format!("conveyor-regular-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("f");
        std::fs::write(&f, b"12345").unwrap();
        assert_eq!(refusal(&f, 5).unwrap(), None);
        assert!(refusal(&f, 4).unwrap().unwrap().contains("5 bytes"));
        assert!(refusal(&dir, 5)
            .unwrap()
            .unwrap()
            .contains("not a regular file"));
        assert!(refusal(Path::new("/dev/zero"), 5)
            .unwrap()
            .unwrap()
            .contains("not a regular file"));
        assert!(refusal(&dir.join("missing"), 5).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
