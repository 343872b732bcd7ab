#!/usr/bin/env bash
# Installs what building and testing kxdp needs on Debian 12, idempotently: packages that
# are already present are not touched, and nothing is fetched when all are there.
set -euo pipefail

# clang + libbpf-dev: the XDP programs (C, clang -target bpf); iproute2: the netns lab and
# tests (kxdp-cni and the agent use rtnetlink); ethtool: the lab's, the rig's and the tests'
# veths; pkg-config + gcc: -sys crates (ring);
# nftables: nft, with which kxdp agent installs the pods' masquerade rule (walk 6).
# containernetworking-plugins: /usr/lib/cni/host-local, the IPAM plugin kxdp-cni (and its
# tests, and the lab's pods) delegate to, and portmap, chained after it for hostPorts;
# iputils-ping: the lab's ICMP checks; prometheus:
# promtool, which validates the agent's /metrics exposition in control/tests/node/metrics.rs;
# valgrind (callgrind) and linux-perf: the profiles in bench (`profile ipp`, `profile flame`)
# and their test, bench/tests/profile.rs. iptables (Debian's, nf_tables backend): kube-proxy's
# iptables-mode rules, the kernel baseline of `kxdp-bench` (bench/rig/src/kernel_path/).
# containerd + runc: the containerd lab, in which a real runtime runs the agents from the kxdp
# image and calls kxdp-cni; buildah: that image, which `deploy/image/build.sh --binaries`
# makes from the test build's binaries; protobuf-compiler: protoc, with which the k8s-cri
# crate's build script generates the CRI gRPC bindings the lab talks to containerd with.
# openssl + socat: the agent's in-cluster bootstrap test makes a CA and a server certificate
# (openssl) and puts TLS in front of the API server double (socat's OPENSSL-LISTEN).
packages=(clang llvm libbpf-dev iproute2 ethtool gcc libc6-dev make pkg-config ca-certificates curl
  containernetworking-plugins nftables iptables iputils-ping prometheus valgrind linux-perf
  containerd runc buildah protobuf-compiler openssl socat)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages ${missing[*]}; run as root (or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Rust toolchain: the pinned stable from rust-toolchain.toml, via rustup.
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "install-deps: installing Rust with rustup" >&2
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --default-toolchain 1.95.0 -c rustfmt -c clippy
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
for c in cargo-fmt cargo-clippy; do
  command -v "$c" >/dev/null 2>&1 || rustup component add rustfmt clippy
done
