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
///
/// The same study may gain or drop `[[tasks]]` (pre-train once, fine-tune on more tasks
/// later, as T5 users do): the record then keeps every task the folder ever held, so a task
/// dropped and later brought back with other settings is still refused.
pub fn claim(
    st: &Study,
    file: &Path,
    out: &Path,
    held: Option<RunLock>,
) -> anyhow::Result<RunLock> {
    let owned = held.is_some();
    let now = toml::to_string(st).context("serialising the study")?;
    let hash = st.pretrain.config_sha256.as_deref();
    // Refused before the folder is made; checked again under the lock.
    check(&now, hash, file, out, owned)?;
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
    let text = match check(&now, hash, file, out, owned)? {
        None => Some(now),
        Some(r) => r.changed.then_some(r.text),
    };
    if let Some(text) = text {
        conveyor_pipeline::manifest::write_atomic(&out.join(RECORD), text.as_bytes())?;
    }
    Ok(lock)
}

/// The record a folder keeps: its text, and whether it differs from what the folder holds.
struct Record {
    text: String,
    changed: bool,
}

/// The record `out` keeps for this study (`now`, in the runner's form): the same study's,
/// with tasks added or dropped; None when `out` is new or empty (or, with `owned`, its
/// caller's). An error when it holds another study's or, without `owned`, anything but a run
/// lock.
fn check(
    now: &str,
    hash: Option<&str>,
    file: &Path,
    out: &Path,
    owned: bool,
) -> anyhow::Result<Option<Record>> {
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
    match conveyor_pipeline::regular::read_to_string(
        &record,
        conveyor_pipeline::regular::MAX_JSON_BYTES,
    ) {
        Ok(before) => {
            let kept = normal(&before);
            let merged = match &kept {
                Some(k) => with_tasks(k, now, out),
                None => Err(format!("they differ in: {}", differences(&before, now))),
            };
            return match merged {
                Ok(text) => Ok(Some(Record {
                    changed: Some(&text) != kept.as_ref(),
                    text,
                })),
                Err(why) => anyhow::bail!(
                    "{} holds a study run with other settings than {} ({why}); its finished cells would be taken for this study's. Use another --out, or move that folder away",
                    record.display(),
                    file.display(),
                ),
            };
        }
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
    Ok(None)
}
/// A folder's record (`kept`, in the runner's form) with this study's tasks (`now`): both
/// must agree on everything else, and on every task they both name unless the folder holds
/// nothing of it yet (no prepared data, no run); tasks only the record names stay in it.
/// The reason they disagree otherwise. With `[corpus] task_texts` the tasks are part of the
/// pre-training corpus, so the list must stay as it is.
fn with_tasks(kept: &str, now: &str, out: &Path) -> Result<String, String> {
    let table = |t: &str| t.parse::<toml::Table>().unwrap_or_default();
    let tasks = |t: &mut toml::Table| match t.remove("tasks") {
        Some(toml::Value::Array(v)) => v,
        _ => Vec::new(),
    };
    let (mut a, mut b) = (table(kept), table(now));
    let (old, new) = (tasks(&mut a), tasks(&mut b));
    if a != b {
        return Err(format!("they differ in: {}", differences(kept, now)));
    }
    if old == new {
        return Ok(kept.to_string());
    }
    let task_texts = b
        .get("corpus")
        .and_then(|c| c.get("task_texts"))
        .and_then(toml::Value::as_bool);
    if task_texts == Some(true) {
        return Err("they differ in their tasks, whose texts [corpus] task_texts put into the pre-training corpus".into());
    }
    let name = |v: &toml::Value| {
        v.get("name")
            .and_then(toml::Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut all = new.clone();
    for t in &old {
        match new.iter().find(|n| name(n) == name(t)) {
            None => all.push(t.clone()),
            Some(n) if n == t => {}
            Some(n) => {
                if let Some(held) = holds_task(out, &name(t)) {
                    return Err(format!(
                        "task {} differs in: {}, and this folder holds what was made with the recorded settings ({}): give the changed task another name, or move that away to make it again",
                        name(t),
                        differing_keys(
                            n.as_table().unwrap_or(&toml::Table::new()),
                            t.as_table().unwrap_or(&toml::Table::new())
                        ),
                        held.display()
                    ));
                }
            }
        }
    }
    b.insert("tasks".into(), toml::Value::Array(all));
    toml::Value::Table(b)
        .try_into::<Study>()
        .ok()
        .and_then(|s| toml::to_string(&s).ok())
        .ok_or_else(|| "the record's form".into())
}

/// What `out` holds that was made for task `name`: a prepared split (finished, or begun:
/// its manifest or a work folder's job record) or a fine-tuning run that started (its
/// run.json; OUT/runs/NAME-..., where another task whose name begins "NAME-" counts too,
/// which errs on the side of refusing). A folder a failed prepare left empty is nothing.
fn holds_task(out: &Path, name: &str) -> Option<std::path::PathBuf> {
    let tasks = out.join("tasks").join(name);
    let begun = |split: &Path| {
        split.join("manifest.json").exists()
            || std::fs::read_dir(split)
                .is_ok_and(|d| d.flatten().any(|e| e.path().join("job.json").is_file()))
    };
    if ["train", "dev"].iter().any(|s| begun(&tasks.join(s))) {
        return Some(tasks);
    }
    let prefix = format!("{name}-");
    let runs = std::fs::read_dir(out.join("runs")).ok()?;
    runs.flatten()
        .find(|r| {
            r.file_name().to_string_lossy().starts_with(&prefix)
                && r.path().join("run.json").is_file()
        })
        .map(|r| r.path())
}

/// The top-level keys (`[corpus]`, `seeds`, ...) whose values differ between two records.
fn differences(before: &str, now: &str) -> String {
    let table = |t: &str| t.parse::<toml::Table>().unwrap_or_default();
    differing_keys(&table(before), &table(now))
}

/// The keys whose values differ between two tables, inside sections by their dotted names
/// (`finetune.learning_rates`), or "the record's form" when none do.
fn differing_keys(a: &toml::Table, b: &toml::Table) -> String {
    let mut differ = Vec::new();
    differing(a, b, "", &mut differ);
    match differ.is_empty() {
        true => "the record's form".into(),
        false => differ.join(", "),
    }
}

fn differing(a: &toml::Table, b: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        match (a.get(k), b.get(k)) {
            (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
                differing(x, y, &format!("{prefix}{k}."), out)
            }
            (x, y) if x != y => out.push(format!("{prefix}{k}")),
            _ => {}
        }
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
        assert!(e.contains("differ in: pretrain.inputs_length"), "{e}");
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
        assert!(e.contains("differ in: pretrain.config_sha256"), "{e}");
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

    /// Pre-train once, fine-tune on more tasks later: a task added to or dropped from the
    /// study file resumes the folder; a task whose data or runs the folder holds cannot be
    /// edited (dropped and brought back either), one it holds nothing of can; with
    /// `task_texts` the task list is part of the pre-training corpus and cannot change.
    #[test]
    fn tasks_can_be_added_and_dropped_but_not_edited_once_run() {
        let dir = std::env::temp_dir().join(format!("conveyor-claim-tasks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let smoke = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../studies/smoke.toml"),
        )
        .unwrap();
        let sst2 = |limit: u32| {
            format!("\n[[tasks]]\nname = \"sst2\"\ntrain = [\"x.tsv\"]\ndev_fraction = 0.1\ndev_limit = {limit}\n")
        };
        let trec_only = smoke.clone();
        let sst2_only = format!("{}{}", &smoke[..smoke.find("[[tasks]]").unwrap()], sst2(40));
        let out = dir.join("out");
        let claim_text = |text: &str| {
            let file = dir.join("s.toml");
            std::fs::write(&file, text).unwrap();
            claim(&Study::read(&file).unwrap(), &file, &out, None).map(drop)
        };
        let recorded = || {
            Study::read(&out.join(RECORD))
                .unwrap()
                .tasks
                .iter()
                .map(|t| t.name.clone())
                .collect::<Vec<_>>()
        };
        claim_text(&trec_only).unwrap();
        std::fs::create_dir_all(out.join("tasks/trec/train")).unwrap();
        std::fs::write(out.join("tasks/trec/train/manifest.json"), "{}").unwrap();
        // A folder a failed prepare left empty holds nothing of the task.
        std::fs::create_dir_all(out.join("tasks/sst2/train")).unwrap();
        claim_text(&format!("{trec_only}{}", sst2(40))).unwrap();
        assert_eq!(recorded(), ["trec", "sst2"]);
        // Dropped: still recorded, so it cannot come back changed.
        claim_text(&sst2_only).unwrap();
        assert_eq!(recorded(), ["sst2", "trec"]);
        let edited = format!(
            "{}{}",
            trec_only.replace("dev_limit = 50", "dev_limit = 60"),
            sst2(40)
        );
        let e = claim_text(&edited).unwrap_err().to_string();
        assert!(e.contains("task trec differs in: dev_limit"), "{e}");
        // sst2 holds nothing yet: free to edit, until a run of it exists.
        claim_text(&format!("{trec_only}{}", sst2(30))).unwrap();
        let run = out.join("runs/sst2-transformer-scratch-lr0.001-s0");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("run.json"), "{}").unwrap();
        let e = claim_text(&format!("{trec_only}{}", sst2(20)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("task sst2 differs in: dev_limit"), "{e}");
        // Anything but the tasks is still another study.
        let e = claim_text(
            &trec_only.replace("steps = 20\nbatch_size = 16", "steps = 30\nbatch_size = 16"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("differ in: finetune.steps"), "{e}");
        // With the tasks' texts in the corpus, the list is part of the pre-training.
        std::fs::remove_dir_all(&out).unwrap();
        let texts = trec_only.replace("[pretrain]", "task_texts = true\n\n[pretrain]");
        claim_text(&texts).unwrap();
        let e = claim_text(&format!("{texts}{}", sst2(40)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("task_texts"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn differences_name_the_sections_that_changed() {
        let a = "name = \"x\"\nseeds = [0]\n[corpus]\nvocab_size = 120\n";
        let b = "name = \"x\"\nseeds = [0]\n[corpus]\nvocab_size = 200\n";
        assert_eq!(differences(a, b), "corpus.vocab_size");
        assert_eq!(differences(a, &a.replace("[0]", "[0, 1]")), "seeds");
    }
}
