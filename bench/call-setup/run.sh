#!/usr/bin/env bash
# Call set-up benchmark: Duet (and the reference seed app when it is there) in headless
# Chromium, inside a private network namespace with only loopback.
#
#   bench/call-setup/run.sh [--runs N] [--seed-app DIR] [--out FILE]
#
# Needs: the duet binary (DUET_BIN, default target/release/duet if built, else
# target/debug/duet), the browser tests' npm packages (tests/browser/node_modules,
# installed by ./scripts/test), Chromium, and root or unprivileged user namespaces.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD

if [[ -z ${DUET_BIN:-} ]]; then
  if [[ -x $ROOT/target/release/duet ]]; then
    DUET_BIN=$ROOT/target/release/duet
  else
    DUET_BIN=$ROOT/target/debug/duet
  fi
fi
[[ -x $DUET_BIN ]] || { echo "no duet binary at $DUET_BIN (cargo build --release -p duet-server)" >&2; exit 1; }
export DUET_BIN
[[ -d $ROOT/tests/browser/node_modules/playwright-core ]] ||
  { echo "tests/browser/node_modules is missing: run ./scripts/test once, or npm ci in tests/browser" >&2; exit 1; }

# The seed app's packages, if the app is there and they are not installed yet.
SEED=$ROOT/../shared/anchors/seed-app
for ((i = 1; i <= $#; i++)); do
  if [[ ${!i} == --seed-app ]]; then j=$((i + 1)); SEED=${!j}; fi
done
if [[ -f $SEED/package.json && ! -d $SEED/node_modules ]]; then
  (cd "$SEED" && npm install --omit=optional --no-audit --no-fund --loglevel=error)
fi

ns=(unshare --net)
[[ $(id -u) -ne 0 ]] && ns=(unshare --user --map-root-user --net)
# shellcheck disable=SC2016 # expanded by the inner shell
"${ns[@]}" bash -c '
  set -euo pipefail
  export PATH="$PATH:/usr/sbin:/sbin"
  ip link set lo up
  cd "$1"
  shift
  exec node bench/call-setup/bench.mjs "$@"
' call-setup-bench "$ROOT" "$@"
