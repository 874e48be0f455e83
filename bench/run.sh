#!/usr/bin/env bash
# Benchmarks of kratos-phone-courier (issue #6): one command.
#
#   bash bench/run.sh            # full run (about 10 minutes plus the build), writes BENCHMARKS.md
#   bash bench/run.sh --quick    # 3-second runs and 20 000 keys: a smoke test,
#                                # writes bench/quick-results.md instead
#
# Builds the release binaries, starts `twilio-sandbox` and
# `kratos-phone-courier serve` on free loopback ports (configured by
# environment variables only), drives them with wrk (Debian package `wrk`,
# installed here when missing, with bench/load.lua) and writes a results
# table with the machine, the date and the exact commands. Scenarios and
# targets: bench/README.md. Only loopback is used; every load run is bounded
# in time (and the key run also in count).

set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1

if [ "$QUICK" = 1 ]; then
  DURATION=3 WARMUP=1 REJECT_DURATION=2 KEYS=20000 INFLIGHT_DURATION=6 STARTUP_RUNS=5
  OUT="$ROOT/bench/quick-results.md"
else
  DURATION=20 WARMUP=5 REJECT_DURATION=10 KEYS=1000000 INFLIGHT_DURATION=12 STARTUP_RUNS=30
  OUT="$ROOT/BENCHMARKS.md"
fi
RATES=(500 2000 5000)
CONNS=64     # wrk connections for the throughput runs
THREADS=2    # wrk threads
INFLIGHT=10000

# --- tools -----------------------------------------------------------------
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v hyperfine >/dev/null || need+=(hyperfine)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
if [ "${#need[@]}" -gt 0 ]; then
  echo "# installing ${need[*]}"
  apt-get install -y "${need[@]}" >/dev/null 2>&1 || {
    apt-get update >/dev/null && apt-get install -y "${need[@]}" >/dev/null
  }
fi

# 10 000 client connections and as many to the sandbox.
# Where the hard limit is lower and cannot be raised, the in-flight figure is
# for fewer requests: the limit is written to the report.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# --- build -----------------------------------------------------------------
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
echo "# cargo build --release --workspace --bins --example relay_floor (target: $TARGET)"
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release --workspace --bins --example relay_floor --quiet)
FLOOR="$TARGET/release/examples/relay_floor"
COURIER="$TARGET/release/kratos-phone-courier"
SANDBOX="$TARGET/release/twilio-sandbox"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/phone-courier-bench.XXXXXX")
RESULTS="$WORK/results.jsonl"
COMMANDS="$WORK/commands.txt"
: >"$RESULTS"
: >"$COMMANDS"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

ACCOUNT_SID=ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
AUTH_TOKEN=bench-auth-token
USER_NAME=kratos
PASSWORD=bench-password
COURIER_AUTH="Basic $(printf '%s:%s' "$USER_NAME" "$PASSWORD" | base64 -w0)"
TWILIO_AUTH="Basic $(printf '%s:%s' "$ACCOUNT_SID" "$AUTH_TOKEN" | base64 -w0)"
CLK_TCK=$(getconf CLK_TCK)

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_ready() {
  for _ in $(seq 1 200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1")" = 200 ] && return 0
    sleep 0.05
  done
  echo "not ready: $1" >&2
  return 1
}

