//! `layerboot pull` and `layerboot inspect` against a real loopback docker-registry,
//! checked with skopeo as the independent reader of what we wrote.

mod common;

use std::process::Command;

use base64::Engine as _;
use common::{layerboot, tree};
use layerboot::oci::layout::OciLayout;
use layerboot_testkit::ostree_image::{self, FIXTURE_KVER, FIXTURE_TAG};
use layerboot_testkit::registry::{LocalRegistry, Mode, TEST_PASSWORD, TEST_USER};

fn skopeo_inspect(reference: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .args(["inspect", reference])
        .output()
        .expect("skopeo (install the skopeo package)");
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every blob in the layout hashes to its name.
fn assert_layout_verified(dir: &std::path::Path) {
    let blobs = dir.join("blobs/sha256");
    let mut n = 0;
    for e in std::fs::read_dir(&blobs).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "temporary file left: {name}");
        assert_eq!(layerboot::io::sha256_file(&e.path()).unwrap().0, name);
        n += 1;
    }
    assert!(
        n >= 3,
        "expected config, layers and manifest, found {n} blobs"
    );
}

#[test]
fn anonymous_pull_to_dir_then_again_skips_everything() {
    let img = ostree_image::layered_image().unwrap();
    let reg = LocalRegistry::start(Mode::Anonymous).unwrap();
    let src = reg.push_oci_dir(&img, "acme/layered:4.16").unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("layout");
    let to = format!("oci:{}", dest.display());
    let first = layerboot(&["pull", &src, "--to", &to, "--tls-verify=false"]);
    first.ok();
    assert!(
        first.stdout.contains("3 blobs fetched") && first.stdout.contains("0 already present"),
        "{}",
        first.stdout
    );
    assert_layout_verified(&dest);
    let want = OciLayout::open(&img)
        .unwrap()
        .find_ref(Some(FIXTURE_TAG))
        .unwrap()
        .digest;
    assert_eq!(
        OciLayout::open(&dest)
            .unwrap()
            .find_ref(Some("4.16"))
            .unwrap()
            .digest,
        want
    );
    let sk = skopeo_inspect(&format!("oci:{}:4.16", dest.display()));
    assert_eq!(sk["Digest"], want.to_string());
    assert_eq!(sk["Labels"]["ostree.linux"], FIXTURE_KVER);

    let second = layerboot(&["pull", &src, "--to", &to, "--tls-verify=false"]);
    second.ok();
    assert!(
        second.stdout.contains("0 blobs fetched") && second.stdout.contains("3 already present"),
        "{}",
        second.stdout
    );
    // Quiet means quiet.
    let quiet = layerboot(&["pull", &src, "--to", &to, "--tls-verify=false", "--quiet"]);
    quiet.ok();
    assert_eq!((quiet.stdout.as_str(), quiet.stderr.as_str()), ("", ""));
}

#[test]
fn pull_to_archive_and_read_it_back() {
    let img = ostree_image::bootable_image().unwrap();
    let reg = LocalRegistry::start(Mode::Anonymous).unwrap();
    let src = reg.push_oci_dir(&img, "fixture/bootable:v1").unwrap();
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("image.tar");
    layerboot(&[
        "pull",
        &src,
        "--to",
        &format!("oci-archive:{}:v1", archive.display()),
        "--tls-verify=false",
        "-q",
    ])
    .ok();
    assert_eq!(tree(out.path()), vec!["image.tar"], "staging left behind");
    let sk = skopeo_inspect(&format!("oci-archive:{}:v1", archive.display()));
    let want = OciLayout::open(&img)
        .unwrap()
        .find_ref(Some(FIXTURE_TAG))
        .unwrap()
        .digest;
    assert_eq!(sk["Digest"], want.to_string());
    // Our own reader agrees, and pulling from the archive into a layout works too.
    let j = layerboot(&[
        "inspect",
        &format!("oci-archive:{}:v1", archive.display()),
        "--json",
    ]);
    j.ok();
    let v: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(v["digest"], want.to_string());
    let dir = out.path().join("from-archive");
    layerboot(&[
        "pull",
        &format!("oci-archive:{}:v1", archive.display()),
        "--to",
        &format!("oci:{}", dir.display()),
        "-q",
    ])
    .ok();
    assert_layout_verified(&dir);
}

