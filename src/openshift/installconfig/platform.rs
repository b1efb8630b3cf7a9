//! Per-platform boot images for install-config, from CoreOS stream metadata.
//!
//! What each OpenShift platform does with a custom boot image, as openshift/installer and
//! the Machine Config Operator have it (the facts the code below encodes):
//! - **OpenStack, vSphere, bare-metal bootstrap**: `platform.<p>.clusterOSImage` /
//!   `bootstrapOSImage` is `URL?sha256=<hex>`; the installer downloads it through its image
//!   cache (`pkg/rhcos/cache`), which decompresses gzip/xz by magic bytes and compares the
//!   sha256 of the *decompressed* stream. So a compressed artifact (openstack `qcow2.gz`)
//!   needs its `uncompressed-sha256`, and an uncompressed one (vmware `ova`, a plain tar)
//!   its file sha256, which is the same thing.
//! - **Nutanix**: `platform.nutanix.clusterOSImage`; the cluster-API installer hands the URL
//!   to Prism Central, which downloads it itself and does not read the query string. The
//!   artifact is a plain `qcow2`, so the sha256 written is the file's (what older,
//!   installer-side downloads verified).
//! - **Bare metal IPI** (4.10+): machines are provisioned with `customDeploy:
//!   install_coreos`, i.e. coreos-installer writes the release payload's own RHCOS from the
//!   IPA ramdisk; `clusterOSImage` only reaches `99_baremetal-provisioning-config.yaml` and
//!   does not decide what nodes boot. `bootstrapOSImage` is the bootstrap VM's disk.
//! - **AWS, GCP**: the installer takes an image *id* per pool (`amiID`,
//!   `osImage {project, name}`), so the artifact must be imported first.
//! - **Azure**: `osImage` only names Marketplace images (publisher/offer/sku/version) and
//!   `platform.azure.clusterOSImage` is for Azure Stack Hub only: public Azure has no
//!   install-config field for a custom image.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context, Result};

use super::{absolute_location, os_image_url, Stream, StreamArtifact};

/// An install-config platform (the key under `platform:`) layerboot knows boot images for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootPlatform {
    BareMetal,
    OpenStack,
    VSphere,
    Nutanix,
    Aws,
    Gcp,
    Azure,
}

/// Which sha256 the platform's consumer compares against `?sha256=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// The installer's image cache hashes what it decompressed.
    Uncompressed,
    /// The artifact is not compressed: the file's own sha256.
    File,
}

impl BootPlatform {
    pub const ALL: [BootPlatform; 7] = [
        BootPlatform::BareMetal,
        BootPlatform::OpenStack,
        BootPlatform::VSphere,
        BootPlatform::Nutanix,
        BootPlatform::Aws,
        BootPlatform::Gcp,
        BootPlatform::Azure,
    ];

    /// The key under install-config `platform:`.
    pub fn key(self) -> &'static str {
        match self {
            BootPlatform::BareMetal => "baremetal",
            BootPlatform::OpenStack => "openstack",
            BootPlatform::VSphere => "vsphere",
            BootPlatform::Nutanix => "nutanix",
            BootPlatform::Aws => "aws",
            BootPlatform::Gcp => "gcp",
            BootPlatform::Azure => "azure",
        }
    }

    /// The CoreOS stream platform id whose artifact this install-config platform takes.
    pub fn stream_platform(self) -> &'static str {
        match self {
            BootPlatform::BareMetal => "metal",
            BootPlatform::OpenStack => "openstack",
            BootPlatform::VSphere => "vmware",
            BootPlatform::Nutanix => "nutanix",
            BootPlatform::Aws => "aws",
            BootPlatform::Gcp => "gcp",
            BootPlatform::Azure => "azure",
        }
    }

    /// Disk formats the platform's consumer accepts, in order of preference.
    pub fn formats(self) -> &'static [&'static str] {
        match self {
            // Existing behaviour for metal: raw first, as coreos-installer writes it.
            BootPlatform::BareMetal => {
                &["raw.xz", "raw.gz", "qcow2.xz", "qcow2.gz", "raw", "qcow2"]
            }
            BootPlatform::OpenStack => &["qcow2.gz", "qcow2.xz"],
            BootPlatform::VSphere => &["ova"],
            BootPlatform::Nutanix => &["qcow2"],
            BootPlatform::Aws => &["vmdk.gz", "vmdk.xz"],
            BootPlatform::Gcp => &["tar.gz"],
            BootPlatform::Azure => &["vhd.xz", "vhd.gz"],
        }
    }

    pub fn checksum(self) -> Checksum {
        match self {
            BootPlatform::VSphere | BootPlatform::Nutanix => Checksum::File,
            _ => Checksum::Uncompressed,
        }
    }

    /// Whether the MCO's boot image management would *replace* a custom boot image in the
    /// MachineSets (machine-config-operator `pkg/controller/bootimage`): vSphere re-imports
    /// the stock OVA when the template's product version differs from the release's, Azure
    /// moves any `resourceID` image to the Marketplace image. On AWS and GCP a MachineSet
    /// whose image is not a known RHCOS one is skipped; other platforms are not managed.
    pub fn replaces_custom_boot_images(self) -> bool {
        matches!(self, BootPlatform::VSphere | BootPlatform::Azure)
    }

    /// The platform from an Infrastructure `status.platformStatus.type` (openshift/api).
    pub fn from_infrastructure_type(t: &str) -> Option<BootPlatform> {
        Some(match t {
            "BareMetal" => BootPlatform::BareMetal,
            "OpenStack" => BootPlatform::OpenStack,
            "VSphere" => BootPlatform::VSphere,
            "Nutanix" => BootPlatform::Nutanix,
            "AWS" => BootPlatform::Aws,
            "GCP" => BootPlatform::Gcp,
            "Azure" => BootPlatform::Azure,
            _ => return None,
        })
    }
}

