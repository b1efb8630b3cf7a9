#!/usr/bin/env bash
# Benchmark (issue #13 item 2): one `layerboot disk -p A,B,C,D` run against four single
# runs of the same platforms, measured in the same run, from an image already in a local
# OCI layout. The target: N platforms cost at most one deployment + N conversions, so the
# ratio (one run / sum of four) is well under 1; printed with each run's wall time and
# peak RSS. The platforms are openstack, azure, gcp and vmware (qcow2, fixed VHD, GCE
# tarball, OVA: every conversion path), compression as shipped but gzip level 1 where the
# image would choose (as the test suite does: xz of four artifacts would measure xz).
# Needs root (like `layerboot disk`) and a release build.
#
# usage: [LAYERBOOT_BIN=…] benches/platforms.sh [oci:DIR:TAG]   (default: the example
#        layered image from the test fixture cache)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z ${LAYERBOOT_BIN:-} ]]; then
  cargo build --release --quiet --bin layerboot --bin layerboot-deploy
fi
LB=${LAYERBOOT_BIN:-$PWD/target/release/layerboot}
source benches/example-image.sh "${1:-}"

PLATFORMS=(openstack azure gcp vmware)
WORK=$(mktemp -d /var/tmp/layerboot-bench-platforms.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/defs"
for p in "${PLATFORMS[@]}"; do
  sed 's/^compression = "image"/compression = "gzip"\ncompression-level = 1/' \
    "bootimages/$p.toml" > "$WORK/defs/$p.toml"
done

measure() { # name, command… → prints "name wall_s rss_kib", keeps wall in $WALL
  local name=$1; shift
  local out="$WORK/out-$name"
  rm -rf "$out"; mkdir -p "$out"
  /usr/bin/time -f '%e %M' -o "$WORK/time" "$@" --output-dir "$out" >/dev/null 2>"$WORK/err" \
    || { cat "$WORK/err" >&2; exit 1; }
  read -r WALL RSS < "$WORK/time"
  printf '%-28s %8.1f s  %8d KiB\n' "$name" "$WALL" "$RSS"
  rm -rf "$out"
}

echo "image: $IMAGE"
echo "platforms: ${PLATFORMS[*]}"
total_single=0
for p in "${PLATFORMS[@]}"; do
  measure "single -p $p" "$LB" disk "$IMAGE" --bootimages "$WORK/defs" -p "$p"
  total_single=$(awk -v a="$total_single" -v b="$WALL" 'BEGIN { print a + b }')
done
joined=$(IFS=,; echo "${PLATFORMS[*]}")
measure "one run -p $joined" "$LB" disk "$IMAGE" --bootimages "$WORK/defs" -p "$joined"
printf 'four single runs: %.1f s; one run: %.1f s; ratio %.2f (target < 1: one deployment)\n' \
  "$total_single" "$WALL" "$(awk -v a="$WALL" -v b="$total_single" 'BEGIN { print a / b }')"
