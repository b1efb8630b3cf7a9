//! Wrapping a converted disk the way a platform imports it (coreos-assembler's
//! per-platform builds): GCE's tarball, VMware's OVA, KubeVirt's container disk.
//! The OVF descriptor is a pure function of its parameters; the writers are thin.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::bootimage::{Definition, Package};
use crate::cancel::Cancel;
use crate::disk::coreos::CoreosImage;
use crate::oci::layout::OciLayout;
use crate::oci::manifest::{
    Descriptor, ImageConfig, ImageManifest, RootFs, RuntimeConfig, OCI_CONFIG, OCI_MANIFEST,
};
use crate::oci::reference::Digest;

/// What the OVA's descriptor says of the virtual machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmwareSettings {
    /// `vmx-<N>`: the oldest VMware release the VM must run on decides it.
    pub hw_version: u32,
    /// vSphere's guest OS identifier, e.g. `rhel9_64Guest`, `fedora64Guest`.
    pub os_type: String,
    pub secure_boot: bool,
}

pub struct Inputs<'a> {
    /// The converted disk (raw for GCE, vmdk for the OVA, qcow2 for the container disk).
    pub disk: &'a Path,
    /// Its name inside the package where the platform lets us choose (the container
    /// disk's `/disk/<name>`).
    pub disk_name: &'a str,
    /// The disk's virtual size in bytes (the OVF's capacity).
    pub capacity: u64,
    pub version: &'a str,
    pub product: &'a str,
    pub vmware: VmwareSettings,
}

/// The hardware version and guest type: the image's `image.json` (`vmware-hw-version`,
/// `vmware-os-type`, `vmware-secure-boot`, as coreos-assembler reads them), else the
/// definition's, else vmx-17 (what Fedora CoreOS picks: the newest the oldest supported
/// ESXi runs) and a generic 64-bit Linux guest.
pub fn vmware_settings(def: &Definition, coreos: Option<&CoreosImage>) -> VmwareSettings {
    let image = coreos.and_then(|c| c.image.as_ref()).map(|i| &i.other);
    let from_image = |key: &str| image.and_then(|o| o.get(key));
    VmwareSettings {
        hw_version: from_image("vmware-hw-version")
            .and_then(|v| v.as_u64())
            .and_then(|v| u32::try_from(v).ok())
            .or(def.vmware_hw_version)
            .unwrap_or(17),
        os_type: from_image("vmware-os-type")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .or_else(|| def.vmware_os_type.clone())
            .unwrap_or_else(|| "other5xLinux64Guest".into()),
        secure_boot: from_image("vmware-secure-boot")
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
    }
}

/// Write `inputs.disk` wrapped as `package` to `dest`.
pub fn write(package: Package, inputs: &Inputs, dest: &Path, cancel: &Cancel) -> Result<()> {
    match package {
        Package::None => unreachable!("nothing to package"),
        Package::Live => unreachable!("live artifacts are published by disk::live"),
        Package::GceTar => gce_tar(inputs.disk, dest),
        Package::Ova => ova(inputs, dest),
        Package::ContainerDisk => container_disk(inputs, dest, cancel),
    }
}

/// GCE takes a gzip'd tar holding exactly `disk.raw`, in GNU format; sparse, so the
/// unallocated GiBs cost nothing (coreos-assembler: `tar --format=oldgnu -S`).
fn gce_tar(raw: &Path, dest: &Path) -> Result<()> {
    let dir = dest.with_extension("d");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let member = dir.join("disk.raw");
    fs::hard_link(raw, &member)
        .with_context(|| format!("linking {} to {}", raw.display(), member.display()))?;
    let mut c = Command::new("tar");
    c.args([
        "--format=oldgnu",
        "--sparse",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "--mtime=@0",
        "-c",
        "-f",
    ])
    .arg(dest)
    .arg("-C")
    .arg(&dir)
    .arg("disk.raw");
    crate::cmd::run(&mut c)?;
    fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(())
}

/// The OVA: a ustar tar (OVF requires it), the descriptor first, then the disk it names.
fn ova(inputs: &Inputs, dest: &Path) -> Result<()> {
    let vmdk_size = fs::metadata(inputs.disk)
        .with_context(|| format!("reading {}", inputs.disk.display()))?
        .len();
    let ovf = ovf_descriptor(&OvfParams {
        vmdk_file: OVA_DISK,
        vmdk_size,
        capacity: inputs.capacity,
        name: inputs.product,
        version: inputs.version,
        vmware: &inputs.vmware,
    });
    let out = File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, out));
    let mut header = ustar_header(ovf.len() as u64);
    tar.append_data(&mut header, OVA_DESCRIPTOR, ovf.as_bytes())
        .with_context(|| format!("writing {}", dest.display()))?;
    let disk =
        File::open(inputs.disk).with_context(|| format!("opening {}", inputs.disk.display()))?;
    let mut header = ustar_header(vmdk_size);
    tar.append_data(&mut header, OVA_DISK, disk)
        .with_context(|| format!("writing {}", dest.display()))?;
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .with_context(|| format!("writing {}", dest.display()))?;
    Ok(())
}

