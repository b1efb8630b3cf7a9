#!/usr/bin/env bash
# Benchmark: `layerboot disk` building the qemu image (qcow2.gz as shipped at gzip level 1,
# at level 6, and uncompressed; XZ=1 adds qcow2.xz preset 6) from an image already in a
# local OCI layout, against the floor of
# reading, decompressing and hashing every layer of that image once (gzip -dc | sha256sum),
# measured in the same run. Prints wall times, the ratio to the floor, and peak RSS
# (/usr/bin/time -v); QEMU=0 skips these. Then (METAL=0 skips it) the metal image: uncompressed, raw.xz
# (preset 6, as Fedora CoreOS ships it) and raw.gz (level 6, as RHCOS ships it), each
# whole build side by side with `xz -T0 -6`, `pigz -6` and `gzip -6` of the same raw
# alone, with the compressed/raw size ratio. Needs root (like `layerboot disk`), pigz and
# a release build.
#
# usage: [LAYERBOOT_BIN=…] benches/disk.sh [oci:DIR:TAG]   (default: the example layered image from the
#        test fixture cache, built by `cargo test --test disk_fixture` if missing)
set -euo pipefail
cd "$(dirname "$0")/.."

# LAYERBOOT_BIN overrides the binary (e.g. a debug build when a release build is too costly).
if [[ -z ${LAYERBOOT_BIN:-} ]]; then
  cargo build --release --quiet --bin layerboot --bin layerboot-deploy --bin layerboot-testkit
