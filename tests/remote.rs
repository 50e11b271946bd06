//! Remote corpora over HTTP, against a file server the test starts on loopback
//! (tests/common/http.rs): a dropped connection mid-file is resumed with a range request and
//! the output is byte-identical to reading the file from disk (JSON lines, Parquet, task
//! files); a store that stays out of reach stops the job (ingest, clean) with an error naming
//! the URL, and a rerun resumes to the same result.
//! S3 (moto) is tested in tests/remote_s3.rs.

use crate::common;

use std::path::Path;
use std::sync::atomic::Ordering;

use common::http::FileServer;
use common::*;

const C4: &str = "c4/c4-train.00000-of-01024.first600.json.gz";
const C4_NAME: &str = "c4-train.00000-of-01024.first600.json.gz";

fn run_with(env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    crate::common::conveyor_cmd()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run conveyor")
}

fn ingest_args<'a>(input: &'a str, out: &'a str, vocab: &'a str) -> Vec<&'a str> {
    vec![
        "ingest",
        input,
        "--vocab",
        vocab,
        "--out",
        out,
        "--shard-tokens",
        "40000",
        "-q",
    ]
}

fn local_reference(tag: &str) -> Dataset {
    let out = tmp_path(tag);
    ingest_c4_sample(&out, 40000);
    let d = dataset_summary(&out);
    assert!(d.0.len() > 1, "the sample should make several shards");
    d
}

fn serve_c4() -> FileServer {
    let root = tmp_dir("http-root");
    std::fs::copy(shared(C4), root.join(C4_NAME)).unwrap();
    FileServer::start(root)
}

