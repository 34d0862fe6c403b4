#!/bin/sh
# Packs root file systems, one per architecture, into one multi-platform OCI image-layout
# archive, with no container engine and no registry: `ctr images import`, `podman load` and
# `docker load` (25+) read it and pick the manifest of their own platform.
# Usage: oci-archive.sh OUT.tar REF ENTRYPOINT_JSON CMD_JSON ARCH=ROOTFS [ARCH=ROOTFS ...]
#   e.g. oci-archive.sh dad-trace.tar dad-trace:latest '["/dad-trace"]' '["serve"]' amd64=rootfs-amd64/ arm64=rootfs-arm64/
# ARCH is the OCI (Go) name: amd64, arm64. Deterministic: the same files give the same digests.
set -eu
OUT=$1 REF=$2 ENTRYPOINT=$3 CMD=$4
shift 4
[ $# -gt 0 ] || { echo "oci-archive.sh: no ARCH=ROOTFS given" >&2; exit 2; }
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

MANIFESTS=""
for PLATFORM in "$@"; do
    ARCH=${PLATFORM%%=*} ROOTFS=${PLATFORM#*=}
    # One uncompressed layer, so its digest is also its diff_id.
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --mode=u+rw,go+r,go-w -C "$ROOTFS" -cf "$WORK/layer.tar" .
    set -- $(blob "$WORK/layer.tar")
    LAYER=$1 LAYER_SIZE=$2
    printf '{"architecture":"%s","os":"linux","config":{"Entrypoint":%s,"Cmd":%s,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
        "$ARCH" "$ENTRYPOINT" "$CMD" "$LAYER" >"$WORK/config.json"
    set -- $(blob "$WORK/config.json")
    CONFIG=$1 CONFIG_SIZE=$2
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
        "$CONFIG" "$CONFIG_SIZE" "$LAYER" "$LAYER_SIZE" >"$WORK/manifest.json"
    set -- $(blob "$WORK/manifest.json")
    MANIFESTS="$MANIFESTS${MANIFESTS:+,}$(printf '{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"%s","os":"linux"}}' "$1" "$2" "$ARCH")"
done
# The image is an index of the per-platform manifests; the layout's own index points at it.
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s]}' "$MANIFESTS" >"$WORK/image-index.json"
set -- $(blob "$WORK/image-index.json")
# containerd names the imported image after io.containerd.image.name.
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$1" "$2" "$REF" "${REF##*:}" >"$WORK/oci/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$WORK/oci/oci-layout"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$WORK/oci" -cf "$OUT" oci-layout index.json blobs
