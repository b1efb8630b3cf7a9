#!/usr/bin/env bash
# layerboot demo, end to end on one machine (README, first command).
#
# The bundled example is a small but genuine ostree-native layered image: an
# `ostree commit --bootable` tree encapsulated by ostree-ext, plus one derived layer
# (what `FROM <base> RUN … ` gives). The demo serves it from a private loopback
# registry with its own CA, then runs layerboot on it the way a cluster admin would.
#
# One shell function per step; each later capability adds its step function and
# appends it to `steps` below. Steps share: $WORK, $LB, $IMAGE (tagged), $PINNED
# (digest pull spec), $REGISTRY_FLAGS, and `note` for the final summary.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${LAYERBOOT_DEMO_DIR:-$(mktemp -d /var/tmp/layerboot-demo.XXXXXX)}
mkdir -p "$WORK"
LB=$PWD/target/release/layerboot
TK=$PWD/target/release/layerboot-testkit
SUMMARY=()
REGISTRY_PID=

note() { SUMMARY+=("$*"); }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
  if [[ -n $REGISTRY_PID ]]; then
    kill "$REGISTRY_PID" 2>/dev/null || true
    wait "$REGISTRY_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

step_build_tools() {
  say "building layerboot"
  cargo build --release --bins --quiet
}

step_build_image() {
  say "building the example layered image (ostree commit --bootable + ostree-ext encapsulate + a derived layer)"
  rm -rf "$WORK/example-image"
  "$TK" build-tiny-image --kind layered --to "$WORK/example-image"
  note "example image: OCI layout $WORK/example-image"
}

step_serve_registry() {
  say "serving it from a private TLS registry on loopback (docker-registry, own CA)"
  rm -f "$WORK/registry.env"
  "$TK" serve-registry --mode tls --push "$WORK/example-image=acme/rhcos-layered:4.16" --info-file "$WORK/registry.env" 2>"$WORK/registry.log" &
  REGISTRY_PID=$!
  for _ in $(seq 300); do
    [[ -s $WORK/registry.env ]] && break
    kill -0 "$REGISTRY_PID" 2>/dev/null || { cat "$WORK/registry.log" >&2; return 1; }
    sleep 0.1
  done
  # shellcheck disable=SC1091
  . "$WORK/registry.env"
  IMAGE="$ADDR/acme/rhcos-layered:4.16"
  REGISTRY_FLAGS=(--ca-file "$CA_FILE")
  echo "registry at $ADDR, CA $CA_FILE, image $IMAGE"
}

step_inspect() {
  say "layerboot inspect $IMAGE"
  "$LB" inspect "$IMAGE" "${REGISTRY_FLAGS[@]}"
  "$LB" inspect "$IMAGE" "${REGISTRY_FLAGS[@]}" --json >"$WORK/inspect.json"
  PINNED=$(sed -n 's/^  "pullSpec": "\(.*\)",$/\1/p' "$WORK/inspect.json")
  [[ -n $PINNED ]] || { echo "no pull spec in inspect --json" >&2; return 1; }
  grep -q '"bootable": true' "$WORK/inspect.json" || { echo "example image not judged bootable" >&2; return 1; }
  note "inspect: bootable ostree-native, pinned as $PINNED (JSON: $WORK/inspect.json)"
}

step_pull() {
  say "layerboot pull $PINNED --to oci:$WORK/pulled:demo"
  rm -rf "$WORK/pulled"
  "$LB" pull "$PINNED" --to "oci:$WORK/pulled:demo" "${REGISTRY_FLAGS[@]}"
  say "again: every blob is already there"
  "$LB" pull "$PINNED" --to "oci:$WORK/pulled:demo" "${REGISTRY_FLAGS[@]}"
  "$LB" pull "$PINNED" --to "oci-archive:$WORK/pulled.tar:demo" "${REGISTRY_FLAGS[@]}" --quiet
  skopeo inspect "oci:$WORK/pulled:demo" >/dev/null
  skopeo inspect "oci-archive:$WORK/pulled.tar:demo" >/dev/null
  note "pull: verified OCI layout $WORK/pulled (tag demo) and archive $WORK/pulled.tar; skopeo reads both"
}

