#!/bin/sh
# Packs a root file system into an OCI image-layout archive, with no container engine and no
# registry: `ctr images import`, `podman load` and `docker load` (25+) read it.
# Usage: oci-archive.sh ROOTFS OUT.tar REF ENTRYPOINT_JSON CMD_JSON
#   e.g. oci-archive.sh rootfs/ dad-trace.tar dad-trace:latest '["/dad-trace"]' '["serve"]'
# Deterministic: the same files give the same digests.
set -eu
ROOTFS=$1 OUT=$2 REF=$3 ENTRYPOINT=$4 CMD=$5
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/oci/blobs/sha256"

# Moves a file into the blob store; prints "DIGEST SIZE".
blob() {
    sha=$(sha256sum "$1" | cut -d' ' -f1)
    size=$(stat -c %s "$1")
    mv "$1" "$WORK/oci/blobs/sha256/$sha"
    echo "$sha $size"
}

# One uncompressed layer, so its digest is also its diff_id.
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$ROOTFS" -cf "$WORK/layer.tar" .
set -- $(blob "$WORK/layer.tar")
LAYER=$1 LAYER_SIZE=$2
printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":%s,"Cmd":%s,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$ENTRYPOINT" "$CMD" "$LAYER" >"$WORK/config.json"
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
