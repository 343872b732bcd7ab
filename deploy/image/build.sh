#!/usr/bin/env bash
# Builds the kxdp image from deploy/image/Containerfile, the recipe a cluster's CI builds,
# on a Debian 12 machine that reaches no container registry: only Debian's package mirror
# and crates.io. The Containerfile's build base is made here instead of pulled: Debian 12
# by mmdebstrap, with the build tools and the Rust toolchain of rust-toolchain.toml copied
# from this machine's rustup. Its runtime stage starts from scratch, which is never pulled.
#
#   deploy/image/build.sh                 build; writes target/image/kxdp-VERSION-COMMIT.tar
#   deploy/image/build.sh --rebuild-base  make the build base anew (newer Debian packages)
#   deploy/image/build.sh --binaries DIR  the same runtime image from this machine's build, in
#                                         under a minute (the test suite's); writes
#                                         target/image/kxdp-VERSION-COMMIT-host.tar
#   deploy/image/build.sh --clean         delete the image store (bases, caches) and stop
#   ... --out ARCHIVE                     (with a build) write the archive there instead
#
# The archive is a docker-archive tagged kxdp:VERSION-COMMIT (the workspace version, the
# commit, "-dirty" when the work tree has changes): `docker load -i`, `podman load -i`,
# `ctr -n k8s.io image import` or `kind load image-archive` take it. The last line the
# script prints is `archive: PATH`, PATH absolute.
#
# --binaries DIR skips the build stage: the agent is DIR/kxdp, as cargo built it here (DIR
# is target/debug or target/release, whichever profile the caller built); kxdp-cni is built
# static here as the Containerfile builds it (DIR's is dynamic), in target/image-host, in
# DIR's profile; assemble-rootfs.sh completes the tree on this machine, which must be Debian
# 12 like the build stage, since the runtime files are copied from it; and the image is made
# by the Containerfile's own runtime stage, taking that tree as its build stage. The tag
# ends in "-host" (kxdp:VERSION-COMMIT-host): the binaries are not the recipe's (another
# profile, perhaps another tree), so the image is never taken for the recipe's.
#
# Everything it stores lives in KXDP_IMAGE_STORE (default /var/tmp/kxdp-image): buildah's
# images and containers, and the cargo cache mounts (crates, compiled dependencies), with
# which a rebuild of an unchanged tree takes seconds and one after a change to the agent
# minutes (its crate and the LTO link), not the first build's quarter of an hour. Builds
# sharing a store run one at a time. Runs as root (buildah, chroot); installs buildah (and,
# for the full build, mmdebstrap) if missing.
set -euo pipefail

usage() {
  echo "usage: $0 [--rebuild-base] [--out ARCHIVE]" >&2
  echo "       $0 --binaries DIR [--out ARCHIVE]" >&2
  echo "       $0 --clean" >&2
  exit 2
}
rebuild_base=false
clean=false
binaries=""
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rebuild-base) rebuild_base=true ;;
    --clean) clean=true ;;
    --binaries | --out)
      if [ $# -lt 2 ] || [ -z "$2" ]; then
        echo "build-image: $1 takes a path" >&2
        usage
      fi
      if [ "$1" = --binaries ]; then binaries=$2; else out=$2; fi
      shift
      ;;
    *) usage ;;
  esac
  shift
done
if [ -n "$binaries" ] && [ "$rebuild_base" = true ]; then
  echo "build-image: --binaries makes no build base; --rebuild-base does not go with it" >&2
  usage
fi
if [ "$clean" = true ] && { [ "$rebuild_base" = true ] || [ -n "$binaries$out" ]; }; then
  echo "build-image: --clean goes alone" >&2
  usage
fi
# DIR and ARCHIVE are the caller's, relative to where it runs; the script runs at the root.
if [ -n "$binaries" ]; then
  if [ ! -f "$binaries/kxdp" ] || [ ! -x "$binaries/kxdp" ]; then
    echo "build-image: no kxdp in $binaries (--binaries takes cargo's output directory, target/debug or target/release)" >&2
    exit 1
  fi
  binaries=$(realpath -- "$binaries")
fi
if [ -n "$out" ]; then
  out=$(realpath -m -- "$out")
fi
cd "$(dirname "$0")/../.."

