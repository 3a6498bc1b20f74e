#!/usr/bin/env bash
# `make demo`: run bistouryd in the foreground with the example configuration and show
# `bistouryctl status` once it is ready. State goes to .demo/ in the checkout; the control
# socket is in the default runtime directory, so `bistouryctl status` in a second
# terminal finds it without flags. Ctrl-C stops the daemon cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
STATE="$PWD/.demo/state"
mkdir -p "$STATE"

show_status() {
  for _ in $(seq 1 150); do
    if "$BIN/bistouryctl" status --json 2>/dev/null | grep -q '"ready": true'; then
      echo
      echo "──── bistouryctl status ─────────────────────────────────────────────"
      "$BIN/bistouryctl" status
      echo "─────────────────────────────────────────────────────────────────────"
      echo "In another terminal:  .venv/bin/bistouryctl status | events | mode collect | stop"
      echo "Metrics:              curl -s http://127.0.0.1:9464/metrics | grep ^bistoury_"
      echo "Ctrl-C here stops the daemon."
      echo
      return 0
    fi
    sleep 0.2
  done
  echo "bistouryd did not become ready in 30 s; see the lines above" >&2
}

show_status &
exec "$BIN/bistouryd" --config "$PWD/etc/config.yaml" --state-dir "$STATE"
