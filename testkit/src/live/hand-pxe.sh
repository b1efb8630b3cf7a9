#!/usr/bin/env bash
# Live PXE artifacts made by hand from a metal disk of the live image (testkit's
# live_image()), the way `layerboot disk -p live` is to make them, and a PXE-style boot
# of them under QEMU (direct kernel boot, rootfs.img appended to the initrd) that waits
# for the image's `LAYERED-OK <marker>` on the serial console.
#
# usage: hand-pxe.sh [--ignition CONFIG.ign] [--no-boot] METAL.raw OUTDIR [MARKER]
#   as root; METAL.raw is uncompressed. Writes OUTDIR/{vmlinuz,initrd.img,rootfs.img},
#   OUTDIR/ignition.img with --ignition (a cpio.xz holding config.ign, as the live ISO's
#   images/ignition.img), and the guest's console in OUTDIR/serial.log.
#   env: LIVE_MEM (MiB, default 3072), LIVE_TIMEOUT (s, 900), LIVE_KARGS (more kargs).
#
# Contract (CoreOS's live artifacts):
#   rootfs.img  uncompressed newc cpio, root.squashfs first (squashfs at byte 124), then
#               etc/coreos-live-rootfs (version); root.squashfs = the metal root
#               filesystem with the boot partition at /boot and the ESP at /boot/efi.
#   initrd.img  the deployment's initramfs.img + (4-byte aligned) gzip newc cpio with
#               etc/coreos-live-initramfs (same version), etc/coreos/features.json,
#               etc/coreos-live-want-rootfs (stream hash of rootfs.img).
#   vmlinuz     the deployment's kernel.
# The QEMU guest runs under the machine-wide lock /tmp/layerboot-full-os-boot.lock.
set -euo pipefail

ign=
boot=1
while [ $# -gt 0 ]; do
    case "$1" in
        --ignition) ign=$(realpath "$2"); shift 2 ;;
        --no-boot) boot=0; shift ;;
        *) break ;;
    esac
