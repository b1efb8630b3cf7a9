# Sourced by the disk benchmarks: sets IMAGE to $1, else the example layered image from
# the test fixture cache (built by `cargo test --test disk_fixture` if missing).
IMAGE=${1:-}
if [[ -z $IMAGE ]]; then
  cache=${LAYERBOOT_TEST_CACHE:-/var/cache/layerboot-tests}
  dir=$(ls -dt "$cache"/debian-layered-[0-9a-f]*/oci 2>/dev/null | head -n1 || true)
  if [[ -z $dir ]]; then
    cargo test --quiet --test disk_fixture >/dev/null
    dir=$(ls -dt "$cache"/debian-layered-[0-9a-f]*/oci | head -n1)
  fi
  IMAGE="oci:$dir:layered"
fi
