//! A static file server on loopback, for tests that point real CoreOS tools
//! (`coreos-installer download|install --stream-base-url`, `--image-url`) at what layerboot
//! wrote. HTTP/1.1 GET and HEAD of regular files under one directory, one thread per
//! connection, `Connection: close`; every request is logged with its status so a test can
//! tell what the tool fetched. Stopped (and its threads joined) on drop.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context, Result};

pub struct FileServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<(String, u16)>>>,
    thread: Option<JoinHandle<()>>,
}

impl FileServer {
    /// Serve `root` on a free port of 127.0.0.1.
    pub fn start(root: &Path) -> Result<FileServer> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding a free loopback port")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let root = root.to_path_buf();
        let thread = {
            let (stop, log) = (stop.clone(), log.clone());
            std::thread::spawn(move || {
                let mut workers = Vec::new();
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (root, log) = (root.clone(), log.clone());
                    workers.push(std::thread::spawn(move || {
                        // A client that goes away mid-response is its own business.
                        let _ = serve(conn, &root, &log);
                    }));
                }
                for w in workers {
                    let _ = w.join();
                }
            })
        };
        Ok(FileServer {
            addr,
            stop,
            log,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT/` (with the trailing slash URL joining needs).
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The port (a guest on QEMU user networking reaches it at 10.0.2.2:PORT).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests so far: (path as sent, status).
    pub fn requests(&self) -> Vec<(String, u16)> {
        self.log.lock().expect("log lock").clone()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, root: &Path, log: &Mutex<Vec<(String, u16)>>) -> Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Headers are read and ignored (no ranges, no keep-alive).
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let file = match (method, local_path(root, target)) {
        ("GET" | "HEAD", Some(p)) => std::fs::File::open(&p)
            .ok()
            .filter(|f| f.metadata().is_ok_and(|m| m.is_file())),
        _ => None,
    };
    let status = match (method, &file) {
        ("GET" | "HEAD", Some(_)) => 200,
        ("GET" | "HEAD", None) => 404,
        _ => 405,
    };
    log.lock()
        .expect("log lock")
        .push((target.to_string(), status));
    let mut out = conn;
    match file {
        Some(mut f) => {
            let len = f.metadata()?.len();
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
            )?;
            if method == "GET" {
                std::io::copy(&mut f, &mut out)?;
            }
        }
        None => {
            let reason = if status == 404 {
                "Not Found"
            } else {
                "Method Not Allowed"
            };
            write!(
                out,
                "HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

/// The file a request target names under `root`: percent-decoded, query dropped, and
/// nothing but plain components (no `..`), so nothing outside `root` is served.
fn local_path(root: &Path, target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next()?.strip_prefix('/')?;
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let rel = PathBuf::from(String::from_utf8(decoded).ok()?);
    rel.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| root.join(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_under_the_root_are_named() {
        let root = Path::new("/srv/r");
        let cases: &[(&str, Option<&str>)] = &[
            ("/a.raw.xz", Some("/srv/r/a.raw.xz")),
            ("/d/a%20b.raw?x=1", Some("/srv/r/d/a b.raw")),
            ("/../etc/passwd", None),
            ("/%2e%2e/etc/passwd", None),
            ("/d/../../x", None),
            ("relative", None),
            ("/bad%zz", None),
        ];
        for (target, want) in cases {
            assert_eq!(
                local_path(root, target),
                want.map(PathBuf::from),
                "{target}"
            );
        }
    }

    #[test]
    fn serves_files_and_logs_requests() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.txt"), b"hello").unwrap();
        let server = FileServer::start(dir.path()).unwrap();
        let get = |path: &str| {
            let mut c = TcpStream::connect(server.addr).unwrap();
            write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut resp = String::new();
            std::io::Read::read_to_string(&mut c, &mut resp).unwrap();
            resp
        };
        let ok = get("/f.txt");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nhello"), "{ok}");
        assert!(get("/missing").starts_with("HTTP/1.1 404 "));
        assert!(get("/../f.txt").starts_with("HTTP/1.1 404 "));
        assert_eq!(
            server.requests(),
            [
                ("/f.txt".to_string(), 200),
                ("/missing".into(), 404),
                ("/../f.txt".into(), 404)
            ]
        );
    }
}
