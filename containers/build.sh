#!/usr/bin/env bash
# Build layerboot's container image without pulling from any registry:
#   containers/build.sh [LAYERBOOT_BINARY]    (default target/release/layerboot; as root;
#                                             layerboot-deploy is taken from beside it)
# env: LAYERBOOT_IMAGE (default localhost/layerboot:latest),
#      LAYERBOOT_BASE_CACHE (default /var/cache/layerboot-container: the base root's tarball,
#      keyed by the hash of containers/base-rootfs.sh, so the debootstrap runs once).
# Prints the image's name on stdout.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
binary=${1:-$repo/target/release/layerboot}
image=${LAYERBOOT_IMAGE:-localhost/layerboot:latest}
cache=${LAYERBOOT_BASE_CACHE:-/var/cache/layerboot-container}
# layerboot-deploy (the deployment helper) is looked for beside layerboot.
deploy=$(dirname "$binary")/layerboot-deploy
for b in "$binary" "$deploy"; do
  [[ -x $b ]] || { echo "containers/build.sh: no $b (cargo build --release builds both)" >&2; exit 1; }
done

key=$(cat "$repo/containers/base-rootfs.sh" | sha256sum | cut -c1-16)
base=localhost/layerboot-base:$key
if ! podman image exists "$base"; then
  tarball=$cache/base-$key.tar
  if [[ ! -f $tarball ]]; then
    mkdir -p "$cache"
    work=$(mktemp -d "$cache/.build-XXXXXX")
    trap 'rm -rf "$work"' EXIT
    bash "$repo/containers/base-rootfs.sh" "$work/root" >&2
    tar --numeric-owner --xattrs -C "$work/root" -cf "$work/base.tar" .
    mv "$work/base.tar" "$tarball"
  fi
  podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$tarball" "$base" >&2
fi

context=$(mktemp -d)
trap 'rm -rf "$context" ${work:+"$work"}' EXIT
cp "$binary" "$context/layerboot"
cp "$deploy" "$context/layerboot-deploy"
cp "$repo/Containerfile" "$context/Containerfile"
podman build --quiet --pull=never --build-arg BASE="$base" -t "$image" "$context" >&2
echo "$image"
