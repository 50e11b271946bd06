//! `conveyor ingest` split among workers (flags, Slurm's and Kubernetes' variables), merged,
//! against one process; Slurm reruns of some tasks refused.

use super::*;

/// `conveyor ingest` as worker `index` of 3 into `out`, the split given by flags or, as a
/// scheduler would, by environment variables. Inherited scheduler variables are cleared.
fn worker(
    inputs: &Path,
    out: &Path,
    how: &str,
    index: usize,
    shard_tokens: &str,
) -> std::process::Child {
    let mut c = crate::common::conveyor_cmd();
    c.arg("ingest")
        .arg(inputs)
        .args(["--vocab", &t5(), "--out", out.to_str().unwrap()])
        .args(["--shard-tokens", shard_tokens, "-q"])
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("SLURM_ARRAY_TASK_MIN")
        .env_remove("SLURM_ARRAY_TASK_COUNT")
        .env_remove("SLURM_ARRAY_TASK_MAX")
        .env_remove("JOB_COMPLETION_INDEX")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    match how {
        "flags" => c.args(["--num-workers", "3", "--worker-index", &index.to_string()]),
        // A Slurm array numbered from 10.
        "slurm" => c
            .env("SLURM_ARRAY_TASK_ID", (10 + index).to_string())
            .env("SLURM_ARRAY_TASK_MIN", "10")
            .env("SLURM_ARRAY_TASK_COUNT", "3"),
        // A Kubernetes Indexed Job: the index from the environment, the count given.
        _ => c
            .env("JOB_COMPLETION_INDEX", index.to_string())
            .args(["--num-workers", "3"]),
    };
    c.spawn().expect("start a worker")
}

fn finished(c: std::process::Child) -> std::process::Output {
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "worker failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

#[test]
fn three_workers_merged_write_exactly_what_one_worker_writes() {
    // Five inputs cut from the C4 sample, so each worker gets one or two files.
    let inputs = tmp_dir("split-inputs");
    let text = {
        use std::io::Read;
        let mut s = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(c4()).unwrap())
            .read_to_string(&mut s)
            .unwrap();
        s
    };
    let lines: Vec<&str> = text.lines().collect();
    for (k, chunk) in lines.chunks(lines.len().div_ceil(5)).enumerate() {
        std::fs::write(
            inputs.join(format!("part-{k}.jsonl")),
            chunk.join("\n") + "\n",
        )
        .unwrap();
    }
    let one = tmp_path("split-one");
    let (code, _, err) = ingest_json(
        &[inputs.to_str().unwrap()],
        &one,
        &["--shard-tokens", "20000"],
    );
    assert_eq!(code, 0, "{err}");

    let many = tmp_path("split-many");
    // Workers 0 and 1 run side by side (flags, Slurm variables); the merge must then name the
    // missing worker 2 and change nothing.
    let (a, b) = (
        worker(&inputs, &many, "flags", 0, "20000"),
        worker(&inputs, &many, "slurm", 1, "20000"),
    );
    // Under -q only the worker the environment made says what it is (a command in an array
    // job that does part of the job without being asked must say so).
    let (a, b) = (finished(a), finished(b));
    assert!(!String::from_utf8_lossy(&a.stderr).contains("worker 0 of 3"));
    let said = String::from_utf8_lossy(&b.stderr);
    assert!(said.contains("worker 1 of 3 (from SLURM"), "{said}");
    let o = conveyor(&["manifest", "merge", many.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("worker(s) 2 of 3"),
        "{err}"
    );
    assert!(!many.join("manifest.json").exists());
    // Its --json summary says it is one part of three, and how to join them.
    let part = tmp_path("split-json");
    let o = crate::common::conveyor_cmd()
        .arg("ingest")
        .arg(&inputs)
        .args(["--vocab", &t5(), "--out", part.to_str().unwrap(), "--json"])
        .env("SLURM_ARRAY_TASK_ID", "11")
        .env("SLURM_ARRAY_TASK_MIN", "10")
        .env("SLURM_ARRAY_TASK_COUNT", "3")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["worker"],
        serde_json::json!({"index": 1, "count": 3}),
        "{v}"
    );
    assert!(
        v["merge"].as_str().unwrap().contains("manifest merge"),
        "{v}"
    );
    // A worker of another job (other shard size) is refused, not mixed in.
    let o = worker(&inputs, &many, "flags", 2, "30000")
        .wait_with_output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("different job"),
        "{err}"
    );
    // Slurm arrays of some of the tasks (reruns) do not say the split's worker count: a
    // one-task array ran the whole job as one process (and advised --overwrite, which removed
    // the finished parts), two tasks 11-12 ran as a split of 2, and 10,12 took 12 for worker
    // 1. Each is refused, asking for the count, with nothing changed.
    // Before any part is finished, the workers' work folders tell the split's size (here one
    // of a 3-worker split, as a running or killed worker leaves it).
    let running = tmp_path("split-running");
    let work = running.join(".conveyor-ingest-worker-00001-of-00003");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("job.json"), "{}").unwrap();
    let before = files(&many);
    for (out, id, min, max, count, said) in [
        (
            &many,
            "12",
            "12",
            "12",
            "1",
            "--num-workers 3 --worker-index I",
        ),
        (&many, "12", "11", "12", "2", "give --num-workers 3"),
        (&many, "12", "10", "12", "2", "has gaps"),
        (&running, "12", "12", "12", "1", "work of a 3-worker split"),
        (&running, "12", "11", "12", "2", "work of a 3-worker split"),
    ] {
        let o = crate::common::conveyor_cmd()
            .arg("ingest")
            .arg(&inputs)
            .args(["--vocab", &t5(), "--out", out.to_str().unwrap()])
            .args(["--shard-tokens", "20000", "-q"])
            .env_remove("JOB_COMPLETION_INDEX")
            .env("SLURM_ARRAY_TASK_ID", id)
            .env("SLURM_ARRAY_TASK_MIN", min)
            .env("SLURM_ARRAY_TASK_MAX", max)
            .env("SLURM_ARRAY_TASK_COUNT", count)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(said),
            "{id} of {min}-{max}: {err}"
        );
        assert_eq!(files(&many), before);
    }
    finished(worker(&inputs, &many, "k8s", 2, "20000"));
    let out = ok(&["manifest", "merge", many.to_str().unwrap()]);
    assert!(out.contains("merged 3 workers' parts"), "{out}");

    // Same files, same bytes, same manifest; no parts or work folders left.
    assert_eq!(files(&many), files(&one));
    assert_eq!(manifest(&many), manifest(&one));
    assert!(manifest(&one)["shards"].as_array().unwrap().len() > 5);
    let again = ok(&["manifest", "merge", many.to_str().unwrap()]);
    assert!(
        again.contains("already holds the merged dataset"),
        "{again}"
    );
    // A worker rerun after the merge finds the finished dataset and does nothing.
    finished(worker(&inputs, &many, "flags", 1, "20000"));
    assert_eq!(files(&many), files(&one));
}