#[test]
fn basic_auth_with_authfile_never_shows_credentials() {
    let img = ostree_image::bootable_image().unwrap();
    let reg = LocalRegistry::start(Mode::Basic).unwrap();
    let src = reg.push_oci_dir(&img, "private/bootable:v1").unwrap();
    let authfile = reg.authfile().unwrap().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = format!("oci:{}", out.path().join("l").display());
    let b64 =
        base64::engine::general_purpose::STANDARD.encode(format!("{TEST_USER}:{TEST_PASSWORD}"));
    let secrets = [TEST_PASSWORD, b64.as_str()];
    for args in [
        vec![
            "pull",
            &src,
            "--to",
            &dest,
            "--tls-verify=false",
            "--authfile",
            authfile.to_str().unwrap(),
            "-vv",
        ],
        vec![
            "inspect",
            &src,
            "--tls-verify=false",
            "--authfile",
            authfile.to_str().unwrap(),
            "--json",
            "-vv",
        ],
    ] {
        let r = layerboot(&args);
        r.ok().never_shows(&secrets);
    }
    // The podman search order: $REGISTRY_AUTH_FILE, then $XDG_RUNTIME_DIR/containers/auth.json.
    let run_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(run_dir.path().join("containers")).unwrap();
    std::fs::copy(&authfile, run_dir.path().join("containers/auth.json")).unwrap();
    common::layerboot_env(
        &["inspect", &src, "--tls-verify=false"],
        &[("XDG_RUNTIME_DIR", run_dir.path().to_str().unwrap())],
    )
    .ok()
    .never_shows(&secrets);
    common::layerboot_env(
        &["inspect", &src, "--tls-verify=false"],
        &[("REGISTRY_AUTH_FILE", authfile.to_str().unwrap())],
    )
    .ok()
    .never_shows(&secrets);
    // Wrong password: rejected, and still nothing shown.
    let wrong = out.path().join("wrong.json");
    let mut f = layerboot::registry::auth::AuthFile::default();
    f.set(
        &reg.addr(),
        &layerboot::registry::auth::Credentials::basic(TEST_USER, "not-the-password-xyz"),
    );
    f.write(&wrong).unwrap();
    layerboot(&[
        "inspect",
        &src,
        "--tls-verify=false",
        "--authfile",
        wrong.to_str().unwrap(),
    ])
    .one_line_error(&["rejected the credentials", "401"])
    .never_shows(&["not-the-password-xyz"]);
}

#[test]
fn tls_with_ca_file_and_cert_dir() {
    let img = ostree_image::bootable_image().unwrap();
    let reg = LocalRegistry::start(Mode::Tls).unwrap();
    let src = reg.push_oci_dir(&img, "tls/bootable:v1").unwrap();
    let out = tempfile::tempdir().unwrap();
    let ca = reg.ca_path().unwrap();
    let cert_dir = reg.cert_dir().unwrap();
    let dest1 = format!("oci:{}", out.path().join("a").display());
    let dest2 = format!("oci:{}", out.path().join("b").display());
    layerboot(&[
        "pull",
        &src,
        "--to",
        &dest1,
        "--ca-file",
        ca.to_str().unwrap(),
        "-q",
    ])
    .ok();
    layerboot(&[
        "pull",
        &src,
        "--to",
        &dest2,
        "--cert-dir",
        cert_dir.to_str().unwrap(),
        "-q",
    ])
    .ok();
    assert_layout_verified(&out.path().join("a"));
    assert_layout_verified(&out.path().join("b"));
    // Without the CA: refused, with a hint, nothing written.
    let dest3 = out.path().join("c");
    layerboot(&["pull", &src, "--to", &format!("oci:{}", dest3.display())])
        .one_line_error(&[&reg.addr(), "--ca-file"]);
    assert!(!dest3.exists());
}

#[test]
fn multiarch_pull_picks_requested_arch() {
    let img = ostree_image::multiarch_image().unwrap();
    let reg = LocalRegistry::start(Mode::Anonymous).unwrap();
    let src = reg.push_oci_dir(&img, "multi/bootable:v1").unwrap();
    let out = tempfile::tempdir().unwrap();
    for arch in ["amd64", ostree_image::OTHER_ARCH] {
        let dest = out.path().join(arch);
        layerboot(&[
            "pull",
            &src,
            "--to",
            &format!("oci:{}", dest.display()),
            "--tls-verify=false",
            "--arch",
            arch,
            "-q",
        ])
        .ok();
        let sk = skopeo_inspect(&format!("oci:{}:v1", dest.display()));
        assert_eq!(sk["Architecture"], arch);
        let j = layerboot(&[
            "inspect",
            &src,
            "--tls-verify=false",
            "--arch",
            arch,
            "--json",
        ]);
        j.ok();
        let v: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
        assert_eq!(v["architecture"], arch);
        assert_eq!(v["digest"], sk["Digest"]);
        assert_eq!(
            v["availablePlatforms"],
            serde_json::json!(["linux/amd64", "linux/arm64"])
        );
    }
}

