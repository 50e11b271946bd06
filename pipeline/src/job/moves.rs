//! The moves a merge makes: every worker file to its final name in the output folder, all
//! checked before the first one moves, so a bad part stops the merge with nothing moved,
//! and a merge killed half-way is finished by running it again.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// What a merge says when a worker's file is in neither its part nor its final place.
const MISSING: &str =
    "is listed by its worker's part but missing; rerun that worker with --overwrite and merge again";

/// One worker file and where it goes, with the sha256 and size its part lists.
pub struct Move<'a> {
    pub from: PathBuf,
    pub to: PathBuf,
    pub sha256: &'a str,
    pub bytes: u64,
}

/// Moves that passed [`check`]; [`Checked::run`] makes them.
pub struct Checked<'a>(Vec<Move<'a>>);

/// The checks before anything moves: no worker file listed twice (an edited part.json); each
/// file in its part or, after an interrupted merge, already in its place; the file, wherever
/// it is, of the size and sha256 its part lists; and whatever stands in its place while it is
/// still in its part holding those very bytes (a move redone) rather than someone else's.
pub fn check(moves: Vec<Move<'_>>) -> Result<Checked<'_>, Error> {
    super::workers::check_distinct(moves.iter().map(|m| &m.from))?;
    let check = |path: &Path, m: &Move<'_>| {
        crate::shard::check_file(path, m.sha256, m.bytes).map_err(|e| match e {
            Error::Verify { path, message } => Error::Verify {
                path,
                message: format!("{message}; rerun that worker with --overwrite and merge again"),
            },
            e => e,
        })
    };
    for m in &moves {
        let placed = m.to.symlink_metadata().ok();
        if !m.from.exists() {
            match placed {
                None => {
                    return Err(Error::OutputDir {
                        path: m.from.clone(),
                        message: MISSING.into(),
                    })
                }
                // Moved by a killed merge: it must still be the file the part lists.
                Some(_) => check(&m.to, m)?,
            }
            continue;
        }
        check(&m.from, m)?;
        if let Some(placed) = placed {
            // Its own bytes are known now: one hash of the file in the way tells.
            let same = placed.is_file()
                && placed.len() == m.bytes
                && crate::shard::file_sha256(&m.to)? == m.sha256;
            if !same {
                return Err(in_the_way(&m.from, &m.to));
            }
        }
    }
    Ok(Checked(moves))
}

impl Checked<'_> {
    /// Moves every file to its place; one already there (checked to hold the same bytes)
    /// leaves its part's copy to be removed.
    pub fn run(self) -> Result<(), Error> {
        for m in self.0 {
            if !m.from.exists() {
                continue;
            }
            if m.to.symlink_metadata().is_ok() {
                std::fs::remove_file(&m.from).map_err(|e| Error::io(&m.from, e))?;
            } else {
                std::fs::rename(&m.from, &m.to).map_err(|e| Error::io(&m.from, e))?;
            }
        }
        Ok(())
    }
}

/// Why a file in a shard's place stops a move: it is not this job's.
pub fn in_the_way(from: &Path, to: &Path) -> Error {
    Error::OutputDir {
        path: to.to_path_buf(),
        message: format!(
            "is in the way of {}, and is not this job's; move it away and rerun",
            from.display()
        ),
    }
}
