//! A small HTTP/1.1 file server on loopback for the remote-input tests: GET and HEAD with byte
//! ranges, optional ETags, redirects (`/r/NAME`), and connections it drops mid-body on purpose (a chosen number of
//! times, at a chosen byte of the file) to test resuming.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// What the server does, changeable while it runs.
#[derive(Default)]
pub struct Behaviour {
    /// Send an ETag header (object_store then retries bodies itself).
    pub etag: AtomicBool,
    /// Drop this many more GET responses mid-body...
    pub drops_left: AtomicU64,
    /// ...when the transfer reaches this byte of the file.
    pub drop_after: AtomicU64,
    /// Instead of closing the connection there, go silent (a stalled connection).
    pub stall: AtomicBool,
    /// The files' version, in their Last-Modified and ETag: a test that rewrites a file
    /// bumps it, as a real server's dates and ETags change with the content.
    pub version: AtomicU64,
}

/// What the server saw.
#[derive(Default)]
pub struct Seen {
    pub gets: AtomicU64,
    /// GETs whose range started past byte 0 (resumptions).
    pub resumed_gets: AtomicU64,
    pub dropped: AtomicU64,
}

pub struct FileServer {
    pub port: u16,
    pub behaviour: Arc<Behaviour>,
    pub seen: Arc<Seen>,
}

impl FileServer {
    /// Serves the files under `root` on 127.0.0.1 (a free port) until the process ends.
    pub fn start(root: PathBuf) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().unwrap().port();
        let behaviour = Arc::new(Behaviour::default());
        let seen = Arc::new(Seen::default());
        let (b, s) = (behaviour.clone(), seen.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (root, b, s) = (root.clone(), b.clone(), s.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &root, &b, &s);
                });
            }
        });
        FileServer {
            port,
            behaviour,
            seen,
        }
    }

    pub fn url(&self, rel: &str) -> String {
        format!("http://127.0.0.1:{}/{rel}", self.port)
    }
}

fn serve(conn: TcpStream, root: &std::path::Path, b: &Behaviour, s: &Seen) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let mut range: Option<(u64, Option<u64>)> = None;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("range") {
                    let spec = v.trim().trim_start_matches("bytes=");
                    let (a, z) = spec.split_once('-').unwrap_or((spec, ""));
                    range = Some((a.parse().unwrap_or(0), z.parse().ok()));
                }
            }
        }
        let mut parts = request.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts
            .next()
            .unwrap_or("/")
            .trim_start_matches('/')
            .to_string();
        // `/r/NAME` redirects to `/NAME`, as the Hugging Face hub's `resolve` URLs redirect
        // to its CDN.
        if let Some(target) = path.strip_prefix("r/") {
            let reply =
                format!("HTTP/1.1 302 Found\r\nLocation: /{target}\r\nContent-Length: 0\r\n\r\n");
            conn.write_all(reply.as_bytes())?;
            continue;
        }
        let Ok(body) = std::fs::read(root.join(&path)) else {
            conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
            continue;
        };
        let size = body.len() as u64;
        let (start, end) = match range {
            Some((a, z)) => (a, z.map_or(size, |z| (z + 1).min(size))),
            None => (0, size),
        };
        let mut head = if range.is_some() {
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{size}\r\n",
                end - 1
            )
        } else {
            "HTTP/1.1 200 OK\r\n".to_string()
        };
        let version = b.version.load(Ordering::SeqCst) % 60;
        head += &format!(
            "Content-Length: {}\r\nAccept-Ranges: bytes\r\nLast-Modified: Tue, 24 Nov 2026 10:{version:02}:00 GMT\r\n",
            end - start
        );
        if b.etag.load(Ordering::SeqCst) {
            head += &format!("ETag: \"{size}-{version}\"\r\n");
        }
        head += "\r\n";
        conn.write_all(head.as_bytes())?;
        if method == "HEAD" {
            continue;
        }
        s.gets.fetch_add(1, Ordering::SeqCst);
        if start > 0 {
            s.resumed_gets.fetch_add(1, Ordering::SeqCst);
        }
        let slice = &body[start as usize..end as usize];
        // The connection dies when the transfer reaches byte `drop_after` of the file, so a
        // resumption from there dies at once: no progress until the drops run out.
        let at = b.drop_after.load(Ordering::SeqCst);
        let cut = at.saturating_sub(start) as usize;
        let drop = (start..end).contains(&at)
            && b.drops_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if drop {
            conn.write_all(&slice[..cut])?;
            conn.flush()?;
            s.dropped.fetch_add(1, Ordering::SeqCst);
            if b.stall.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_secs(30));
            }
            return conn.shutdown(std::net::Shutdown::Both);
        }
        conn.write_all(slice)?;
    }
}