impl fmt::Display for BootPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

impl FromStr for BootPlatform {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        BootPlatform::ALL
            .into_iter()
            .find(|p| p.key() == s)
            .with_context(|| {
                format!(
                    "layerboot has no boot image setting for install-config platform '{}' (known: {})",
                    s.escape_debug(),
                    BootPlatform::ALL.map(|p| p.key()).join(", ")
                )
            })
    }
}

/// install-config `controlPlane.architecture` (Go naming) → CoreOS stream architecture.
pub fn stream_arch_for(goarch: &str) -> Option<&'static str> {
    Some(match goarch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        _ => return None,
    })
}

/// A machine image id that the installer takes per pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MachineImage {
    /// `platform.aws.defaultMachinePlatform.amiID`.
    AwsAmi(String),
    /// `platform.gcp.defaultMachinePlatform.osImage {project, name}`.
    GcpImage { project: String, name: String },
}

impl MachineImage {
    pub fn platform(&self) -> BootPlatform {
        match self {
            MachineImage::AwsAmi(_) => BootPlatform::Aws,
            MachineImage::GcpImage { .. } => BootPlatform::Gcp,
        }
    }

    pub fn aws(s: &str) -> Result<MachineImage> {
        static AMI: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
            regex::Regex::new(r"^ami-[0-9a-f]{8,17}$").expect("valid regex")
        });
        if !AMI.is_match(s) {
            bail!(
                "invalid AMI id '{}': expected ami- and 8 to 17 lowercase hex digits",
                s.escape_debug()
            );
        }
        Ok(MachineImage::AwsAmi(s.to_string()))
    }

    /// `PROJECT/NAME`, each as GCE names them (lowercase, digits, dashes).
    pub fn gcp(s: &str) -> Result<MachineImage> {
        static PROJECT: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
            regex::Regex::new(r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$").expect("valid regex")
        });
        static NAME: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
            regex::Regex::new(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$").expect("valid regex")
        });
        match s.split_once('/') {
            Some((p, n)) if PROJECT.is_match(p) && NAME.is_match(n) => Ok(MachineImage::GcpImage {
                project: p.to_string(),
                name: n.to_string(),
            }),
            _ => bail!("invalid GCP image '{}': expected PROJECT/IMAGE-NAME, e.g. my-project/rhcos-layered", s.escape_debug()),
        }
    }
}

/// How to read the stream for one platform.
#[derive(Debug, Clone, Default)]
pub struct StreamChoice {
    pub arch: String,
    /// Overrides the platform's stream id (bare metal only: e.g. `qemu`).
    pub stream_platform: Option<String>,
    /// Overrides the format preference.
    pub format: Option<String>,
    pub base_url: Option<String>,
}

