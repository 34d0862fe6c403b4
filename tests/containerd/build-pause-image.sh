#!/bin/sh
# Builds the CRI sandbox ("pause") image as an OCI image-layout tarball, with no registry:
# one uncompressed layer holding busybox-static, whose `sleep` blocks forever as the entrypoint.
# Usage: build-pause-image.sh OUT.tar REF   (deterministic: same busybox, same digests)
set -eu
OUT=$1
REF=$2
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/rootfs/bin" "$WORK/rootfs/dev" "$WORK/rootfs/proc" "$WORK/rootfs/sys" "$WORK/rootfs/etc" \
    "$WORK/rootfs/tmp" "$WORK/oci/blobs/sha256"
cp /bin/busybox "$WORK/rootfs/bin/busybox"
chmod 0755 "$WORK/rootfs/bin/busybox"
ln -s /bin/busybox "$WORK/rootfs/pause"

# Moves a file into the blob store; prints "DIGEST SIZE".
blob() {
    sha=$(sha256sum "$1" | cut -d' ' -f1)
    size=$(stat -c %s "$1")
    mv "$1" "$WORK/oci/blobs/sha256/$sha"
    echo "$sha $size"
}

# Uncompressed, so the layer digest is also its diff_id.
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$WORK/rootfs" -cf "$WORK/layer.tar" .
set -- $(blob "$WORK/layer.tar")
LAYER=$1 LAYER_SIZE=$2
printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/busybox","sleep","2147483647"],"WorkingDir":"/","Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$LAYER" >"$WORK/config.json"
set -- $(blob "$WORK/config.json")
CONFIG=$1 CONFIG_SIZE=$2
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$CONFIG" "$CONFIG_SIZE" "$LAYER" "$LAYER_SIZE" >"$WORK/manifest.json"
set -- $(blob "$WORK/manifest.json")
MANIFEST=$1 MANIFEST_SIZE=$2
# containerd names the imported image after io.containerd.image.name.
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$MANIFEST" "$MANIFEST_SIZE" "$REF" "${REF##*:}" >"$WORK/oci/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$WORK/oci/oci-layout"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$WORK/oci" -cf "$OUT" oci-layout index.json blobs
