//! `layerboot boot-test`: arguments and their resolution into [`BootTestSettings`].

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::boottest::{
    self, Artifact, ArtifactKind, BootTestSettings, ExtraDisk, Firmware, Pattern,
};

/// Boot an ISO, disk image or kernel in QEMU and check what the guest prints.
///
/// Patterns match whole lines of the serial console (ttyS0) and of the virtio-serial
/// port `layerboot.0` (`/dev/virtio-ports/layerboot.0` in the guest, one message per
/// line). A pattern is a substring, or a regular expression after `re:`. Exit status: 0
/// passed, 1 failed (the reason and the last 40 console lines are printed).
#[derive(Debug, Args)]
pub struct BootTestArgs {
    /// Disk image (raw or qcow2) or ISO to boot.
    #[arg(
        value_name = "ARTIFACT",
        required_unless_present = "kernel",
        conflicts_with = "kernel"
    )]
    pub artifact: Option<PathBuf>,

    /// How to attach ARTIFACT [default: from its contents: qcow2 or ISO9660 magic, else raw; an ISO boots as CD-ROM].
    #[arg(long, value_enum)]
    pub kind: Option<ArtifactKind>,

    /// Boot this kernel directly (no bootloader).
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,

    /// Initrd for --kernel.
    #[arg(long, value_name = "FILE", requires = "kernel")]
    pub initrd: Option<PathBuf>,

    /// Kernel command line for --kernel.
    #[arg(
        long,
        value_name = "CMDLINE",
        requires = "kernel",
        default_value = "console=ttyS0"
    )]
    pub append: String,

    #[arg(long, value_enum, default_value_t = Firmware::Uefi)]
    pub firmware: Firmware,

    /// Logical/physical sector size of the boot disk and extra disks (4096 needs UEFI).
    #[arg(long, default_value_t = 512, value_parser = clap::builder::TypedValueParser::map(clap::builder::PossibleValuesParser::new(["512", "4096"]), |s: String| s.parse::<u32>().unwrap()))]
    pub sector_size: u32,

    /// Guest memory; a bare number is MiB (like QEMU's -m).
    #[arg(long, default_value = "2G")]
    pub memory: String,

    #[arg(long, default_value_t = 1)]
    pub cpus: u32,

    /// QEMU CPU model [default: host under KVM, max under TCG]. Under TCG a smaller model
    /// boots faster (the example's disk: Nehalem 85 s, max 126 s), but the image must run on
    /// it: RHEL 9 userspace needs x86-64-v2 (Nehalem or later), RHEL 10 x86-64-v3 (Haswell).
    #[arg(long, value_name = "MODEL")]
    pub cpu_model: Option<String>,

    /// Give up after this long (e.g. 300, 90s, 10m).
    #[arg(long, default_value = "10m")]
    pub timeout: String,

    /// Ignition config, passed as fw_cfg opt/com.coreos/config (Ignition's qemu platform).
    #[arg(long, value_name = "FILE")]
    pub ignition: Option<PathBuf>,

    /// Attach a blank disk of this size (e.g. 10G) after the boot disk, as an install
    /// target; deleted after the run. Repeatable.
    #[arg(long = "extra-disk", value_name = "SIZE")]
    pub extra_disks: Vec<String>,

    /// Pattern that must appear; repeat for several, which must appear in this order.
    #[arg(long, value_name = "PATTERN")]
    pub expect: Vec<String>,

    /// Pattern that fails the test as soon as it appears (e.g. "Kernel panic"). Repeatable.
    #[arg(long = "fail-on", value_name = "PATTERN")]
    pub fail_on: Vec<String>,

    /// After all expected patterns, wait for the guest to power off by itself.
    #[arg(long)]
    pub wait_poweroff: bool,

    /// Let the guest write to the artifact (default: writes are discarded).
    #[arg(long)]
    pub persist_writes: bool,

    /// Save the whole serial console here.
    #[arg(long, value_name = "FILE")]
    pub console_log: Option<PathBuf>,

    /// Write a JUnit XML report (one testcase) here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,

    /// Test case name in the JUnit report [default: the artifact's file name].
    #[arg(long)]
    pub name: Option<String>,

    /// Extra QEMU argument, appended verbatim (repeatable), e.g. --qemu-arg=-nic --qemu-arg=user,model=virtio.
    #[arg(long = "qemu-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub qemu_args: Vec<String>,
}

impl BootTestArgs {
    pub fn resolve(&self) -> Result<BootTestSettings> {
        let artifact = match (&self.artifact, &self.kernel) {
            (_, Some(kernel)) => {
                if self.kind.is_some() {
                    bail!("--kind applies to ARTIFACT, not to --kernel");
                }
                Artifact::DirectKernel {
                    kernel: kernel.clone(),
                    initrd: self.initrd.clone(),
                    append: self.append.clone(),
                }
            }
            (Some(path), None) => {
                let kind = match self.kind {
                    Some(k) => k,
                    None => ArtifactKind::detect(path)?,
                };
                kind.artifact(path.clone())
            }
            (None, None) => bail!("nothing to boot: give ARTIFACT or --kernel"),
        };
        let mut s = BootTestSettings::new(artifact);
        if let Some(n) = &self.name {
            s.name = n.clone();
        }
        s.firmware = self.firmware;
        s.sector_size = self.sector_size;
        s.memory_mib = crate::units::parse_size(&self.memory, 1 << 20).context("--memory")? >> 20;
        s.cpus = self.cpus;
        s.cpu_model = self.cpu_model.clone();
        s.timeout = crate::units::parse_duration(&self.timeout).context("--timeout")?;
        s.ignition = self.ignition.clone();
        s.extra_disks = self
            .extra_disks
            .iter()
            .map(|d| {
                Ok(ExtraDisk::Blank {
                    size: crate::units::parse_size(d, 1).context("--extra-disk")?,
                })
            })
            .collect::<Result<_>>()?;
        s.expect = self
            .expect
            .iter()
            .map(|p| Pattern::parse(p).context("--expect"))
            .collect::<Result<_>>()?;
        s.fail_on = self
            .fail_on
            .iter()
            .map(|p| Pattern::parse(p).context("--fail-on"))
            .collect::<Result<_>>()?;
        s.wait_for_poweroff = self.wait_poweroff;
        s.persist_writes = self.persist_writes;
        s.console_log = self.console_log.clone();
        s.junit = self.junit.clone();
        s.extra_qemu_args = self.qemu_args.iter().map(Into::into).collect();
        s.validate()?;
        Ok(s)
    }
}