/// What layerboot sets (or cannot set) for a platform's boot image, and what to tell the user.
#[derive(Debug, Clone, Default)]
pub struct BootImagePlan {
    pub cluster_os_image: Option<String>,
    pub bootstrap_os_image: Option<String>,
    pub machine_image: Option<MachineImage>,
    /// What each setting does on this platform (one line each).
    pub notes: Vec<String>,
    /// Commands to import the artifact (printed, never run).
    pub import_commands: Vec<String>,
    /// What each node boots first, for summaries.
    pub first_boot: String,
}

fn find_format<'a>(
    stream: &'a Stream,
    arch: &str,
    stream_platform: &str,
    formats: &[&str],
    explicit: Option<&str>,
    what: &str,
) -> Result<(String, &'a StreamArtifact)> {
    match explicit {
        Some(f) => stream.disk(arch, stream_platform, &[f], what),
        None => stream.disk(arch, stream_platform, formats, what),
    }
}

/// The `URL?sha256=` for `artifact` with the checksum `kind` wants.
fn url_with_checksum(
    artifact: &StreamArtifact,
    kind: Checksum,
    label: &str,
    base_url: Option<&str>,
    what: &str,
) -> Result<String> {
    let sha = match kind {
        Checksum::Uncompressed => artifact
            .uncompressed_sha256
            .as_deref()
            .with_context(|| format!("{what}: {label} has no uncompressed-sha256"))?,
        Checksum::File => artifact.sha256.as_str(),
    };
    os_image_url(&absolute_location(&artifact.location, base_url), sha, what)
}

/// The file name of a location (for import commands).
fn file_name(location: &str) -> &str {
    location.rsplit('/').next().unwrap_or(location)
}

/// The commands that fetch and verify an artifact before importing it.
fn fetch_commands(url: &str, sha256: &str) -> Vec<String> {
    let f = file_name(url);
    vec![
        format!("curl -fLo {f} '{url}'"),
        format!("echo '{sha256}  {f}' | sha256sum -c"),
    ]
}

