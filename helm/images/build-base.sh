#!/usr/bin/env bash
# The base of the project's images: a Debian 12 (bookworm) root from `debootstrap --variant=minbase`, imported
# into podman as localhost/apd-debian:12 (no image registry is reached; only the Debian archive). Idempotent:
# does nothing when the image exists (`podman rmi localhost/apd-debian:12` to rebuild it). Runs as root.
#
#   helm/images/build-base.sh [IMAGE]        # env: DEBIAN_MIRROR (default http://deb.debian.org/debian)
set -euo pipefail

image=${1:-localhost/apd-debian:12}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-${mirror%/debian}/debian-security}

if podman image exists "$image"; then
  echo "$image exists"
  exit 0
fi

root=$(mktemp -d /var/tmp/apd-debian.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase bookworm "$root" "$mirror"

# Point releases and security updates too, as Debian's own images do.
cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
EOF
# Slim like Debian's -slim images: no docs, man pages or translations from any later install (copyright files
# stay), no recommended packages; no downloaded .deb files or package caches (80 MB after each apt-get update) kept.
cat >"$root/etc/dpkg/dpkg.cfg.d/apd-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
cat >"$root/etc/apt/apt.conf.d/apd-slim" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb || true"; };
EOF
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
rm -rf "$root"/usr/share/{man,info,locale}/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
  "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log "$root"/var/log/apt/*

tar --numeric-owner -C "$root" -c . | podman import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' \
  --message "debootstrap --variant=minbase bookworm $mirror" - "$image"
podman image inspect --format "{{.Id}} {{.Size}}" "$image"
