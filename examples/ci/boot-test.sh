#!/usr/bin/env bash
# Gate a CI pipeline on "does this artifact boot, and did it boot what we built?".
# Builds nothing: it runs `layerboot boot-test` on an artifact made earlier and leaves a
# JUnit report and the serial console log in $OUT_DIR for the CI system to publish.
#
#   examples/ci/boot-test.sh ARTIFACT [layerboot boot-test options...]
#   e.g. examples/ci/boot-test.sh out/node.qcow2 --firmware uefi \
#          --expect 'LAYERED-OK' --fail-on 'Kernel panic' --fail-on 'emergency mode'
#
# Environment: OUT_DIR (default ./boot-test-results), LAYERBOOT (default: layerboot on
# PATH). Needs qemu-system-x86 and ovmf (Debian/Ubuntu packages). Exit status is
# boot-test's: 0 passed, 1 failed, anything else could not run.
set -euo pipefail

if (($# < 1)); then
  echo "usage: $0 ARTIFACT [layerboot boot-test options...]" >&2
  exit 2
fi
artifact=$1
shift
out=${OUT_DIR:-boot-test-results}
layerboot=${LAYERBOOT:-layerboot}
mkdir -p "$out"
name=$(basename "$artifact")

status=0
"$layerboot" boot-test "$artifact" --name "$name" \
  --junit "$out/$name.junit.xml" --console-log "$out/$name.console.log" "$@" || status=$?

echo "boot-test of $name: exit $status; JUnit: $out/$name.junit.xml; console: $out/$name.console.log"
exit "$status"
