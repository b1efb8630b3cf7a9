//! Shared fixtures of the QEMU suite.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

use layerboot_testkit::initramfs::{cached_initramfs, InitramfsSpec};
use layerboot_testkit::kernel::{debian_kernel, Kernel};

/// The Debian kernel (downloaded once, cached).
pub fn kernel() -> &'static Kernel {
    static K: OnceLock<Kernel> = OnceLock::new();
    K.get_or_init(|| {
        debian_kernel()
            .expect("Debian kernel fixture (needs 'apt-get update' and the Debian package 'dpkg')")
    })
}

/// Modules the test guest needs: fw_cfg in sysfs, the virtio-serial port, disks.
pub const GUEST_MODULES: &[&str] = &["qemu_fw_cfg", "virtio_pci", "virtio_console", "virtio_blk"];

/// The busybox initramfs running `qemu-tests/fixtures/guest-init.sh`.
pub fn guest_initramfs() -> &'static PathBuf {
    static I: OnceLock<PathBuf> = OnceLock::new();
    I.get_or_init(|| {
        let mut spec = InitramfsSpec::new(include_str!("fixtures/guest-init.sh"));
        for m in GUEST_MODULES {
            spec = spec.module(m);
        }
        cached_initramfs("guest-initramfs", kernel(), &spec).expect("guest initramfs fixture")
    })
}

/// A fresh token so a pattern cannot match output of an earlier run or of the recipe.
pub fn nonce() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", t, std::process::id())
}

/// Pids of processes whose command line contains `needle`.
pub fn processes_with(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(pid);
        }
    }
    found
}

/// The GPT boot disk fixture (GRUB for UEFI and, with 512-byte sectors, BIOS).
pub fn boot_disk(sector_size: u32, with_bootloader: bool) -> PathBuf {
    use layerboot_testkit::bootdisk::{cached_boot_disk, BootDiskSpec};
    cached_boot_disk(
        kernel(),
        guest_initramfs(),
        BootDiskSpec {
            sector_size,
            with_bootloader,
        },
    )
    .expect("boot disk fixture")
}

/// A grub-mkrescue hybrid ISO booting the guest (as CD-ROM or as disk, UEFI or BIOS).
pub fn grub_iso() -> PathBuf {
    layerboot_testkit::bootdisk::cached_grub_iso(kernel(), guest_initramfs())
        .expect("GRUB ISO fixture")
}

/// The pid of the QEMU tagged `-name TAG`, started (indirectly) by process `parent`.
pub fn wait_for_qemu(tag: &str, parent: u32) -> u32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(pid) = processes_with(tag).into_iter().find(|p| *p != parent) {
            return pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "QEMU tagged {tag} never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Held by every test that boots a full systemd OS (the disk images): on a 2-core TCG host
/// two such guests at once starve each other until udev misses systemd's device timeouts.
/// Small busybox guests do not take it. The lock is machine-wide (an exclusive lock on a
/// file in the temp dir) so that two suites running side by side, e.g. two work trees, also
/// take turns; a test that failed while holding it poisons the in-process mutex, and the
/// next one still gets the lock (the guard protects no data).
pub struct FullOsBootGuard {
    _file: std::fs::File,
    _in_process: MutexGuard<'static, ()>,
}

pub fn full_os_boot_lock() -> FullOsBootGuard {
    static L: Mutex<()> = Mutex::new(());
    let t = std::time::Instant::now();
    let in_process = L.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let path = std::env::temp_dir().join("layerboot-full-os-boot.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
    if t.elapsed().as_secs() > 1 {
        eprintln!(
            "waited {:.0}s for the full-OS boot lock",
            t.elapsed().as_secs_f64()
        );
    }
    FullOsBootGuard {
        _file: file,
        _in_process: in_process,
    }
}

/// Disks and trees one test made for itself, removed when it ends, passed or failed: a
/// CI machine's disk is not large (a run that kept them all, 16 GiB by the end, once
/// filled it mid-build), and what a failure is read from, the console log, stays.
pub struct Scratch(pub Vec<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(p)
            } else {
                std::fs::remove_file(p)
            };
        }
    }
}
