#!/bin/sh
# Builds the CRI sandbox ("pause") image without a registry: busybox-static, whose `sleep`
# blocks forever as the entrypoint. Usage: build-pause-image.sh OUT.tar REF
set -eu
OUT=$1 REF=$2
ROOTFS=$(mktemp -d)
trap 'rm -rf "$ROOTFS"' EXIT
mkdir -p "$ROOTFS/bin" "$ROOTFS/dev" "$ROOTFS/proc" "$ROOTFS/sys" "$ROOTFS/etc" "$ROOTFS/tmp"
cp /bin/busybox "$ROOTFS/bin/busybox"
chmod 0755 "$ROOTFS/bin/busybox"
ln -s /bin/busybox "$ROOTFS/pause"
# The machine's own architecture: the image holds its busybox.
exec "$(dirname "$0")/../../deploy/oci-archive.sh" "$OUT" "$REF" '["/bin/busybox","sleep","2147483647"]' '[]' \
    "$(dpkg --print-architecture)=$ROOTFS"
