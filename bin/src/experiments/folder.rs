//! A study's folder is its own: `OUT/study.toml` records the study it holds (as the runner
//! read it), written when the folder is new or empty. A rerun resumes only the same study —
//! a changed file would otherwise find cells "done before" under other settings (another
//! vocabulary size, preset or length) and report them as its own — and a folder holding
//! anything else is refused before a file in it is written.

use std::path::Path;

use anyhow::Context;

use conveyor_pipeline::run_lock::{is_run_lock, RunKind, RunLock};

use super::study_file::Study;

/// The record of the study a folder holds.
pub const RECORD: &str = "study.toml";

/// Claims `out` for `st` (read from `file`): resumes a folder holding the same study, starts
/// a new or empty one (or, with `held`, one its caller vouches for and holds locked: the
/// demo's), refuses anything else. The folder stays locked while the returned lock lives: a
/// second runner on it is refused (the checks run again under the lock, so of two runners
/// started at once on a new folder the second sees the first one's record).
pub fn claim(
    st: &Study,
    file: &Path,
    out: &Path,
    held: Option<RunLock>,
) -> anyhow::Result<RunLock> {
    let owned = held.is_some();
    let now = toml::to_string(st).context("serialising the study")?;
    let hash = st.pretrain.config_sha256.as_deref();
    let same = check(&now, hash, file, out, owned)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let lock = match held {
        Some(lock) => lock,
        None => RunLock::take(out, RunKind::Study)?,
    };
    if !lock.held() {
        eprintln!(
            "note: {} is on a file system without file locks: nothing stops a second runner on it",
            out.display()
        );
    }
    if !same && !check(&now, hash, file, out, owned)? {
        conveyor_pipeline::manifest::write_atomic(&out.join(RECORD), now.as_bytes())?;
    }
    Ok(lock)
}

/// Whether `out` holds this study's record already (`now`, in the runner's form); an error
/// when it holds another study's or, without `owned`, anything but a run lock.
fn check(
    now: &str,
    hash: Option<&str>,
    file: &Path,
    out: &Path,
    owned: bool,
) -> anyhow::Result<bool> {
    let record = out.join(RECORD);
    // Compared in the runner's own form: a study file copied in by hand (comments, defaults
    // left out, other number formats) reads as the same study.
    // A record from before the config's sha256 was kept (or a study file copied in by hand)
    // takes this run's: its cells were not recorded under any other.
    let normal = |text: &str| {
        toml::from_str::<Study>(text).ok().and_then(|mut s| {
            if s.pretrain.config_sha256.is_none() {
                s.pretrain.config_sha256 = hash.map(str::to_string);
            }
            toml::to_string(&s).ok()
        })
    };
    // The folder may be shared: a FIFO or device in the record's place is named, not read.
    match conveyor_pipeline::regular::read_to_string(&record, conveyor_pipeline::regular::MAX_JSON_BYTES) {
        Ok(before) if normal(&before).as_deref() == Some(now) => return Ok(true),
        Ok(before) => anyhow::bail!(
            "{} holds a study run with other settings than {} (they differ in: {}); its finished cells would be taken for this study's. Use another --out, or move that folder away",
            record.display(),
            file.display(),
            differences(&normal(&before).unwrap_or(before), now)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", record.display())),
    }
    let stranger = match std::fs::read_dir(out) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .find(|name| !name.as_ref().is_ok_and(|n| is_run_lock(n))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", out.display())),
    };
    if let (Some(name), false) = (stranger, owned) {
        anyhow::bail!(
            "{} is not empty (it holds {}) and holds no {RECORD}, so it is not a study's folder: choose a new or empty --out (a study folder from before conveyor recorded its study resumes once its study file is copied into it as {RECORD})",
            out.display(),
            name.unwrap_or_default()
        );
    }
    Ok(false)
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

    /// A study file copied in by hand as the record (comments, defaults left out) resumes;
    /// the same file with a changed length does not; one runner at a time.
    #[test]
    fn a_hand_copied_study_file_is_the_same_study() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../studies/smoke.toml");
        let text = std::fs::read_to_string(&file).unwrap();
        let st = Study::read(&file).unwrap();
        let out = std::env::temp_dir().join(format!("conveyor-claim-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(out.join("runs")).unwrap();
        std::fs::write(out.join(RECORD), &text).unwrap();
        let held = claim(&st, &file, &out, None).unwrap();
        // While a runner holds the folder, a second runner of the very same study is refused.
        let e = claim(&st, &file, &out, None).unwrap_err().to_string();
        assert!(
            e.contains("in use") && e.contains(".conveyor-study.lock"),
            "{e}"
        );
        drop(held);
        drop(claim(&st, &file, &out, None).unwrap());
        let changed = text.replace("inputs_length = 64", "inputs_length = 32");
        std::fs::write(out.join(RECORD), changed).unwrap();
        let e = claim(&st, &file, &out, None).unwrap_err().to_string();
        assert!(e.contains("differ in: pretrain"), "{e}");
        std::fs::remove_dir_all(&out).unwrap();
    }

    /// The pre-training's config file is part of the study by its bytes: edited in place
    /// (same name), the finished cells were "done before" under another model.
    #[test]
    fn an_edited_config_file_is_another_study() {
        let dir = std::env::temp_dir().join(format!("conveyor-claim-cfg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("cfg.json");
        std::fs::write(&config, "{\"dropout\": 0.1}").unwrap();
        let file = dir.join("s.toml");
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../studies/smoke.toml"),
        )
        .unwrap()
        .replace(
            "[pretrain]\n",
            &format!("[pretrain]\nconfig = {config:?}\n"),
        );
        std::fs::write(&file, text).unwrap();
        let out = dir.join("out");
        drop(claim(&Study::read(&file).unwrap(), &file, &out, None).unwrap());
        drop(claim(&Study::read(&file).unwrap(), &file, &out, None).unwrap());
        std::fs::write(&config, "{\"dropout\": 0.0}").unwrap();
        let e = claim(&Study::read(&file).unwrap(), &file, &out, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("differ in: pretrain"), "{e}");
        // A record without the hash (written before it was kept, or the study file copied in
        // by hand) is the same study.
        let study = Study::read(&file).unwrap();
        let record = std::fs::read_to_string(out.join(RECORD)).unwrap();
        let old: String = record
            .lines()
            .filter(|l| !l.starts_with("config_sha256"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(old.len() < record.len());
        std::fs::write(out.join(RECORD), old).unwrap();
        drop(claim(&study, &file, &out, None).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn differences_name_the_sections_that_changed() {
        let a = "name = \"x\"\nseeds = [0]\n[corpus]\nvocab_size = 120\n";
        let b = "name = \"x\"\nseeds = [0]\n[corpus]\nvocab_size = 200\n";
        assert_eq!(differences(a, b), "corpus");
        assert_eq!(differences(a, &a.replace("[0]", "[0, 1]")), "seeds");
    }
}