/// Plan the boot image settings for `platform` from `stream`.
pub fn plan(
    stream: &Stream,
    what: &str,
    platform: BootPlatform,
    choice: &StreamChoice,
) -> Result<BootImagePlan> {
    if platform != BootPlatform::BareMetal {
        if let Some(sp) = &choice.stream_platform {
            if sp != platform.stream_platform() {
                bail!("--stream-platform {sp} does not fit install-config platform '{platform}', which takes the '{}' artifact", platform.stream_platform());
            }
        }
    }
    let arch = choice.arch.as_str();
    let base = choice.base_url.as_deref();
    let fmt_override = choice.format.as_deref();
    let mut out = BootImagePlan::default();
    match platform {
        BootPlatform::BareMetal => {
            let sp = choice.stream_platform.as_deref().unwrap_or("metal");
            let (fmt, disk) =
                find_format(stream, arch, sp, platform.formats(), fmt_override, what)?;
            out.cluster_os_image = Some(url_with_checksum(
                disk,
                Checksum::Uncompressed,
                &format!("{sp} {fmt} disk"),
                base,
                what,
            )?);
            out.notes.push(format!(
                "platform.baremetal.clusterOSImage ({sp} {fmt}): only written to 99_baremetal-provisioning-config.yaml; since OpenShift 4.10 bare-metal IPI machines are provisioned with customDeploy install_coreos, which installs the release's own RHCOS, so it does not change what nodes boot"
            ));
            if sp != "qemu" {
                if let Ok((qfmt, q)) = find_format(
                    stream,
                    arch,
                    "qemu",
                    &["qcow2.xz", "qcow2.gz", "qcow2"],
                    None,
                    what,
                ) {
                    out.bootstrap_os_image = Some(url_with_checksum(
                        q,
                        Checksum::Uncompressed,
                        &format!("qemu {qfmt} disk"),
                        base,
                        what,
                    )?);
                    out.notes.push(format!(
                        "platform.baremetal.bootstrapOSImage (qemu {qfmt}): the disk of the temporary bootstrap VM on the provisioning host, checked by its uncompressed sha256"
                    ));
                }
            }
            out.notes.push("to run the layered image on bare-metal nodes use the manifests (`layerboot manifests`, osImageURL: nodes switch to it on first boot) or boot hosts from a layered live ISO (`layerboot iso customize`)".into());
            out.first_boot = "bare-metal nodes: the release's RHCOS (written by install_coreos), then the MCO's first-boot switch to the layered image from the manifests; the bootstrap VM: the layered qemu disk".into();
        }
        BootPlatform::OpenStack | BootPlatform::VSphere | BootPlatform::Nutanix => {
            let sp = platform.stream_platform();
            let (fmt, disk) =
                find_format(stream, arch, sp, platform.formats(), fmt_override, what)?;
            out.cluster_os_image = Some(url_with_checksum(
                disk,
                platform.checksum(),
                &format!("{sp} {fmt} disk"),
                base,
                what,
            )?);
            let sum = match platform.checksum() {
                Checksum::Uncompressed => {
                    "the sha256 of the decompressed image, as the installer's image cache checks it"
                }
                Checksum::File => "the file's sha256 (the artifact is not compressed)",
            };
            out.notes.push(format!(
                "platform.{platform}.clusterOSImage ({sp} {fmt}, {sum}): the image every installer-created machine (bootstrap, control plane, compute) is created from"
            ));
            match platform {
                BootPlatform::Nutanix => out.notes.push(
                    "Nutanix: Prism Central downloads the URL itself (the installer does not), so it must be reachable from Prism Central".into(),
                ),
                BootPlatform::VSphere => out.notes.push(
                    "vSphere: the installer imports the OVA as a VM template per failure domain; keep the MCO from replacing that template on upgrade with the MachineConfiguration manifest (`--keep-boot-images`)".into(),
                ),
                _ => {}
            }
            out.first_boot =
                format!("every {platform} machine: the layered image, from the first boot");
        }
        BootPlatform::Aws | BootPlatform::Gcp | BootPlatform::Azure => {
            let sp = platform.stream_platform();
            let (fmt, disk) =
                find_format(stream, arch, sp, platform.formats(), fmt_override, what)?;
            let url = absolute_location(&disk.location, base);
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("{what}: location '{url}' is not an http(s) URL to download the {sp} artifact from (pass --stream-base-url URL)");
            }
            out.notes.push(format!("artifact: {sp} {fmt} at {url}"));
            let mut cmds = fetch_commands(&url, &disk.sha256);
            let f = file_name(&url).to_string();
            let name = "rhcos-layered";
            match platform {
                BootPlatform::Aws => {
                    let (unpack, vmdk) = decompress_command(&f);
                    cmds.push(unpack);
                    cmds.push(format!("aws s3 cp {vmdk} s3://$BUCKET/{vmdk}"));
                    cmds.push(format!(
                        "aws ec2 import-snapshot --region $REGION --description {name} --disk-container 'Format=vmdk,UserBucket={{S3Bucket='$BUCKET',S3Key={vmdk}}}'    # prints ImportTaskId"
                    ));
                    cmds.push("aws ec2 describe-import-snapshot-tasks --region $REGION --import-task-ids $TASK    # until Status completed: SnapshotId".into());
                    cmds.push(format!(
                        "aws ec2 register-image --region $REGION --name {name} --architecture {} --virtualization-type hvm --ena-support --sriov-net-support simple --boot-mode uefi-preferred --root-device-name /dev/xvda --block-device-mappings 'DeviceName=/dev/xvda,Ebs={{SnapshotId='$SNAPSHOT',VolumeType=gp3,DeleteOnTermination=true}}'    # prints ImageId",
                        if arch == "aarch64" { "arm64" } else { "x86_64" }
                    ));
                    out.notes.push("AWS: the installer takes an AMI id (platform.aws.defaultMachinePlatform.amiID, or per pool compute[].platform.aws.amiID / controlPlane.platform.aws.amiID): import the vmdk as below, then run again with --aws-ami ami-…".into());
                }
                BootPlatform::Gcp => {
                    cmds.push(format!("gcloud storage cp {f} gs://$BUCKET/{f}"));
                    cmds.push(format!(
                        "gcloud compute images create {name} --project $PROJECT --source-uri gs://$BUCKET/{f} --guest-os-features UEFI_COMPATIBLE,VIRTIO_SCSI_MULTIQUEUE,GVNIC"
                    ));
                    out.notes.push("GCP: the installer takes an image (platform.gcp.defaultMachinePlatform.osImage {project, name}, or per pool): import the tar.gz as below, then run again with --gcp-image $PROJECT/rhcos-layered".into());
                }
                _ => {
                    let (unpack, vhd) = decompress_command(&f);
                    cmds.push(unpack);
                    cmds.push(format!(
                        "az storage blob upload --account-name $ACCOUNT --container-name $CONTAINER --type page --file {vhd} --name {vhd}"
                    ));
                    cmds.push(format!(
                        "az image create --resource-group $RG --name {name} --os-type Linux --hyper-v-generation V2 --source https://$ACCOUNT.blob.core.windows.net/$CONTAINER/{vhd}"
                    ));
                    cmds.push(format!(
                        "az sig image-version create --resource-group $RG --gallery-name $GALLERY --gallery-image-definition {name} --gallery-image-version 1.0.0 --os-vhd-storage-account $ACCOUNT --os-vhd-uri https://$ACCOUNT.blob.core.windows.net/$CONTAINER/{vhd}    # instead of az image create: a gallery image version (after az sig image-definition create … --os-type Linux --hyper-v-generation V2)"
                    ));
                    out.notes.push("Azure: the installer has no install-config field for a custom image (osImage takes only Marketplace publisher/offer/sku/version; platform.azure.clusterOSImage is for Azure Stack Hub): install with the stock image, then set the MachineSets' providerSpec.value.image.resourceID to the imported image, and keep the MCO from replacing it with the MachineConfiguration manifest (`--keep-boot-images`)".into());
                }
            }
            out.import_commands = cmds;
            out.first_boot = match platform {
                BootPlatform::Azure => "azure machines: the Marketplace RHCOS at install (no install-config field), the layered image only on machines created after the MachineSets point at the imported image; every node switches to the layered image through the manifests".into(),
                _ => format!("{platform} machines: the imported image once its id is set (--{}), else the release's RHCOS", if platform == BootPlatform::Aws { "aws-ami" } else { "gcp-image" }),
            };
        }
    }
    Ok(out)
}

