#!/usr/bin/env bash
# `make demo`: the bundled simulated HyperLiquid exchange replaying recorded market data,
# and bistouryd in the foreground collecting it; `bistouryctl status` is shown once data
# flows, then the first strategy signals, then (in paper-live mode) the first decisions
# of the rules model and the paper account they trade. `make demo LLM=fake` asks a local fake OpenAI server instead,
# through the real LangChain client. Everything lives in .demo/ in the checkout; the
# control socket is in the default runtime directory, so `bistouryctl status` in a second
# terminal finds it without flags. Ctrl-C stops the daemon cleanly, then the simulators.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/.venv/bin"
DEMO="$PWD/.demo"
mkdir -p "$DEMO/state"
rm -f "$DEMO/sim.url" "$DEMO/llm.url"
LLM="${LLM:-rules}"
case "$LLM" in
  rules | fake) ;;
  *)
    echo "ERROR: LLM=$LLM is not a demo model" >&2
    echo "  → use LLM=rules (the default) or LLM=fake (a local fake OpenAI server)" >&2
    exit 2
    ;;
esac

setsid "$BIN/bistoury-simexchange" --port 0 --ready-file "$DEMO/sim.url" --speed 1x \
  >"$DEMO/simexchange.log" 2>&1 &
SIM=$!
FAKE=""
if [ "$LLM" = fake ]; then
  setsid "$BIN/python" -m bistouryd.llm.fakeprovider --ready-file "$DEMO/llm.url" \
    >"$DEMO/fakellm.log" 2>&1 &
  FAKE=$!
fi
trap 'kill "$SIM" $FAKE 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -s "$DEMO/sim.url" ] && break; sleep 0.1; done
if [ ! -s "$DEMO/sim.url" ]; then
  echo "ERROR: the simulated exchange did not start" >&2
  echo "  → see $DEMO/simexchange.log" >&2
  exit 1
fi
URL=$(cat "$DEMO/sim.url")

# The example configuration, pointed at the simulator (and at the fake model server).
LLM_LINE="  provider: rules"
if [ "$LLM" = fake ]; then
  for _ in $(seq 1 100); do [ -s "$DEMO/llm.url" ] && break; sleep 0.1; done
  if [ ! -s "$DEMO/llm.url" ]; then
    echo "ERROR: the fake model server did not start" >&2
    echo "  → see $DEMO/fakellm.log" >&2
    exit 1
  fi
  LLM_LINE="  provider: openai\n  providers: {openai: {model: gpt-4o-mini, base_url: \"$(cat "$DEMO/llm.url")/v1\"}}"
fi
sed -e "s|^  network: mainnet .*|  network: custom|" \
    -e "s|^  # base_url: .*|  base_url: $URL|" \
    -e "s|^  provider: rules .*|$LLM_LINE|" \
    -e "s|^  allow_contaminated: false.*|  allow_contaminated: true  # the demo replays 2025 data|" \
    etc/config.yaml >"$DEMO/config.yaml"

show_status() {
  for _ in $(seq 1 150); do
    if "$BIN/bistouryctl" status --json 2>/dev/null | grep -q '"ready": true'; then
      "$BIN/bistouryctl" collect >/dev/null
      sleep 8
      echo
      echo "──── bistouryctl status ─────────────────────────────────────────────"
      "$BIN/bistouryctl" status
      echo "─────────────────────────────────────────────────────────────────────"
      for _ in $(seq 1 40); do
        if "$BIN/bistouryctl" signals --json --limit 1 2>/dev/null | grep -q '"narrative"'; then
          echo "──── bistouryctl signals ────────────────────────────────────────────"
          "$BIN/bistouryctl" signals --limit 6
          echo "─────────────────────────────────────────────────────────────────────"
          break
        fi
        sleep 1
      done
      # .demo/state keeps earlier runs' decisions: wait for one made by this run.
      count_decisions() {
        "$BIN/bistouryctl" decisions list --json --limit 10000 2>/dev/null | grep -o '"rationale"' | wc -l
      }
      before=$(count_decisions)
      "$BIN/bistouryctl" mode paper-live >/dev/null
      for _ in $(seq 1 90); do
        if [ "$(count_decisions)" -gt "$before" ]; then
          echo "──── bistouryctl decisions (mode paper-live, model: $LLM) ─────────────"
          "$BIN/bistouryctl" decisions list --limit 6
          echo "──── bistouryctl positions (the paper account) ──────────────────────"
          sleep 2
          "$BIN/bistouryctl" positions
          echo "─────────────────────────────────────────────────────────────────────"
          break
        fi
        sleep 1
      done
      echo "Simulated exchange: $URL (replaying recorded HyperLiquid data, log: .demo/simexchange.log)"
      echo "In another terminal:  .venv/bin/bistouryctl status | signals --follow | decisions | positions | trades | events | stop"
      echo "Metrics:              curl -s http://127.0.0.1:9464/metrics | grep -E '^bistoury_(md|signal|llm|equity|orders)'"
      echo "Ctrl-C here stops the daemon."
      echo
      return 0
    fi
    sleep 0.2
  done
  echo "bistouryd did not become ready in 30 s; see the lines above" >&2
}

show_status &
"$BIN/bistouryd" --config "$DEMO/config.yaml" --state-dir "$DEMO/state"
