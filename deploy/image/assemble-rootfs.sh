#!/usr/bin/env bash
# Completes the kxdp runtime image's filesystem under ROOT, in the build stage of
# deploy/image/Containerfile (Debian 12, after kxdp and kxdp-cni were installed into
# ROOT/usr/local/bin). It adds exactly:
#   /usr/sbin/nft                            the agent runs `nft -f -` for its masquerade table
#   /usr/local/lib/kxdp/cni/{host-local,portmap,loopback}
#                                            Debian's CNI plugins, for the init container to
#                                            install on the node beside kxdp-cni (loopback:
#                                            containerd's CRI runs it for every pod and fails
#                                            the pod when /opt/cni/bin lacks it)
#   the shared libraries kxdp and nft load   (glibc, libgcc_s, nft's libraries)
# strips the debug info off kxdp and kxdp-cni (symbols stay, for backtraces and perf), and
# then starts each program in a chroot of ROOT, so a missing library fails the build rather
# than the pod.
set -euo pipefail

root=${1:?usage: assemble-rootfs.sh ROOT}
fail() {
  echo "assemble-rootfs: $*" >&2
  exit 1
}

# kxdp-cni runs on the node, not in this filesystem: linked statically, it needs nothing of
# the node's glibc. A build that lost the static flag would still start here, so check.
readelf -l "$root/usr/local/bin/kxdp-cni" | grep -q 'program interpreter' &&
  fail "kxdp-cni is dynamically linked; it must be static (target-feature=+crt-static)"

# The release profile keeps line tables (debug = "line-tables-only"): three quarters of the
# agent's 80 MB, which every node would pull. Function names stay in the symbol table.
for prog in kxdp kxdp-cni; do
  objcopy --strip-debug "$root/usr/local/bin/$prog"
done

install -D -m 0755 /usr/sbin/nft "$root/usr/sbin/nft"
for plugin in host-local portmap loopback; do
  install -D -m 0755 "/usr/lib/cni/$plugin" "$root/usr/local/lib/kxdp/cni/$plugin"
done

# What the dynamic programs that run in the container load, as ldd resolves it here. The
# loader goes where the programs' PT_INTERP names it (/lib64/ld-linux-x86-64.so.2); each
# library goes, under the soname ldd printed, into the directory its path resolves to
# (/usr/lib/x86_64-linux-gnu on Debian's merged /usr), which the loader searches by default,
# so the image needs neither /lib symlinks nor an ld.so.cache.
copy_libs() {
  local prog=$1 listing path dest
  listing=$(ldd "$prog")
  if grep -q 'not found' <<<"$listing"; then
    fail "$prog: a library is missing:"$'\n'"$listing"
  fi
  # `soname => /path (addr)` for a library, `/path (addr)` for the loader; the vDSO has no path.
  while read -r path; do
    if [[ $path == */ld-linux* ]]; then
      dest=$root$path
    else
      dest=$root$(readlink -f "$(dirname "$path")")/$(basename "$path")
    fi
    mkdir -p "$(dirname "$dest")"
    cp -L --preserve=mode "$path" "$dest"
  done < <(awk '$2 == "=>" { print $3; next } $1 ~ /^\// { print $1 }' <<<"$listing")
}
copy_libs "$root/usr/local/bin/kxdp"
copy_libs "$root/usr/sbin/nft"

# Each program starts in the finished filesystem (CAP_SYS_CHROOT is a build's default).
chroot "$root" /usr/local/bin/kxdp --help >/dev/null || fail "kxdp does not start in the image"
chroot "$root" /usr/sbin/nft --version >/dev/null || fail "nft does not start in the image"
for prog in /usr/local/bin/kxdp-cni /usr/local/lib/kxdp/cni/host-local /usr/local/lib/kxdp/cni/portmap /usr/local/lib/kxdp/cni/loopback; do
  CNI_COMMAND=VERSION chroot "$root" "$prog" </dev/null >/dev/null || fail "$prog does not start in the image"
done

echo "assemble-rootfs: the image holds:" >&2
(cd "$root" && find . -mindepth 1 ! -type d | sort) >&2
