//! boot-test proving itself: direct kernel boot, the guest→harness channels (serial,
//! virtio-serial port, fw_cfg Ignition), and failure: a panicking kernel, a timeout
//! (with no QEMU left behind), Ctrl-C of the CLI.

use std::process::Command;
use std::time::{Duration, Instant};

use layerboot::boottest::{run_blocking, Artifact, BootTestSettings, Firmware, Pattern};

use crate::common::{guest_initramfs, kernel, nonce, processes_with, wait_for_qemu};

fn direct(append: &str) -> BootTestSettings {
    let mut s = BootTestSettings::new(Artifact::DirectKernel {
        kernel: kernel().vmlinuz.clone(),
        initrd: Some(guest_initramfs().clone()),
        append: format!("console=ttyS0 panic=-1 {append}"),
    });
    s.firmware = Firmware::Bios;
    s.memory_mib = 384;
    s.timeout = Duration::from_secs(90);
    s.fail_on = vec![Pattern::parse("Kernel panic").unwrap()];
    s
}

fn pats(p: &[&str]) -> Vec<Pattern> {
    p.iter().map(|s| Pattern::parse(s).unwrap()).collect()
}

#[test]
fn direct_kernel_boot_reaches_marker() {
    let n = nonce();
    let mut s = direct(&format!("lbtest.say=DIRECT-{n}"));
    s.expect = pats(&[
        "layerboot-fixture: init running",
        &format!("say DIRECT-{n}"),
    ]);
    let o = run_blocking(&s).unwrap();
    assert!(o.passed, "{}", o.report());
    assert!(
        o.console.contains(&format!(
            "Linux version {}",
            kernel().release.split('-').next().unwrap()
        )),
        "the Debian kernel {} booted; console began with:\n{}",
        kernel().release,
        o.console.lines().take(8).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn marker_over_virtio_serial_port() {
    let n = nonce();
    let mut s = direct(&format!("lbtest.port=PORT-{n}"));
    s.expect = pats(&[&format!("PORT-{n}")]);
    s.wait_for_poweroff = true;
    let o = run_blocking(&s).unwrap();
    assert!(o.passed, "{}", o.report());
    assert_eq!(o.port_lines, vec![format!("PORT-{n}")]);
    // The marker only travels over the port: the kernel command line echo aside, the
    // console never prints it on a line of its own.
    assert!(
        !o.console.lines().any(|l| l.trim() == format!("PORT-{n}")),
        "marker leaked to the console"
    );
}

#[test]
fn ignition_config_is_visible_in_the_guest_via_fw_cfg() {
    let n = nonce();
    let dir = tempfile::tempdir().unwrap();
    let ign = dir.path().join("config.ign");
    let config = format!(
        r#"{{"ignition":{{"version":"3.4.0"}},"storage":{{"files":[{{"path":"/etc/marker","contents":{{"source":"data:,{n}"}}}}]}}}}"#
    );
    std::fs::write(&ign, &config).unwrap();
    let mut s = direct("");
    s.ignition = Some(ign);
    s.expect = pats(&["IGNITION-BEGIN", &config, "IGNITION-END"]);
    let o = run_blocking(&s).unwrap();
    assert!(o.passed, "{}", o.report());
}

#[test]
fn kernel_panic_is_reported_as_failure() {
    let mut s = direct("lbtest.panic");
    s.expect = pats(&["layerboot-fixture: done"]);
    let o = run_blocking(&s).unwrap();
    assert!(!o.passed, "a panicking guest must fail: {}", o.report());
    assert!(
        o.reason.contains("fail-on pattern 'Kernel panic'"),
        "{}",
        o.reason
    );
    assert!(
        o.console_tail.iter().any(|l| l.contains("Kernel panic")),
        "{:?}",
        o.console_tail
    );
}

#[test]
fn timeout_fails_and_leaves_no_qemu_behind() {
    let tag = format!("lbtest-timeout-{}", nonce());
    let mut s = direct("lbtest.hang");
    s.expect = pats(&["this never appears"]);
    s.timeout = Duration::from_secs(8);
    s.extra_qemu_args = vec!["-name".into(), tag.clone().into()];
    let start = Instant::now();
    let o = run_blocking(&s).unwrap();
    assert!(!o.passed);
    assert!(
        o.reason
            .starts_with("timed out after 8s waiting for 'this never appears'"),
        "{}",
        o.reason
    );
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "the timeout was not enforced"
    );
    assert!(o.qemu_status.is_none(), "the harness stopped QEMU");
    assert_eq!(
        processes_with(&tag),
        Vec::<u32>::new(),
        "QEMU of this run still alive"
    );
}

/// The CLI end to end: exit codes, the printed report, console log and JUnit files.
#[test]
fn cli_pass_and_fail_exit_codes_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_layerboot");
    let k = kernel().vmlinuz.to_str().unwrap().to_string();
    let i = guest_initramfs().to_str().unwrap().to_string();
    let common = |append: &str, junit: &str, log: &str| {
        let mut c = Command::new(bin);
        c.args([
            "boot-test",
            "--kernel",
            &k,
            "--initrd",
            &i,
            "--firmware",
            "bios",
            "--memory",
            "384M",
            "--timeout",
            "90s",
        ])
        .args([
            "--append",
            &format!("console=ttyS0 {append}"),
            "--fail-on",
            "Kernel panic",
        ])
        .arg("--junit")
        .arg(dir.path().join(junit))
        .arg("--console-log")
        .arg(dir.path().join(log));
        c
    };
    let out = common("lbtest.say=CLI-OK", "pass.xml", "pass.log")
        .args(["--expect", "init running", "--expect", "say CLI-OK"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("boot test passed: all 2 expected patterns seen in order"));
    let junit = std::fs::read_to_string(dir.path().join("pass.xml")).unwrap();
    assert!(
        junit.contains("tests=\"1\" failures=\"0\"") && !junit.contains("<failure"),
        "{junit}"
    );
    assert!(std::fs::read_to_string(dir.path().join("pass.log"))
        .unwrap()
        .contains("CLI-OK"));

    let out = common("lbtest.panic", "fail.xml", "fail.log")
        .args(["--expect", "never"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("boot test FAILED: fail-on pattern 'Kernel panic' matched"),
        "{stderr}"
    );
    assert!(stderr.contains("--- last 40 console lines ---"), "{stderr}");
    assert!(
        stderr
            .lines()
            .filter(|l| !l.starts_with("boot test") && !l.starts_with("---"))
            .count()
            >= 10,
        "console tail printed: {stderr}"
    );
    let junit = std::fs::read_to_string(dir.path().join("fail.xml")).unwrap();
    assert!(
        junit.contains("failures=\"1\"")
            && junit.contains("<failure message=\"fail-on pattern &apos;Kernel panic&apos;"),
        "{junit}"
    );
    // system-out holds the console's last lines: the panic and its backtrace. QEMU is
    // stopped as soon as the pattern matches, so the backtrace may be cut anywhere (its
    // closing "end Kernel panic" line too); the panic's own line is in the tail.
    let system_out = junit.split("<system-out>").nth(1).unwrap_or("");
    assert!(
        system_out.contains("Kernel panic"),
        "console tail in system-out: {junit}"
    );
    let log = std::fs::read_to_string(dir.path().join("fail.log")).unwrap();
    assert!(
        log.contains("exiting init on purpose") && log.contains("Kernel panic"),
        "{log}"
    );
}

/// SIGINT to the CLI: QEMU is killed and reaped, temp files are gone, exit 130.
#[test]
fn cli_sigint_stops_qemu_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let tag = format!("lbtest-sigint-{}", nonce());
    let child = Command::new(env!("CARGO_BIN_EXE_layerboot"))
        .args(["boot-test", "--kernel"])
        .arg(&kernel().vmlinuz)
        .arg("--initrd")
        .arg(guest_initramfs())
        .args([
            "--append",
            "console=ttyS0 lbtest.hang",
            "--firmware",
            "bios",
            "--memory",
            "256",
            "--expect",
            "never",
            "--timeout",
            "5m",
        ])
        .args(["--qemu-arg=-name", &format!("--qemu-arg={tag}")])
        .env("TMPDIR", tmp.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let qemu = wait_for_qemu(&tag, child.id());
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        std::fs::read_dir(tmp.path()).unwrap().count() > 0,
        "the run keeps its temp files under TMPDIR"
    );
    signal_int(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted by SIGINT"));
    assert!(
        !std::path::Path::new(&format!("/proc/{qemu}")).exists(),
        "QEMU {qemu} survived"
    );
    assert_eq!(processes_with(&tag), Vec::<u32>::new());
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "temp files left behind: {left:?}");
}

fn disk(artifact: Artifact, firmware: Firmware) -> BootTestSettings {
    let mut s = BootTestSettings::new(artifact);
    s.firmware = firmware;
    s.memory_mib = 384;
    s.timeout = Duration::from_secs(120);
    s.fail_on = pats(&["Kernel panic"]);
    s
}

#[test]
fn uefi_boots_gpt_disk_through_grub() {
    let mut s = disk(
        Artifact::RawDisk(crate::common::boot_disk(512, true)),
        Firmware::Uefi,
    );
    s.expect = pats(&[
        "GRUB (efi) loading the kernel",
        "booted via UEFI",
        "say GRUB-BOOTED-efi",
    ]);
    let o = run_blocking(&s).unwrap();
    assert!(o.passed, "{}", o.report());
}

#[test]
fn bios_boots_gpt_disk_through_grub() {
    let mut s = disk(
        Artifact::RawDisk(crate::common::boot_disk(512, true)),
        Firmware::Bios,
    );
    s.expect = pats(&[
        "GRUB (pc) loading the kernel",
        "booted without UEFI",
        "say GRUB-BOOTED-pc",
    ]);
    let o = run_blocking(&s).unwrap();
    assert!(o.passed, "{}", o.report());
}

#[test]
fn uefi_boots_4k_sector_disk_as_qcow2() {
    let dir = tempfile::tempdir().unwrap();
    let qcow = dir.path().join("disk4k.qcow2");
    let raw = crate::common::boot_disk(4096, true);
    layerboot::cmd::run(
        Command::new("qemu-img")
            .args(["convert", "-O", "qcow2"])
            .arg(&raw)
            .arg(&qcow),
    )
    .unwrap();
    let mut s = disk(Artifact::Qcow2(qcow), Firmware::Uefi);
    s.sector_size = 4096;
    s.expect = pats(&[
        "disk vda logical_block_size=4096",
        "booted via UEFI",
        "say GRUB-BOOTED-efi",
    ]);
    let o = run_blocking(&s).unwrap();
    assert!(o.passed, "{}", o.report());
}

/// A disk without any boot code must fail (here: nothing on the console, then the
/// timeout). Run through the CI example script, which must pass on boot-test's exit 1
/// and leave the JUnit report and console log for publishing.
#[test]
fn disk_without_bootloader_fails_through_ci_example() {
    let out_dir = tempfile::tempdir().unwrap();
    let disk = crate::common::boot_disk(512, false);
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/ci/boot-test.sh"
        ))
        .arg(&disk)
        .args([
            "--firmware",
            "bios",
            "--memory",
            "256M",
            "--timeout",
            "15s",
            "--expect",
            "GRUB-BOOTED",
        ])
        .env("LAYERBOOT", env!("CARGO_BIN_EXE_layerboot"))
        .env("OUT_DIR", out_dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("boot test FAILED: timed out after 15s waiting for 'GRUB-BOOTED' (0 of 1 expected patterns seen)"), "{stderr}");
    let name = disk.file_name().unwrap().to_str().unwrap();
    let junit = std::fs::read_to_string(out_dir.path().join(format!("{name}.junit.xml"))).unwrap();
    assert!(
        junit.contains(&format!("<testcase name=\"{name}\""))
            && junit.contains("<failure message=\"timed out after 15s"),
        "{junit}"
    );
    assert!(out_dir.path().join(format!("{name}.console.log")).is_file());
}

