#!/usr/bin/env bash
# Builds the base image the Dockerfile starts from, `node:20-bookworm-slim`, without a registry:
# a minimal Debian bookworm made by debootstrap, with this host's Node 20 (node and npm) copied
# in. Where Docker Hub can be reached, `docker pull node:20-bookworm-slim` gives the same base.
# Needs root, debootstrap and a running dockerd. Does nothing if the image exists.
set -euo pipefail
IMAGE=node:20-bookworm-slim
RECIPE=2  # bump when this recipe changes, so an image made by an older one is rebuilt
have=$(docker image inspect -f '{{ index .Config.Labels "forecopy.base" }}' "$IMAGE" 2>/dev/null || true)
if [ -n "$have" ] && [ "$have" = "$RECIPE" ]; then
  echo "docker-base: $IMAGE exists"
  exit 0
fi
if docker image inspect "$IMAGE" >/dev/null 2>&1 && [ -z "$have" ]; then
  echo "docker-base: $IMAGE exists and was not made here (pulled?): keeping it"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "docker-base: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" = 20 ] || { echo "docker-base: this host has Node $node_major, the image must carry Node 20" >&2; exit 1; }
root=$(mktemp -d /tmp/forecopy-rootfs-XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "docker-base: debootstrap bookworm into $root (about 30 s)"
# The same Debian mirror apt uses on this host.
mirror=$(grep -hoE '^URIs: *\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | awk '{print $2}')
[ -n "$mirror" ] || mirror=$(grep -hoE '^deb +\S+' /etc/apt/sources.list 2>/dev/null | head -1 | awk '{print $2}')
debootstrap --variant=minbase bookworm "$root" ${mirror:+"$mirror"} >/dev/null
cp "$(command -v node)" "$root/usr/local/bin/node"
npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
mkdir -p "$root/usr/local/lib/node_modules"
cp -a "$npm_dir" "$root/usr/local/lib/node_modules/npm"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
# The certificate authorities this host trusts (a network may intercept TLS with its own CA):
# node and npm in the image trust them too.
extra_ca=()
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp /etc/ssl/certs/ca-certificates.crt "$root/usr/local/share/ca-certificates/host-bundle.crt"
  extra_ca=(-c 'ENV NODE_EXTRA_CA_CERTS=/usr/local/share/ca-certificates/host-bundle.crt')
fi
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  "${extra_ca[@]}" -c "LABEL forecopy.base=$RECIPE" -c 'CMD ["node"]' - "$IMAGE" >/dev/null
echo "docker-base: built $IMAGE"
