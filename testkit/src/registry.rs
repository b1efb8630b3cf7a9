//! A real registry for tests, the demo and the benchmark: Debian's `docker-registry`
//! (the CNCF distribution registry) on 127.0.0.1, a free port, storage in its own
//! temporary directory; anonymous, htpasswd Basic auth, or TLS with a throwaway CA.
//! Dropping it kills and reaps the process and removes everything it wrote.

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use layerboot::cmd;
use layerboot::oci::reference::Digest;
use layerboot::registry::auth::{AuthFile, Credentials};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Anonymous,
    /// htpasswd (bcrypt) Basic auth; credentials from [`LocalRegistry::credentials`].
    Basic,
    /// HTTPS with a certificate from a CA made for this registry ([`LocalRegistry::ca_path`]).
    Tls,
}

impl std::str::FromStr for Mode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "anonymous" => Ok(Mode::Anonymous),
            "basic" => Ok(Mode::Basic),
            "tls" => Ok(Mode::Tls),
            _ => bail!("unknown registry mode '{s}': use anonymous, basic or tls"),
        }
    }
}

pub const TEST_USER: &str = "layerboot";
/// Only ever used against a loopback registry that dies with the test.
pub const TEST_PASSWORD: &str = "s3cret-Loopback-Only-7d1f";

pub struct LocalRegistry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    mode: Mode,
}

impl LocalRegistry {
    /// Start a registry and wait until it accepts connections.
    pub fn start(mode: Mode) -> Result<Self> {
        cmd::require("docker-registry", "docker-registry")?;
        let mut dir = tempfile::Builder::new()
            .prefix("layerboot-registry.")
            .tempdir()
            .context("creating registry temp dir")?;
        let storage = dir.path().join("storage");
        fs::create_dir(&storage)?;
        let mut http =
            serde_json::json!({ "addr": "", "headers": { "X-Content-Type-Options": ["nosniff"] } });
        let mut config = serde_json::json!({
            "version": 0.1,
            "log": { "level": "warn", "accesslog": { "disabled": true } },
            "storage": { "filesystem": { "rootdirectory": storage }, "delete": { "enabled": true }, "cache": {} },
        });
        match mode {
            Mode::Anonymous => {}
            Mode::Basic => {
                cmd::require("htpasswd", "apache2-utils")?;
                let htpasswd = dir.path().join("htpasswd");
                let pw = dir.path().join("password");
                layerboot::io::write_atomic(&pw, TEST_PASSWORD.as_bytes(), 0o600)?;
                // The password goes through stdin (-i), never onto a command line.
                // (cmd::run gives children a null stdin, hence the shell redirect.)
                cmd::run(
                    Command::new("sh")
                        .args(["-c", "htpasswd -B -i -c \"$1\" \"$2\" < \"$3\"", "sh"])
                        .arg(&htpasswd)
                        .arg(TEST_USER)
                        .arg(&pw),
                )?;
                fs::remove_file(&pw)?;
                config["auth"] = serde_json::json!({ "htpasswd": { "realm": "layerboot-test", "path": htpasswd } });
            }
            Mode::Tls => {
                make_tls_files(dir.path())?;
                http["tls"] = serde_json::json!({ "certificate": dir.path().join("server.crt"), "key": dir.path().join("server.key") });
            }
        }
        // A port picked by binding port 0 can be taken again before the registry
        // binds it; try a few.
        let mut last_err = None;
        for _ in 0..5 {
            let addr = free_port()?;
            http["addr"] = serde_json::json!(addr.to_string());
            config["http"] = http.clone();
            let config_path = dir.path().join("config.yml");
            fs::write(&config_path, serde_yaml_ng::to_string(&config)?)?;
            let child = spawn_registry(dir.path())?;
            let mut reg = LocalRegistry {
                child: Some(child),
                dir,
                addr,
                mode,
            };
            match reg.wait_ready(Duration::from_secs(20)) {
                Ok(()) => return Ok(reg),
                Err(e) => {
                    reg.stop();
                    last_err = Some(e);
                    dir = reg.take_dir();
                }
            }
        }
        Err(last_err.expect("tried at least once"))
    }

    /// Stop the registry process, keeping its storage and port (to test retries).
    pub fn pause(&mut self) {
        self.stop();
    }

    /// Start the registry again on the same port with the same storage.
    pub fn resume(&mut self) -> Result<()> {
        self.stop();
        self.child = Some(spawn_registry(self.dir.path())?);
        self.wait_ready(Duration::from_secs(20))
    }