#[test]
fn uefi_boots_iso_as_cdrom() {
    let iso = crate::common::grub_iso();
    assert_eq!(
        layerboot::boottest::ArtifactKind::detect(&iso).unwrap(),
        layerboot::boottest::ArtifactKind::Iso
    );
    let mut s = disk(Artifact::IsoCdrom(iso), Firmware::Uefi);
    s.expect = pats(&["booted via UEFI", "say GRUB-BOOTED-efi"]);
    let o = run_blocking(&s).unwrap();
    assert!(o.passed, "{}", o.report());
}

#[test]
fn bios_boots_iso_as_disk() {
    let mut s = disk(
        Artifact::IsoAsDisk(crate::common::grub_iso()),
        Firmware::Bios,
    );
    s.expect = pats(&[
        "layerboot-fixture: disk vda",
        "booted without UEFI",
        "say GRUB-BOOTED-pc",
    ]);
    let o = run_blocking(&s).unwrap();
    assert!(o.passed, "{}", o.report());
}

#[test]
#[ignore = "helper process of run_blocking_sigint_cleans_up_then_ends_the_process"]
fn helper_hanging_boot_with_signal_handling() {
    let mut s = direct("lbtest.hang");
    s.timeout = Duration::from_secs(300);
    s.extra_qemu_args = vec![
        "-name".into(),
        std::env::var("LBTEST_TAG").expect("LBTEST_TAG").into(),
    ];
    // The library installs no handlers: a library user wires signals to the token, as
    // the CLI does.
    let r = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            layerboot::cancel::install(&s.cancel).unwrap();
            layerboot::boottest::run(&s).await
        });
    let e = r.expect_err("the hanging boot ended by itself");
    eprintln!("{e:#}");
    let signal = s.cancel.signal().expect("cancelled by a signal");
    std::process::exit(layerboot::cancel::exit_status(signal).into());
}

