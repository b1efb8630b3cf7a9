#!/usr/bin/env bash
# Benchmark: `layerboot disk -p live` (the live ISO and PXE set, with osmet data) against
# the metal build it starts from, measured in the same run on the same image: the shipped
# metal (raw.xz for this image) and metal uncompressed. Prints wall times, the ratio
# live/metal (target ≤ 1.5× the shipped metal) and peak RSS (/usr/bin/time -v). GROW=1
# adds the live build of the image plus a layer of GROW_MIB (default 1024) MiB of
# incompressible data, for peak RSS against image size. Needs root and the live-capable
# example image (built by `cargo test --test disk_live` if missing).
#
# usage: [LAYERBOOT_BIN=…] benches/live.sh [oci:DIR:TAG]
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z ${LAYERBOOT_BIN:-} ]]; then
  cargo build --release --quiet --bin layerboot --bin layerboot-deploy --bin layerboot-testkit
fi
LB=${LAYERBOOT_BIN:-$PWD/target/release/layerboot}
IMAGE=${1:-}
if [[ -z $IMAGE ]]; then
  layout=$(ls -dt /var/cache/layerboot-tests/debian-live-????????????????/oci 2>/dev/null | head -1 || true)
  [[ -n $layout ]] || { echo "no live example image: run 'cargo test --test disk_live' first" >&2; exit 1; }
  IMAGE=oci:$layout:live
fi
layout=${IMAGE#oci:}; tag=${layout##*:}; layout=${layout%:*}

WORK=$(mktemp -d /var/tmp/layerboot-bench-live.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/defs"
sed 's/^compression = .*/compression = "none"/' bootimages/metal.toml > "$WORK/defs/metal-none.toml"

measure() { # name, command… → prints "name wall_s rss_kib"
  local name=$1; shift
  sync
  /usr/bin/time -v -o "$WORK/$name.time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || { cat "$WORK/$name.err" >&2; exit 1; }
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/{n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$WORK/$name.time")
  rss=$(awk -F': ' '/Maximum resident set size/{print $2}' "$WORK/$name.time")
  echo "$name $wall $rss"
}

echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
mkdir -p "$WORK/metal" "$WORK/live" "$WORK/big"
m_ship=$(measure metal "$LB" disk "$IMAGE" -p metal --output-dir "$WORK/metal")
rm -rf "$WORK/metal"; mkdir "$WORK/metal"
m_none=$(measure metal-uncompressed "$LB" disk "$IMAGE" --bootimages "$WORK/defs" -p metal-none --output-dir "$WORK/metal")
rm -rf "$WORK/metal"
live=$(measure live "$LB" disk "$IMAGE" -p live --output-dir "$WORK/live")
iso_size=$(du -b "$WORK"/live/*.iso | cut -f1)
rm -rf "$WORK/live"

read -r _ ws _ <<<"$m_ship"
echo
printf '%-52s %9s %9s %12s\n' "" "wall (s)" "x metal" "peak RSS"
for r in "$m_ship" "$m_none" "$live"; do
  read -r n w rss <<<"$r"
  printf '%-52s %9.1f %9.2f %9d KiB\n' "layerboot disk -p $n" "$w" "$(awk -v a="$w" -v b="$ws" 'BEGIN{print a/b}')" "$rss"
done
printf '\nlive ISO: %s MiB\n' "$((iso_size >> 20))"

if [[ ${GROW:-0} == 1 ]]; then
  grow=${GROW_MIB:-1024}
  grown=$("${LB%/*}/layerboot-testkit" grow-image --layout "$layout" --from "$tag" --filler-mib "$grow" --to "$WORK/grown")
  big=$(measure "live+${grow}MiB" "$LB" disk "$grown" -p live --output-dir "$WORK/big")
  read -r _ lw lrss <<<"$live"
  read -r _ bw brss <<<"$big"
  printf 'peak RSS by image size (live): %s KiB -> %s KiB with %s MiB more (%.1f s -> %.1f s)\n' "$lrss" "$brss" "$grow" "$lw" "$bw"
fi
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
