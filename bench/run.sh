#!/usr/bin/env bash
# Benchmarks of kratos-phone-courier (issue #6): one command.
#
#   bash bench/run.sh            # full run (about 12 minutes plus the build), writes BENCHMARKS.md
#   bash bench/run.sh --quick    # 3-second runs and 20 000 keys: a smoke test,
#                                # writes bench/quick-results.md instead
#   bash bench/run.sh --store memory|redis|both   # which store backends (default both;
#                                # also STORE=...). With redis, a redis-server
#                                # (Debian package, installed when missing) is
#                                # started on a free loopback port and stopped on exit.
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
STORE=${STORE:-both}
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --store) STORE=${2:?--store needs memory, redis or both}; shift ;;
    --store=*) STORE=${1#--store=} ;;
    *) echo "usage: bash bench/run.sh [--quick] [--store memory|redis|both]" >&2; exit 2 ;;
  esac
  shift
done
case "$STORE" in
  memory) MEMORY=1 REDIS=0 ;;
  redis) MEMORY=0 REDIS=1 ;;
  both) MEMORY=1 REDIS=1 ;;
  *) echo "--store: memory, redis or both, not '$STORE'" >&2; exit 2 ;;
esac

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
if [ "$REDIS" = 1 ]; then
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v redis-cli >/dev/null || need+=(redis-tools)
fi
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

# start_redis: a redis-server of our own on a free loopback port, nothing
# persisted; sets REDIS_PORT, REDIS_URL and REDIS_PID (stopped by the trap).
start_redis() {
  REDIS_PORT=$(free_port)
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no --logfile "$WORK/redis.log" --dir "$WORK" >/dev/null 2>&1 &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
  for _ in $(seq 1 200); do
    [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break
    sleep 0.05
  done
  [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] || { echo "redis-server did not start" >&2; exit 1; }
  echo "redis-server --port PORT --bind 127.0.0.1 --save '' --appendonly no  ($(redis-server --version | awk '{print $3}'))" >>"$COMMANDS"
}
redis_flush() { redis-cli -p "$REDIS_PORT" flushall >/dev/null; }
redis_info() { redis-cli -p "$REDIS_PORT" info "$1" | tr -d '\r' | awk -F: -v k="$2" '$1 == k {print $2}'; }
REDIS_ENV=()  # the service's store settings for redis runs, set by start_redis's caller

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
  local before steal_before before2=0 after2=0
  before=$(cpu_ticks "$pid")
  if [ -n "${WATCH2:-}" ]; then
    before2=$(cpu_ticks "$WATCH2")
    redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
  fi
  steal_before=$(steal_ticks)
  MODE=$mode RATE=$rate BASE=$BASE LIMIT=$limit THREADS=$THREADS AUTH=$auth SID=$ACCOUNT_SID \
    wrk -t"$THREADS" -c"$conns" -d"${duration}s" --timeout 10s -s "$ROOT/bench/load.lua" "$@" "$url" \
    >"$WORK/$label.out" 2>&1 || true
  local after steal_after
  after=$(cpu_ticks "$pid")
  local commands=""
  if [ -n "${WATCH2:-}" ]; then
    after2=$(cpu_ticks "$WATCH2")
    # calls per Redis command during the run: "evalsha=1234 get=56"
    commands=$(redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' |
      awk -F'[_:,=]' '/^cmdstat_/ && $2 != "config|resetstat" && $2 != "info" {printf "%s=%s ", $2, $4}' || true)
  fi
  steal_after=$(steal_ticks)
  local line
  line=$(grep '^RESULT ' "$WORK/$label.out" || echo "RESULT requests=0")
  case "$label" in warmup*) return 0 ;; esac
  echo "$cmd" >>"$COMMANDS"
  python3 - "$label" "$scenario" "$mode" "$rate" "$conns" "$((after - before))" "$CLK_TCK" \
    "$(status_kb "$pid" VmRSS)" "$line" "$steal_before" "$steal_after" "$((after2 - before2))" \
    "${WATCH2:+store}" "$commands" >>"$RESULTS" <<'PY'
