#!/usr/bin/env bash
# The root filesystem of layerboot's container image base: Debian 12 (minbase) with every
# tool `layerboot disk` runs, made with debootstrap from the Debian mirror, so the image
# is built without pulling anything from a container registry.
#
# usage: containers/base-rootfs.sh ROOTFS   (as root; ROOTFS must not exist yet)
# env:   DEBIAN_MIRROR (default: the first deb URI apt is configured with)
set -euo pipefail

rootfs=$1
mirror=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\([^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)}
mirror=${mirror:-$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null)}
mirror=${mirror:-http://deb.debian.org/debian}

# What `layerboot disk` runs: skopeo (ostree-ext reads images through its proxy), the
# mkfs tools, mtools and GRUB for the ESP and BIOS boot, qemu-img for every format but raw,
# util-linux (mount, losetup, blkid, nsenter), setfiles for images with an SELinux policy,
# tar for GCP tarballs; squashfs-tools, xorriso and isolinux for the live ISO and PXE set;
# CA certificates for registries.
packages=(
  skopeo ostree qemu-utils e2fsprogs xfsprogs dosfstools mtools grub-common
  grub-efi-amd64-bin grub-pc-bin util-linux mount policycoreutils tar gzip xz-utils
  squashfs-tools xorriso isolinux syslinux-common ca-certificates
)

# debootstrap's --include cannot order these packages' configuration: apt in the new root
# does it. A private mount namespace scopes /proc to this step.
debootstrap --variant=minbase bookworm "$rootfs" "$mirror"
unshare --mount --fork sh -euc '
  mount -t proc proc "$1/proc"
  shift
  chroot "$@"
' sh "$rootfs" "$rootfs" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${packages[@]}"
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
