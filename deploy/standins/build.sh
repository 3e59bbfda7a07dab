#!/usr/bin/env bash
# Builds local stand-ins for the base images that Dockerfile and the compose
# files name (node:20-bookworm-slim, redis:7.2-alpine, haproxy:2.6,
# python:3.12-alpine), for a machine that reaches no image registry: one
# Debian 12 root file system made with debootstrap from the machine's own
# Debian mirror, with Debian's redis-server, haproxy and python3, and this
# machine's Node.js copied in. Each is tagged under the exact name the files
# use (docker.io/library/NAME:TAG), so `build:` and `image:` find them.
# How they differ from the real images: docs/COMPOSE.md.
#
# Usage: deploy/standins/build.sh [--remove]
#   PSIMBOLS_STANDIN_ROOTFS  where the root file system is kept between runs
#                            (default /var/tmp/psimbols-standins/rootfs)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
names=(docker.io/library/node:20-bookworm-slim docker.io/library/redis:7.2-alpine docker.io/library/haproxy:2.6 docker.io/library/python:3.12-alpine)
files=(Containerfile.node Containerfile.redis Containerfile.haproxy Containerfile.python)
base=localhost/psimbols-standin-base:bookworm

if [ "${1:-}" = --remove ]; then
  podman rmi -f "${names[@]}" "$base" >/dev/null 2>&1 || true
  exit 0
fi

rootfs=${PSIMBOLS_STANDIN_ROOTFS:-/var/tmp/psimbols-standins/rootfs}
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
mirror=${mirror:-http://deb.debian.org/debian}
if [ ! -x "$rootfs/usr/bin/redis-server" ]; then
  command -v debootstrap >/dev/null || { echo "error: debootstrap is missing" >&2; echo "hint: apt-get install debootstrap" >&2; exit 1; }
  echo "debootstrap bookworm into $rootfs (a few minutes, once) ..." >&2
  rm -rf "$rootfs"; mkdir -p "$rootfs"
  debootstrap --variant=minbase --include=redis-server,redis-tools,haproxy,python3,ca-certificates \
    bookworm "$rootfs" "$mirror" >&2
  # Debian's redis-server package starts nothing here, but its config binds 127.0.0.1: the image's CMD passes options instead.
  rm -rf "$rootfs/var/cache/apt/archives"/*.deb "$rootfs/var/lib/apt/lists"/*
fi

if ! podman image exists "$base"; then
  echo "importing the base image $base ..." >&2
  tar -C "$rootfs" -c . | podman import --quiet - "$base" >/dev/null
fi

ctx=$(mktemp -d); trap 'rm -rf "$ctx"' EXIT
cp "$here"/Containerfile.* "$here"/*.sh "$ctx"/
cp "$(readlink -f "$(command -v node)")" "$ctx/node"
cafile=$(npm config get cafile 2>/dev/null || true)
[ -f "$cafile" ] || cafile=/etc/ssl/certs/ca-certificates.crt
cp "$cafile" "$ctx/ca-certificates.crt"
cp -r "$(dirname "$(readlink -f "$(command -v npm)")")/.." "$ctx/npm"
for i in "${!names[@]}"; do
  echo "building ${names[$i]} (stand-in) ..." >&2
  podman build --quiet --network none -f "$ctx/${files[$i]}" -t "${names[$i]}" "$ctx" >/dev/null
done
echo "stand-ins built: ${names[*]}" >&2
