#!/usr/bin/env bash
# Instructions per accepted SMS, counted by callgrind: the repeatable
# complement of bench/run.sh, unaffected by other load on the machine
# (including a virtual machine's steal time).
#
#   bash bench/instructions.sh [N]     # N counted requests per program (default 2000)
#
# Counts the user-space instructions (valgrind's Ir) that each program
# executes while wrk sends it N requests, after a warm-up of 300:
#   sandbox   twilio-sandbox answering the Twilio form straight (the baseline)
#   floor     examples/relay_floor.rs: the least any relay on this stack does
#             (hyper server, serde_json, reqwest), forwarding to the sandbox
#   service   kratos-phone-courier serve, forwarding to the sandbox
# The same recipients, codes and request shapes as bench/run.sh (load.lua).
# Kernel work (the loopback TCP stack) is not counted: it is the same for
# every relay. Writes bench/instructions.md.

set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-2000}
WARM=300

need=()
command -v valgrind >/dev/null || need+=(valgrind)
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
if [ "${#need[@]}" -gt 0 ]; then
  apt-get install -y "${need[@]}" >/dev/null 2>&1 || {
    apt-get update >/dev/null && apt-get install -y "${need[@]}" >/dev/null
  }
fi

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
echo "# cargo build --release --workspace --bins --example relay_floor (target: $TARGET)"
(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release --workspace --bins --example relay_floor --quiet)
COURIER=${COURIER:-$TARGET/release/kratos-phone-courier}
SANDBOX=${SANDBOX:-$TARGET/release/twilio-sandbox}
FLOOR=$TARGET/release/examples/relay_floor

WORK=$(mktemp -d /tmp/phone-courier-instructions.XXXXXX)
echo "# raw output: $WORK"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

SID=ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
TOKEN=bench-auth-token
COURIER_AUTH="Basic $(printf 'kratos:bench-password' | base64 -w0)"
TWILIO_AUTH="Basic $(printf '%s:%s' "$SID" "$TOKEN" | base64 -w0)"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
wait_ok() {
  for _ in $(seq 1 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1")" = 200 ] && return 0
    sleep 0.1
  done
  echo "not ready: $1" >&2
  return 1
}
CALLGRIND=(valgrind --tool=callgrind --instr-atstart=no)

# drive LABEL MODE URL AUTH BASE COUNT: wrk, one thread, 4 connections, until COUNT requests.
drive() {
  MODE=$2 BASE=$5 LIMIT=$6 THREADS=1 AUTH=$4 SID=$SID \
    wrk -t1 -c4 -d600s --timeout 30s -s "$ROOT/bench/load.lua" "$3" >"$WORK/$1.wrk" 2>&1 || true
  grep '^RESULT ' "$WORK/$1.wrk"
}

# measure NAME PID MODE URL AUTH: warm up, count N requests, write NAME's Ir and requests.
measure() {
  local name=$1 pid=$2 mode=$3 url=$4 auth=$5
  drive "$name-warmup" "$mode" "$url" "$auth" $((RANDOM * 1000 + 10000000)) "$WARM" >/dev/null
  callgrind_control -i on "$pid" >/dev/null
  callgrind_control -z "$pid" >/dev/null
  local result
  result=$(drive "$name" "$mode" "$url" "$auth" $((RANDOM * 1000 + 50000000)) "$N")
  callgrind_control -i off "$pid" >/dev/null
  callgrind_control -d "$pid" >/dev/null
  sleep 1 # the dump is written by the running program
  local ir requests non2xx
  ir=$(awk '/^totals:/ {s += $2} END {print s + 0}' "$WORK/$name".callgrind.*)
  requests=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$result")
  non2xx=$(sed -E 's/.*non2xx=([0-9]+).*/\1/' <<<"$result")
  echo "$name ir=$ir requests=$requests non2xx=$non2xx" | tee -a "$WORK/results.txt"
}

# The sandbox: once under callgrind (the baseline), once plain (the provider
# for the floor and the service).
SB_ADDR=127.0.0.1:$(free_port)
RUST_LOG=warn "${CALLGRIND[@]}" --callgrind-out-file="$WORK/sandbox.callgrind.%p" \
  "$SANDBOX" --listen "$SB_ADDR" --account-sid "$SID" --auth-token "$TOKEN" >"$WORK/sandbox-cg.log" 2>&1 &
SB_PID=$!
PIDS+=("$SB_PID")
wait_ok "http://$SB_ADDR/health"
measure sandbox "$SB_PID" twilio "http://$SB_ADDR" "$TWILIO_AUTH"
kill "$SB_PID"; wait "$SB_PID" 2>/dev/null || true

