#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, and the whole test suite (unit, property,
# fixture scenarios, replay CLI, the root tests with namespaces, XDP and AF_XDP, and, when
# ../shared/fixtures is present, the external captures). Ends with how many tests were
# skipped (or ran a fallback) and why: under CI=true only a kernel capability that a probe
# proved missing may be among them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# Tests that do not run say so in this log (testkit::root::skipped); cargo's own output has
# the #[ignore]d ones (measurements run by hand). --no-fail-fast: every failing binary is
# reported, not only the first.
export KXDP_SKIP_LOG
KXDP_SKIP_LOG="$(mktemp /tmp/kxdp-skips.XXXXXX)"
output="$(mktemp /tmp/kxdp-test-output.XXXXXX)"
trap 'rm -f "$KXDP_SKIP_LOG" "$output"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$output" || status=$?

echo
count() { grep '^test result:' "$output" | grep -Eo "[0-9]+ $1" | awk '{s += $1} END {print s + 0}'; }
passed=$(count passed)
failed=$(count failed)
ignored=$(count ignored)
skipped=$(wc -l < "$KXDP_SKIP_LOG")
echo "tests: $passed passed, $failed failed, $ignored ignored (measurements, run by hand), $skipped skipped or ran a fallback"
if [ "$skipped" -gt 0 ]; then
  echo "skipped, and why:"
  awk -F'\t' '{printf "  %s: %s\n", $1, $2}' "$KXDP_SKIP_LOG" | sort | uniq -c | sort -rn
fi
exit "$status"