pub const OVA_DESCRIPTOR: &str = "coreos.ovf";
pub const OVA_DISK: &str = "disk.vmdk";

fn ustar_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

pub struct OvfParams<'a> {
    pub vmdk_file: &'a str,
    pub vmdk_size: u64,
    pub capacity: u64,
    pub name: &'a str,
    pub version: &'a str,
    pub vmware: &'a VmwareSettings,
}

fn xml_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// The OVF 1.x descriptor (DMTF DSP0243) for a UEFI VM with one streamOptimized disk on an
/// LSI Logic SCSI controller and a vmxnet3 NIC, 2 vCPUs and 4 GiB, with the two
/// `guestinfo.ignition.config.data*` properties Ignition's VMware provider reads. Pure.
pub fn ovf_descriptor(p: &OvfParams) -> String {
    let name = xml_escape(p.name);
    let version = xml_escape(p.version);
    let os_type = xml_escape(&p.vmware.os_type);
    let hw = p.vmware.hw_version;
    let secure_boot = p.vmware.secure_boot;
    let (vmdk, vmdk_size, capacity) = (xml_escape(p.vmdk_file), p.vmdk_size, p.capacity);
    // Items are numbered by InstanceID; the disk's Parent is the SCSI controller's id.
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
          xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
          xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
          xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
          xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>
    <File ovf:id="disk-file" ovf:href="{vmdk}" ovf:size="{vmdk_size}"/>
  </References>
  <DiskSection>
    <Info>Disks</Info>
    <Disk ovf:diskId="root-disk" ovf:fileRef="disk-file" ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte" ovf:populatedSize="{vmdk_size}" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>Networks</Info>
    <Network ovf:name="VM Network">
      <Description>The network the VM is attached to</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{name}">
    <Info>{name} {version}</Info>
    <Name>{name}</Name>
    <OperatingSystemSection ovf:id="100" vmw:osType="{os_type}">
      <Info>Guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection ovf:transport="com.vmware.guestInfo">
      <Info>Virtual hardware</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-{hw}</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:ElementName>2 virtual CPUs</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>4096 MiB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>4096</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:ElementName>SCSI controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/root-disk</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
      <vmw:Config ovf:required="false" vmw:key="bootOptions.efiSecureBootEnabled" vmw:value="{secure_boot}"/>
    </VirtualHardwareSection>
    <ProductSection>
      <Info>Software</Info>
      <Product>{name}</Product>
      <Version>{version}</Version>
      <Property ovf:key="guestinfo.ignition.config.data" ovf:type="string" ovf:userConfigurable="true" ovf:value="">
        <Label>Ignition config data</Label>
        <Description>The Ignition config, inline</Description>
      </Property>
      <Property ovf:key="guestinfo.ignition.config.data.encoding" ovf:type="string" ovf:userConfigurable="true" ovf:value="">
        <Label>Ignition config data encoding</Label>
        <Description>base64, gzip+base64, or empty for plain text</Description>
      </Property>
    </ProductSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

/// KubeVirt's uid for the qemu process, which must be able to read the disk.
const KUBEVIRT_QEMU_ID: u64 = 107;

/// The container disk: an OCI archive of one image whose single layer holds the qcow2 at
/// `/disk/<name>`, where KubeVirt's containerDisk looks (coreos-assembler
/// platform.kubevirt.ipp.yaml).
fn container_disk(inputs: &Inputs, dest: &Path, cancel: &Cancel) -> Result<()> {
    let work = dest.with_extension("d");
    let layout = OciLayout::create(&work.join("layout"))?;
    let layer_path = work.join("layer.tar");
    {
        let out = File::create(&layer_path)
            .with_context(|| format!("creating {}", layer_path.display()))?;
        let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, out));
        let mut dir = tar::Header::new_ustar();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        dir.set_mtime(0);
        tar.append_data(&mut dir, "disk/", std::io::empty())?;
        let size = fs::metadata(inputs.disk)
            .with_context(|| format!("reading {}", inputs.disk.display()))?
            .len();
        let mut file = tar::Header::new_ustar();
        file.set_entry_type(tar::EntryType::Regular);
        file.set_mode(0o440);
        file.set_uid(KUBEVIRT_QEMU_ID);
        file.set_gid(KUBEVIRT_QEMU_ID);
        file.set_size(size);
        file.set_mtime(0);
        let disk = File::open(inputs.disk)
            .with_context(|| format!("opening {}", inputs.disk.display()))?;
        tar.append_data(&mut file, format!("disk/{}", inputs.disk_name), disk)
            .with_context(|| format!("writing {}", layer_path.display()))?;
        tar.into_inner()
            .and_then(|mut w| w.flush())
            .with_context(|| format!("writing {}", layer_path.display()))?;
    }
    cancel.check()?;
    let (hex, size) = crate::io::sha256_file(&layer_path)?;
    let digest = Digest::from_sha256_hex(&hex).expect("sha256 hex");
    let layer = Descriptor::new("application/vnd.oci.image.layer.v1.tar", digest, size);
    let blob = layout.blob_path(&layer.digest);
    fs::create_dir_all(blob.parent().expect("blob has a parent"))?;
    fs::rename(&layer_path, &blob)
        .with_context(|| format!("moving {} to {}", layer_path.display(), blob.display()))?;
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: Some(RuntimeConfig {
            labels: Some([("version".to_string(), inputs.version.to_string())].into()),
        }),
        rootfs: Some(RootFs {
            kind: "layers".into(),
            diff_ids: vec![layer.digest.to_string()],
        }),
        ..Default::default()
    };
    let config = layout.write_blob(OCI_CONFIG, &serde_json::to_vec(&config)?)?;
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        config,
        layers: vec![layer],
        annotations: None,
    };
    let manifest = layout.write_blob(OCI_MANIFEST, &serde_json::to_vec(&manifest)?)?;
    layout.set_ref(None, &manifest)?;
    crate::oci::layout::write_archive(&layout, dest, cancel)?;
    fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(vmware: &VmwareSettings) -> OvfParams<'_> {
        OvfParams {
            vmdk_file: OVA_DISK,
            vmdk_size: 123_456,
            capacity: 2 << 30,
            name: "rhcos <layered> & co",
            version: "9.6.2025",
            vmware,
        }
    }

    #[test]
    fn ovf_names_the_disk_its_sizes_and_the_machine() {
        let vmware = VmwareSettings {
            hw_version: 15,
            os_type: "rhel9_64Guest".into(),
            secure_boot: true,
        };
        let ovf = ovf_descriptor(&params(&vmware));
        for want in [
            r#"ovf:href="disk.vmdk" ovf:size="123456""#,
            r#"ovf:capacity="2147483648""#,
            "vmdk.html#streamOptimized",
            "<vssd:VirtualSystemType>vmx-15</vssd:VirtualSystemType>",
            r#"vmw:osType="rhel9_64Guest""#,
            r#"vmw:key="firmware" vmw:value="efi""#,
            r#"vmw:key="bootOptions.efiSecureBootEnabled" vmw:value="true""#,
            "guestinfo.ignition.config.data.encoding",
            "rhcos &lt;layered&gt; &amp; co",
        ] {
            assert!(ovf.contains(want), "{want} missing from\n{ovf}");
        }
        assert!(!ovf.contains("<layered>"), "names are escaped");
    }

    #[test]
    fn vmware_settings_prefer_the_image() {
        let def = crate::bootimage::Catalog::shipped()
            .unwrap()
            .get("qemu")
            .unwrap()
            .clone();
        let plain = vmware_settings(&def, None);
        assert_eq!(
            plain,
            VmwareSettings {
                hw_version: 17,
                os_type: "other5xLinux64Guest".into(),
                secure_boot: false
            }
        );
        let image = crate::disk::coreos::parse_image_json(
            br#"{"vmware-hw-version": 13, "vmware-os-type": "rhel8_64Guest", "vmware-secure-boot": true}"#,
        )
        .unwrap();
        let coreos = CoreosImage {
            platforms_json: b"{}".to_vec(),
            platforms: Default::default(),
            image: Some(image),
            osname: None,
        };
        let mut def = def;
        def.vmware_os_type = Some("fedora64Guest".into());
        assert_eq!(
            vmware_settings(&def, Some(&coreos)),
            VmwareSettings {
                hw_version: 13,
                os_type: "rhel8_64Guest".into(),
                secure_boot: true
            }
        );
        assert_eq!(vmware_settings(&def, None).os_type, "fedora64Guest");
    }
}