/// Library users get the same guarantee as the CLI: SIGINT (through the token they
/// cancel) stops and reaps QEMU and removes the temp files; the process then exits 130.
#[test]
fn run_blocking_sigint_cleans_up_then_ends_the_process() {
    let tmp = tempfile::tempdir().unwrap();
    let tag = format!("lbtest-blocking-{}", nonce());
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "boottest::helper_hanging_boot_with_signal_handling",
            "--test-threads",
            "1",
            "--nocapture",
        ])
        .env("LBTEST_TAG", &tag)
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let qemu = wait_for_qemu(&tag, child.id());
    std::thread::sleep(Duration::from_secs(1));
    signal_int(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "stdout: {} stderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted by SIGINT"));
    assert!(
        !std::path::Path::new(&format!("/proc/{qemu}")).exists(),
        "QEMU {qemu} survived"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "temp files left behind: {left:?}");
}

/// QEMU refusing the artifact (a corrupt qcow2) is a failed boot whose reason carries
/// QEMU's own message.
#[test]
fn corrupt_qcow2_fails_with_qemu_message() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.qcow2");
    let mut bytes = b"QFI\xfb\0\0\0\x03".to_vec();
    bytes.resize(4096, 0xff);
    std::fs::write(&bad, bytes).unwrap();
    let mut s = disk(Artifact::Qcow2(bad), Firmware::Bios);
    s.expect = pats(&["anything"]);
    let o = run_blocking(&s).unwrap();
    assert!(!o.passed);
    assert!(
        o.reason
            .starts_with("QEMU exited (exit status: 1) while waiting for 'anything'"),
        "{}",
        o.reason
    );
    assert!(
        o.reason.contains("QEMU said:") && o.reason.contains("bad.qcow2"),
        "{}",
        o.reason
    );
}

