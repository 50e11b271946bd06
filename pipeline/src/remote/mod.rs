//! Remote corpora: inputs and outputs named by URL (`https://`, `http://`, `s3://`, `gs://`)
//! as well as by path, through the `object_store` crate.
//!
//! Inputs keep flowing through the pipeline as `PathBuf`s holding the URL text unchanged;
//! [`is_url`] tells the two apart where a file would be opened. Reads stream through
//! [`read::RemoteReader`], which resumes a dropped connection with a range request at the
//! byte it stopped at and never ends early (see its documentation). Outputs are written to a
//! local stage folder and uploaded when the job finishes ([`sync`]).
//!
//! Credentials and endpoints come from the usual environment variables: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT` (an
//! S3-compatible server) and `AWS_ALLOW_HTTP=true` (plain-HTTP endpoints) for `s3://`;
//! `GOOGLE_APPLICATION_CREDENTIALS` / `GOOGLE_SERVICE_ACCOUNT` for `gs://`. Retries:
//! `CONVEYOR_REMOTE_RETRIES` (default 10) attempts with exponential backoff starting at
//! `CONVEYOR_REMOTE_BACKOFF_MS` (default 200 ms, at most 15 s between attempts); a read that
//! waits `CONVEYOR_REMOTE_STALL_S` (default 60) seconds for bytes counts as a failure.

mod cache;
pub mod list;
mod owned;
pub mod read;
pub mod sync;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use object_store::path::Path as Key;
use object_store::{BackoffConfig, ClientConfigKey, ClientOptions, ObjectStore, RetryConfig};

use crate::error::Error;

/// The URL schemes conveyor reads and writes.
pub const SCHEMES: [&str; 5] = ["https://", "http://", "s3://", "s3a://", "gs://"];

/// True when `s` names a remote object or prefix rather than a local path.
pub fn is_url(s: &str) -> bool {
    SCHEMES.iter().any(|p| {
        s.len() > p.len() && s.is_char_boundary(p.len()) && s[..p.len()].eq_ignore_ascii_case(p)
    })
}

/// [`is_url`] for a path that may hold a URL.
pub fn path_is_url(p: &Path) -> bool {
    p.to_str().is_some_and(is_url)
}

/// How often and how patiently remote requests are retried.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Attempts after the first failure before giving up.
    pub retries: u32,
    /// The first wait; doubled after every failure up to 15 s.
    pub backoff: Duration,
    /// How long a read may wait for the next bytes before the connection counts as
    /// stalled (and is resumed).
    pub stall: Duration,
}

impl Policy {
    /// From `CONVEYOR_REMOTE_RETRIES` and `CONVEYOR_REMOTE_BACKOFF_MS`, else the defaults.
    pub fn from_env() -> Policy {
        let num = |k: &str| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Policy {
            retries: num("CONVEYOR_REMOTE_RETRIES").map_or(10, |n| n.min(1000) as u32),
            backoff: Duration::from_millis(num("CONVEYOR_REMOTE_BACKOFF_MS").unwrap_or(200)),
            stall: Duration::from_secs(num("CONVEYOR_REMOTE_STALL_S").unwrap_or(60)),
        }
    }

    /// The wait before attempt `n` (1-based) after a failure.
    pub fn wait(&self, n: u32) -> Duration {
        let factor = 1u64 << n.saturating_sub(1).min(16);
        (self.backoff * factor as u32).min(Duration::from_secs(15))
    }

    fn retry_config(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: self.backoff,
                max_backoff: Duration::from_secs(15),
                base: 2.0,
            },
            max_retries: self.retries as usize,
            retry_timeout: Duration::from_secs(300),
        }
    }
}

/// The runtime every remote request runs on; blocking callers wait with `block_on`.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("conveyor-remote")
            .enable_all()
            .build()
            .expect("start the runtime for remote I/O")
    })
}

/// A URL split into its store and the object key (or prefix) inside it.
#[derive(Debug, Clone)]
pub struct Location {
    /// The URL as the user gave it (without a trailing slash).
    pub url: String,
    pub store: Arc<dyn ObjectStore>,
    pub key: Key,
    /// `scheme://authority`: what is joined with a key to name an object.
    pub root: String,
}

