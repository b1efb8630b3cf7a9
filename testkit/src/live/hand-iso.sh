#!/usr/bin/env bash
# A live ISO mastered by hand from hand-pxe.sh's artifacts, and a boot of it under QEMU
# (the ISO as a CD-ROM, BIOS via isolinux or UEFI via GRUB with --uefi) that waits for
# the image's `LAYERED-OK <marker>` on the serial console.
#
# usage: hand-iso.sh [--uefi] [--ignition CONFIG.ign] [--karg ARG]... PXEDIR [MARKER]
#   as root; PXEDIR holds vmlinuz, initrd.img and rootfs.img (hand-pxe.sh --no-boot).
#   Writes PXEDIR/live.iso and the console in PXEDIR/serial-iso-{bios,uefi}.log.
#
# The ISO has the layout of the repository's liveiso test fixture
# (qemu-tests/fixtures/liveiso/build.sh, used as it is): volume id LAYERBOOT-LIVE,
# images/pxeboot/{vmlinuz,initrd.img,rootfs.img}, images/ignition.img (256 KiB embed area,
# loaded as a second initrd), kargs `coreos.liveiso=LAYERBOOT-LIVE ignition.firstboot
# ignition.platform.id=metal … console=ttyS0,115200n8`. With --ignition the config is
# embedded with `coreos-installer iso ignition embed` (a cpio.xz holding config.ign);
# each --karg is added with `coreos-installer iso kargs modify -a` (e.g.
# coreos.liveiso.fromram).
# The guest runs under the machine-wide lock /tmp/layerboot-full-os-boot.lock.
set -euo pipefail

uefi=0
ign=
kargs=()
while [ $# -gt 0 ]; do
    case "$1" in
        --uefi) uefi=1; shift ;;
        --ignition) ign=$(realpath "$2"); shift 2 ;;
        --karg) kargs+=("$2"); shift 2 ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || { sed -n '6,8p' "$0" >&2; exit 2; }
dir=$(realpath "$1")
marker=${2:-}
mem=${LIVE_MEM:-2048}
timeout=${LIVE_TIMEOUT:-900}
here=$(cd "$(dirname "$0")" && pwd)
build=$here/../../../qemu-tests/fixtures/liveiso/build.sh
[ -f "$build" ] || { echo "hand-iso: $build not found" >&2; exit 1; }

iso=$dir/live.iso
rm -f "$iso"
t0=$(date +%s)
bash "$build" "$iso" "$dir/vmlinuz" "$dir/initrd.img" "$dir/rootfs.img"
installer=${LAYERBOOT_COREOS_INSTALLER:-$(command -v coreos-installer || echo /root/.cargo/bin/coreos-installer)}
if [ -n "$ign" ]; then
    "$installer" iso ignition embed -f -i "$ign" "$iso"
fi
for k in "${kargs[@]}"; do
    "$installer" iso kargs modify -a "$k" "$iso"
done
echo "hand-iso: $iso ($(stat -c %s "$iso") bytes) in $(($(date +%s) - t0)) s"

fw=()
if [ "$uefi" = 1 ]; then
    cp /usr/share/OVMF/OVMF_VARS.fd "$dir/OVMF_VARS.fd"
    fw=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd"
        -drive "if=pflash,format=raw,unit=1,file=$dir/OVMF_VARS.fd")
fi
log=$dir/serial-iso-$([ "$uefi" = 1 ] && echo uefi || echo bios).log
: > "$log"
exec 9>/tmp/layerboot-full-os-boot.lock
flock 9
t2=$(date +%s)
qemu-system-x86_64 -machine q35 -accel tcg -smp 2 -m "$mem" -display none -monitor none \
    -nic none -serial "file:$log" -no-reboot "${fw[@]}" \
    -drive "file=$iso,media=cdrom,if=none,id=cd0,readonly=on" -device ide-cd,drive=cd0,bootindex=0 &
qpid=$!
result=timeout
while [ $(($(date +%s) - t2)) -lt "$timeout" ]; do
    if ! kill -0 "$qpid" 2>/dev/null; then result=exited; break; fi
    if grep -aq 'LAYERED-DONE' "$log"; then result=done; break; fi
    if grep -aqE 'Entering emergency mode|Kernel panic' "$log"; then result=failed; sleep 5; break; fi
    sleep 2
done
kill "$qpid" 2>/dev/null || true
wait "$qpid" 2>/dev/null || true
flock -u 9
t3=$(date +%s)
grep -a 'LAYERED-' "$log" || true
echo "hand-iso: boot $result after $((t3 - t2)) s"
[ "$result" = done ] || exit 1
if [ -n "$marker" ] && ! grep -aq "LAYERED-OK $marker\b" "$log"; then
    echo "hand-iso: LAYERED-OK $marker not seen" >&2
    exit 1
fi