import json, sys
label, scenario, mode, rate, conns, ticks, clk, rss, line, sb, sa, ticks2, store, commands = sys.argv[1:]
r = dict(kv.split("=") for kv in line.split()[1:])
r = {k: float(v) for k, v in r.items()}
(s0, t0), (s1, t1) = map(int, sb.split()), map(int, sa.split())
r.update(label=label, scenario=scenario, mode=mode, rate=int(rate), conns=int(conns),
         cpu_s=int(ticks) / int(clk), rss_kb=int(rss or 0),
         steal_pct=100 * (s1 - s0) / max(t1 - t0, 1))
if store:
    r["store_cpu_s"] = int(ticks2) / int(clk)
    r["store_commands"] = {k: int(v) for k, v in (c.split("=") for c in commands.split())}
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
  echo "store=$STORE"
  [ "$REDIS" = 1 ] && echo "redis=$(redis-server --version | awk '{print $3}' | sed 's/^v=/redis-server /'), started by the script on a loopback port, no persistence"
  echo "lscpu=$(lscpu | awk -F: '/^(Model name|CPU\(s\)|Thread|Core|Hypervisor vendor)/ {gsub(/^ +/, "", $2); printf "%s: %s; ", $1, $2}')"
  echo "nofile=$(ulimit -n) (the service needs about 2 per request in flight)"
  echo "busy=$(ps -eo pcpu=,comm= --sort=-pcpu | awk '$1 > 5 {printf "%s %s%%; ", $2, $1}' | head -c 300)"
} >"$WORK/machine.txt"
echo "# $UPTIME_BEFORE"

# --- 1 and 2: accepted SMS, through the service and straight to the sandbox --
# With --store both, a memory-store service and a redis-store service run side
# by side on the same sandbox; at each rate they are loaded one after the
# other (then the sandbox alone), so that the same minute's steal time is in
# all three rows.
start_sandbox main
if [ "$REDIS" = 1 ]; then
  start_redis
  REDIS_ENV=(PHONE_COURIER__STORE__BACKEND=redis PHONE_COURIER__STORE__REDIS__URL="$REDIS_URL")
fi
MEM_PID="" RED_PID=""
if [ "$MEMORY" = 1 ]; then
  start_courier accepted PHONE_COURIER__LIMITS__ENABLED=false
  MEM_ADDR=$COURIER_ADDR MEM_PID=$COURIER_PID
  record idle_rss_kb "$(status_kb "$COURIER_PID" VmRSS)"
fi
if [ "$REDIS" = 1 ]; then
  start_courier accepted-redis PHONE_COURIER__LIMITS__ENABLED=false "${REDIS_ENV[@]}"
  RED_ADDR=$COURIER_ADDR RED_PID=$COURIER_PID
  record redis_idle_rss_kb "$(status_kb "$COURIER_PID" VmRSS)"
fi

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

# The order of the two stores alternates from one rate (or refusal) to the
# next, so that neither always runs first.
ORDER=(memory redis)
flip() { ORDER=("${ORDER[1]}" "${ORDER[0]}"); }
for rate in "${RATES[@]}" 0; do
  name=$([ "$rate" = 0 ] && echo saturation || echo "$rate")
  for store in "${ORDER[@]}"; do
    if [ "$store" = memory ] && [ "$MEMORY" = 1 ]; then
      load "warmup-courier-$name" accepted "http://$MEM_ADDR" courier "$rate" "$CONNS" "$WARMUP" "$MEM_PID"
      load "courier-$name" accepted "http://$MEM_ADDR" courier "$rate" "$CONNS" "$DURATION" "$MEM_PID"
    fi
    if [ "$store" = redis ] && [ "$REDIS" = 1 ]; then
      WATCH2=$REDIS_PID load "warmup-redis-courier-$name" accepted "http://$RED_ADDR" courier "$rate" "$CONNS" "$WARMUP" "$RED_PID"
      WATCH2=$REDIS_PID load "redis-courier-$name" accepted "http://$RED_ADDR" courier "$rate" "$CONNS" "$DURATION" "$RED_PID"
    fi
  done
  flip
  load "warmup-sandbox-$name" baseline "http://$SANDBOX_ADDR" twilio "$rate" "$CONNS" "$WARMUP" "$SANDBOX_PID"
  load "sandbox-$name" baseline "http://$SANDBOX_ADDR" twilio "$rate" "$CONNS" "$DURATION" "$SANDBOX_PID"