impl Location {
    /// Parses `url` and finds (or builds, once per bucket or host) its store.
    pub fn parse(url: &str) -> Result<Location, Error> {
        let bad = |message: String| Error::Remote {
            url: url.to_string(),
            message,
        };
        let (scheme, rest) = url
            .split_once("://")
            .filter(|_| is_url(url))
            .ok_or_else(|| {
                bad(format!(
                    "not a URL conveyor can use ({})",
                    SCHEMES.join(", ")
                ))
            })?;
        let scheme = scheme.to_ascii_lowercase();
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() {
            return Err(bad("the URL names no bucket or host".into()));
        }
        if path.contains(['?', '#']) {
            return Err(bad(
                "query strings and fragments are not supported; name the object itself".into(),
            ));
        }
        let key = Key::from_url_path(path.trim_end_matches('/'))
            .map_err(|e| bad(format!("not a valid object key: {e}")))?;
        let root = format!("{scheme}://{authority}");
        let store = store_for(&scheme, &root, authority).map_err(|e| Error::Remote {
            url: url.to_string(),
            message: format!("cannot set up access: {e}; {}", credentials_hint(&scheme)),
        })?;
        Ok(Location {
            url: url.trim_end_matches('/').to_string(),
            store,
            key,
            root,
        })
    }

    /// The URL of `key` in the same store.
    pub fn url_of(&self, key: &Key) -> String {
        format!("{}/{}", self.root, key)
    }

    /// The location of `name` (a relative path with `/`) under this one.
    pub fn join(&self, name: &str) -> Location {
        let mut key = self.key.clone();
        for part in name.split('/').filter(|p| !p.is_empty()) {
            key = key.clone().join(part);
        }
        Location {
            url: format!("{}/{}", self.url, name.trim_matches('/')),
            store: self.store.clone(),
            key,
            root: self.root.clone(),
        }
    }

    /// An error about this location; the message should say what to do.
    pub fn error(&self, what: &str, e: object_store::Error) -> Error {
        let scheme = self.root.split("://").next().unwrap_or("");
        // A bad object name is the bucket writer's doing, not the credentials'.
        let hint = match &e {
            object_store::Error::InvalidPath { .. } => {
                "an object name there is not a plain path (an empty, '.' or '..' part); rename or remove that object"
            }
            _ => credentials_hint(scheme),
        };
        // A server's reply can be a whole HTML page: its start says enough.
        let mut said = e.to_string();
        if said.len() > 400 {
            let cut = (0..=400)
                .rev()
                .find(|&i| said.is_char_boundary(i))
                .unwrap_or(0);
            said.truncate(cut);
            said.push_str(" …");
        }
        Error::Remote {
            url: self.url.clone(),
            message: format!("{what}: {said}; {hint}"),
        }
    }

    /// The object's metadata, or None when there is no such object.
    pub fn head(&self) -> Result<Option<object_store::ObjectMeta>, Error> {
        use object_store::ObjectStoreExt;
        match runtime().block_on(self.store.head(&self.key)) {
            Ok(m) => Ok(Some(m)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("cannot read the object's size", e)),
        }
    }
}

/// What to check when a store cannot be reached or refuses access.
pub fn credentials_hint(scheme: &str) -> &'static str {
    match scheme {
        "s3" | "s3a" => {
            "check the URL and the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION variables (AWS_ENDPOINT and AWS_ALLOW_HTTP=true for an S3-compatible server)"
        }
        "gs" => "check the URL and GOOGLE_APPLICATION_CREDENTIALS (or GOOGLE_SERVICE_ACCOUNT)",
        _ => "check the URL and that the server is reachable",
    }
}

type Stores = Mutex<HashMap<String, Arc<dyn ObjectStore>>>;

