#!/usr/bin/env bash
# make-base-rootfs.sh ROOTFS BINARY: fills ROOTFS with what BINARY needs to run in an image
# FROM scratch: the shared libraries `ldd` lists (glibc, libgcc, the loader), the CA bundle,
# and /etc/passwd and /etc/group naming nonroot (65532), as distroless does.
set -euo pipefail
rootfs=$1 binary=$2
rm -rf "$rootfs" && mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
# ldd prints "name => /path (addr)" or "/path (addr)"; vdso has no file.
ldd "$binary" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' | while read -r lib; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
  >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
mkdir -p "$rootfs/home/nonroot" && chown 65532:65532 "$rootfs/home/nonroot"