#[test]
fn a_connection_dropped_mid_file_is_resumed_and_the_output_is_identical() {
    let reference = local_reference("http-reference");
    let vocab = shared("spiece/t5-spiece.model");
    for etag in [false, true] {
        let server = serve_c4();
        server.behaviour.etag.store(etag, Ordering::SeqCst);
        // Two drops at byte 100,000: the first transfer, then the first resumption.
        server.behaviour.drop_after.store(100_000, Ordering::SeqCst);
        server.behaviour.drops_left.store(2, Ordering::SeqCst);
        let out = tmp_path(&format!("http-out-{etag}"));
        // With ETags, through a redirect (as the Hugging Face hub serves files).
        let url = match etag {
            false => server.url(C4_NAME),
            true => server.url(&format!("r/{C4_NAME}")),
        };
        let o = run_with(
            &[("CONVEYOR_REMOTE_BACKOFF_MS", "5")],
            &ingest_args(&url, out.to_str().unwrap(), vocab.to_str().unwrap()),
        );
        assert!(
            o.status.success(),
            "etag {etag}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(server.seen.dropped.load(Ordering::SeqCst), 2, "etag {etag}");
        assert!(
            server.seen.resumed_gets.load(Ordering::SeqCst) >= 2,
            "etag {etag}: the reader should have resumed with range requests"
        );
        assert!(
            dataset_summary(&out) == reference,
            "etag {etag}: output differs from the local read"
        );
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(m["inputs"][0]["path"], url.as_str());
        assert!(m["inputs"][0]["error"].is_null());
    }
}

#[test]
fn a_store_out_of_reach_stops_the_job_and_a_rerun_resumes_to_the_same_result() {
    let reference = local_reference("http-reach-reference");
    let vocab = shared("spiece/t5-spiece.model");
    let server = serve_c4();
    // Every transfer dies at byte 300,000, more times than the reader retries.
    server.behaviour.drop_after.store(300_000, Ordering::SeqCst);
    server.behaviour.drops_left.store(1000, Ordering::SeqCst);
    let out = tmp_path("http-reach-out");
    let url = server.url(C4_NAME);
    let args = ingest_args(&url, out.to_str().unwrap(), vocab.to_str().unwrap());
    let env = [
        ("CONVEYOR_REMOTE_BACKOFF_MS", "1"),
        ("CONVEYOR_REMOTE_RETRIES", "3"),
    ];
    let o = run_with(&env, &args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the job should stop");
    assert!(err.contains(&url) && err.contains("rerun"), "{err}");
    assert!(
        !out.join("manifest.json").exists(),
        "no manifest for an unfinished job"
    );
    // Shards finished before the failure were kept for the rerun.
    let kept = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
        .count();
    let before = server.seen.gets.load(Ordering::SeqCst);
    // The network is back: the rerun resumes and ends with the same dataset.
    server.behaviour.drops_left.store(0, Ordering::SeqCst);
    let o = run_with(&env, &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(server.seen.gets.load(Ordering::SeqCst) > before);
    assert!(
        dataset_summary(&out) == reference,
        "resumed output differs (kept {kept} shards)"
    );
}

#[test]
fn missing_objects_and_unlistable_servers_are_named() {
    let server = serve_c4();
    let vocab = shared("spiece/t5-spiece.model");
    let out = tmp_path("http-missing");
    let url = server.url("no-such-file.json.gz");
    let o = run_with(
        &[],
        &ingest_args(&url, out.to_str().unwrap(), vocab.to_str().unwrap()),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains(&url), "{err}");
    let prefix = server.url("");
    let o = run_with(
        &[("CONVEYOR_REMOTE_RETRIES", "0")],
        &ingest_args(&prefix, out.to_str().unwrap(), vocab.to_str().unwrap()),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("name each file"), "{err}");
    // No pattern or query string is taken for a listing of the server (a `?` was, and the
    // message held the server's whole error page).
    for (arg, words) in [
        (server.url("c4-*.json.gz"), "name each file"),
        (server.url("c4.json.gz?sig=abc"), "query strings"),
    ] {
        let o = run_with(
            &[("CONVEYOR_REMOTE_RETRIES", "0")],
            &ingest_args(&arg, out.to_str().unwrap(), vocab.to_str().unwrap()),
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(words), "{arg}: {err}");
        assert!(err.len() < 1000, "{arg}: {err}");
    }
}

#[test]
fn a_parquet_input_is_read_by_ranges_and_resumed_too() {
    // The C4 sample as a Parquet file of text, url and timestamp (written by pyarrow).
    let root = tmp_dir("http-parquet-root");
    let file = root.join("c4-sample.parquet");
    let script = r#"
import sys, gzip, json
import pyarrow as pa, pyarrow.parquet as pq
rows = [json.loads(l) for l in gzip.open(sys.argv[1], "rt")]
table = pa.table({k: [r[k] for r in rows] for k in ("text", "url", "timestamp")})
pq.write_table(table, sys.argv[2], row_group_size=100)
"#;
    let python = std::env::var("CONVEYOR_PYTHON").unwrap_or_else(|_| "python3".into());
    let o = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(shared(C4))
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (run the tests with `make test`)"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let vocab = shared("spiece/t5-spiece.model");
    let local = tmp_path("http-parquet-local");
    let o = run_with(
        &[],
        &ingest_args(
            file.to_str().unwrap(),
            local.to_str().unwrap(),
            vocab.to_str().unwrap(),
        ),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let server = FileServer::start(root);
    let size = std::fs::metadata(&file).unwrap().len();
    server
        .behaviour
        .drop_after
        .store(size / 2, Ordering::SeqCst);
    server.behaviour.drops_left.store(2, Ordering::SeqCst);
    let out = tmp_path("http-parquet-out");
    let o = run_with(
        &[("CONVEYOR_REMOTE_BACKOFF_MS", "5")],
        &ingest_args(
            &server.url("c4-sample.parquet"),
            out.to_str().unwrap(),
            vocab.to_str().unwrap(),
        ),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(server.seen.dropped.load(Ordering::SeqCst), 2);
    assert!(
        dataset_summary(&out) == dataset_summary(&local),
        "remote Parquet read differs"
    );
}

#[test]
fn task_files_at_a_url_prepare_the_same_examples() {
    let root = tmp_dir("http-task-root");
    std::fs::copy(shared("cogs/dev.tsv"), root.join("dev.tsv")).unwrap();
    let server_root = root.clone();
    let server = FileServer::start(root);
    let size = std::fs::metadata(shared("cogs/dev.tsv")).unwrap().len();
    server
        .behaviour
        .drop_after
        .store(size / 3, Ordering::SeqCst);
    server.behaviour.drops_left.store(1, Ordering::SeqCst);
    let vocab = shared("spiece/t5-spiece.model");
    let stage = tmp_path("task-stage");
    let prepare = |input: &str, out: &Path| {
        let o = run_with(
            &[
                ("CONVEYOR_REMOTE_BACKOFF_MS", "5"),
                ("CONVEYOR_STAGE", stage.to_str().unwrap()),
            ],
            &[
                "task",
                "prepare",
                "cogs",
                "--input",
                input,
                "--vocab",
                vocab.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        files_in(out)
            .into_iter()
            .filter(|(n, _)| n.ends_with(".parquet"))
            .collect::<Vec<_>>()
    };
    let local = prepare(
        shared("cogs/dev.tsv").to_str().unwrap(),
        &tmp_path("task-local"),
    );
    assert!(!local.is_empty());
    let remote = prepare(&server.url("dev.tsv"), &tmp_path("task-remote"));
    assert_eq!(server.seen.dropped.load(Ordering::SeqCst), 1);
    assert!(remote == local, "examples from the URL differ");
    // The staged copy serves a rerun while the object is the same version (no GET)...
    let gets = server.seen.gets.load(Ordering::SeqCst);
    assert!(prepare(&server.url("dev.tsv"), &tmp_path("task-again")) == local);
    assert_eq!(server.seen.gets.load(Ordering::SeqCst), gets);
    // ...and not once the object is rewritten, even at the same size (lines reordered: a
    // cache keyed by size kept the old examples).
    let text = std::fs::read_to_string(shared("cogs/dev.tsv")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.reverse();
    let reordered = lines.join("\n") + "\n";
    assert_eq!(reordered.len(), text.len());
    let edited = tmp_dir("http-task-edited").join("dev.tsv");
    std::fs::write(&edited, &reordered).unwrap();
    std::fs::write(server_root.join("dev.tsv"), &reordered).unwrap();
    server.behaviour.version.store(1, Ordering::SeqCst);
    let want = prepare(edited.to_str().unwrap(), &tmp_path("task-edited-local"));
    assert!(want != local);
    assert!(prepare(&server.url("dev.tsv"), &tmp_path("task-edited")) == want);
}

#[test]
fn clean_stops_on_a_store_out_of_reach_and_a_rerun_gives_the_local_result() {
    let local = tmp_path("clean-local");
    ok(&[
        "clean",
        shared(C4).to_str().unwrap(),
        "--out",
        local.to_str().unwrap(),
        "-q",
    ]);
    let server = serve_c4();
    server.behaviour.drop_after.store(200_000, Ordering::SeqCst);
    server.behaviour.drops_left.store(1000, Ordering::SeqCst);
    let out = tmp_path("clean-remote");
    let url = server.url(C4_NAME);
    let args = ["clean", url.as_str(), "--out", out.to_str().unwrap(), "-q"];
    let env = [
        ("CONVEYOR_REMOTE_BACKOFF_MS", "1"),
        ("CONVEYOR_REMOTE_RETRIES", "2"),
    ];
    let o = run_with(&env, &args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains(&url), "{err}");
    assert!(!out.join("manifest.json").exists());
    server.behaviour.drops_left.store(0, Ordering::SeqCst);
    let o = run_with(&env, &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(files_but_manifest(&out) == files_but_manifest(&local));
}

#[test]
fn a_stalled_connection_is_resumed_after_the_stall_timeout() {
    let reference = local_reference("http-stall-reference");
    let vocab = shared("spiece/t5-spiece.model");
    let server = serve_c4();
    // The server goes silent at byte 100,000 (without closing) once.
    server.behaviour.stall.store(true, Ordering::SeqCst);
    server.behaviour.drop_after.store(100_000, Ordering::SeqCst);
    server.behaviour.drops_left.store(1, Ordering::SeqCst);
    let out = tmp_path("http-stall-out");
    let started = std::time::Instant::now();
    let o = run_with(
        &[
            ("CONVEYOR_REMOTE_STALL_S", "1"),
            ("CONVEYOR_REMOTE_BACKOFF_MS", "5"),
        ],
        &ingest_args(
            &server.url(C4_NAME),
            out.to_str().unwrap(),
            vocab.to_str().unwrap(),
        ),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(25),
        "the stall should end at the 1 s read timeout, not when the server gives up"
    );
    assert!(server.seen.resumed_gets.load(Ordering::SeqCst) >= 1);
    assert!(dataset_summary(&out) == reference);
}

/// A dataset on a plain web server (which lists nothing) is read through its manifest: the
/// manifest and the shards it names (a listing was tried, retried and failed).
#[test]
fn a_dataset_on_a_plain_web_server_is_read_through_its_manifest() {
    let root = tmp_dir("http-dataset");
    let tokens = root.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    for e in std::fs::read_dir(c4_tokens()).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), tokens.join(e.file_name())).unwrap();
        }
    }
    let server = FileServer::start(root);
    let corrupt = |input: &str, out: &Path| {
        run_with(
            &[("CONVEYOR_REMOTE_RETRIES", "0")],
            &[
                "corrupt",
                input,
                "--out",
                out.to_str().unwrap(),
                "--inputs-length",
                "128",
                "-q",
            ],
        )
    };
    let local = tmp_path("http-dataset-local");
    assert!(corrupt(c4_tokens().to_str().unwrap(), &local)
        .status
        .success());
    let fetched = tmp_path("http-dataset-fetched");
    let o = corrupt(&server.url("tokens"), &fetched);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(dataset_summary(&fetched) == dataset_summary(&local));
}
