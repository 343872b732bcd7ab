#!/usr/bin/env bash
# The demo: builds kxdp (the node's binary), kxdp-cni and kxdp-lab (the lab tool), then
# `kxdp-lab run`: a two-node cluster in network namespaces on this machine (kxdp agents,
# pods made through kxdp-cni, Services, a NetworkPolicy, a kernel VXLAN peer), checked with
# real traffic, printed as a table, and removed again. Then the offline replay of the
# two-node example. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"

cargo build --release --locked -p control -p cni -p lab --bin kxdp --bin kxdp-cni --bin kxdp-lab
status=0
./target/release/kxdp-lab run || status=$?

echo
echo "offline: the two-node example replayed through the same pipeline"
example=pcap-fixtures/examples/two-node
out=target/demo
./target/release/kxdp replay --state "$example" --node node-a \
  --in pod-demo-client="$example/client.pcap" \
  --in uplink="$example/uplink.pcap" \
  --out "$out" --summary
echo
echo "per-port output pcaps and verdicts.jsonl are in $out/"
exit "$status"