PROVIDER=127.0.0.1:$(free_port)
RUST_LOG=warn "$SANDBOX" --listen "$PROVIDER" --account-sid "$SID" --auth-token "$TOKEN" >"$WORK/sandbox.log" 2>&1 &
PIDS+=("$!")
wait_ok "http://$PROVIDER/health"

FL_ADDR=127.0.0.1:$(free_port)
"${CALLGRIND[@]}" --callgrind-out-file="$WORK/floor.callgrind.%p" \
  "$FLOOR" "$FL_ADDR" "http://$PROVIDER" "$SID" "$TOKEN" >"$WORK/floor.log" 2>&1 &
FL_PID=$!
PIDS+=("$FL_PID")
wait_ok "http://$FL_ADDR/"
measure floor "$FL_PID" courier "http://$FL_ADDR" "$COURIER_AUTH"
kill "$FL_PID"; wait "$FL_PID" 2>/dev/null || true

SV_ADDR=127.0.0.1:$(free_port)
env -i PATH="$PATH" HOME="$WORK" \
  PHONE_COURIER__SERVER__LISTEN="$SV_ADDR" \
  PHONE_COURIER__SERVER__DRAIN_MS=0 \
  PHONE_COURIER__AUTH__BASIC__USERNAME=kratos \
  PHONE_COURIER__AUTH__BASIC__PASSWORD=bench-password \
  PHONE_COURIER__TWILIO__BASE_URL="http://$PROVIDER" \
  PHONE_COURIER__TWILIO__ACCOUNT_SID="$SID" \
  PHONE_COURIER__TWILIO__AUTH_TOKEN="$TOKEN" \
  PHONE_COURIER__TWILIO__FROM=+15005550006 \
  PHONE_COURIER__TWILIO__VERIFY_CREDENTIALS_ON_START=false \
  PHONE_COURIER__LIMITS__ENABLED=false \
  PHONE_COURIER__LOG__LEVEL="${SERVICE_LOG_LEVEL:-warn}" \
  PHONE_COURIER__BUDGET__DAILY_TOTAL=0 \
  PHONE_COURIER__BUDGET__DAILY_PER_COUNTRY=0 \
  "${CALLGRIND[@]}" --callgrind-out-file="$WORK/service.callgrind.%p" \
  "$COURIER" serve >"$WORK/service.log" 2>&1 &
SV_PID=$!
PIDS+=("$SV_PID")
wait_ok "http://$SV_ADDR/health/ready"
measure service "$SV_PID" courier "http://$SV_ADDR" "$COURIER_AUTH"
kill "$SV_PID"; wait "$SV_PID" 2>/dev/null || true

python3 - "$WORK/results.txt" "$N" "$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  "$(valgrind --version)" >"$ROOT/bench/instructions.md" <<'PY'
import sys, datetime
path, n, commit, vg = sys.argv[1:]
r = {}
for line in open(path):
    name, *kv = line.split()
    d = dict(x.split("=") for x in kv)
    r[name] = {k: int(v) for k, v in d.items()}
per = {k: v["ir"] / max(v["requests"], 1) for k, v in r.items()}
print("# Instructions per accepted SMS (callgrind)\n")
print("Written by `bash bench/instructions.sh %s` on %s, commit %s, %s." % (
    n, datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), commit, vg))
print("User-space instructions (valgrind's Ir) while wrk sent the counted requests,")
print("after a warm-up; kernel work is not counted. Repeatable: unaffected by other")
print("load on the machine.\n")
print("| program | requests | non-2xx | instructions | per request |")
print("|---|---|---|---|---|")
for k in ("sandbox", "floor", "service"):
    if k in r:
        v = r[k]
        print(f"| {k} | {v['requests']} | {v['non2xx']} | {v['ir']:,} | {per[k]:,.0f} |")
if {"floor", "service", "sandbox"} <= per.keys():
    own = per["service"] - per["floor"]
    print()
    print(f"- the service's own work (service − floor): **{own:,.0f}** instructions per send,"
          f" {per['service'] / per['floor']:.2f}× the floor;")
    print(f"- any relay on this stack (the floor) costs {per['floor'] / per['sandbox']:.2f}× the sandbox's own work;")
    print(f"- the service costs {per['service'] / per['sandbox']:.2f}× the sandbox.")
PY
cat "$ROOT/bench/instructions.md"