pub async fn run(args: BootTestArgs, cancel: &crate::cancel::Cancel) -> Result<ExitCode> {
    let mut settings = args.resolve()?;
    settings.cancel = cancel.clone();
    let outcome = boottest::run(&settings).await?;
    if outcome.passed {
        crate::out!("{}", outcome.report())?;
        Ok(ExitCode::SUCCESS)
    } else {
        crate::output::stderr_text(&outcome.report());
        Ok(ExitCode::from(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<BootTestSettings> {
        let cli = Cli::try_parse_from(["layerboot", "boot-test"].iter().chain(args))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        match cli.command {
            Command::BootTest(a) => a.resolve(),
            #[allow(unreachable_patterns)]
            _ => unreachable!(),
        }
    }

    #[test]
    fn resolution_table() {
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("disk.img");
        std::fs::write(&raw, vec![0u8; 4096]).unwrap();
        let qcow = d.path().join("disk.q");
        std::fs::write(&qcow, b"QFI\xfb....").unwrap();
        let (raw, qcow) = (raw.to_str().unwrap(), qcow.to_str().unwrap());

        let s = parse(&[raw]).unwrap();
        assert_eq!(s.artifact, Artifact::RawDisk(raw.into()));
        assert_eq!(
            (
                s.firmware,
                s.sector_size,
                s.memory_mib,
                s.timeout.as_secs(),
                s.name.as_str()
            ),
            (Firmware::Uefi, 512, 2048, 600, "disk.img")
        );

        let s = parse(&[
            qcow,
            "--memory",
            "512",
            "--timeout",
            "90s",
            "--expect",
            "A",
            "--expect",
            "re:B+",
            "--fail-on",
            "panic",
            "--extra-disk",
            "10G",
            "--name",
            "t1",
        ])
        .unwrap();
        assert_eq!(s.artifact, Artifact::Qcow2(qcow.into()));
        assert_eq!(
            (s.memory_mib, s.timeout.as_secs(), s.name.as_str()),
            (512, 90, "t1")
        );
        assert_eq!(
            s.expect,
            vec![
                Pattern::parse("A").unwrap(),
                Pattern::parse("re:B+").unwrap()
            ]
        );
        assert_eq!(s.extra_disks, vec![ExtraDisk::Blank { size: 10 << 30 }]);

        assert_eq!(parse(&[raw]).unwrap().cpu_model, None);
        for model in ["Nehalem", "Haswell-v4,-hle,+pcid", "qemu64", "EPYC-Rome"] {
            let s = parse(&[raw, "--cpu-model", model]).unwrap();
            assert_eq!(s.cpu_model.as_deref(), Some(model));
        }

        let s = parse(&[raw, "--kind", "iso-as-disk", "--sector-size", "4096"]).unwrap();
        assert_eq!(
            (s.artifact.clone(), s.sector_size),
            (Artifact::IsoAsDisk(raw.into()), 4096)
        );

        let s = parse(&[
            "--kernel",
            "/k",
            "--initrd",
            "/i",
            "--append",
            "console=ttyS0 x=1",
            "--qemu-arg=-nic",
            "--qemu-arg",
            "none",
        ])
        .unwrap();
        assert_eq!(
            s.artifact,
            Artifact::DirectKernel {
                kernel: "/k".into(),
                initrd: Some("/i".into()),
                append: "console=ttyS0 x=1".into()
            }
        );
        assert_eq!(
            s.extra_qemu_args,
            vec![std::ffi::OsString::from("-nic"), "none".into()]
        );

        for (args, want) in [
            (
                vec![raw, "--firmware", "bios", "--sector-size", "4096"],
                "SeaBIOS",
            ),
            (vec![raw, "--sector-size", "1024"], "1024"),
            (vec![raw, "--extra-disk", "10Q"], "10Q"),
            (vec![raw, "--memory", "lots"], "lots"),
            (vec![raw, "--timeout", "soon"], "soon"),
            (
                vec![raw, "--cpu-model", "max -s"],
                "invalid CPU model \"max -s\"",
            ),
            (vec![raw, "--cpu-model", ""], "invalid CPU model"),
            (
                vec![raw, "--cpu-model", "max,,file=/x"],
                "invalid CPU model",
            ),
            (vec![raw, "--cpu-model=-machine"], "invalid CPU model"),
            (vec![raw, "--expect", "re:("], "re:("),
            (vec!["/no/such/disk"], "/no/such/disk"),
            (vec![], "required"),
            (vec![raw, "--kernel", "/k"], "cannot be used"),
            (vec!["--initrd", "/i"], "required"),
            // issue #15 item 9: refused here, before QEMU starts
            (
                vec![raw, "--junit", "/no/such/dir/junit.xml"],
                "directory /no/such/dir does not exist",
            ),
            (
                vec![raw, "--console-log", "/no/such/dir/c.log"],
                "directory /no/such/dir does not exist",
            ),
        ] {
            let err = format!("{:#}", parse(&args).unwrap_err());
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
}