/// `xz -dk`/`gunzip -k` for a compressed artifact; returns the command and the result's name.
fn decompress_command(file: &str) -> (String, String) {
    if let Some(stem) = file.strip_suffix(".xz") {
        (format!("xz -dk {file}"), stem.to_string())
    } else if let Some(stem) = file.strip_suffix(".gz") {
        (format!("gunzip -k {file}"), stem.to_string())
    } else {
        (format!("# {file} is not compressed"), file.to_string())
    }
}

/// The plan for a platform given only a machine image id (no stream).
pub fn plan_machine_image(image: &MachineImage) -> BootImagePlan {
    let (field, first) = match image {
        MachineImage::AwsAmi(id) => (
            format!("platform.aws.defaultMachinePlatform.amiID: {id}"),
            format!("aws machines (bootstrap, control plane, compute): AMI {id}"),
        ),
        MachineImage::GcpImage { project, name } => (
            format!("platform.gcp.defaultMachinePlatform.osImage: {project}/{name}"),
            format!("gcp machines: image {project}/{name}"),
        ),
    };
    BootImagePlan {
        machine_image: Some(image.clone()),
        notes: vec![format!(
            "{field}: every pool without its own image boots it; the MCO's boot image management skips MachineSets with an image it does not know, so it stays"
        )],
        first_boot: first,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in BootPlatform::ALL {
            assert_eq!(p.key().parse::<BootPlatform>().unwrap(), p);
        }
        let e = "powervs".parse::<BootPlatform>().unwrap_err().to_string();
        assert!(e.contains("'powervs'") && e.contains("openstack"), "{e}");
        assert_eq!(stream_arch_for("arm64"), Some("aarch64"));
        assert_eq!(stream_arch_for("x86_64"), None);
    }

    #[test]
    fn machine_image_ids() {
        for (s, ok) in [
            ("ami-0123456789abcdef0", true),
            ("ami-01234567", true),
            ("ami-XYZ", false),
            ("0123456789abcdef0", false),
        ] {
            assert_eq!(MachineImage::aws(s).is_ok(), ok, "{s}");
        }
        for (s, ok) in [
            ("my-project/rhcos-layered", true),
            ("my-project/Rhcos", false),
            ("rhcos-layered", false),
            ("p/x", false),
        ] {
            assert_eq!(MachineImage::gcp(s).is_ok(), ok, "{s}");
        }
    }

    #[test]
    fn decompression_names() {
        assert_eq!(
            decompress_command("a.vmdk.gz"),
            ("gunzip -k a.vmdk.gz".into(), "a.vmdk".into())
        );
        assert_eq!(
            decompress_command("a.vhd.xz"),
            ("xz -dk a.vhd.xz".into(), "a.vhd".into())
        );
    }
}
