#!/usr/bin/env bash
# Step 2 of the example layered image: configure the root filesystem from packages.sh as a
# CoreOS-like system (Ignition, first-boot handling), build its initramfs, convert it to
# the ostree layout and commit it bootable. The derived layer (./layer/) is added on top
# by layerboot's testkit, the way `RUN … && ostree container commit` would.
#
# usage: build-base.sh ROOTFS REPO   (as root; ROOTFS is consumed, REPO is created)
set -euo pipefail

rootfs=$(realpath "$1")
repo=$(realpath -m "$2")

kver=$(basename "$(ls -d "$rootfs"/lib/modules/*)")

# Ignition's Debian build relabels files after writing them; without SELinux the
# relabel has to succeed as a no-op.
mkdir -p "$rootfs/etc/selinux"
printf 'SELINUX=disabled\nSELINUXTYPE=targeted\n' > "$rootfs/etc/selinux/config"
if [ ! -e "$rootfs/usr/sbin/setfiles" ]; then
  printf '#!/bin/sh\nexit 0\n' > "$rootfs/usr/sbin/setfiles"
  chmod 0755 "$rootfs/usr/sbin/setfiles"
fi

# Ignition runs before the real root's /var exists; CoreOS bind-mounts the stateroot's
# /var onto /sysroot/var so files Ignition writes under /var land in the right place.
mkdir -p "$rootfs/usr/lib/dracut/modules.d/50layerboot-var"
cat > "$rootfs/usr/lib/dracut/modules.d/50layerboot-var/module-setup.sh" <<'MOD'
#!/bin/bash
check() { return 0; }
depends() { echo ostree systemd; }
install() {
    inst_simple "$moddir/layerboot-sysroot-var.service" "$systemdsystemunitdir/layerboot-sysroot-var.service"
    inst_script "$moddir/layerboot-sysroot-var.sh" /usr/sbin/layerboot-sysroot-var
    inst_multiple mount umount grep cat
    mkdir -p "$initdir/$systemdsystemunitdir/initrd-root-fs.target.requires"
    ln_r "$systemdsystemunitdir/layerboot-sysroot-var.service" "$systemdsystemunitdir/initrd-root-fs.target.requires/layerboot-sysroot-var.service"
}
MOD
cat > "$rootfs/usr/lib/dracut/modules.d/50layerboot-var/layerboot-sysroot-var.service" <<'UNIT'
[Unit]
Description=Mount the stateroot's /var at /sysroot/var (for Ignition)
DefaultDependencies=no
ConditionKernelCommandLine=ostree
After=ostree-prepare-root.service
Requires=ostree-prepare-root.service
Before=initrd-root-fs.target ignition-mount.service ignition-files.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/layerboot-sysroot-var mount
ExecStop=/usr/sbin/layerboot-sysroot-var umount
UNIT
cat > "$rootfs/usr/lib/dracut/modules.d/50layerboot-var/layerboot-sysroot-var.sh" <<'SH'
#!/bin/sh
# /sysroot is the deployment (ostree-prepare-root moved it there); its stateroot's var
# is /sysroot/sysroot/ostree/deploy/<stateroot>/var, found from the ostree= karg.
set -eu
case "$1" in
  mount)
    grep -q ' /sysroot/var ' /proc/self/mounts && exit 0
    for arg in $(cat /proc/cmdline); do
      case "$arg" in ostree=*) target=${arg#ostree=} ;; esac
    done
    # ostree=/ostree/boot.N/<stateroot>/<checksum>/<serial>
    stateroot=${target#/ostree/boot.*/}
    stateroot=${stateroot%%/*}
    var=/sysroot/sysroot/ostree/deploy/$stateroot/var
    [ -d "$var" ] || { echo "layerboot-sysroot-var: no $var" >&2; exit 1; }
    mount --bind "$var" /sysroot/var ;;
  umount)
    ! grep -q ' /sysroot/var ' /proc/self/mounts || umount /sysroot/var ;;
esac
SH
chmod 0755 "$rootfs/usr/lib/dracut/modules.d/50layerboot-var/"*.sh

# After a first boot with Ignition, remove the stamp so the bootloader stops adding
# ignition.firstboot (CoreOS does the same from its initramfs).
cat > "$rootfs/etc/systemd/system/layerboot-firstboot-complete.service" <<'UNIT'
[Unit]
Description=Mark the Ignition first boot as done
ConditionKernelCommandLine=ignition.firstboot
ConditionPathExists=/boot/ignition.firstboot
RequiresMountsFor=/boot
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/rm -f /boot/ignition.firstboot
[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/layerboot-firstboot-complete.service \
  "$rootfs/etc/systemd/system/multi-user.target.wants/layerboot-firstboot-complete.service"

# Serial console login for debugging, and a root that works without a password prompt
# on a test VM is not wanted: keep root locked.
printf 'LABEL=boot /boot ext4 defaults 1 2\n' > "$rootfs/etc/fstab"
echo debian-layered > "$rootfs/etc/hostname"

# The initramfs: generic (no host-only), with the ostree module (enabled by ostree-boot's
# /etc/dracut.conf.d snippet, so this runs before /etc moves) and Ignition.
chroot "$rootfs" dracut --no-hostonly --force --kver "$kver" \
  --add "ostree ignition layerboot-var" --add-drivers "virtio_blk virtio_scsi virtio_pci xfs ext4 vfat nvme ahci sd_mod" \
  "/usr/lib/modules/$kver/initramfs.img"
cp "$rootfs/boot/vmlinuz-$kver" "$rootfs/usr/lib/modules/$kver/vmlinuz"

# Enabled units are preset on first boot, as on CoreOS.
echo uninitialized > "$rootfs/etc/machine-id"

# The ostree layout: /etc is the default config in /usr/etc, /var starts empty and is
# populated by tmpfiles, mutable top-level dirs are symlinks into /var.
cd "$rootfs"
rm -rf boot/* var/* dev/* proc/* sys/* run/* tmp/*
mv etc usr/etc
for d in home opt srv mnt; do rm -rf "$d"; ln -s "var/$d" "$d"; done
rm -rf root; ln -s var/roothome root
rm -rf media; ln -s run/media media
rm -rf usr/local; ln -s ../var/usrlocal usr/local
mkdir -p sysroot; rm -rf ostree; ln -s sysroot/ostree ostree
cat > usr/lib/tmpfiles.d/layerboot-ostree-var.conf <<'TMP'
d /var/home 0755 root root -
d /var/opt 0755 root root -
d /var/srv 0755 root root -
d /var/mnt 0755 root root -
d /var/roothome 0700 root root -
d /var/usrlocal 0755 root root -
d /var/usrlocal/bin 0755 root root -
d /run/media 0755 root root -
TMP
cd /

ostree --repo="$repo" init --mode=bare
ostree --repo="$repo" commit --bootable --branch=debian-layered/base \
  --add-metadata-string=version=12.0.$(date -u +%Y%m%d) --tree=dir="$rootfs" \
  --no-xattrs >/dev/null
ostree --repo="$repo" rev-parse debian-layered/base