/// The accelerator probe agrees with what UEFI firmware really does under KVM on this
/// host: where OVMF under KVM stops with a KVM internal error (a nested host that still
/// runs SeaBIOS) or QEMU aborts, the probe must say TCG, or every UEFI boot hangs paused
/// or fails; where OVMF runs under KVM, the probe must say KVM.
#[test]
fn accel_probe_matches_ovmf_under_kvm() {
    use layerboot::qemu::accel::{probe, Accel};
    let qemu = std::path::Path::new("qemu-system-x86_64");
    let verdict = probe(qemu);
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        assert_eq!(
            verdict,
            Accel::Tcg,
            "no usable /dev/kvm, yet the probe chose KVM"
        );
        return;
    }
    let ovmf = layerboot::qemu::firmware::locate().expect("OVMF installed");
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vars.fd");
    std::fs::copy(&ovmf.vars_template, &vars).unwrap();
    let out = Command::new("timeout")
        .args(["8", "qemu-system-x86_64", "-nodefaults", "-display", "none"])
        .args([
            "-machine", "q35", "-accel", "kvm", "-cpu", "host", "-m", "256",
        ])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            ovmf.code.display()
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // OVMF with no disk waits in its boot manager: still running when `timeout` ends it
    // (124) means KVM runs it. Hosts fail it in several ways: a KVM internal error that
    // leaves the guest paused (still "running"), or QEMU aborting at once (e.g. "failed to
    // set MSR" on a nested host).
    let runs = out.status.code() == Some(124) && !stderr.contains("KVM internal error");
    assert_eq!(
        verdict,
        if runs { Accel::Kvm } else { Accel::Tcg },
        "OVMF under KVM here: exit {:?}, stderr: {stderr}",
        out.status.code()
    );
}

/// SIGINT to a child of this test, as a user's Ctrl-C would send it.
fn signal_int(child: &std::process::Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
}
