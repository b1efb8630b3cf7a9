//! The layerboot container image (issue #16 item 5): `containers/build.sh` builds it here
//! around the binary under test, from a debootstrap base (no registry pull), and
//! `layerboot disk` runs inside it with podman on the example image. The disk it writes is
//! checked from outside: its hashes against the JSON report, its format with qemu-img.
//!
//! podman runs containers with runc and without default ulimits here: crun refuses this
//! machine's hybrid cgroups, and raising RLIMIT_NOFILE/NPROC is not permitted
//! (containers/containers.conf; the same works on an ordinary host).

use std::path::Path;
use std::process::Command;

use layerboot_testkit::layered_image::layered_image;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn podman(args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .env("CONTAINERS_CONF", repo().join("containers/containers.conf"))
        .args(args)
        .output()
        .expect("running podman")
}

fn sha256(path: &Path) -> String {
    layerboot::io::sha256_file(path).unwrap().0
}

#[test]
fn disk_runs_inside_the_container_image() {
    let example = layered_image().expect("example layered image");
    let tag = format!("localhost/layerboot:test-{}", std::process::id());
    let build = Command::new("bash")
        .arg(repo().join("containers/build.sh"))
        .arg(env!("CARGO_BIN_EXE_layerboot"))
        .env("LAYERBOOT_IMAGE", &tag)
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "containers/build.sh: {}",
        String::from_utf8_lossy(&build.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&build.stdout).trim(), tag);

    let out = tempfile::tempdir().unwrap();
    let input = format!("{}:/in:ro", example.oci_dir.display());
    let output = format!("{}:/out", out.path().display());
    let run = podman(&[
        "run",
        "--rm",
        "--privileged",
        "-v",
        &input,
        "-v",
        &output,
        &tag,
        "-q",
        "disk",
        "oci:/in:layered",
        "-p",
        "qemu",
        "-o",
        "/out/node.qcow2.gz",
        "--json",
    ]);
    let _ = podman(&["rmi", "--force", &tag]);
    assert!(
        run.status.success(),
        "layerboot disk in the container: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let disk = out.path().join("node.qcow2.gz");
    assert_eq!(report["output"], "/out/node.qcow2.gz");
    assert_eq!(report["sha256"], sha256(&disk).as_str(), "{report}");
    assert_eq!(
        report["size"].as_u64(),
        Some(std::fs::metadata(&disk).unwrap().len())
    );
    // The disk inside: qcow2, its hash the one the report (and stream.json) give.
    let qcow2 = out.path().join("node.qcow2");
    let gunzip = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc '{}' > '{}'",
            disk.display(),
            qcow2.display()
        ))
        .status()
        .unwrap();
    assert!(gunzip.success());
    assert_eq!(report["uncompressed_sha256"], sha256(&qcow2).as_str());
    let info = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&qcow2)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["format"], "qcow2", "{info}");
    assert_eq!(info["virtual-size"], report["disk_size"], "{info}");
    let stream: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("stream.json")).unwrap()).unwrap();
    assert_eq!(
        stream["architectures"]["x86_64"]["artifacts"]["qemu"]["formats"]["qcow2.gz"]["disk"]
            ["sha256"],
        report["sha256"]
    );
    // Nothing left mounted or attached by the container's build.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&out.path().display().to_string()),
        "{mounts}"
    );
}