fi
LB=${LAYERBOOT_BIN:-$PWD/target/release/layerboot}
source benches/example-image.sh "${1:-}"
layout=${IMAGE#oci:}
tag=${layout##*:}
layout=${layout%:*}

WORK=$(mktemp -d /var/tmp/layerboot-bench-disk.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/defs"
grep -v '^compression' bootimages/qemu.toml | sed 's/^format = "qcow2"/format = "qcow2"\ncompression = "none"/' > "$WORK/defs/qemu-plain.toml"
sed 's/^compression-level = .*/compression-level = 6/' bootimages/qemu.toml > "$WORK/defs/qemu-gz6.toml"
grep -v '^compression' bootimages/qemu.toml | sed 's/^format = "qcow2"/format = "qcow2"\ncompression = "xz"/' > "$WORK/defs/qemu-xz.toml"
# metal with each compression fixed (the shipped one takes it from the image).
for c in none xz gzip; do
  sed "s/^compression = .*/compression = \"$c\"/" bootimages/metal.toml > "$WORK/defs/metal-$c.toml"
done

# Layers of the image, from its manifest.
manifest=$(python3 -c '
import json,sys
idx=json.load(open(sys.argv[1]+"/index.json"))
m=[d for d in idx["manifests"] if d.get("annotations",{}).get("org.opencontainers.image.ref.name")==sys.argv[2]][0]
print(m["digest"].split(":")[1])' "$layout" "$tag")
layers=$(python3 -c '
import json,sys
m=json.load(open(sys.argv[1]+"/blobs/sha256/"+sys.argv[2]))
print(" ".join(l["digest"].split(":")[1] for l in m["layers"]))' "$layout" "$manifest")

measure() { # name, command… → prints "name wall_s rss_kib"
  local name=$1; shift
  sync  # no run pays for the previous one's writeback
  /usr/bin/time -v -o "$WORK/$name.time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || { cat "$WORK/$name.err" >&2; exit 1; }
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/{n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$WORK/$name.time")
  rss=$(awk -F': ' '/Maximum resident set size/{print $2}' "$WORK/$name.time")
  echo "$name $wall $rss"
}

# Everything below reads the blobs from the page cache: warm it so the floor does not
# pay the disk reads the builds after it skip.
(cd "$layout/blobs/sha256" && cat $layers >/dev/null)
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
# QEMU=0 skips the qemu rows (to measure the metal ones alone).
if [[ ${QEMU:-1} == 1 ]]; then
floor=$(measure floor sh -c "cd '$layout/blobs/sha256' && for l in $layers; do gzip -dc \$l | sha256sum >/dev/null; done")
plain=$(measure qcow2 "$LB" disk "$IMAGE" --bootimages "$WORK/defs" -p qemu-plain -o "$WORK/plain.qcow2")
gz1=$(measure qcow2.gz "$LB" disk "$IMAGE" -p qemu -o "$WORK/disk.qcow2.gz")
gz6=$(measure qcow2.gz-level6 "$LB" disk "$IMAGE" --bootimages "$WORK/defs" -p qemu-gz6 -o "$WORK/disk6.qcow2.gz")
rows=("$plain" "$gz1" "$gz6")
if [[ ${XZ:-0} == 1 ]]; then
  rows+=("$(measure qcow2.xz "$LB" disk "$IMAGE" --bootimages "$WORK/defs" -p qemu-xz -o "$WORK/disk.qcow2.xz")")
fi

read -r _ fw frss <<<"$floor"
echo
printf '%-40s %9s %8s %12s\n' "" "wall (s)" "x floor" "peak RSS"
printf '%-40s %9.1f %8s %9d KiB\n' "floor: gzip -dc | sha256sum layers" "$fw" "1.0" "$frss"
for r in "${rows[@]}"; do
  read -r n w rss <<<"$r"
  printf '%-40s %9.1f %8.2f %9d KiB\n' "layerboot disk -p qemu ($n)" "$w" "$(awk -v a="$w" -v b="$fw" 'BEGIN{print a/b}')" "$rss"
done

# Memory against image size: the same build from the image plus one more layer of
# GROW_MIB (default 1024) MiB of incompressible data.
grow=${GROW_MIB:-1024}
grown=$("${LB%/*}/layerboot-testkit" grow-image --layout "$layout" --from "$tag" --filler-mib "$grow" --to "$WORK/grown")
big=$(measure "qcow2+${grow}MiB" "$LB" disk "$grown" --bootimages "$WORK/defs" -p qemu-plain -o "$WORK/big.qcow2")
read -r _ pw prss <<<"$plain"
read -r _ bw brss <<<"$big"
printf '\npeak RSS by image size (uncompressed qcow2): %s KiB -> %s KiB with %s MiB more (%.1f s -> %.1f s)\n' "$prss" "$brss" "$grow" "$pw" "$bw"

echo
echo "image: $IMAGE ($(du -shL "$layout/blobs" | cut -f1) of blobs); artifacts: $(du -h "$WORK/plain.qcow2" | cut -f1) qcow2, $(du -h "$WORK/disk.qcow2.gz" | cut -f1) qcow2.gz (level 1), $(du -h "$WORK/disk6.qcow2.gz" | cut -f1) (level 6)"
fi

[[ ${METAL:-1} == 1 ]] || exit 0
# Metal: the whole build per compression against the compressor alone on the same raw
# (the uncompressed build's artifact), each writing a file, page cache warm for both.
command -v pigz >/dev/null || { echo "pigz missing: .ci/install-deps installs it" >&2; exit 1; }
rm -rf "$WORK"/plain.qcow2 "$WORK"/big.qcow2 "$WORK"/disk*.qcow2.* "$WORK"/grown
size_of() { stat -c %s "$1"; }
m_plain=$(measure metal-raw "$LB" disk "$IMAGE" --bootimages "$WORK/defs" -p metal-none -o "$WORK/metal.raw")
m_xz=$(measure metal-raw.xz "$LB" disk "$IMAGE" --bootimages "$WORK/defs" -p metal-xz -o "$WORK/metal.raw.xz")
t_xz=$(measure xz-T0-6 sh -c "xz -T0 -6 -c '$WORK/metal.raw' > '$WORK/ref.raw.xz'")
xz_size=$(size_of "$WORK/metal.raw.xz"); ref_xz_size=$(size_of "$WORK/ref.raw.xz")
rm -f "$WORK/metal.raw.xz" "$WORK/ref.raw.xz"  # keep the disk usage down
m_gz=$(measure metal-raw.gz "$LB" disk "$IMAGE" --bootimages "$WORK/defs" -p metal-gzip -o "$WORK/metal.raw.gz")
t_pigz=$(measure pigz-6 sh -c "pigz -6 -c '$WORK/metal.raw' > '$WORK/ref-pigz.raw.gz'")
t_gzip=$(measure gzip-6 sh -c "gzip -6 -c '$WORK/metal.raw' > '$WORK/ref-gzip.raw.gz'")
raw_size=$(size_of "$WORK/metal.raw")
echo
printf 'metal raw: %s MiB (%s bytes); wall of the whole build vs the compressor alone on that raw\n' "$((raw_size >> 20))" "$raw_size"
printf '%-44s %9s %12s %9s\n' "" "wall (s)" "size (MiB)" "size/raw"
row() { # label, measure-line, size
  local n w rss
  read -r n w rss <<<"$2"
  printf '%-44s %9.1f %12.1f %9.3f\n' "$1" "$w" "$(awk -v s="$3" 'BEGIN{print s/1048576}')" "$(awk -v s="$3" -v r="$raw_size" 'BEGIN{print s/r}')"
}
row "layerboot disk -p metal, uncompressed" "$m_plain" "$raw_size"
row "layerboot disk -p metal, raw.xz (preset 6)" "$m_xz" "$xz_size"
row "xz -T0 -6 of that raw" "$t_xz" "$ref_xz_size"
row "layerboot disk -p metal, raw.gz (level 6)" "$m_gz" "$(size_of "$WORK/metal.raw.gz")"
row "pigz -6 of that raw" "$t_pigz" "$(size_of "$WORK/ref-pigz.raw.gz")"
row "gzip -6 of that raw" "$t_gzip" "$(size_of "$WORK/ref-gzip.raw.gz")"
read -r _ wx _ <<<"$m_xz"; read -r _ wt _ <<<"$t_xz"
read -r _ wg _ <<<"$m_gz"; read -r _ wp _ <<<"$t_pigz"
printf '\nwhole build / compressor alone: raw.xz %.2f (xz -T0 -6), raw.gz %.2f (pigz -6)\n' \
  "$(awk -v a="$wx" -v b="$wt" 'BEGIN{print a/b}')" "$(awk -v a="$wg" -v b="$wp" 'BEGIN{print a/b}')"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
