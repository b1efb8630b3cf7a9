#!/usr/bin/env bash
# One HTTP connection of the cloud metadata service at 169.254.169.254, as QEMU's user
# network runs it for each guest connection (guestfwd=...-cmd:): the request on stdin, the
# response on stdout. Answers what Ignition 2.14's providers ask for:
#   AWS IMDSv2   PUT /latest/api/token, GET /latest/dynamic/instance-identity/document
#                (the SDK's region), GET /2019-10-01/user-data
#   GCE          GET /computeMetadata/v1/instance/attributes/user-data
#                (Metadata-Flavor: Google)
#   Azure IMDS   GET /metadata/instance/compute/userData?... (Metadata: true; base64)
# Every other path is a 404. Each request is appended to LOG as "METHOD PATH HEADER"
# (the platform's identifying header, if sent), so a test can tell which service was used.
#
# usage: metadata-service.sh USER_DATA_FILE LOG
set -u
# stderr is the guest's socket too.
exec 2>/dev/null
user_data=$1
log=$2

IFS=' ' read -r method target _ || exit 0
flavor=
while IFS= read -r line; do
  line=${line%$'\r'}
  [[ -z $line ]] && break
  case ${line,,} in
    metadata-flavor:*|metadata:*|x-aws-ec2-metadata-token*) flavor=${line%%:*} ;;
  esac
done
path=${target%%\?*}
printf '%s %s %s\n' "$method" "$path" "$flavor" >>"$log"

respond() {
  printf 'HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
    "$1" "${#2}" "$2"
}

case "$method $path" in
  "PUT /latest/api/token") respond "200 OK" "layerboot-test-imds-token" ;;
  "GET /latest/dynamic/instance-identity/document")
    respond "200 OK" '{"region":"us-east-1","availabilityZone":"us-east-1a"}' ;;
  "GET /2019-10-01/user-data" | "GET /computeMetadata/v1/instance/attributes/user-data")
    respond "200 OK" "$(cat "$user_data")" ;;
  "GET /metadata/instance/compute/userData") respond "200 OK" "$(base64 -w0 "$user_data")" ;;
  *) respond "404 Not Found" "" ;;
esac
