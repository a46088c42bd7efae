# A distroless-like base made offline from make-base-rootfs.sh's tree: the binary's shared
# libraries, the CA bundle and a passwd with nonroot 65532. No shell.
FROM scratch
COPY rootfs/ /
