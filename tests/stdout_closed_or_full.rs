//! Every command that prints, run as the real binary three ways: stdout read to the end
//! (it prints something and succeeds), stdout a pipe whose reader is gone (quiet exit
//! 141, no panic, no error line), stdout `/dev/full` (one error line naming standard
//! output, exit 1, no panic). See `layerboot::output`.
//!
//! Not covered here: `boot-test` (its report goes through the same `out!`, but a run boots
//! QEMU) and `disk` (a build takes minutes; `disk --list` is being reworked separately).

mod install_support;
use install_support::{IMAGE, TEST_CA};

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use layerboot_testkit::{liveiso, ostree_image};

enum Sink {
    Read,
    Closed,
    Full,
}

fn run(args: &[String], sink: Sink) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_layerboot"));
    c.args(args)
        .env("HOME", home.path())
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    match sink {
        Sink::Read => {
            c.stdout(Stdio::piped());
        }
        // The read end is closed before the child starts, so its first write fails with
        // EPIPE every time (a reader dropped after spawning would race the child's writes).
        Sink::Closed => {
            let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
            drop(read);
            c.stdout(Stdio::from(write));
        }
        Sink::Full => {
            let full = File::options().write(true).open("/dev/full").unwrap();
            c.stdout(Stdio::from(full));
        }
    }
    c.output().expect("running layerboot")
}

/// The three runs of one command line.
#[track_caller]
fn check(args: &[String]) {
    check_fresh(|| args.to_vec())
}

/// The three runs, each with the command line (and whatever it points at) made anew.
#[track_caller]
fn check_fresh(make_args: impl Fn() -> Vec<String>) {
    let args = &make_args();
    let what = format!("layerboot {}", args.join(" "));

    let ok = run(args, Sink::Read);
    assert!(
        ok.status.success() && !ok.stdout.is_empty(),
        "{what}: expected output and success, got {:?}\nstderr: {}",
        ok.status.code(),
        String::from_utf8_lossy(&ok.stderr)
    );

    let args = &make_args();
    let closed = run(args, Sink::Closed);
    let stderr = String::from_utf8_lossy(&closed.stderr);
    assert_eq!(
        closed.status.code(),
        Some(141),
        "{what} into a closed pipe\nstderr: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("error:"),
        "{what} into a closed pipe: {stderr}"
    );

    let full = run(args, Sink::Full);
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert_eq!(
        full.status.code(),
        Some(1),
        "{what} into /dev/full\nstderr: {stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "{what} into /dev/full: {stderr}"
    );
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert!(
        errors.len() == 1
            && (errors[0].starts_with("error: writing to standard output: ")
                || errors[0].starts_with("error: writing the ISO to stdout: "))
            && errors[0].ends_with("No space left on device (os error 28)"),
        "{what} into /dev/full: {stderr}"
    );
}

fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn oci_image() -> PathBuf {
    ostree_image::bootable_image().expect("building the OCI layout fixture")
}

#[test]
fn help_and_version() {
    check(&argv(&["--help"]));
    check(&argv(&["--version"]));
    check(&argv(&["iso", "customize", "--help"]));
}

#[test]
fn inspect_text_and_json() {
    let image = format!("oci:{}", p(&oci_image()));
    check(&argv(&["inspect", &image]));
    check(&argv(&["inspect", "--json", &image]));
}

#[test]
fn pull_summary_line() {
    let image = format!("oci:{}", p(&oci_image()));
    let dir = tempfile::tempdir().unwrap();
    // A fresh destination per run: each one fetches and prints its summary.
    let to = |n: &str| format!("oci:{}", p(&dir.path().join(n)));
    let args = |n: &str| argv(&["pull", &image, "--to", &to(n)]);

    let ok = run(&args("read"), Sink::Read);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("blobs fetched"));

    let closed = run(&args("closed"), Sink::Closed);
    let stderr = String::from_utf8_lossy(&closed.stderr);
    assert_eq!(closed.status.code(), Some(141), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("error:"),
        "{stderr}"
    );

    let full = run(&args("full"), Sink::Full);
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert_eq!(full.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("error: writing to standard output: No space left on device"),
        "{stderr}"
    );
}

#[test]
fn manifests_install_config_and_ignition() {
    check(&argv(&[
        "manifests",
        IMAGE,
        "--pool",
        "worker",
        "--offline",
    ]));
    check(&argv(&[
        "install-config",
        "--trust-bundle",
        TEST_CA,
        "--mirror",
        "quay.io/acme=mirror.example.com:5000/acme",
    ]));
    check(&argv(&[
        "ignition",
        "pointer",
        "--pool",
        "infra",
        "--cluster",
        "ocp",
        "--base-domain",
        "example.com",
        "--ca",
        TEST_CA,
    ]));
    check(&argv(&["ignition", "rebase", IMAGE, "--offline"]));
}

#[test]
fn install_kit_summary() {
    let work = tempfile::tempdir().unwrap();
    let n = std::cell::Cell::new(0);
    // install-kit patches install-config.yaml in place: a fresh installer directory per run.
    check_fresh(|| {
        n.set(n.get() + 1);
        let dir = work.path().join(format!("ocp{}", n.get()));
        std::fs::create_dir(&dir).unwrap();
        std::fs::copy(
            install_support::repo().join("examples/autofs/install-config.yaml"),
            dir.join("install-config.yaml"),
        )
        .unwrap();
        argv(&[
            "install-kit",
            IMAGE,
            "--dir",
            p(&dir),
            "--pool",
            "worker-automount",
            "--offline",
        ])
    });
}

#[test]
fn iso_show_and_customize_to_stdout() {
    let iso = liveiso::live_iso().expect("building the live ISO fixture");
    check(&argv(&["iso", "show", p(&iso)]));
    check(&argv(&["iso", "show", "--json", p(&iso)]));
    // The ISO streamed to stdout (exec.rs's copy loop, not `out!`).
    check(&argv(&[
        "iso",
        "customize",
        "--dest-device",
        "/dev/sda",
        "-o",
        "-",
        p(&iso),
    ]));
}
