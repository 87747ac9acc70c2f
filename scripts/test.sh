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

# Schemathesis (pinned, as in crates/server/tests/schemathesis.rs) fuzzes the API from its OpenAPI
# document during the tests: install it once into a virtualenv under the target dir, then reuse it.
SCHEMATHESIS_VERSION=4.32.5
st_venv="$CARGO_TARGET_DIR/tmp/schemathesis-venv"
if ! "$st_venv/bin/pip" show schemathesis 2>/dev/null | grep -qx "Version: $SCHEMATHESIS_VERSION"; then
  mkdir -p "$CARGO_TARGET_DIR/tmp"
  python3 -m venv "$st_venv"
  "$st_venv/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

# promtool (Debian's prometheus package) checks /metrics and the alert rules during the tests
# (crates/server/tests/webhooks.rs); install it once when missing, as with-postgres.sh does
# PostgreSQL.
if ! command -v promtool >/dev/null 2>&1; then
  echo "test.sh: installing promtool from Debian's prometheus package" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
(cd deploy/prometheus && promtool check rules alerts.yml && promtool test rules alerts_test.yml)

# The browser tests (crates/server/tests/browser.rs) drive Debian's Chromium through chromedriver;
# never a downloaded browser. Under CI=true they fail when Chromium is missing.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "test.sh: installing chromium and chromium-driver from Debian's packages" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
./scripts/with-postgres.sh cargo test --workspace --locked