store=${KXDP_IMAGE_STORE:-/var/tmp/kxdp-image}
mirror=${KXDP_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${KXDP_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

if [ "$(id -u)" -ne 0 ]; then
  echo "build-image: run as root (buildah, mmdebstrap and chroot need it)" >&2
  exit 1
fi

# --binaries copies the runtime files (glibc, nft, the CNI plugins) out of this machine,
# where the full build copies them out of its Debian 12 build stage: the same files only
# on Debian 12, with the packages scripts/install-deps.sh installs.
if [ -n "$binaries" ]; then
  os_field() {
    sed -n "s/^$1=\"\{0,1\}\([^\"]*\)\"\{0,1\}\$/\1/p" /etc/os-release 2>/dev/null
  }
  if [ "$(os_field ID)" != debian ] || [ "$(os_field VERSION_ID)" != 12 ]; then
    echo "build-image: --binaries copies glibc, nft and the CNI plugins from this machine, which must be Debian 12 (the Containerfile's build stage) but is $(os_field PRETTY_NAME || true); build the full image instead (without --binaries)" >&2
    exit 1
  fi
  for f in /usr/sbin/nft /usr/lib/cni/host-local /usr/lib/cni/portmap /usr/bin/objcopy /usr/bin/readelf; do
    if [ ! -x "$f" ]; then
      echo "build-image: $f is missing; run scripts/install-deps.sh first" >&2
      exit 1
    fi
  done
fi

# Overlay storage keeps each layer once; vfs copies every layer whole into each container
# and image built on it (the 1.4 GB build base, several times over). Overlay needs a kernel
# that mounts overlayfs on the store's filesystem; where it cannot, KXDP_IMAGE_DRIVER=vfs.
driver=${KXDP_IMAGE_DRIVER:-overlay}
bah() {
  buildah --root "$store/storage" --runroot "$store/run" --storage-driver "$driver" "$@"
}

# One build at a time in a store: each removes the containers, and the images of its kind,
# that are not its own, which would pull them from under another build.
lock_store() {
  exec 9>"$store/lock"
  if ! flock -n 9; then
    echo "build-image: waiting for another build in $store" >&2
    flock 9
  fi
}

if [ "$clean" = true ]; then
  if [ -d "$store" ]; then
    lock_store
    bah rm --all >/dev/null 2>&1 || true
    # Overlay leaves the store's layers mounted while an image is in use; nothing is now.
    grep -o " $store/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount 2>/dev/null || true
    rm -rf "$store"
  fi
  echo "build-image: removed $store"
  exit 0
fi

# buildah builds; mmdebstrap makes the Debian 12 build base, which --binaries does without.
# Installed only when missing.
packages=(buildah)
[ -n "$binaries" ] || packages+=(mmdebstrap)
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
mkdir -p "$store/tmp"
lock_store
# buildah puts the Containerfile's cache mounts (cargo's registry and target directory) and
# its temporary files under TMPDIR: inside the store, so --clean removes them too.
export TMPDIR="$store/tmp"

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
commit=$(git rev-parse --short=12 HEAD)
if [ -n "$(git status --porcelain)" ]; then
  commit="$commit-dirty"
fi
tag="$version-$commit"
[ -z "$binaries" ] || tag="$tag-host"
archive=${out:-$PWD/target/image/kxdp-$tag.tar}
mkdir -p "$(dirname "$archive")"

# The toolchain rust-toolchain.toml names, as this machine's rustup has it installed
# (scripts/install-deps.sh installs rustup).
export PATH="$HOME/.cargo/bin:$PATH"
channel=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
if ! command -v rustup >/dev/null 2>&1; then
  echo "build-image: rustup not found; run scripts/install-deps.sh first" >&2
  exit 1
fi

base=""
work=""
rootfs_image=""
cleanup() {
  # What a failed build leaves: its containers (bud removes its own unless it failed),
  # and a --binaries build's tree and rootfs image.
  bah rm --all >/dev/null 2>&1 || true
  if [ -n "$rootfs_image" ]; then
    bah rmi "$rootfs_image" >/dev/null 2>&1 || true
  fi
  if [ -n "$work" ]; then
    rm -rf "$work"
  fi
}
trap cleanup EXIT

# The image each build keeps of those it manages: a full build, kxdp:TAG and its build base;
# a --binaries build, kxdp:TAG-host. Neither removes the other's, so that a test run's
# image does not cost the last full build its image, nor a full build a test its.
own_images() {
  if [ -n "$binaries" ]; then
    grep -E -e '^localhost/kxdp:.*-host$' -e '^localhost/kxdp-host-rootfs:'
  else
    grep -E '^localhost/kxdp(-build-base)?:' | grep -v -e '-host$'
  fi
}

# Archive, tidy the store, report; $1 says what the image was built from.
finish() {
  # Pushed by ID, so the archive carries the one name given here (pushed by name, buildah
  # adds localhost/kxdp too); kxdp:TAG is what a runtime reads as docker.io/library/kxdp:TAG.
  rm -f "$archive"
  bah push --quiet "$(cat "$store/tmp/iid")" "docker-archive:$archive:kxdp:$tag"
  rm -f "$store/tmp/iid"

  # Keep the store to the current image and base: older ones of this kind go, and with
  # them every layer nothing uses.
  local old
  while read -r old; do
    bah rmi "$old" >/dev/null
  done < <(bah images --format '{{.Name}}:{{.Tag}}' | own_images |
    grep -vxF -e "localhost/kxdp:$tag" ${base:+-e "$base"} || true)
  bah rmi --prune >/dev/null 2>&1 || true

  local size elapsed
  size=$(bah images --format '{{.Size}}' "localhost/kxdp:$tag")
  elapsed=$((SECONDS - started))
  echo
  echo "image:   kxdp:$tag ($1, $driver storage in $store)"
  echo "size:    $size unpacked; the archive $(du -h "$archive" | cut -f1), gzip-compressed $(gzip -c "$archive" | wc -c | numfmt --to=iec)"
  echo "time:    $((elapsed / 60))m$((elapsed % 60))s"
  # The last line, for a caller: grep '^archive: '.
  echo "archive: $archive"
}

if [ -n "$binaries" ]; then
  # kxdp-cni as the Containerfile builds it (static; see there), in DIR's profile and in a
  # target directory of its own: a cargo at work on target/ (the test run that calls this)
  # holds that one's lock. The one in DIR is the workspace's ordinary, dynamic build.
  profile=dev profile_dir=debug
  if [ "$(basename "$binaries")" = release ]; then
    profile=release profile_dir=release
  fi
  echo "build-image: building kxdp-cni static ($profile profile, target/image-host)" >&2
  env -u CARGO_ENCODED_RUSTFLAGS RUSTUP_TOOLCHAIN="$channel" \
    RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --profile "$profile" --locked -p cni --bin kxdp-cni \
    --target x86_64-unknown-linux-gnu --target-dir target/image-host >&2

  # The build stage's /rootfs, made here: the two binaries, and assemble-rootfs.sh on this
  # machine for the rest, as the build stage runs it.
  work=$(mktemp -d "$store/tmp/host.XXXXXX")
  install -D -m 0755 "$binaries/kxdp" "$work/rootfs/usr/local/bin/kxdp"
  install -D -m 0755 "target/image-host/x86_64-unknown-linux-gnu/$profile_dir/kxdp-cni" \
    "$work/rootfs/usr/local/bin/kxdp-cni"
  bash deploy/image/assemble-rootfs.sh "$work/rootfs"
  rootfs_image="localhost/kxdp-host-rootfs:$tag"
  ctr=$(bah from scratch)
  bah copy "$ctr" "$work/rootfs" /rootfs >/dev/null
  bah commit --rm "$ctr" "$rootfs_image" >/dev/null

  # The Containerfile's runtime stage as it is, on that image as its build stage: the
  # global ARGs, then the image as `build`, then the last stage, the one FROM ${RUNTIME_BASE}.
  cf=deploy/image/Containerfile
  first_from=$(grep -n -m1 '^FROM ' "$cf" | cut -d: -f1)
  last_from=$(grep -n '^FROM ' "$cf" | tail -n1 | cut -d: -f1)
  runtime_from=$(grep -n -E '^FROM \$\{RUNTIME_BASE\}([[:space:]]|$)' "$cf" | cut -d: -f1)
  if [ -z "$runtime_from" ] || [ "$runtime_from" != "$last_from" ]; then
    echo "build-image: $cf: the last stage must be the one stage FROM \${RUNTIME_BASE}" >&2
    exit 1
  fi
  {
    head -n $((first_from - 1)) "$cf" | grep '^ARG ' || true
    echo "FROM $rootfs_image AS build"
    tail -n +"$runtime_from" "$cf"
  } >"$work/Containerfile"
  mkdir "$work/context"
  bah bud --pull=never --build-arg RUNTIME_BASE=scratch \
    --build-arg VERSION="$version" --build-arg REVISION="$commit" \
    --iidfile "$store/tmp/iid" -f "$work/Containerfile" -t "localhost/kxdp:$tag" \
    "$work/context" >&2
  # buildah (1.28) keeps the container of a stage without instructions, `build` here, lest
  # it remove an image the file names (containers/buildah#3025): it goes before the image.
  while read -r ctr; do
    bah rm "$ctr" >/dev/null
  done < <(bah containers --quiet --filter ancestor="$rootfs_image")
  bah rmi "$rootfs_image" >/dev/null
  rootfs_image=""

  finish "kxdp from $binaries"
  exit 0
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

# --network host: the build's RUN steps reach crates.io (and, with another base, Debian's
# mirror) through the host's network, without buildah making a bridge and NAT rules for it.
# --pull=never: every base is local; a missing one is an error, not a registry request.
bah bud --network host --pull=never \
  --build-arg BUILD_BASE="$base" --build-arg RUNTIME_BASE=scratch \
  --build-arg VERSION="$version" --build-arg REVISION="$commit" \
  --iidfile "$store/tmp/iid" -f deploy/image/Containerfile -t "localhost/kxdp:$tag" . >&2

finish "built on $base"
