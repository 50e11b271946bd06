//! Expanding a remote input argument into objects: one object, every corpus file under a
//! prefix (`s3://bucket/c4/en/`), or the objects a glob matches
//! (`s3://bucket/c4/en/c4-train.000[0-4]*-of-01024.json.gz`). Listing needs a store that can
//! list (S3, GCS, WebDAV); a plain HTTP server can only be given object by object.

use futures::stream::TryStreamExt;
use object_store::path::Path as Key;
use object_store::ObjectMeta;

use super::{runtime, Location};
use crate::error::Error;

/// Every object under `prefix` (recursively), sorted by key.
pub fn objects_under(loc: &Location) -> Result<Vec<ObjectMeta>, Error> {
    let prefix = (!loc.key.as_ref().is_empty()).then_some(&loc.key);
    let mut found: Vec<ObjectMeta> = runtime()
        .block_on(loc.store.list(prefix).try_collect())
        .map_err(|e| {
            let what = match loc.root.starts_with("http") {
                true => "cannot list (a plain HTTP server cannot be listed: name each file)",
                false => "cannot list",
            };
            loc.error(what, e)
        })?;
    found.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(found)
}

/// The URLs one command-line input argument stands for, in key order; `keep` says which keys
/// are corpus files.
pub fn expand(arg: &str, keep: &dyn Fn(&str) -> bool) -> Result<Vec<String>, Error> {
    let none = || Error::NoInputs(arg.to_string());
    // In an http(s) URL a `?` starts a query string (which Location::parse names), not a
    // pattern; `*` and `[` are patterns a WebDAV server can list and a plain one cannot.
    let http = arg.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("http"));
    let wildcards: &[char] = if http { &['*', '['] } else { &['*', '?', '['] };
    if let Some(star) = arg.find(wildcards) {
        // List from the last `/` before the first wildcard, then match the whole key.
        let cut = arg[..star].rfind('/').ok_or_else(none)?;
        let base = Location::parse(&arg[..cut])?;
        let pattern_text = &arg[base.root.len() + 1..];
        let pattern = glob::Pattern::new(pattern_text)
            .map_err(|e| Error::Config(format!("bad pattern {arg}: {e}")))?;
        let opts = glob::MatchOptions {
            require_literal_separator: true,
            ..Default::default()
        };
        let urls: Vec<String> = objects_under(&base)?
            .into_iter()
            .filter(|m| pattern.matches_with(m.location.as_ref(), opts) && keep(&name(&m.location)))
            .map(|m| found(&base, &m))
            .collect();
        return match (urls.is_empty(), http) {
            (true, true) => Err(Error::Remote {
                url: arg.to_string(),
                message: "no file matches; a plain HTTP server cannot be listed (only WebDAV can): name each file".into(),
            }),
            (true, false) => Err(none()),
            (false, _) => Ok(urls),
        };
    }
    let loc = Location::parse(arg)?;
    if let Some(meta) = (!arg.ends_with('/'))
        .then(|| loc.head())
        .transpose()?
        .flatten()
    {
        if !keep(&name(&loc.key)) {
            return Err(Error::UnsupportedInput { path: arg.into() });
        }
        super::remember_size(&loc.url, meta.size);
        return Ok(vec![loc.url]);
    }
    if loc.root.starts_with("http") {
        return Err(if arg.ends_with('/') {
            Error::Remote {
                url: arg.to_string(),
                message:
                    "a plain HTTP server cannot be listed: name each file (or use s3:// or gs://)"
                        .into(),
            }
        } else {
            Error::MissingInput(arg.to_string())
        });
    }
    let urls: Vec<String> = objects_under(&loc)?
        .into_iter()
        .filter(|m| keep(&name(&m.location)))
        .map(|m| found(&loc, &m))
        .collect();
    if urls.is_empty() {
        Err(none())
    } else {
        Ok(urls)
    }
}

/// A listed object's URL; its size is remembered for the job's plan.
fn found(loc: &Location, m: &ObjectMeta) -> String {
    let url = loc.url_of(&m.location);
    super::remember_size(&url, m.size);
    url
}

fn name(key: &Key) -> String {
    key.filename().unwrap_or("").to_string()
}
