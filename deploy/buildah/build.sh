#!/usr/bin/env bash
# Build the runtime image with no Docker daemon and no registry, as root: a Debian base made by
# mmdebstrap from Debian's packages, then the Dockerfile's runtime target on it with buildah.
#
#   deploy/buildah/build.sh [TAG]        (default localhost/mnist-cvae:latest)
#
# The base is kept in buildah's storage and reused while the apt sources, the package list and the
# ISO week stay the same (a new week brings Debian's updates in); `buildah rmi` it to rebuild now.
# pip inside the build reaches the package index through this machine's CA certificates and
# /etc/pip.conf, mounted read-only. The last line printed is the image and its size.
set -euo pipefail
tag=${1:-localhost/mnist-cvae:latest}
cd "$(dirname "$0")/../.."
buildah() { command buildah --storage-driver vfs "$@"; }  # no overlay mounts: works in containers and chroots
suite=bookworm
packages=python3,python3-venv,python-is-python3,ca-certificates

key=$( (cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null; echo "$suite $packages"; date -u +%G-%V) \
  | sha256sum | cut -c1-12)
base=localhost/cvae-base:$suite-$key
if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mmdebstrap --quiet --variant=apt --include="$packages" "$suite" "$work/base.tar"
  container=$(buildah from scratch)
  buildah add --quiet "$container" "$work/base.tar" / >/dev/null
  buildah commit --quiet "$container" "$base" >/dev/null
  buildah rm "$container" >/dev/null
fi

mounts=(-v /etc/ssl/certs:/etc/ssl/certs:ro)
[ -f /etc/pip.conf ] && mounts+=(-v /etc/pip.conf:/etc/pip.conf:ro)
buildah bud --quiet --isolation chroot --pull-never --format docker --target runtime \
  --build-arg PYTHON_IMAGE="$base" "${mounts[@]}" -t "$tag" . >/dev/null
buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$tag"
