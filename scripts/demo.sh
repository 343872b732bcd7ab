#!/usr/bin/env bash
# The demo: replays a small two-node scenario through kxdp's pipeline and prints what happened
# to every packet (the live netns lab replaces this once the AF_XDP datapath lands).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"

cargo build --release --locked -p control --bin kxdp
example=pcap-fixtures/examples/two-node
out=target/demo
./target/release/kxdp replay --state "$example" --node node-a \
  --in pod-demo-client="$example/client.pcap" \
  --in uplink="$example/uplink.pcap" \
  --out "$out" --summary
echo
echo "per-port output pcaps and verdicts.jsonl are in $out/:"
ls -l "$out"
