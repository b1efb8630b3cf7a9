#!/usr/bin/env bash
# Step 1 of the example layered image: a minimal Debian 12 root filesystem with everything
# the image needs installed (build-base.sh then configures it and commits it to ostree).
# Kept separate so that changing the configuration does not download packages again.
#
# usage: packages.sh ROOTFS   (as root; ROOTFS must not exist yet)
# env:   DEBIAN_MIRROR (default: the first deb URI apt is configured with)
set -euo pipefail

rootfs=$1
mirror=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\([^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)}
mirror=${mirror:-$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null)}
mirror=${mirror:-http://deb.debian.org/debian}

# Everything the image needs to boot as a CoreOS-like system: kernel, systemd, the
# ostree initramfs module (ostree-boot) inside a dracut initramfs, and Ignition with what
# its dracut module pulls in (network module, curl, dbus). The image carries its own GRUB
# so that layerboot can install the bootloader from the image's files.
packages=(
  linux-image-amd64 systemd-sysv udev kmod dbus ostree-boot dracut dracut-network curl
  procps ignition e2fsprogs xfsprogs grub-common grub-efi-amd64-bin grub-pc-bin
)

debootstrap --variant=minbase bookworm "$rootfs" "$mirror"

# One apt call with INITRD=No: dracut satisfies the kernel's initramfs dependency (so
# initramfs-tools is never pulled in) and no initramfs is generated until we ask for one.
# A private mount namespace scopes /proc to this step: nothing stays mounted afterwards.
unshare --mount --fork sh -euc '
  mount -t proc proc "$1/proc"
  shift
  chroot "$@"
' sh "$rootfs" "$rootfs" env INITRD=No DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${packages[@]}"
chroot "$rootfs" apt-get clean

