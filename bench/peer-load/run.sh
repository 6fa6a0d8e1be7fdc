#!/usr/bin/env bash
# Relay benchmark: N concurrent calls, each a pair of native duet-peers in a room
# of its own, relayed only (--relay-only), at about 1 Mbit/s each way, through
# Duet's embedded TURN relay and then through coturn (Duet with --no-turn
# handing out coturn in iceServers), same load, same run. For each N it records
# the loss the peers report (RTCP receiver reports), and the relay process's
# CPU time and resident memory per call. Figures go to BENCHMARKS.md by hand.
#
# Everything runs on loopback. Only processes this script started are stopped,
# by their PID. Each step is bounded by DURATION plus set-up time.
#
# Environment (defaults in brackets):
#   CALLS          the numbers of concurrent calls to try ["5 10 20 40"]
#   DURATION       seconds of media per step [20]
#   VIDEO_BITRATE  the video fixture's bitrate [900k]; with 48k Opus, ~1 Mbit/s
#   SKIP_BUILD=1   use the binaries already in target/release
#   SKIP_COTURN=1  measure Duet's relay only
#   OUT            where reports and logs go [target/bench-peer-load/DATE]
set -euo pipefail

ROOT=$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)
cd "$ROOT"

CALLS=${CALLS:-"5 10 20 40"}
DURATION=${DURATION:-20}
VIDEO_BITRATE=${VIDEO_BITRATE:-900k}
OUT=${OUT:-$ROOT/target/bench-peer-load/$(date -u +%Y%m%d-%H%M%S)}
DUET_BIN=$ROOT/target/release/duet
PEER_BIN=$ROOT/target/release/duet-peer
CLK_TCK=$(getconf CLK_TCK)

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'peer-load: %s\n' "$*" >&2; exit 1; }

mkdir -p "$OUT"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  log "building duet and duet-peer (release)"
  cargo build --release -p duet-server -p duet-peer
fi
command -v ffmpeg >/dev/null || die "ffmpeg is needed for the 1 Mbit/s fixture (apt-get install -y ffmpeg)"
if [[ ${SKIP_COTURN:-0} != 1 ]]; then
  command -v turnserver >/dev/null || die "coturn is needed (apt-get install -y coturn), or SKIP_COTURN=1"
fi