step_install_time() {
  say "install-time outputs for pools worker and worker-automount (MachineConfig method)"
  local d=$WORK/install
  rm -rf "$d" && mkdir -p "$d"
  "$LB" manifests "$IMAGE" --pool worker --pool worker-automount "${REGISTRY_FLAGS[@]}" >"$d/manifests.yaml"
  grep -q "osImageURL: ${PINNED}" "$d/manifests.yaml" || { echo "manifests not pinned to $PINNED" >&2; return 1; }
  cp examples/autofs/install-config.yaml "$d/install-config.yaml"
  "$LB" install-config "$IMAGE" --install-config "$d/install-config.yaml" --trust-bundle "$CA_FILE" "${REGISTRY_FLAGS[@]}"
  "$LB" ignition pointer --pool worker-automount --api-vip 192.0.2.5 --ca examples/autofs/root-ca.crt -o "$d/worker-automount.ign"
  ignition-validate "$d/worker-automount.ign"
  note "install-time: MachineConfigs + MachineConfigPool ($d/manifests.yaml, tag resolved to $PINNED), patched install-config ($d/install-config.yaml), pointer Ignition validated by ignition-validate ($d/worker-automount.ign)"
}

step_iso() {
  say "layerboot iso customize: a bare-metal live ISO that installs pool worker-automount with our metal image"
  local d=$WORK/iso url=https://images.example.com/debian-layered-metal.x86_64.raw.xz
  rm -rf "$d" && mkdir -p "$d"
  # A small live ISO with the CoreOS layout (Debian kernel; its guest prints what the ISO embeds).
  "$TK" build-live-iso --to "$d/live.iso" >/dev/null
  "$LB" iso customize "$d/live.iso" -o "$d/worker-automount.iso" \
    --pointer-pool worker-automount --api-vip 192.0.2.5 --ca examples/autofs/root-ca.crt \
    --dest-device /dev/sda --image-url "$url" --live-karg-append layerboot.demo=worker-automount
  "$LB" iso show "$d/worker-automount.iso"
  "$LB" boot-test "$d/worker-automount.iso" --firmware bios --timeout 600s \
    --expect 're:^LIVEISO-CMDLINE: .*layerboot\.demo=worker-automount' \
    --expect 'LIVEISO-INSTALLER-BEGIN /etc/coreos/installer.d/' --expect "image-url: $url" \
    --expect 'ignition-file: /etc/coreos/dest.ign' --expect 'dest-device: /dev/sda' --expect LIVEISO-DONE --fail-on 'Kernel panic' \
    --console-log "$d/console.log"
  note "iso: $d/worker-automount.iso embeds the pointer Ignition, /dev/sda and the metal image URL; booted under BIOS, the live system saw them"
}

step_disk() {
  say "layerboot disk: a first-boot qemu disk built from a bootable layered image, booted with boot-test"
  local d=$WORK/disk
  rm -rf "$d" && mkdir -p "$d"
  # The tiny image above has no real kernel; this example is a bootable Debian 12 ostree
  # image with Ignition and a derived layer that prints LAYERED-OK (examples/debian-layered).
  local example
  example=$("$TK" build-example-image --to "$d/example")
  skopeo copy -q --dest-cert-dir "$(dirname "$CA_FILE")" "$example" "docker://$ADDR/acme/debian-layered:12"
  "$LB" disk "$ADDR/acme/debian-layered:12" "${REGISTRY_FLAGS[@]}" --quiet -p qemu -o "$d/debian-layered-qemu.x86_64.qcow2.gz"
  gzip -dk "$d/debian-layered-qemu.x86_64.qcow2.gz"
  "$LB" boot-test "$d/debian-layered-qemu.x86_64.qcow2" --firmware uefi --timeout 900s \
    --expect "LAYERED-OK" --expect "LAYERED-DONE" --fail-on "Kernel panic" --fail-on "Entering emergency mode" \
    --console-log "$d/console.log"
  note "disk: $d/debian-layered-qemu.x86_64.qcow2.gz (stream metadata $d/stream.json) booted under UEFI to the derived layer's LAYERED-OK"
}

steps=(step_build_tools step_build_image step_serve_registry step_inspect step_pull step_install_time step_iso step_disk)

main() {
  for s in "${steps[@]}"; do
    "$s"
  done
  say "summary"
  printf '  - %s\n' "${SUMMARY[@]}"
  echo "  (everything is under $WORK)"
}

main "$@"
