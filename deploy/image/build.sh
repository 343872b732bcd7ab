#!/usr/bin/env bash
# Builds the kxdp image from deploy/image/Containerfile, the recipe a cluster's CI builds,
# on a Debian 12 machine that reaches no container registry: only Debian's package mirror
# and crates.io. The Containerfile's build base is made here instead of pulled: Debian 12
# by mmdebstrap, with the build tools and the Rust toolchain of rust-toolchain.toml copied
# from this machine's rustup. Its runtime stage starts from scratch, which is never pulled.
#
#   deploy/image/build.sh                 build; writes target/image/kxdp-VERSION-COMMIT.tar
#   deploy/image/build.sh --rebuild-base  make the build base anew (newer Debian packages)
#   deploy/image/build.sh --clean         delete the image store (bases, caches) and stop
#
# The archive is a docker-archive tagged kxdp:VERSION-COMMIT (the workspace version, the
# commit, "-dirty" when the work tree has changes): `docker load -i`, `podman load -i`,
# `ctr -n k8s.io image import` or `kind load image-archive` take it.
#
# Everything it stores lives in KXDP_IMAGE_STORE (default /var/tmp/kxdp-image): buildah's
# images and containers, and the cargo cache mounts (crates, compiled dependencies), with
# which a rebuild of an unchanged tree takes seconds and one after a change to the agent
# minutes (its crate and the LTO link), not the first build's quarter of an hour.
# Runs as root (buildah, mmdebstrap's chroot); installs buildah and mmdebstrap if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

store=${KXDP_IMAGE_STORE:-/var/tmp/kxdp-image}
mirror=${KXDP_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${KXDP_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
rebuild_base=false
clean=false
case "${1:-}" in
  "") ;;
  --rebuild-base) rebuild_base=true ;;
  --clean) clean=true ;;
  *)
    echo "usage: $0 [--rebuild-base | --clean]" >&2
    exit 2
    ;;
esac

if [ "$(id -u)" -ne 0 ]; then
  echo "build-image: run as root (buildah and mmdebstrap need it)" >&2
  exit 1
fi

# Overlay storage keeps each layer once; vfs copies every layer whole into each container
# and image built on it (the 1.4 GB build base, several times over). Overlay needs a kernel
# that mounts overlayfs on the store's filesystem; where it cannot, KXDP_IMAGE_DRIVER=vfs.
driver=${KXDP_IMAGE_DRIVER:-overlay}
bah() {
  buildah --root "$store/storage" --runroot "$store/run" --storage-driver "$driver" "$@"
}

if [ "$clean" = true ]; then
  if [ -d "$store" ]; then
    bah rm --all >/dev/null 2>&1 || true
    # Overlay leaves the store's layers mounted while an image is in use; nothing is now.
    grep -o " $store/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount 2>/dev/null || true
    rm -rf "$store"
  fi
  echo "build-image: removed $store"
  exit 0
fi

# buildah builds; mmdebstrap makes the Debian 12 build base. Installed only when missing.
packages=(buildah mmdebstrap)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "build-image: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

started=$SECONDS
mkdir -p "$store/tmp" target/image
# buildah puts the Containerfile's cache mounts (cargo's registry and target directory) and
# its temporary files under TMPDIR: inside the store, so --clean removes them too.
export TMPDIR="$store/tmp"

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
commit=$(git rev-parse --short=12 HEAD)
if [ -n "$(git status --porcelain)" ]; then
  commit="$commit-dirty"
fi
tag="$version-$commit"
archive="target/image/kxdp-$tag.tar"

# The toolchain rust-toolchain.toml names, as this machine's rustup has it installed
# (scripts/install-deps.sh installs rustup).
export PATH="$HOME/.cargo/bin:$PATH"
channel=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
if ! command -v rustup >/dev/null 2>&1; then
  echo "build-image: rustup not found; run scripts/install-deps.sh first" >&2
  exit 1
fi
sysroot=$(rustup run "$channel" rustc --print sysroot)
host=$(rustup run "$channel" rustc -vV | sed -n 's/^host: //p')
toolchain="$channel-$host"

# What the build base is made of. The CA certificates this machine adds to Debian's
# (/usr/local/share/ca-certificates: a company or proxy CA that crates.io's certificate is
# re-signed with) go into the build base only, so cargo there trusts what the host trusts;
# the runtime image is assembled from chosen files and never sees them.
base_packages=(ca-certificates clang libbpf-dev gcc libc6-dev binutils pkg-config
  nftables containernetworking-plugins)
