#!/usr/bin/env bash
# One start-up measurement, for hyperfine (bench/run.sh): start the service
# and return as soon as GET /health/alive answers 200, then stop it.
#   bench/startup.sh BINARY PORT SANDBOX_ADDR
# The probe is bash's /dev/tcp (no process per attempt), retried without sleeping.
set -u
BIN=$1 PORT=$2 SANDBOX=$3
env -i PATH="$PATH" \
  PHONE_COURIER__SERVER__LISTEN="127.0.0.1:$PORT" \
  PHONE_COURIER__SERVER__DRAIN_MS=0 \
  PHONE_COURIER__AUTH__BASIC__USERNAME=kratos \
  PHONE_COURIER__AUTH__BASIC__PASSWORD=bench-password \
  PHONE_COURIER__TWILIO__BASE_URL="http://$SANDBOX" \
  PHONE_COURIER__TWILIO__ACCOUNT_SID=ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb \
  PHONE_COURIER__TWILIO__AUTH_TOKEN=bench-auth-token \
  PHONE_COURIER__TWILIO__FROM=+15005550006 \
  PHONE_COURIER__TWILIO__VERIFY_CREDENTIALS_ON_START=false \
  PHONE_COURIER__LOG__LEVEL=warn \
  "$BIN" serve >/dev/null 2>&1 &
pid=$!
ok=1
# Wait about 1 ms between attempts without forking: a tight loop of connect
# attempts would take a whole core of the two from the service it measures.
tick=$(mktemp -u "${TMPDIR:-/tmp}/startup-tick.XXXXXX")
mkfifo "$tick"
exec 9<>"$tick"
rm -f "$tick"
for _ in $(seq 1 5000); do
  read -r -t 0.001 -u 9 _ 2>/dev/null
  if exec 3<>"/dev/tcp/127.0.0.1/$PORT" 2>/dev/null; then
    printf 'GET /health/alive HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3
    read -r status_line <&3
    exec 3<&-
    case "$status_line" in *" 200 "*) ok=0; break ;; esac
  fi
done
# SIGKILL: the measurement ends at the first 200, not at a graceful exit.
kill -KILL "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
exit "$ok"
