#!/usr/bin/env bash
# Assembles the activations-server image without pulling any base image: from scratch, with the
# release binaries built on this machine, the shared libraries they load (as ldd lists them),
# the CA certificates for HTTPS to cloud storage, and a passwd entry for the non-root user. The
# image is configured as the Containerfile's is: same environment, ports, user and entrypoint.
#
#   cargo build --release --locked -p activations-server -p activations-cli
#   deploy/image.sh                         # tags localhost/activations-server:dev
#   IMAGE=localhost/activations-server:test deploy/image.sh
#
# Needs buildah (Debian: `apt-get install buildah`). The libraries are this machine's, so the
# image runs wherever this machine's binaries would (same architecture, a glibc at least as
# new is inside). Not used by the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${IMAGE:-localhost/activations-server:dev}
release=${RELEASE_DIR:-target/release}
binaries=("$release/activations-server" "$release/activations")
# uid and gid of the image's user, as in the distroless base of the Containerfile.
user_id=65532

for binary in "${binaries[@]}"; do
  if [ ! -x "$binary" ]; then
    echo "$binary is not built: run cargo build --release --locked -p activations-server -p activations-cli" >&2
    exit 1
  fi
done
command -v buildah >/dev/null || {
  echo "buildah is not installed (Debian: apt-get install buildah)" >&2
  exit 1
}

# Every file the dynamic loader opens for the binaries: `ldd` prints `name => /path (addr)`
# for a library and `/path (addr)` for the loader itself; the vDSO has no path.
libraries=$(ldd "${binaries[@]}" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)

staging=$(mktemp -d)
container=""
cleanup() {
  if [ -n "$container" ]; then buildah rm "$container" >/dev/null; fi
  rm -rf "$staging"
}
trap cleanup EXIT

# The root file system, laid out in a staging directory and copied in one step.
install -d "$staging/usr/local/bin" "$staging/etc/ssl/certs" "$staging/tmp" \
  "$staging/home/nonroot"
install -m 0755 "${binaries[@]}" "$staging/usr/local/bin/"
for library in $libraries; do
  # Copied as a file under the name the binaries ask for (a link's target, not the link).
  install -D -m 0755 "$(readlink -f "$library")" "$staging$library"
done
# reqwest (cloud storage) and the SDK (an https:// server) trust the system's roots.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  install -m 0644 /etc/ssl/certs/ca-certificates.crt "$staging/etc/ssl/certs/"
else
  echo "warning: /etc/ssl/certs/ca-certificates.crt not found: HTTPS to storage will fail" >&2
fi
cat >"$staging/etc/passwd" <<EOF
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:$user_id:$user_id:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$staging/etc/group" <<EOF
root:x:0:
nonroot:x:$user_id:
EOF
# Names resolve from /etc/hosts, then DNS (glibc's own default, written out).
echo "hosts: files dns" >"$staging/etc/nsswitch.conf"
chmod 1777 "$staging/tmp"
chown "$user_id:$user_id" "$staging/home/nonroot" 2>/dev/null || true

container=$(buildah from scratch)
buildah copy --quiet "$container" "$staging" / >/dev/null
# The same settings as the Containerfile (see the reasons there).
buildah config \
  --env ACTIVATIONS_LISTEN=0.0.0.0:50051 \
  --env ACTIVATIONS_METRICS_LISTEN=0.0.0.0:9090 \
  --port 50051 \
  --port 9090 \
  --user "$user_id:$user_id" \
  --workingdir /home/nonroot \
  --entrypoint '["/usr/local/bin/activations-server"]' \
  --cmd '[]' \
  --label org.opencontainers.image.title=activations-server \
  --label "org.opencontainers.image.version=$("${binaries[0]}" --version | awk '{ print $2 }')" \
  "$container"
buildah commit --quiet --rm "$container" "$image" >/dev/null
container=""
echo "$image"
