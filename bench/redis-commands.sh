#!/usr/bin/env bash
# The Redis commands one accepted SMS costs, counted with MONITOR
# (commands a Lua script runs inside Redis are not counted; MONITOR lists
# a pipeline's commands one by one, though they are one round trip: the
# Lookup cache writes every package of a number in one pipeline).
#
#   bash bench/redis-commands.sh        # uses target/release (builds it when missing)
#
# Starts a redis-server on a free loopback port and `serve --dev` (the
# sandbox in-process, Lookup on as in dev mode, the default budget) on
# Redis, sends one SMS to warm up (scripts loaded), then counts the
# commands of a second SMS to a new number. Prints the count and each
# command's name with its key prefix (keys are keyed hashes: no number).

set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${COURIER:-$TARGET/release/kratos-phone-courier}
for c in redis-server redis-cli curl; do
  command -v "$c" >/dev/null || { echo "needs $c (Debian: redis-server, curl)" >&2; exit 1; }
done
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --bin kratos-phone-courier --quiet)

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
WORK=$(mktemp -d)
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --daemonize yes --logfile "$WORK/redis.log" --dir "$WORK"
cleanup() {
  [ -n "${SVC:-}" ] && kill "$SVC" 2>/dev/null || true
  redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true
}
trap cleanup EXIT
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

PHONE_COURIER__STORE__BACKEND=redis \
PHONE_COURIER__STORE__REDIS__URL="redis://127.0.0.1:$PORT/0" \
  "$BIN" serve --dev >"$WORK/service.log" 2>&1 &
SVC=$!
for _ in $(seq 100); do curl -s -o /dev/null 127.0.0.1:4470/health/ready && break; sleep 0.2; done

send() {
  curl -sS -o /dev/null -w '%{http_code}' http://127.0.0.1:4470/v1/sms \
    -H 'Content-Type: application/json' \
    -d "{\"recipient\":\"$1\",\"body\":\"Your login code is: $2\",\"template_type\":\"login_code_valid\",\"template_data\":{\"login_code\":\"$2\",\"expires_in_minutes\":10}}"
}
[ "$(send +14155550100 482917)" = 200 ] || { echo "warm-up SMS refused; see $WORK/service.log" >&2; exit 1; }
sleep 0.5
redis-cli -p "$PORT" monitor >"$WORK/monitor.txt" &
MON=$!
sleep 0.5
status=$(send +14155550123 593028)
sleep 1
kill "$MON" 2>/dev/null || true
[ "$status" = 200 ] || { echo "counted SMS answered $status" >&2; exit 1; }

# A MONITOR line: <time> [<db> <client>] "CMD" "arg"...; a script's own
# calls show "[0 lua]".
lines=$(grep -v '\[0 lua\]' "$WORK/monitor.txt" | grep '"' | grep -viE '"(ping|monitor)"' || true)
echo "Redis commands for one accepted SMS (serve --dev on Redis, Lookup on): $(printf '%s\n' "$lines" | grep -c . || true)"
printf '%s\n' "$lines" | awk '{cmd=$4; key=$5; if (cmd=="\"EVALSHA\"") key=$7; sub(/^"kpc:/, "", key); split(key, p, ":"); print cmd, "kpc:" p[1] ":…"}' | sort | uniq -c