log "making the fixture: VP8 at $VIDEO_BITRATE + Opus at 48k"
VIDEO_BITRATE=$VIDEO_BITRATE AUDIO_BITRATE=48k VIDEO_SECONDS=3 \
  crates/peer/fixtures/make-fixtures.sh "$OUT/fixtures" >/dev/null

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Starts duet (with its relay, or with coturn as its only ICE server); sets DUET_PID,
# DUET_PORT, RELAY_PID (the process that relays).
start_duet() {
  local relay=$1 data=$OUT/$relay/duet-data
  mkdir -p "$data"
  DUET_PORT=$(free_port)
  local args=(serve --listen "127.0.0.1:$DUET_PORT" --data-dir "$data" --max-connections-per-ip 100000)
  if [[ $relay == duet ]]; then
    args+=(--turn-listen "127.0.0.1:$(free_port)" --allow-peer 127.0.0.0/8
           --turn-user-quota 10 --turn-max-allocations 100000)
  else
    local turn_port
    turn_port=$(free_port)
    turnserver -n --listening-ip=127.0.0.1 --listening-port="$turn_port" --relay-ip=127.0.0.1 \
      --lt-cred-mech --user=bench:bench-secret --realm=duet-bench --no-tls --no-dtls --no-cli \
      --allow-loopback-peers --min-port=50000 --max-port=59999 --total-quota=0 --user-quota=0 \
      --log-file=stdout --simple-log >"$OUT/$relay/coturn.log" 2>&1 &
    RELAY_PID=$!
    PIDS+=("$RELAY_PID")
    cat >"$OUT/$relay/duet.toml" <<EOF
[[ice_servers]]
urls = ["turn:127.0.0.1:$turn_port?transport=udp"]
username = "bench"
credential = "bench-secret"
EOF
    args+=(--no-turn --config "$OUT/$relay/duet.toml")
  fi
  "$DUET_BIN" "${args[@]}" >"$OUT/$relay/duet.log" 2>&1 &
  DUET_PID=$!
  PIDS+=("$DUET_PID")
  if [[ $relay == duet ]]; then RELAY_PID=$DUET_PID; fi
  for _ in $(seq 100); do
    grep -q "listening on" "$OUT/$relay/duet.log" && return 0
    sleep 0.1
  done
  die "duet did not start: $(cat "$OUT/$relay/duet.log")"
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# UDP datagrams the kernel dropped for full receive buffers, machine-wide.
rcvbuf_errors() { awk '/^Udp:/ && $2 ~ /^[0-9]+$/ {print $6}' /proc/net/snmp; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# One step: N calls through the running relay; appends a JSON line to results.jsonl.
step() {
  local relay=$1 calls=$2 report=$OUT/$1/calls-$2.json
  local rss_before cpu_before cpu_after rss_peak=0 started ended drops_before drops_after
  drops_before=$(rcvbuf_errors)
  rss_before=$(rss_kib "$RELAY_PID")
  cpu_before=$(cpu_ticks "$RELAY_PID")
  started=$(date +%s.%N)
  timeout $((DURATION + 120)) "$PEER_BIN" --url "wss://127.0.0.1:$DUET_PORT/ws" --room "b$calls" --insecure \
    --relay-only --calls "$calls" --duration "$DURATION" --timeout 30 \
    --video "$OUT/fixtures/video-vp8.ivf" --audio "$OUT/fixtures/audio-opus.ogg" \
    --report "$report" 2>"$OUT/$relay/calls-$calls.log" &
  local peer_pid=$!
  while kill -0 "$peer_pid" 2>/dev/null; do
    local rss
    rss=$(rss_kib "$RELAY_PID")
    ((rss > rss_peak)) && rss_peak=$rss
    sleep 1
  done
  wait "$peer_pid" || true
  ended=$(date +%s.%N)
  cpu_after=$(cpu_ticks "$RELAY_PID")
  drops_after=$(rcvbuf_errors)
  python3 - "$report" "$relay" "$calls" "$started" "$ended" "$cpu_before" "$cpu_after" "$CLK_TCK" \
    "$rss_before" "$rss_peak" "$((drops_after - drops_before))" >>"$OUT/results.jsonl" <<'PY'
import json, sys
report, relay, calls, started, ended, cpu0, cpu1, tck, rss0, rss1, drops = sys.argv[1:]
r = json.load(open(report))
calls = int(calls)
wall = float(ended) - float(started)
cpu = (int(cpu1) - int(cpu0)) / int(tck)
print(json.dumps({
    "relay": relay, "calls": calls,
    "calls_ok": r["calls_with_media_both_ways"],
    "loss_percent": round(r["loss_percent"], 3),
    "received_kbps_p50": r["received_kbps"]["p50"],
    "received_kbps_min": r["received_kbps"]["min"],
    "relay_cpu_percent": round(100 * cpu / wall, 1),
    "relay_cpu_percent_per_call": round(100 * cpu / wall / calls, 2),
    "relay_rss_mib": round(int(rss1) / 1024, 1),
    "relay_rss_kib_per_call": round((int(rss1) - int(rss0)) / calls, 1),
    "time_to_connected_ms_p95": r["time_to_connected_ms"]["p95"],
    "udp_rcvbuf_drops": int(drops),
    "errors": r["errors"][:3],
}))
PY
  tail -1 "$OUT/results.jsonl" >&2
}

for relay in duet coturn; do
  if [[ $relay == coturn && ${SKIP_COTURN:-0} == 1 ]]; then continue; fi
  mkdir -p "$OUT/$relay"
  log "relay: $relay"
  start_duet "$relay"
  sleep 1
  for calls in $CALLS; do
    step "$relay" "$calls"
  done
  kill "$DUET_PID" 2>/dev/null || true
  if [[ $relay == coturn ]]; then kill "$RELAY_PID" 2>/dev/null || true; fi
  sleep 1
done

log "results ($OUT/results.jsonl)"
cat "$OUT/results.jsonl"
