//! Remote corpora and outputs on S3, against moto's S3 server, which the test starts on
//! loopback (`moto_server` from the Python environment of scripts/setup.sh) and stops when it
//! ends: ingest from an `s3://` prefix into an `s3://` output, split among workers and merged
//! on the URL, corrupt and clean from and to `s3://`, training from `s3://`; every result
//! equals the local one.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const C4: &str = "c4/c4-train.00000-of-01024.first600.json.gz";
const C4_NAME: &str = "c4-train.00000-of-01024.first600.json.gz";

/// A moto S3 server for the length of a test.
struct Moto {
    child: Child,
    port: u16,
    stage: PathBuf,
}

impl Moto {
    fn start(tag: &str) -> Moto {
        let python = std::env::var("CONVEYOR_PYTHON").unwrap_or_else(|_| "python3".into());
        let server = Path::new(&python).with_file_name("moto_server");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Small multipart parts (S3 wants 5 MiB), so that the test's files go multipart.
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("S3_UPLOAD_PART_MIN_SIZE", "65536")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (run the tests with `make test`: scripts/setup.sh installs moto[server] and sets CONVEYOR_PYTHON)",
                    server.display()
                )
            });
        let moto = Moto {
            child,
            port,
            stage: tmp_dir(&format!("s3-stage-{tag}")),
        };
        let until = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < until,
                "moto_server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", format!("http://127.0.0.1:{}", self.port)),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("CONVEYOR_STAGE", self.stage.display().to_string()),
            ("CONVEYOR_UPLOAD_PART_BYTES", "262144".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// A plain (unsigned, path-style) request, as moto accepts for writes; (status, reply).
    fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).unwrap();
        let reply = String::from_utf8_lossy(&reply).into_owned();
        let status = reply.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, reply)
    }

    /// Runs a boto3 script (an S3 client independent of conveyor's) against the server:
    /// `sys.argv[1]` is the endpoint, then `args`.
    fn boto3(&self, script: &str, args: &[&str]) {
        let python = std::env::var("CONVEYOR_PYTHON").unwrap_or_else(|_| "python3".into());
        let o = Command::new(python)
            .args(["-c", script, &format!("http://127.0.0.1:{}", self.port)])
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "boto3: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Writes `path`'s bytes as the object `s3://bucket/key`.
    fn put(&self, bucket: &str, key: &str, path: &Path) {
        let script = r#"
import sys, boto3
endpoint, bucket, key, path = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
s3.upload_file(path, bucket, key)
"#;
        self.boto3(script, &[bucket, key, path.to_str().unwrap()]);
    }

    /// Downloads every object under `s3://bucket/prefix/` into a fresh local folder.
    fn fetch(&self, bucket: &str, prefix: &str) -> PathBuf {
        let dir = tmp_dir(&format!("s3-fetch-{bucket}-{}", prefix.replace('/', "_")));
        let script = r#"
import sys, os, boto3
endpoint, bucket, prefix, out = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
    for obj in page.get("Contents", []):
        rel = obj["Key"][len(prefix) + 1:]
        path = os.path.join(out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        s3.download_file(bucket, obj["Key"], path)
"#;
        self.boto3(script, &[bucket, prefix, dir.to_str().unwrap()]);
        dir
    }

    fn conveyor(&self, args: &[&str]) -> std::process::Output {
        crate::common::conveyor_cmd()
            .args(args)
            .envs(self.env())
            .output()
            .expect("run conveyor")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.conveyor(args);
        assert!(
            o.status.success(),
            "conveyor {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The dataset at `s3://bucket/prefix`, fetched independently.
    fn dataset(&self, bucket: &str, prefix: &str) -> Dataset {
        dataset_summary(&self.fetch(bucket, prefix))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(|s| s.as_str()).collect()
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn ingest_workers_merge_corrupt_and_clean_on_s3_equal_the_local_runs() {
    let moto = Moto::start("main");
    let vocab = shared("spiece/t5-spiece.model");
    let sample = std::fs::read(shared(C4)).unwrap();
    assert_eq!(
        moto.request("PUT", "/corpus", b"").0,
        200,
        "create the bucket"
    );
    // Two inputs (the sample under two names), local and on S3.
    let local_in = tmp_dir("s3-local-in");
    for name in [C4_NAME.to_string(), format!("copy-{C4_NAME}")] {
        std::fs::write(local_in.join(&name), &sample).unwrap();
        let (status, _) = moto.request("PUT", &format!("/corpus/raw/{name}"), &sample);
        assert_eq!(status, 200);
    }
    let ingest = |input: &str, out: &str, extra: &[&str]| {
        let mut a = vec!["ingest", input, "--vocab", arg(&vocab), "--out", out];
        a.extend_from_slice(&["--shard-tokens", "40000", "-q"]);
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };

    // The local reference: one process, local files.
    let local = tmp_path("s3-local-tokens");
    ok(&strs(&ingest(arg(&local_in), arg(&local), &[])));
    let reference = dataset_summary(&local);
    assert!(reference.0.len() > 2);

    // One process: s3 prefix in, s3 out.
    moto.ok(&strs(&ingest(
        "s3://corpus/raw/",
        "s3://corpus/tokens",
        &[],
    )));
    assert!(
        moto.dataset("corpus", "tokens") == reference,
        "s3 ingest differs from the local one"
    );
    let fetched = moto.fetch("corpus", "tokens");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fetched.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["inputs"][0]["path"], format!("s3://corpus/raw/{C4_NAME}"));

    // A finished URL is not silently redone; --overwrite replaces it.
    let o = moto.conveyor(&strs(&ingest(
        "s3://corpus/raw/",
        "s3://corpus/tokens",
        &[],
    )));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--overwrite"));
    moto.ok(&strs(&ingest(
        "s3://corpus/raw/*.json.gz",
        "s3://corpus/tokens",
        &["--overwrite"],
    )));
    assert!(moto.dataset("corpus", "tokens") == reference);

    // Two workers writing to one URL, then the merge on the URL.
    for i in ["0", "1"] {
        let extra = ["--num-workers", "2", "--worker-index", i];
        moto.ok(&strs(&ingest(
            "s3://corpus/raw/",
            "s3://corpus/split",
            &extra,
        )));
    }
    moto.ok(&["manifest", "merge", "s3://corpus/split"]);
    assert!(
        moto.dataset("corpus", "split") == reference,
        "merged workers differ"
    );
    let fetched = moto.fetch("corpus", "split");
    assert!(
        !fetched.join("parts").exists(),
        "the merge leaves no parts behind"
    );
    let names: Vec<_> = files_in(&fetched).into_iter().map(|(n, _)| n).collect();
    assert!(
        names
            .iter()
            .all(|n| n == "manifest.json" || n.starts_with("train-")),
        "only the merged dataset is left: {names:?}"
    );

    // Span corruption from and to S3 equals the local run.
    let corrupt = |tokens: &str, out: &str| {
        vec![
            "corrupt".to_string(),
            tokens.into(),
            "--out".into(),
            out.into(),
            "--inputs-length".into(),
            "128".into(),
            "-q".into(),
        ]
    };
    let local_ex = tmp_path("s3-local-examples");
    ok(&strs(&corrupt(arg(&local), arg(&local_ex))));
    moto.ok(&strs(&corrupt(
        "s3://corpus/tokens",
        "s3://corpus/examples",
    )));
    let fetched = moto.fetch("corpus", "examples");
    assert!(
        dataset_summary(&fetched) == dataset_summary(&local_ex),
        "s3 corrupt differs"
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fetched.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        m["source"], "s3://corpus/tokens",
        "the manifest names the URL it read"
    );
    // --overwrite with other settings over the URL: a shard of the old dataset of the same
    // size as the new one's (made so here: seed 1's shard with a byte changed, listed by the
    // old manifest with its checksum) was skipped, left under the new manifest.
    let local_ex1 = tmp_path("s3-local-examples-seed1");
    let seed1 = |tokens: &str, out: &str, extra: &[&str]| {
        let mut a = corrupt(tokens, out);
        a.extend(["--seed", "1"].iter().chain(extra).map(|s| s.to_string()));
        a
    };
    ok(&strs(&seed1(arg(&local), arg(&local_ex1), &[])));
    let name = m["shards"][0]["file"].as_str().unwrap().to_string();
    let mut stale = std::fs::read(local_ex1.join(&name)).unwrap();
    let middle = stale.len() / 2;
    stale[middle] ^= 0xff;
    let stale_path = tmp_dir("s3-stale").join(&name);
    std::fs::write(&stale_path, &stale).unwrap();
    let mut old = m.clone();
    old["shards"][0]["sha256"] = conveyor_pipeline::shard::file_sha256(&stale_path)
        .unwrap()
        .into();
    old["shards"][0]["bytes"] = stale.len().into();
    moto.put("corpus", &format!("examples/{name}"), &stale_path);
    let old_manifest = stale_path.with_file_name("manifest.json");
    std::fs::write(&old_manifest, serde_json::to_vec(&old).unwrap()).unwrap();
    moto.put("corpus", "examples/manifest.json", &old_manifest);
    moto.ok(&strs(&seed1(
        "s3://corpus/tokens",
        "s3://corpus/examples",
        &["--overwrite"],
    )));
    assert!(
        moto.dataset("corpus", "examples") == dataset_summary(&local_ex1),
        "--overwrite left a stale shard of the same size at the URL"
    );
    // Training reads a dataset at a URL (from a local copy): the same losses as from disk.
    let losses = |data: &str, tag: &str| {
        let run = tmp_path(tag);
        moto.ok(&[
            "train",
            "--data",
            data,
            "--out",
            arg(&run),
            "--arch",
            "lightconv",
            "--preset",
            "tiny",
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--inputs-length",
            "64",
            "--device",
            "cpu",
            "-q",
        ]);
        let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        metrics
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].clone())
            .collect::<Vec<_>>()
    };
    let from_disk = losses(arg(&local), "s3-train-local");
    assert_eq!(from_disk.len(), 3);
    assert_eq!(losses("s3://corpus/tokens", "s3-train-s3"), from_disk);
    // The local copy follows the store: a shard rewritten at the same size is fetched again
    // (a cache keyed by size kept reading the old copy), and this one, no longer matching
    // its manifest, is named at its URL.
    let copy = moto.fetch("corpus", "tokens");
    let (shard, good) = files_in(&copy)
        .into_iter()
        .find(|(n, _)| n.starts_with("train-"))
        .unwrap();
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0xff;
    let put = |bytes: &[u8]| {
        let file = tmp_path("s3-shard-bytes");
        std::fs::write(&file, bytes).unwrap();
        moto.put("corpus", &format!("tokens/{shard}"), &file);
    };
    put(&bad);
    let run = tmp_path("s3-train-changed");
    let o = moto.conveyor(&[
        "train",
        "--data",
        "s3://corpus/tokens",
        "--out",
        arg(&run),
        "--steps",
        "1",
        "--arch",
        "lightconv",
        "--preset",
        "tiny",
        "--device",
        "cpu",
        "-q",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("s3://corpus/tokens")
            && err.contains("does not match its dataset's manifest"),
        "{err}"
    );
    put(&good);
    assert_eq!(losses("s3://corpus/tokens", "s3-train-s3-again"), from_disk);
    // Copies damaged in the local cache (two of them) are fetched again, not blamed on the
    // URL.
    let cached = std::fs::read_dir(&moto.stage)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.is_dir()
                && p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("tokens_input-")
        })
        .expect("the cached copy of s3://corpus/tokens");
    let mut shards: Vec<_> = files_in(&cached)
        .into_iter()
        .filter(|(n, _)| n.ends_with(".parquet"))
        .collect();
    for (name, bytes) in shards.iter_mut().take(2) {
        bytes[100] ^= 0xff;
        std::fs::write(cached.join(name.as_str()), &bytes).unwrap();
    }
    assert_eq!(
        losses("s3://corpus/tokens", "s3-train-s3-repaired"),
        from_disk
    );
    // Two processes reading the dataset into an empty cache at once (the ranks of one run on
    // a node) fetch it one at a time: both read it whole.
    std::fs::remove_dir_all(&cached).unwrap();
    let corrupt_to = |out: &Path| {
        crate::common::conveyor_cmd()
            .args([
                "corrupt",
                "s3://corpus/tokens",
                "--out",
                arg(out),
                "--inputs-length",
                "128",
                "-q",
            ])
            .envs(moto.env())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (tmp_path("s3-both-a"), tmp_path("s3-both-b"));
    let children = [corrupt_to(&a), corrupt_to(&b)];
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert!(dataset_summary(&a) == dataset_summary(&local_ex));
    assert!(dataset_summary(&b) == dataset_summary(&local_ex));

    // Cleaning from and to S3 writes the same files as the local run.
    let local_clean = tmp_path("s3-local-clean");
    ok(&["clean", arg(&local_in), "--out", arg(&local_clean), "-q"]);
    moto.ok(&[
        "clean",
        "s3://corpus/raw/",
        "--out",
        "s3://corpus/clean",
        "-q",
    ]);
    let fetched = moto.fetch("corpus", "clean");
    assert!(files_but_manifest(&fetched) == files_but_manifest(&local_clean));
    assert!(fetched.join("manifest.json").exists());

    // Nothing is left in the stage once the uploads are done.
    let left: Vec<_> = std::fs::read_dir(&moto.stage)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        // (the downloaded copy of an input dataset stays, as a cache, and a merge stage's
        // fetch lock: lock files are never removed)
        .filter(|n| {
            let n = n.to_string_lossy();
            !n.contains("_input-") && !n.ends_with(".fetch.lock")
        })
        .collect();
    assert!(left.is_empty(), "stage folders left: {left:?}");
}

/// The user's objects beside a conveyor output at a URL are neither read nor deleted: a
/// reader fetches only the manifest and what it lists (an object named so that no local
/// path can take it made the whole dataset unreadable), and `--overwrite` removes only
/// objects under conveyor's names (it deleted `parts/worker-notes.txt`, and any object an
/// edited manifest listed).
#[test]
fn the_users_objects_beside_an_output_are_neither_read_nor_deleted() {
    let moto = Moto::start("users");
    let vocab = shared("spiece/t5-spiece.model");
    assert_eq!(
        moto.request("PUT", "/mine", b"").0,
        200,
        "create the bucket"
    );
    let sample = std::fs::read(shared(C4)).unwrap();
    let (status, _) = moto.request("PUT", &format!("/mine/raw/{C4_NAME}"), &sample);
    assert_eq!(status, 200);
    let ingest = |extra: &[&str]| {
        let mut a = vec!["ingest", "s3://mine/raw/", "--vocab", arg(&vocab)];
        a.extend_from_slice(&["--out", "s3://mine/tokens", "--shard-tokens", "40000", "-q"]);
        a.extend_from_slice(extra);
        moto.ok(&a);
    };
    ingest(&[]);
    let reference = moto.dataset("mine", "tokens");
    let user = tmp_dir("s3-users").join("notes.txt");
    std::fs::write(&user, "mine, not conveyor's").unwrap();
    let theirs = [
        "tokens/parts/worker-notes.txt",
        "tokens/parts/worker-00000-of-00002-backup/important.bin",
        "tokens/parts/worker-00000-of-00002/important.bin",
        "tokens/README-mine.txt",
        "tokens/sub/..\\..\\PWN",
    ];
    for key in theirs {
        moto.put("mine", key, &user);
    }
    // Read from the URL with the user's objects beside it.
    let examples = tmp_path("s3-users-examples");
    moto.ok(&[
        "corrupt",
        "s3://mine/tokens",
        "--out",
        arg(&examples),
        "--inputs-length",
        "128",
        "-q",
    ]);
    // An edited manifest that lists one of the user's objects, at its size.
    let fetched = moto.fetch("mine", "tokens");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fetched.join("manifest.json")).unwrap()).unwrap();
    let mut entry = m["shards"][0].clone();
    entry["file"] = "README-mine.txt".into();
    entry["bytes"] = std::fs::metadata(&user).unwrap().len().into();
    m["shards"].as_array_mut().unwrap().push(entry);
    let edited = tmp_dir("s3-users-manifest").join("manifest.json");
    std::fs::write(&edited, serde_json::to_vec(&m).unwrap()).unwrap();
    moto.put("mine", "tokens/manifest.json", &edited);
    ingest(&["--overwrite"]);
    let after = moto.fetch("mine", "tokens");
    for key in theirs {
        let rel = key.strip_prefix("tokens/").unwrap();
        assert!(after.join(rel).is_file(), "--overwrite deleted {key}");
    }
    assert!(moto.dataset("mine", "tokens") == reference);
}