local_cas=(/usr/local/share/ca-certificates/*.crt)
[ -e "${local_cas[0]}" ] || local_cas=()
ca_hook=()
if [ ${#local_cas[@]} -gt 0 ]; then
  ca_hook=(--customize-hook="cp ${local_cas[*]} \"\$1/usr/local/share/ca-certificates/\" && chroot \"\$1\" update-ca-certificates")
fi

make_base() {
  local rootfs_tar="$store/tmp/build-base.tar" ctr
  # --variant=apt: Debian's Essential set and apt, no more; the packages above on top.
  # Toolchain copied without its HTML docs (share/doc, ~800 MB), and rustup as the rust
  # images have it: RUSTUP_HOME=/usr/local/rustup, proxies in CARGO_HOME=/usr/local/cargo/bin.
  mmdebstrap --mode=root --variant=apt --include="$(IFS=,; echo "${base_packages[*]}")" \
    --customize-hook="mkdir -p \"\$1/usr/local/rustup/toolchains/$toolchain\" \"\$1/usr/local/cargo/bin\"" \
    --customize-hook="tar -C '$sysroot/' --exclude=./share/doc -c . | tar -C \"\$1/usr/local/rustup/toolchains/$toolchain\" -x" \
    --customize-hook="install -m 0755 '$(command -v rustup)' \"\$1/usr/local/cargo/bin/rustup\"" \
    --customize-hook="for b in \"\$1/usr/local/rustup/toolchains/$toolchain/bin\"/*; do ln \"\$1/usr/local/cargo/bin/rustup\" \"\$1/usr/local/cargo/bin/\${b##*/}\"; done" \
    --customize-hook="printf 'version = \"12\"\ndefault_toolchain = \"%s\"\nprofile = \"minimal\"\n' '$toolchain' > \"\$1/usr/local/rustup/settings.toml\"" \
    "${ca_hook[@]}" \
    --customize-hook='rm -rf "$1/var/lib/apt/lists"/* "$1/var/cache/apt"/*' \
    bookworm "$rootfs_tar" \
    "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
    "deb $security_mirror bookworm-security main"
  ctr=$(bah from scratch)
  bah add "$ctr" "$rootfs_tar" / >/dev/null
  rm -f "$rootfs_tar"
  bah config \
    --env RUSTUP_HOME=/usr/local/rustup --env CARGO_HOME=/usr/local/cargo \
    --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env RUST_VERSION="$channel" --cmd bash "$ctr"
  bah commit --rm "$ctr" "$base" >/dev/null
}

# The base is named by a digest of its inputs, so it is made again when one changes: this
# recipe, the toolchain, the CA certificates, the mirrors.
base_key=$({
  declare -f make_base
  echo "${base_packages[*]} $mirror $security_mirror"
  rustup run "$channel" rustc -vV
  rustup --version 2>/dev/null
  [ ${#local_cas[@]} -eq 0 ] || cat "${local_cas[@]}"
} | sha256sum | cut -c1-12)
base="localhost/kxdp-build-base:$base_key"

if [ "$rebuild_base" = true ] || ! bah inspect --type image "$base" >/dev/null 2>&1; then
  echo "build-image: making the build base $base (mmdebstrap, Debian 12)" >&2
  bah rmi "$base" >/dev/null 2>&1 || true
  make_base
fi

cleanup() {
  # The build's intermediate containers (build removes them itself unless it failed).
  bah rm --all >/dev/null 2>&1 || true
}
trap cleanup EXIT

# --network host: the build's RUN steps reach crates.io (and, with another base, Debian's
# mirror) through the host's network, without buildah making a bridge and NAT rules for it.
# --pull=never: every base is local; a missing one is an error, not a registry request.
bah bud --network host --pull=never \
  --build-arg BUILD_BASE="$base" --build-arg RUNTIME_BASE=scratch \
  --build-arg VERSION="$version" --build-arg REVISION="$commit" \
  --iidfile "$store/tmp/iid" -f deploy/image/Containerfile -t "localhost/kxdp:$tag" .

# Pushed by ID, so the archive carries the one name given here (pushed by name, buildah adds
# localhost/kxdp too); kxdp:TAG is what a runtime reads as docker.io/library/kxdp:TAG.
rm -f "$archive"
bah push --quiet "$(cat "$store/tmp/iid")" "docker-archive:$archive:kxdp:$tag"
rm -f "$store/tmp/iid"

# Keep the store to the current image and the current base: older kxdp images and bases go,
# and with them every layer nothing uses.
while read -r old; do
  bah rmi "$old" >/dev/null
done < <(bah images --format '{{.Name}}:{{.Tag}}' |
  grep -E '^localhost/kxdp(-build-base)?:' | grep -vxF -e "localhost/kxdp:$tag" -e "$base" || true)
bah rmi --prune >/dev/null 2>&1 || true

size=$(bah images --format '{{.Size}}' "localhost/kxdp:$tag")
elapsed=$((SECONDS - started))
echo
echo "image:   kxdp:$tag (built on $base, $driver storage in $store)"
echo "archive: $archive ($(du -h "$archive" | cut -f1), gzip-compressed $(gzip -c "$archive" | wc -c | numfmt --to=iec))"
echo "size:    $size unpacked"
echo "time:    $((elapsed / 60))m$((elapsed % 60))s"