    fn take_dir(mut self) -> tempfile::TempDir {
        self.stop();
        let placeholder = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, placeholder)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().expect("running").try_wait()? {
                bail!("docker-registry exited ({status}): {}", self.log_tail());
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
                && self.v2_answers()
            {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "docker-registry did not answer on {} within {timeout:?}: {}",
                    self.addr,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// For plain HTTP, a real `GET /v2/` (200 or 401 both mean it serves the API);
    /// over TLS an accepted TCP connection is the best we can check without a client.
    fn v2_answers(&self) -> bool {
        if self.mode == Mode::Tls {
            return true;
        }
        let Ok(mut s) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(500)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if write!(s, "GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).is_err() {
            return false;
        }
        let mut buf = [0u8; 32];
        let n = std::io::Read::read(&mut s, &mut buf).unwrap_or(0);
        let head = String::from_utf8_lossy(&buf[..n]);
        head.starts_with("HTTP/1.") && (head.contains(" 200") || head.contains(" 401"))
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// A registry reference for `repo_and_tag` (`repo:tag` or `repo@sha256:…`) here.
    pub fn image_ref(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr)
    }

    /// The CA that signed the TLS registry's certificate.
    pub fn ca_path(&self) -> Option<PathBuf> {
        (self.mode == Mode::Tls).then(|| self.dir.path().join("certs.d/ca.crt"))
    }

    /// A directory holding only `ca.crt`, for `--cert-dir`.
    pub fn cert_dir(&self) -> Option<PathBuf> {
        (self.mode == Mode::Tls).then(|| self.dir.path().join("certs.d"))
    }

    pub fn credentials(&self) -> Option<Credentials> {
        (self.mode == Mode::Basic).then(|| Credentials::basic(TEST_USER, TEST_PASSWORD))
    }

    /// An auths file (0600) holding this registry's credentials (Basic mode only).
    pub fn authfile(&self) -> Result<Option<PathBuf>> {
        let Some(creds) = self.credentials() else {
            return Ok(None);
        };
        let path = self.dir.path().join("auth.json");
        if !path.exists() {
            let mut f = AuthFile::default();
            f.set(&self.addr(), &creds);
            f.write(&path)?;
        }
        Ok(Some(path))
    }

    /// Where the registry stores blob `digest` on disk, for tests that corrupt it.
    pub fn storage_blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&digest.hex()[..2])
            .join(digest.hex())
            .join("data")
    }

    /// Push the image in OCI layout `src` (`DIR` or `DIR:tag`) as `repo:tag` with
    /// skopeo; an index is pushed whole (`--all`). Returns the pushed reference.
    pub fn push_oci_dir(&self, src: &Path, repo_and_tag: &str) -> Result<String> {
        cmd::require("skopeo", "skopeo")?;
        let dest = self.image_ref(repo_and_tag);
        let mut c = Command::new("skopeo");
        c.args(["--insecure-policy", "copy", "--all", "-q"]);
        match self.mode {
            Mode::Anonymous => {
                c.arg("--dest-tls-verify=false");
            }
            Mode::Basic => {
                c.arg("--dest-tls-verify=false")
                    .arg("--dest-authfile")
                    .arg(self.authfile()?.expect("basic has an authfile"));
            }
            Mode::Tls => {
                c.arg("--dest-cert-dir")
                    .arg(self.cert_dir().expect("tls has certs"));
            }
        }
        c.arg(format!("oci:{}", src.display()))
            .arg(format!("docker://{dest}"));
        cmd::run(&mut c)?;
        Ok(dest)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Start `docker-registry serve DIR/config.yml`, logging to DIR/registry.log.
fn spawn_registry(dir: &Path) -> Result<Child> {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("registry.log"))?;
    let mut command = Command::new("docker-registry");
    command
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // The registry reads REGISTRY_* overrides from the environment; keep ours.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("REGISTRY_") {
            command.env_remove(k);
        }
    }
    log::info!("starting {}", cmd::display(&command));
    command.spawn().context("starting docker-registry")
}

fn free_port() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a free loopback port")?;
    Ok(l.local_addr()?)
}

/// A CA and a server certificate for 127.0.0.1 / localhost, EC P-256, valid two days.
fn make_tls_files(dir: &Path) -> Result<()> {
    cmd::require("openssl", "openssl")?;
    let certs = dir.join("certs.d");
    fs::create_dir_all(&certs)?;
    let ca_cnf = dir.join("ca.cnf");
    fs::write(
        &ca_cnf,
        "[req]\ndistinguished_name=dn\nx509_extensions=v3\nprompt=no\n[dn]\nCN=layerboot test CA\n[v3]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n",
    )?;
    let ext = dir.join("server.ext");
    fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nauthorityKeyIdentifier=keyid\n",
    )?;
    let p = |name: &str| dir.join(name);
    cmd::run(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-config",
            ])
            .arg(&ca_cnf)
            .arg("-keyout")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(certs.join("ca.crt")),
    )?;
    cmd::run(
        Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .arg("-keyout")
            .arg(p("server.key"))
            .arg("-out")
            .arg(p("server.csr")),
    )?;
    cmd::run(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-set_serial", "2"])
            .arg("-in")
            .arg(p("server.csr"))
            .arg("-CA")
            .arg(certs.join("ca.crt"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(p("server.crt")),
    )?;
    Ok(())
}
