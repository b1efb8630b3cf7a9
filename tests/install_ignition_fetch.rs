//! The pointer config read by real Ignition (Debian's 2.14 `ignition` binary, the same
//! program that runs in a CoreOS initramfs): its `fetch` stage follows our
//! `ignition.config.merge[0].source` to an HTTPS Machine Config Server stand-in on
//! `<api-vip>:22623` and trusts it only through the CA we embedded as a data URL.

mod install_support;
use install_support::*;

use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const IGNITION: &str = "/usr/lib/dracut/modules.d/30ignition/ignition";
const POOL_CONFIG: &str = r#"{"ignition":{"version":"3.2.0"},"storage":{"files":[{"path":"/etc/layerboot-pool","contents":{"source":"data:,worker-automount-config"}}]}}"#;

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for `ip`, made with the openssl CLI.
fn make_certs(dir: &Path, ip: Ipv4Addr) {
    assert!(
        layerboot::cmd::have("openssl"),
        "openssl not found: install the Debian package 'openssl'"
    );
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    sh(Command::new("openssl")
        .current_dir(dir)
        .args(["req", "-x509"])
        .args(ec)
        .args([
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=layerboot test root-ca",
        ])
        .args([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ]));
    sh(Command::new("openssl")
        .current_dir(dir)
        .arg("req")
        .args(ec)
        .args([
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            &format!("/CN={ip}"),
        ]));
    std::fs::write(
        dir.join("ext"),
        format!("subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    sh(Command::new("openssl").current_dir(dir).args([
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.crt",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]));
}

/// `openssl s_server -WWW` serving `www/` over TLS; killed on drop.
struct Mcs(Child);

impl Drop for Mcs {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &Path, ip: Ipv4Addr) -> Mcs {
    std::fs::create_dir_all(dir.join("www/config")).unwrap();
    std::fs::write(dir.join("www/config/worker-automount"), POOL_CONFIG).unwrap();
    let child = Command::new("openssl")
        .current_dir(dir.join("www"))
        .args([
            "s_server",
            "-quiet",
            "-WWW",
            "-accept",
            &format!("{ip}:22623"),
            "-cert",
            "../srv.crt",
            "-key",
            "../srv.key",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mcs = Mcs(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect((ip, 22623)).is_err() {
        assert!(
            Instant::now() < deadline,
            "openssl s_server did not listen on {ip}:22623"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    mcs
}

/// Run Ignition's fetch stage on `pointer` (platform `file`); returns (success, log,
/// cached merged config). Ignition retries failed fetches forever, so a run that has not
/// finished after `limit` is stopped and reported as a failure.
fn ignition_fetch(
    dir: &Path,
    pointer: &Path,
    limit: Duration,
) -> (bool, String, Option<serde_json::Value>) {
    assert!(
        Path::new(IGNITION).is_file(),
        "{IGNITION} not found: install the Debian package 'ignition'"
    );
    let run = tempfile::tempdir_in(dir).unwrap();
    let cache = run.path().join("ignition.json");
    let log = run.path().join("log");
    let mut child = Command::new(IGNITION)
        .env("IGNITION_CONFIG_FILE", pointer)
        .args([
            "-platform",
            "file",
            "-stage",
            "fetch",
            "-log-to-stdout",
            "-fetch-timeout",
            "10s",
        ])
        .arg("-root")
        .arg(run.path())
        .arg("-config-cache")
        .arg(&cache)
        .arg("-state-file")
        .arg(run.path().join("state"))
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    let ok = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let cached = std::fs::read(&cache)
        .ok()
        .map(|b| serde_json::from_slice(&b).unwrap());
    (ok, std::fs::read_to_string(&log).unwrap(), cached)
}

fn pointer(dir: &Path, name: &str, ip: Ipv4Addr, ca: &Path, spec: &str) -> PathBuf {
    let out = dir.join(name);
    let o = layerboot(&[
        "ignition",
        "pointer",
        "--pool",
        "worker-automount",
        "--api-vip",
        &ip.to_string(),
        "--ca",
        ca.to_str().unwrap(),
        "--spec",
        spec,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

#[test]
fn real_ignition_follows_the_pointer_and_trusts_only_the_embedded_ca() {
    let dir = tempfile::tempdir().unwrap();
    // Any 127/8 address is loopback on Linux: a per-process one keeps parallel runs apart
    // while the URL keeps the Machine Config Server's real port.
    let pid = std::process::id();
    let ip = Ipv4Addr::new(
        127,
        100 + (pid % 100) as u8,
        ((pid / 100) % 250) as u8 + 1,
        7,
    );
    make_certs(dir.path(), ip);
    let _mcs = serve(dir.path(), ip);
    let ca = dir.path().join("ca.crt");

    for spec in ["3.2.0", "3.3.0"] {
        let p = pointer(dir.path(), &format!("pointer-{spec}.ign"), ip, &ca, spec);
        let (ok, log, cached) = ignition_fetch(dir.path(), &p, Duration::from_secs(60));
        assert!(ok, "Ignition fetch failed for spec {spec}:\n{log}");
        assert!(
            log.contains(&format!("GET https://{ip}:22623/config/worker-automount")),
            "{log}"
        );
        let cached = cached.expect("merged config cached");
        let files = cached["storage"]["files"]
            .as_array()
            .expect("the pool config was merged");
        assert!(
            files.iter().any(|f| f["path"] == "/etc/layerboot-pool"
                && f["contents"]["source"] == "data:,worker-automount-config"),
            "{cached}"
        );
    }

    // The same pointer with another CA (the committed test CA): TLS must fail.
    let wrong = pointer(
        dir.path(),
        "pointer-wrong-ca.ign",
        ip,
        Path::new(TEST_CA),
        "3.2.0",
    );
    let (ok, log, cached) = ignition_fetch(dir.path(), &wrong, Duration::from_secs(8));
    assert!(
        !ok && cached.is_none(),
        "fetched despite an untrusted CA:\n{log}"
    );
    assert!(
        log.contains("x509") || log.contains("certificate"),
        "no TLS error in the log:\n{log}"
    );

    // Why 3.2.0 is the default: this Ignition (2.14, like older boot images) rejects 3.4.0.
    let newer = pointer(dir.path(), "pointer-3.4.0.ign", ip, &ca, "3.4.0");
    let (ok, log, _) = ignition_fetch(dir.path(), &newer, Duration::from_secs(30));
    assert!(!ok && log.contains("unsupported config version"), "{log}");
}