# Process figures from /proc. steal_ticks: the machine's CPU time taken by
# the hypervisor for others ("steal"), and all CPU time, from /proc/stat.
steal_ticks() { awk '/^cpu / {print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
# Process figures from /proc.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# start_sandbox: sets SANDBOX_ADDR and SANDBOX_PID.
start_sandbox() {
  SANDBOX_ADDR=127.0.0.1:$(free_port)
  RUST_LOG=warn "$SANDBOX" --listen "$SANDBOX_ADDR" --account-sid "$ACCOUNT_SID" \
    --auth-token "$AUTH_TOKEN" >"$WORK/sandbox-$1.log" 2>&1 &
  SANDBOX_PID=$!
  PIDS+=("$SANDBOX_PID")
  wait_ready "http://$SANDBOX_ADDR/health"
}

# start_courier NAME [VAR=VALUE...]: sets COURIER_ADDR and COURIER_PID.
start_courier() {
  local name=$1
  shift
  COURIER_ADDR=127.0.0.1:$(free_port)
  env -i PATH="$PATH" HOME="$WORK" \
    PHONE_COURIER__SERVER__LISTEN="$COURIER_ADDR" \
    PHONE_COURIER__SERVER__DRAIN_MS=0 \
    PHONE_COURIER__AUTH__BASIC__USERNAME="$USER_NAME" \
    PHONE_COURIER__AUTH__BASIC__PASSWORD="$PASSWORD" \
    PHONE_COURIER__TWILIO__BASE_URL="http://$SANDBOX_ADDR" \
    PHONE_COURIER__TWILIO__ACCOUNT_SID="$ACCOUNT_SID" \
    PHONE_COURIER__TWILIO__AUTH_TOKEN="$AUTH_TOKEN" \
    PHONE_COURIER__TWILIO__FROM=+15005550006 \
    PHONE_COURIER__TWILIO__VERIFY_CREDENTIALS_ON_START=false \
    PHONE_COURIER__LOG__LEVEL=warn \
    PHONE_COURIER__BUDGET__DAILY_TOTAL=0 \
    PHONE_COURIER__BUDGET__DAILY_PER_COUNTRY=0 \
    "$@" "$COURIER" serve >"$WORK/courier-$name.log" 2>&1 &
  COURIER_PID=$!
  PIDS+=("$COURIER_PID")
  wait_ready "http://$COURIER_ADDR/health/ready"
  echo "PHONE_COURIER__* (common): LISTEN, AUTH__BASIC__*, TWILIO__{BASE_URL,ACCOUNT_SID,AUTH_TOKEN,FROM}, TWILIO__VERIFY_CREDENTIALS_ON_START=false, LOG__LEVEL=warn, BUDGET__DAILY_TOTAL=0, BUDGET__DAILY_PER_COUNTRY=0; service $name: $*" >>"$COMMANDS"
}

stop() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# Recipient numbers: every run gets its own range (the dedup window is 10 minutes).
NEXT_BASE=0
take_base() {
  BASE=$NEXT_BASE
  NEXT_BASE=$((NEXT_BASE + ${1:-3000000}))
}

# load LABEL SCENARIO URL MODE RATE CONNS DURATION WATCH_PID [LIMIT] [extra wrk args]
# Runs wrk and appends one JSON line to the results (with WATCH_PID's CPU).
load() {
  local label=$1 scenario=$2 url=$3 mode=$4 rate=$5 conns=$6 duration=$7 pid=$8 limit=${9:-0}
  shift 9 || shift $#
  local auth=$COURIER_AUTH
  [ "$mode" = twilio ] && auth=$TWILIO_AUTH
  take_base "$(( limit > 0 ? limit * THREADS + 1000 : 3000000 ))"
  local cmd="MODE=$mode RATE=$rate BASE=$BASE LIMIT=$limit THREADS=$THREADS wrk -t$THREADS -c$conns -d${duration}s --timeout 10s -s bench/load.lua $* $url"
  local before steal_before
  before=$(cpu_ticks "$pid")
  steal_before=$(steal_ticks)
  MODE=$mode RATE=$rate BASE=$BASE LIMIT=$limit THREADS=$THREADS AUTH=$auth SID=$ACCOUNT_SID \
    wrk -t"$THREADS" -c"$conns" -d"${duration}s" --timeout 10s -s "$ROOT/bench/load.lua" "$@" "$url" \
    >"$WORK/$label.out" 2>&1 || true
  local after steal_after
  after=$(cpu_ticks "$pid")
  steal_after=$(steal_ticks)
  local line
  line=$(grep '^RESULT ' "$WORK/$label.out" || echo "RESULT requests=0")
  case "$label" in warmup*) return 0 ;; esac
  echo "$cmd" >>"$COMMANDS"
  python3 - "$label" "$scenario" "$mode" "$rate" "$conns" "$((after - before))" "$CLK_TCK" \
    "$(status_kb "$pid" VmRSS)" "$line" "$steal_before" "$steal_after" >>"$RESULTS" <<'PY'
import json, sys
label, scenario, mode, rate, conns, ticks, clk, rss, line, sb, sa = sys.argv[1:]
r = dict(kv.split("=") for kv in line.split()[1:])
r = {k: float(v) for k, v in r.items()}
(s0, t0), (s1, t1) = map(int, sb.split()), map(int, sa.split())
r.update(label=label, scenario=scenario, mode=mode, rate=int(rate), conns=int(conns),
         cpu_s=int(ticks) / int(clk), rss_kb=int(rss or 0),
         steal_pct=100 * (s1 - s0) / max(t1 - t0, 1))
print(json.dumps(r))
PY
  echo "# $label: $line"
}