done
[ -n "$MEM_PID" ] && stop "$MEM_PID"
if [ "$REDIS" = 1 ]; then
  stop "$RED_PID"
  record redis_keys_after_accepted "$(redis-cli -p "$REDIS_PORT" dbsize)"
  record redis_used_memory_after_accepted "$(redis_info memory used_memory_human)"
  record redis_rss_kb_after_accepted "$(status_kb "$REDIS_PID" VmRSS)"
fi

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
# Each store's service, one after the other for every kind of refusal.
burst() { # the recipient's burst (3), then refused
  for code in 900001 900002 900003 900004; do
    curl -s -o /dev/null --max-time 5 -u "$USER_NAME:$PASSWORD" -H 'Content-Type: application/json' \
      --data "{\"recipient\":\"+14155550100\",\"body\":\"Your login code is: $code\",\"template_type\":\"login_code_valid\"}" \
      "http://$1/v1/sms"
  done
}
if [ "$MEMORY" = 1 ]; then
  start_courier rejected PHONE_COURIER__LIMITS__ENABLED=true
  MEM_ADDR=$COURIER_ADDR MEM_PID=$COURIER_PID
  burst "$MEM_ADDR"
fi
if [ "$REDIS" = 1 ]; then
  redis_flush
  start_courier rejected-redis PHONE_COURIER__LIMITS__ENABLED=true "${REDIS_ENV[@]}"
  RED_ADDR=$COURIER_ADDR RED_PID=$COURIER_PID
  burst "$RED_ADDR"
fi
for mode in limited malformed unauth; do
  for store in "${ORDER[@]}"; do
    if [ "$store" = memory ] && [ "$MEMORY" = 1 ]; then
      load "warmup-$mode" rejected "http://$MEM_ADDR" "$mode" 0 "$CONNS" 1 "$MEM_PID"
      load "rejected-$mode" rejected "http://$MEM_ADDR" "$mode" 0 "$CONNS" "$REJECT_DURATION" "$MEM_PID"
    fi
    if [ "$store" = redis ] && [ "$REDIS" = 1 ]; then
      WATCH2=$REDIS_PID load "warmup-redis-$mode" rejected "http://$RED_ADDR" "$mode" 0 "$CONNS" 1 "$RED_PID"
      WATCH2=$REDIS_PID load "redis-rejected-$mode" rejected "http://$RED_ADDR" "$mode" 0 "$CONNS" "$REJECT_DURATION" "$RED_PID"
    fi
  done
  flip
done
[ -n "$MEM_PID" ] && stop "$MEM_PID"
[ "$REDIS" = 1 ] && stop "$RED_PID"
if [ "$REDIS" = 1 ]; then
  stop "$REDIS_PID"
fi
if [ "$MEMORY" = 0 ]; then # the memory-only scenarios (4, 5) are skipped
  stop "$SANDBOX_PID"
  echo "load_after=$(uptime)" >>"$WORK/machine.txt"
  python3 "$ROOT/bench/report.py" "$WORK" "$ROOT/bench/notes.md" >"$OUT"
  echo "# wrote $OUT (raw output in $WORK)"
  exit 0
fi

# --- 4: memory -----------------------------------------------------------------
# 1 million distinct recipients through HTTP: the recipient limiter on (the
# others off, or the global limit would refuse nearly all), dedup sized to
# hold them all.
start_courier keys PHONE_COURIER__LIMITS__ENABLED=true \
  PHONE_COURIER__LIMITS__SMS__GLOBAL__PER_HOUR=0 PHONE_COURIER__LIMITS__SMS__COUNTRY__PER_HOUR=0 \
  PHONE_COURIER__LIMITS__SMS__IP__PER_HOUR=0 PHONE_COURIER__LIMITS__SMS__UNKNOWN_IP__PER_HOUR=0 \
  PHONE_COURIER__LIMITS__SMS__PREFIX__PER_HOUR=0 PHONE_COURIER__DEDUP__MAX_ENTRIES=$KEYS
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