done
[ $# -ge 2 ] || { sed -n '7,11p' "$0" >&2; exit 2; }
disk=$(realpath "$1")
out=$(realpath -m "$2")
marker=${3:-}
mem=${LIVE_MEM:-3072}
timeout=${LIVE_TIMEOUT:-900}

for t in sfdisk losetup mcopy mksquashfs cpio gzip xz python3 qemu-system-x86_64 flock; do
    command -v "$t" >/dev/null || { echo "hand-pxe: $t is missing" >&2; exit 1; }
done
mkdir -p "$out"
work=$(mktemp -d /var/tmp/hand-pxe.XXXXXX)
loops=()
mounts=()
cleanup() {
    local i
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount "${mounts[i]}" || true; done
    for l in "${loops[@]}"; do losetup -d "$l" || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# Partition (by GPT name, as CoreOS names them) -> read-only loop device of it alone.
sector=$(sfdisk -J "$disk" | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"].get("sectorsize", 512))')
attach() {
    local span
    span=$(sfdisk -J "$disk" | python3 -c '
import json, sys
for p in json.load(sys.stdin)["partitiontable"]["partitions"]:
    if p.get("name") == sys.argv[1]:
        print(p["start"], p["size"]); break' "$1")
    [ -n "$span" ] || { echo "hand-pxe: no partition named $1 in $disk" >&2; exit 1; }
    set -- $span
    losetup -f --show -r -o $(($1 * sector)) --sizelimit $(($2 * sector)) "$disk"
}
mnt() { # mnt DEV DIR OPTS
    mount -o "$3" "$1" "$2"
    mounts+=("$2")
}

t0=$(date +%s)
root=$work/root
mkdir -p "$root"
dev=$(attach root); loops+=("$dev"); mnt "$dev" "$root" ro,nouuid,norecovery
dev=$(attach boot); loops+=("$dev"); mnt "$dev" "$root/boot" ro,noload
# The ESP's files are copied out with mtools (a host kernel may lack vfat) and bound there.
esp_span=$(sfdisk -J "$disk" | python3 -c '
import json, sys
for p in json.load(sys.stdin)["partitiontable"]["partitions"]:
    if p.get("name") == "EFI-SYSTEM":
        print(p["start"]); break')
mkdir -p "$work/esp"
if [ -n "$esp_span" ]; then
    mcopy -s -n -m -i "$disk@@$((esp_span * sector))" '::*' "$work/esp/"
fi
mount --bind "$work/esp" "$root/boot/efi"; mounts+=("$root/boot/efi")

version=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$root/.aleph-version.json")
deploy=$(echo "$root"/ostree/deploy/*/deploy/*.0)
[ -d "$deploy" ] || { echo "hand-pxe: no deployment in the metal root" >&2; exit 1; }
kdir=$(echo "$deploy"/usr/lib/modules/*)
cp "$kdir/vmlinuz" "$out/vmlinuz"

# rootfs.img: root.squashfs must be the first member.
mksquashfs "$root" "$work/root.squashfs" -comp zstd -noappend -no-progress -quiet
mkdir -p "$work/rootfs/etc"
mv "$work/root.squashfs" "$work/rootfs/root.squashfs"
printf '%s\n' "$version" > "$work/rootfs/etc/coreos-live-rootfs"
(cd "$work/rootfs" && printf '%s\n' root.squashfs etc etc/coreos-live-rootfs |
    cpio -o -H newc -R 0:0 --quiet) > "$out/rootfs.img"
magic=$(dd if="$out/rootfs.img" bs=1 skip=124 count=4 status=none)
[ "$magic" = hsqs ] || { echo "hand-pxe: no squashfs at byte 124 of rootfs.img" >&2; exit 1; }

# initrd.img: the image's initramfs + the live stamp archive.
stamp=$work/stamp
mkdir -p "$stamp/etc/coreos"
printf '%s\n' "$version" > "$stamp/etc/coreos-live-initramfs"
python3 - "$root/ostree/deploy" "$stamp/etc/coreos/features.json" <<'PY'
import glob, json, sys
cfg = glob.glob(sys.argv[1] + "/*/deploy/*.0/usr/share/coreos-installer/example-config.yaml")
keys = []
if cfg:
    for line in open(cfg[0]):
        if line[:1].isalpha() and ":" in line:
            keys.append(line.split(":", 1)[0])
features = {"installer-config": True, "live-initrd-network": True,
            "installer-config-directives": {k: True for k in keys}}
open(sys.argv[2], "w").write(json.dumps(features, indent=2, sort_keys=True) + "\n")
PY
python3 - "$out/rootfs.img" "$stamp/etc/coreos-live-want-rootfs" <<'PY'
import hashlib, sys
chunk = 1 << 20
lines = [f"stream-hash sha256 {chunk}"]
with open(sys.argv[1], "rb") as f:
    while True:
        b = f.read(chunk)
        if not b:
            break
        lines.append(hashlib.sha256(b).hexdigest())
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
PY
cp "$kdir/initramfs.img" "$out/initrd.img"
pad=$(( (4 - $(stat -c %s "$out/initrd.img") % 4) % 4 ))
head -c "$pad" /dev/zero >> "$out/initrd.img"
(cd "$stamp" && printf '%s\n' etc etc/coreos etc/coreos-live-initramfs etc/coreos/features.json etc/coreos-live-want-rootfs |
    cpio -o -H newc -R 0:0 --quiet | gzip -9) >> "$out/initrd.img"

if [ -n "$ign" ]; then
    mkdir -p "$work/ign"
    cp "$ign" "$work/ign/config.ign"
    (cd "$work/ign" && echo config.ign | cpio -o -H newc -R 0:0 --quiet |
        xz --check=crc32 --lzma2=dict=1MiB) > "$out/ignition.img"
fi
# Done with the disk.
for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount "${mounts[i]}"; done
mounts=()
for l in "${loops[@]}"; do losetup -d "$l"; done
loops=()
t1=$(date +%s)
echo "hand-pxe: artifacts in $out (version $version) in $((t1 - t0)) s:"
ls -l "$out"/vmlinuz "$out"/initrd.img "$out"/rootfs.img ${ign:+"$out"/ignition.img}

[ "$boot" = 1 ] || exit 0

# One initrd for QEMU: initrd.img, rootfs.img (and ignition.img), each at a 4-byte boundary.
combined=$work/combined.img
: > "$combined"
for f in "$out/initrd.img" "$out/rootfs.img" ${ign:+"$out/ignition.img"}; do
    cat "$f" >> "$combined"
    pad=$(( (4 - $(stat -c %s "$combined") % 4) % 4 ))
    head -c "$pad" /dev/zero >> "$combined"
done
kargs="console=ttyS0,115200n8 ignition.firstboot ignition.platform.id=metal ${LIVE_KARGS:-}"
echo "hand-pxe: booting (-m $mem, kargs: $kargs), console in $out/serial.log"
: > "$out/serial.log"
exec 9>/tmp/layerboot-full-os-boot.lock
flock 9
t2=$(date +%s)
qemu-system-x86_64 -machine q35 -accel tcg -smp 2 -m "$mem" -display none -monitor none \
    -nic none -serial "file:$out/serial.log" -no-reboot \
    -kernel "$out/vmlinuz" -initrd "$combined" -append "$kargs" &
qpid=$!
result=timeout
while [ $(($(date +%s) - t2)) -lt "$timeout" ]; do
    if ! kill -0 "$qpid" 2>/dev/null; then result=exited; break; fi
    if grep -aq 'LAYERED-DONE' "$out/serial.log"; then result=done; break; fi
    if grep -aqE 'Entering emergency mode|Kernel panic' "$out/serial.log"; then result=failed; sleep 5; break; fi
    sleep 2
done
kill "$qpid" 2>/dev/null || true
wait "$qpid" 2>/dev/null || true
flock -u 9
t3=$(date +%s)
grep -a 'LAYERED-' "$out/serial.log" || true
echo "hand-pxe: boot $result after $((t3 - t2)) s"
if [ "$result" != done ]; then exit 1; fi
if [ -n "$marker" ] && ! grep -aq "LAYERED-OK $marker\b" "$out/serial.log"; then
    echo "hand-pxe: LAYERED-OK $marker not seen" >&2
    exit 1
fi