record() { # record KEY VALUE: a single figure
  python3 -c 'import json,sys; print(json.dumps({"label": sys.argv[1], "value": sys.argv[2]}))' "$1" "$2" >>"$RESULTS"
}

# --- the machine -----------------------------------------------------------
UPTIME_BEFORE=$(uptime)
{
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "cores=$(nproc)"
  echo "cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "memory=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "kernel=$(uname -r)"
  echo "load_before=$UPTIME_BEFORE"
  echo "commit=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "wrk=$(wrk --version 2>&1 | head -n1 | awk '{print $1, $2}')"
  echo "rustc=$(rustc --version)"
  echo "quick=$QUICK"
  echo "nofile=$(ulimit -n) (the service needs about 2 per request in flight)"
  echo "busy=$(ps -eo pcpu=,comm= --sort=-pcpu | awk '$1 > 5 {printf "%s %s%%; ", $2, $1}' | head -c 300)"
} >"$WORK/machine.txt"
echo "# $UPTIME_BEFORE"

# --- 1 and 2: accepted SMS, through the service and straight to the sandbox --
start_sandbox main
start_courier accepted PHONE_COURIER__LIMITS__ENABLED=false
record idle_rss_kb "$(status_kb "$COURIER_PID" VmRSS)"

# The recipients are valid numbers: a few through the service first.
check_numbers() {
  python3 - "$@" <<'PY'
import sys
AREAS = ["415", "212", "646", "312", "213", "310", "617", "206", "303", "512"]
for i in map(int, sys.argv[1:]):
    rest = i // len(AREAS)
    print("+1%s%03d%04d" % (AREAS[i % len(AREAS)], 200 + (rest // 10000) % 800, rest % 10000))
PY
}
bad=0
for to in $(check_numbers 0 1 2 3 4 5 6 7 8 9 79999999 40000005 12345678 31999999 7000000); do
  code=$(curl -s -o "$WORK/check.json" -w '%{http_code}' --max-time 5 -u "$USER_NAME:$PASSWORD" \
    -H 'Content-Type: application/json' \
    --data "{\"recipient\":\"$to\",\"body\":\"check $to\",\"template_type\":\"login_code_valid\"}" \
    "http://$COURIER_ADDR/v1/sms")
  [ "$code" = 200 ] || { bad=$((bad + 1)); echo "# number $to: $code $(cat "$WORK/check.json")"; }
done
record numbers_checked "15 sampled recipient numbers, $bad refused"
NEXT_BASE=0   # the check used distinct bodies: the ranges may be reused

for rate in "${RATES[@]}" 0; do
  name=$([ "$rate" = 0 ] && echo saturation || echo "$rate")
  load "warmup-courier-$name" accepted "http://$COURIER_ADDR" courier "$rate" "$CONNS" "$WARMUP" "$COURIER_PID"
  load "courier-$name" accepted "http://$COURIER_ADDR" courier "$rate" "$CONNS" "$DURATION" "$COURIER_PID"
  load "warmup-sandbox-$name" baseline "http://$SANDBOX_ADDR" twilio "$rate" "$CONNS" "$WARMUP" "$SANDBOX_PID"
  load "sandbox-$name" baseline "http://$SANDBOX_ADDR" twilio "$rate" "$CONNS" "$DURATION" "$SANDBOX_PID"
done
stop "$COURIER_PID"

# The floor: examples/relay_floor.rs, the least any relay on this stack does
# (hyper server, serde_json, reqwest client), at saturation on the same
# sandbox: how much of the gap to the baseline any relay pays.
FLOOR_ADDR=127.0.0.1:$(free_port)
"$FLOOR" "$FLOOR_ADDR" "http://$SANDBOX_ADDR" "$ACCOUNT_SID" "$AUTH_TOKEN" >"$WORK/floor.log" 2>&1 &
FLOOR_PID=$!
PIDS+=("$FLOOR_PID")
wait_ready "http://$FLOOR_ADDR/"
echo "relay floor: $FLOOR $FLOOR_ADDR http://SANDBOX ACCOUNT_SID AUTH_TOKEN" >>"$COMMANDS"
load "warmup-floor-saturation" floor "http://$FLOOR_ADDR" courier 0 "$CONNS" "$WARMUP" "$FLOOR_PID"
load "floor-saturation" floor "http://$FLOOR_ADDR" courier 0 "$CONNS" "$DURATION" "$FLOOR_PID"
stop "$FLOOR_PID"

# --- 3: rejected load ---------------------------------------------------------
start_courier rejected PHONE_COURIER__LIMITS__ENABLED=true
for code in 900001 900002 900003 900004; do # the recipient's burst (3), then refused
  curl -s -o /dev/null --max-time 5 -u "$USER_NAME:$PASSWORD" -H 'Content-Type: application/json' \
    --data "{\"recipient\":\"+14155550100\",\"body\":\"Your login code is: $code\",\"template_type\":\"login_code_valid\"}" \
    "http://$COURIER_ADDR/v1/sms"
done
for mode in limited malformed unauth; do
  load "warmup-$mode" rejected "http://$COURIER_ADDR" "$mode" 0 "$CONNS" 1 "$COURIER_PID"
  load "rejected-$mode" rejected "http://$COURIER_ADDR" "$mode" 0 "$CONNS" "$REJECT_DURATION" "$COURIER_PID"
done
stop "$COURIER_PID"

# --- 4: memory -----------------------------------------------------------------
# 1 million distinct recipients through HTTP: the recipient limiter on (the
# others off, or the global limit would refuse nearly all), dedup sized to
# hold them all.
start_courier keys PHONE_COURIER__LIMITS__ENABLED=true \
  PHONE_COURIER__LIMITS__SMS__GLOBAL__PER_HOUR=0 PHONE_COURIER__LIMITS__SMS__COUNTRY__PER_HOUR=0 \
  PHONE_COURIER__LIMITS__SMS__IP__PER_HOUR=0 PHONE_COURIER__DEDUP__MAX_ENTRIES=$KEYS
record keys_idle_rss_kb "$(status_kb "$COURIER_PID" VmRSS)"
load "keys" keys "http://$COURIER_ADDR" courier 0 "$CONNS" 600 "$COURIER_PID" "$((KEYS / THREADS + KEYS / 100 + 1000))"
record keys_rss_kb "$(status_kb "$COURIER_PID" VmRSS)"
record keys_hwm_kb "$(status_kb "$COURIER_PID" VmHWM)"
stop "$COURIER_PID"
stop "$SANDBOX_PID"

# 10 000 requests in flight against a sandbox that answers after 2 s.
start_sandbox slow
curl -s -o /dev/null --max-time 5 -X POST -H 'Content-Type: application/json' \
  --data '{"fault":"latency=2000","count":100000}' "http://$SANDBOX_ADDR/sandbox/faults"
echo "POST /sandbox/faults {\"fault\":\"latency=2000\",\"count\":100000}" >>"$COMMANDS"
start_courier inflight PHONE_COURIER__LIMITS__ENABLED=false
(
  peak=0
  for _ in $(seq 1 $((INFLIGHT_DURATION * 4))); do
    kb=$(status_kb "$COURIER_PID" VmRSS 2>/dev/null || echo 0)
    [ "${kb:-0}" -gt "$peak" ] && peak=$kb
    sleep 0.25
  done
  echo "$peak" >"$WORK/inflight-peak"
) &
SAMPLER=$!
load "inflight" inflight "http://$COURIER_ADDR" courier 0 "$INFLIGHT" "$INFLIGHT_DURATION" "$COURIER_PID" 0
wait "$SAMPLER" || true
record inflight_peak_sampled_kb "$(cat "$WORK/inflight-peak")"
record inflight_hwm_kb "$(status_kb "$COURIER_PID" VmHWM)"
record inflight_sandbox_hwm_kb "$(status_kb "$SANDBOX_PID" VmHWM)"
stop "$COURIER_PID"

# --- 5: start-up -----------------------------------------------------------------
PORT=$(free_port)
hyperfine --warmup 3 --runs "$STARTUP_RUNS" --export-json "$WORK/startup.json" \
  "bash $ROOT/bench/startup.sh $COURIER $PORT $SANDBOX_ADDR" >"$WORK/startup.out" 2>&1 || true
echo "hyperfine --warmup 3 --runs $STARTUP_RUNS 'bash bench/startup.sh target/release/kratos-phone-courier PORT SANDBOX_ADDR'" >>"$COMMANDS"
hyperfine --warmup 3 --runs "$STARTUP_RUNS" --export-json "$WORK/startup-floor.json" \
  "bash -c 'true & wait'" >/dev/null 2>&1 || true
stop "$SANDBOX_PID"

echo "load_after=$(uptime)" >>"$WORK/machine.txt"
python3 "$ROOT/bench/report.py" "$WORK" "$ROOT/bench/notes.md" >"$OUT"
echo "# wrote $OUT (raw output in $WORK)"