fn store_for(
    scheme: &str,
    root: &str,
    authority: &str,
) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
    static STORES: OnceLock<Stores> = OnceLock::new();
    let stores = STORES.get_or_init(Default::default);
    if let Some(s) = stores.lock().expect("store cache").get(root) {
        return Ok(s.clone());
    }
    let policy = Policy::from_env();
    let retry = policy.retry_config();
    // object_store's clients end any request after 30 s by default, body included, which a
    // stream read at the pace of the tokenizer (a 300 MB C4 file, a slow `clean`) outlives:
    // no limit on the whole request, a limit on each read instead (a stalled connection).
    let (whole, stall) = (
        "7d".to_string(),
        format!("{}s", policy.stall.as_secs().max(1)),
    );
    // The S3 and GCS builders share their method names: conveyor's client defaults, then the
    // user's environment variables (as the builders' own `from_env` reads them), then the
    // bucket and retries.
    macro_rules! cloud {
        ($builder:ty, $key:ty, $prefix:expr) => {{
            let mut b = <$builder>::new()
                .with_config(<$key>::Client(ClientConfigKey::Timeout), whole)
                .with_config(<$key>::Client(ClientConfigKey::ReadTimeout), stall);
            for (key, value) in std::env::vars() {
                if key.starts_with($prefix) {
                    if let Ok(k) = key.to_ascii_lowercase().parse::<$key>() {
                        b = b.with_config(k, value);
                    }
                }
            }
            Arc::new(b.with_bucket_name(authority).with_retry(retry).build()?)
        }};
    }
    let store: Arc<dyn ObjectStore> = match scheme {
        "s3" | "s3a" => cloud!(
            object_store::aws::AmazonS3Builder,
            object_store::aws::AmazonS3ConfigKey,
            "AWS_"
        ),
        "gs" => cloud!(
            object_store::gcp::GoogleCloudStorageBuilder,
            object_store::gcp::GoogleConfigKey,
            "GOOGLE_"
        ),
        _ => Arc::new(
            object_store::http::HttpBuilder::new()
                .with_url(root)
                .with_client_options(
                    ClientOptions::new()
                        .with_allow_http(scheme == "http")
                        .with_timeout_disabled()
                        .with_read_timeout(policy.stall),
                )
                .with_retry(retry)
                .build()?,
        ),
    };
    stores
        .lock()
        .expect("store cache")
        .insert(root.to_string(), store.clone());
    Ok(store)
}

/// Object sizes seen while listing inputs, so that a job over a thousand objects does not
/// ask for each size again.
fn sizes() -> &'static Mutex<HashMap<String, u64>> {
    static SIZES: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
    SIZES.get_or_init(Default::default)
}

pub(crate) fn remember_size(url: &str, size: u64) {
    sizes()
        .lock()
        .expect("size cache")
        .insert(url.to_string(), size);
}

/// The size of an input: a file's length, or a remote object's size.
/// A local input's modification time in nanoseconds since 1970 (None for a URL, or where
/// the file system keeps none).
pub fn input_modified(p: &Path) -> Option<u64> {
    if p.to_str().is_some_and(is_url) {
        return None;
    }
    let t = std::fs::metadata(p).ok()?.modified().ok()?;
    let since = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    u64::try_from(since.as_nanos()).ok()
}

pub fn input_len(p: &Path) -> Result<u64, Error> {
    match p.to_str().filter(|s| is_url(s)) {
        Some(url) => {
            if let Some(&n) = sizes().lock().expect("size cache").get(url) {
                return Ok(n);
            }
            let loc = Location::parse(url)?;
            match loc.head()? {
                Some(m) => Ok(m.size),
                None => Err(Error::MissingInput(url.to_string())),
            }
        }
        None => Ok(std::fs::metadata(p).map_err(|e| Error::io(p, e))?.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_paths() {
        assert!(is_url("s3://bucket/c4/"));
        assert!(is_url("HTTPS://huggingface.co/x.json.gz"));
        assert!(is_url("gs://b"));
        assert!(!is_url("s3://"));
        assert!(!is_url("data/c4.json.gz"));
        assert!(!is_url("file:///tmp/x"));
    }

    #[test]
    fn locations_split_store_and_key() {
        let l = Location::parse("http://127.0.0.1:9/a/b%20c/d.jsonl").unwrap();
        assert_eq!(l.root, "http://127.0.0.1:9");
        assert_eq!(l.key.as_ref(), "a/b c/d.jsonl");
        let j = Location::parse("http://127.0.0.1:9/out/")
            .unwrap()
            .join("parts/x.json");
        assert_eq!(j.key.as_ref(), "out/parts/x.json");
        assert_eq!(j.url, "http://127.0.0.1:9/out/parts/x.json");
        assert!(Location::parse("http://h/x?download=1").is_err());
        assert!(Location::parse("s3:///key").is_err());
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = Policy {
            retries: 3,
            backoff: Duration::from_millis(100),
            stall: Duration::from_secs(60),
        };
        assert_eq!(p.wait(1), Duration::from_millis(100));
        assert_eq!(p.wait(3), Duration::from_millis(400));
        assert_eq!(p.wait(30), Duration::from_secs(15));
    }
}
