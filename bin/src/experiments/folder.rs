//! A study's folder is its own: `OUT/study.toml` records the study it holds (as the runner
//! read it), written when the folder is new or empty. A rerun resumes only the same study —
//! a changed file would otherwise find cells "done before" under other settings (another
//! vocabulary size, preset or length) and report them as its own — and a folder holding
//! anything else is refused before a file in it is written.

use std::path::Path;

use anyhow::Context;

use super::study_file::Study;

/// The record of the study a folder holds.
pub const RECORD: &str = "study.toml";

/// Claims `out` for `st` (read from `file`): resumes a folder holding the same study, starts
/// a new or empty one (or, with `owned`, one its caller vouches for: the demo's), refuses
/// anything else.
pub fn claim(st: &Study, file: &Path, out: &Path, owned: bool) -> anyhow::Result<()> {
    let record = out.join(RECORD);
    let now = toml::to_string(st).context("serialising the study")?;
    match std::fs::read_to_string(&record) {
        Ok(before) if before == now => return Ok(()),
        Ok(before) => anyhow::bail!(
            "{} holds a study run with other settings than {} (they differ in: {}); its finished cells would be taken for this study's. Use another --out, or move that folder away",
            record.display(),
            file.display(),
            differences(&before, &now)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", record.display())),
    }
    let stranger = match std::fs::read_dir(out) {
        Ok(mut entries) => entries.next().map(|e| e.map(|e| e.file_name())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", out.display())),
    };
    if let (Some(name), false) = (stranger, owned) {
        anyhow::bail!(
            "{} is not empty (it holds {}) and holds no {RECORD}, so it is not a study's folder: choose a new or empty --out (a study folder from before conveyor recorded its study resumes once its study file is copied into it as {RECORD})",
            out.display(),
            name.map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    conveyor_pipeline::manifest::write_atomic(&record, now.as_bytes())?;
    Ok(())
}

/// The top-level keys (`[corpus]`, `seeds`, ...) whose values differ between two records.
fn differences(before: &str, now: &str) -> String {
    let table = |t: &str| t.parse::<toml::Table>().unwrap_or_default();
    let (a, b) = (table(before), table(now));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let differ: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| k.to_string())
        .collect();
    match differ.is_empty() {
        true => "the record's form".into(),
        false => differ.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_the_sections_that_changed() {
        let a = "name = \"x\"\nseeds = [0]\n[corpus]\nvocab_size = 120\n";
        let b = "name = \"x\"\nseeds = [0]\n[corpus]\nvocab_size = 200\n";
        assert_eq!(differences(a, b), "corpus");
        assert_eq!(differences(a, &a.replace("[0]", "[0, 1]")), "seeds");
    }
}
