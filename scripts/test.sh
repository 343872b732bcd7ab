#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, and the whole test suite (unit, property,
# fixture scenarios, replay CLI, and, when ../shared/fixtures is present, the external captures).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
