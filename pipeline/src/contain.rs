//! The one place where a name read from a file or a flag (a split, a shard file in a
//! manifest, a part's file, a checkpoint entry) becomes a path (docs/design.md, rule 11). A name
//! is one plain path component: no separator, no `..`, not absolute, no NUL. A manifest
//! downloaded from a bucket someone else writes can therefore never make conveyor read,
//! write, move or delete a file outside the folder the name belongs to.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// The longest split name: shard names stay well under file-system name limits.
const MAX_SPLIT: usize = 64;
/// The longest file name most file systems allow.
const MAX_NAME: usize = 255;

/// Checks a split name: 1–64 characters from `A-Z a-z 0-9 _ . -`, not starting with `.`
/// or `-`. `source` says where the value came from (`--split`, a manifest's path).
pub fn check_split(value: &str, source: &str) -> Result<(), Error> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    let why = if value.is_empty() {
        Some("it is empty")
    } else if value.len() > MAX_SPLIT {
        Some("it is longer than 64 characters")
    } else if !value.chars().all(ok_char) {
        Some("only letters, digits, '_', '.' and '-' are allowed")
    } else if value.starts_with(['.', '-']) {
        Some("it may not start with '.' or '-'")
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::Unsafe {
            origin: source.to_string(),
            what: "split name",
            value: value.to_string(),
            why: why.to_string(),
        }),
        None => Ok(()),
    }
}

/// Checks that `name` is one plain file name (see the module documentation).
pub fn check_name(name: &str, source: &Path) -> Result<(), Error> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("it names a folder, not a file in it")
    } else if name.contains(['/', '\\']) {
        Some("it holds a path separator")
    } else if name.contains('\0') {
        Some("it holds a NUL byte")
    } else if name.len() > MAX_NAME {
        Some("it is longer than 255 bytes")
    } else if Path::new(name).is_absolute() || (cfg!(windows) && name.contains(':')) {
        Some("it is an absolute path")
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::Unsafe {
            origin: source.display().to_string(),
            what: "file name",
            value: name.to_string(),
            why: why.to_string(),
        }),
        None => Ok(()),
    }
}

/// `dir/name`, after [`check_name`]: the only way a name read from `source` becomes a path.
pub fn join(dir: &Path, name: &str, source: &Path) -> Result<PathBuf, Error> {
    check_name(name, source)?;
    Ok(dir.join(name))
}

/// Whether `a` and `b` are the same folder or one holds the other (compared after resolving
/// links and `..`; a path that does not exist yet is resolved through its nearest existing
/// parent). `--out` must not overlap any input.
pub fn overlaps(a: &Path, b: &Path) -> bool {
    let (a, b) = (resolve(a), resolve(b));
    a.starts_with(&b) || b.starts_with(&a)
}

/// The absolute, link-free form of `p`, for paths that may not exist yet.
fn resolve(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut tail = Vec::new();
    let mut cur = abs.as_path();
    loop {
        if let Ok(real) = cur.canonicalize() {
            let mut out = real;
            for t in tail.iter().rev() {
                out.push(t);
            }
            return out;
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                tail.push(name.to_os_string());
                cur = parent;
            }
            _ => return abs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_names() {
        for ok in ["train", "validation", "en.noblocklist", "dev-2", "a_b"] {
            check_split(ok, "--split").unwrap();
        }
        for bad in [
            "", "../x", "/tmp/x", "a/b", ".hidden", "-x", "a b", "x\0", "é",
        ] {
            let e = check_split(bad, "--split").unwrap_err().to_string();
            assert!(e.contains("--split") && e.contains("split name"), "{e}");
        }
        check_split(&"a".repeat(65), "m").unwrap_err();
    }

    #[test]
    fn file_names() {
        let src = Path::new("d/manifest.json");
        for ok in ["train-00000-of-00001.parquet", "x..y", "..x"] {
            assert_eq!(
                join(Path::new("d"), ok, src).unwrap(),
                Path::new("d").join(ok)
            );
        }
        for bad in [
            "",
            ".",
            "..",
            "../v/x",
            "/etc/passwd",
            "a/b",
            "a\\b",
            "x\0y",
        ] {
            let e = join(Path::new("d"), bad, src).unwrap_err().to_string();
            assert!(e.contains("d/manifest.json"), "{e}");
        }
    }

    #[test]
    fn overlap() {
        let dir = std::env::temp_dir().join(format!("conveyor-contain-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        assert!(overlaps(&dir.join("a"), &dir.join("a/b")));
        assert!(overlaps(&dir.join("a/b/new"), &dir.join("a")));
        assert!(overlaps(&dir.join("a/../a"), &dir.join("a")));
        assert!(!overlaps(&dir.join("a/b"), &dir.join("a/c")));
        assert!(!overlaps(&dir.join("ab"), &dir.join("a")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