#[test]
fn retries_while_the_registry_is_down() {
    let img = ostree_image::bootable_image().unwrap();
    let mut reg = LocalRegistry::start(Mode::Anonymous).unwrap();
    let src = reg.push_oci_dir(&img, "flaky/bootable:v1").unwrap();
    reg.pause();
    let out = tempfile::tempdir().unwrap();
    let dest = format!("oci:{}", out.path().join("l").display());
    let puller = std::thread::spawn(move || {
        layerboot(&["pull", &src, "--to", &dest, "--tls-verify=false", "-v"])
    });
    // Connection refused now; the pull backs off (250 ms, 500 ms, 1 s, 2 s) meanwhile.
    std::thread::sleep(std::time::Duration::from_millis(700));
    reg.resume().unwrap();
    let r = puller.join().unwrap();
    r.ok();
    assert!(r.stderr.contains("retry"), "no retry logged: {}", r.stderr);
    assert_layout_verified(&out.path().join("l"));
}

#[test]
fn docker_schema2_image_lands_as_oci_for_containers_image() {
    let img = ostree_image::layered_image().unwrap();
    let reg = LocalRegistry::start(Mode::Anonymous).unwrap();
    let src = reg.image_ref("docker/format:v1");
    let push = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "-q",
            "--format",
            "v2s2",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci:{}", img.display()))
        .arg(format!("docker://{src}"))
        .output()
        .unwrap();
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
    let j = layerboot(&["inspect", &src, "--tls-verify=false", "--json"]);
    j.ok();
    let v: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(
        v["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("l");
    layerboot(&[
        "pull",
        &src,
        "--to",
        &format!("oci:{}", dest.display()),
        "--tls-verify=false",
        "-q",
    ])
    .ok();
    assert_layout_verified(&dest);
    // skopeo (containers/image, as ostree-ext uses it) can read the pulled layout, and
    // sees the same labels and layers.
    let sk = skopeo_inspect(&format!("oci:{}:v1", dest.display()));
    assert_eq!(sk["Labels"]["ostree.bootable"], "true");
    assert_eq!(
        sk["Layers"].as_array().unwrap().len(),
        v["layers"].as_array().unwrap().len()
    );
    assert_ne!(
        sk["Digest"], v["digest"],
        "the stored manifest is the OCI conversion"
    );
}

#[test]
fn interrupted_pull_leaves_nothing() {
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("img");
    ostree_image::make_bench_image(&img, 48, 4).unwrap();
    let reg = LocalRegistry::start(Mode::Anonymous).unwrap();
    let src = reg.push_oci_dir(&img, "big/image:v1").unwrap();
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_layerboot"))
        .args([
            "pull",
            &src,
            "--to",
            &format!("oci:{}", out.join("dest").display()),
            "--tls-verify=false",
            "-q",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once blobs are streaming: a staged blob file exists.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !tree(&out).iter().any(|p| p.contains("blobs/sha256/.")) {
        assert!(
            std::time::Instant::now() < deadline,
            "pull never started writing: {:?}",
            tree(&out)
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "pull finished before it could be interrupted"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.trim().starts_with("error: interrupted by SIGINT")
            && stderr.trim().lines().count() == 1,
        "{stderr}"
    );
    assert_eq!(tree(&out), Vec::<String>::new(), "left behind after Ctrl-C");
}

#[test]
fn transfer_cut_mid_blob_resumes() {
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("img");
    ostree_image::make_bench_image(&img, 48, 2).unwrap();
    let mut reg = LocalRegistry::start(Mode::Anonymous).unwrap();
    let src = reg.push_oci_dir(&img, "big/resume:v1").unwrap();
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_layerboot"))
        .args([
            "pull",
            &src,
            "--to",
            &format!("oci:{}", out.join("dest").display()),
            "--tls-verify=false",
            "-q",
            "-v",
        ])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let staged_bytes = || -> u64 {
        tree(&out)
            .iter()
            .filter(|p| p.contains("blobs/sha256/."))
            .map(|p| std::fs::metadata(out.join(p)).map(|m| m.len()).unwrap_or(0))
            .sum()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while staged_bytes() < (1 << 20) {
        assert!(std::time::Instant::now() < deadline, "pull never got going");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Kill the registry mid-transfer, bring it back on the same port and storage.
    reg.pause();
    std::thread::sleep(std::time::Duration::from_millis(300));
    reg.resume().unwrap();
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("resuming at byte"),
        "no resume logged: {stderr}"
    );
    assert_layout_verified(&out.join("dest"));
}
