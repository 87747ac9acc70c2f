#!/usr/bin/env bash
# Runs Tally's whole test suite on a fresh machine: formatting, lints, and every test on both
# storage backends. Whatever the tests need is installed and started here, on loopback, and
# stopped afterwards: scripts/with-postgres.sh installs PostgreSQL from Debian's packages when it is
# missing and runs a throwaway cluster for the duration of the tests (TALLY_TEST_POSTGRES_URL).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tally/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Without it, the PostgreSQL half of the store suite fails rather than skips.
export CI="${CI:-true}"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
./scripts/with-postgres.sh cargo test --workspace --locked
