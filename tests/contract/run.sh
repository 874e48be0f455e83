#!/usr/bin/env bash
# Contract tests: the release binaries, over real TCP, with curl.
#
#   tests/contract/run.sh target/release
#
# Starts `twilio-sandbox` (a fake Twilio) and `kratos-phone-courier serve`
# (configured by environment variables only) on free loopback ports, then
# walks the public API the way Kratos and an operator see it: what the caller
# gets back (status, error code, headers) and what Twilio received (the
# sandbox inbox). It doubles as a readable description of the API; see the
# README for the error code table. Near the end a second sandbox
# (`--flavor signalwire`) and a service with both as `[[providers]]` show
# failover, and SignalWire's signed status callbacks.
#
# Every case that reaches Twilio uses its own recipient (+1415555xxxx) so that
# per-recipient rate limits and deduplication of identical messages cannot
# make one case depend on another.
#
# Prints one line per case (`ok  - ...` / `FAIL - ... (got ...)`), then
# `N passed, N failed`; exits non-zero when a case failed.
#
# Every process it starts is stopped when it ends, pass, fail or interrupt:
# each is started so that `$!` is the server itself (not a subshell around
# it), recorded in PIDS, and stopped by `cleanup`.

set -u

BIN_DIR=${1:?usage: $0 DIRECTORY_WITH_RELEASE_BINARIES}
BIN_DIR=$(cd "$BIN_DIR" && pwd)
COURIER="$BIN_DIR/kratos-phone-courier"
SANDBOX="$BIN_DIR/twilio-sandbox"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
FIXTURES="$ROOT/tests/fixtures/kratos"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/phone-courier-contract.XXXXXX")
PASSED=0
FAILED=0
PIDS=()

ACCOUNT_SID=ACcccccccccccccccccccccccccccccccc
AUTH_TOKEN=contract-auth-token
FROM=+15005550006
USER_NAME=kratos
PASSWORD=contract-password

# running PID: the process exists and has not exited (an exited child of
# ours stays a zombie until waited for, and `kill -0` still finds it).
running() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "${state#Z}" = "$state" ]
}

# stop PID: SIGTERM, up to 10 s to drain and exit, then SIGKILL; reaped, and
# dropped from PIDS so that cleanup never signals a reused pid.
stop() {
  local pid=$1 i kept=()
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 1 100); do
    running "$pid" || break
    sleep 0.1
  done
  if running "$pid"; then
    echo "# process $pid did not stop within 10 s of SIGTERM: killed"
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null
  for i in "${PIDS[@]}"; do
    [ "$i" = "$pid" ] || kept+=("$i")
  done
  PIDS=("${kept[@]}")
}

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    stop "$pid"
  done
  if [ "$FAILED" -ne 0 ]; then
    echo "# logs kept in $WORK"
    for log in "$WORK"/*.log; do
      [ -f "$log" ] || continue
      echo "# --- $log (last 40 lines)"
      tail -n 40 "$log" | sed 's/^/#   /'
    done
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
# Interrupted or terminated: exit, which runs cleanup.
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

pass() { PASSED=$((PASSED + 1)); echo "ok  - $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $1 (got $2)"; }

# check DESCRIPTION ACTUAL EXPECTED: equality.
check() {
  if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "'$2', want '$3'"; fi
}

# check_contains DESCRIPTION HAYSTACK NEEDLE
check_contains() {
  case "$2" in
    *"$3"*) pass "$1" ;;
    *) fail "$1" "'$2', want it to contain '$3'" ;;
  esac
}

# json FILE PATH: the value at a dotted path (list indexes are numbers),
# `null` when absent, JSON text for objects and lists.
json() {
  python3 - "$1" "$2" <<'PY'
import json, sys
try:
    value = json.load(open(sys.argv[1]))
    for key in sys.argv[2].split("."):
        value = value[int(key)] if isinstance(value, list) else value.get(key)
except Exception:
    value = None
print("null" if value is None else value if isinstance(value, str) else json.dumps(value))
PY
}

# header NAME: a header of the last answer ("" when absent).
header() {
  grep -i "^$1:" "$WORK/headers" | head -n1 | cut -d: -f2- | tr -d '\r' | sed 's/^ *//'
}

# call METHOD PATH [CURL ARGS...]: request the service; sets STATUS, the
# answer is in $WORK/body and its headers in $WORK/headers.
call() {
  local method=$1 path=$2
  shift 2
  STATUS=$(curl -s -o "$WORK/body" -D "$WORK/headers" -w '%{http_code}' \
    --max-time 10 -X "$method" "$@" "http://$COURIER_ADDR$path")
}

# send PATH FILE [CURL ARGS...]: POST a JSON file as Kratos does (basic auth).
send() {
  local path=$1 file=$2
  shift 2
  call POST "$path" -u "$USER_NAME:$PASSWORD" -H 'Content-Type: application/json' \
    --data-binary "@$file" "$@"
}

# message RECIPIENT CODE [TO]: a minimal login-code message in $WORK/message.json.
message() {
  local to=${3:-$1}
  cat >"$WORK/message.json" <<EOF
{"recipient":"$to","body":"Your login code is: $2","template_type":"login_code_valid",
 "template_data":{"login_code":"$2"},"message_type":"sms"}
EOF
}

# fixture NAME RECIPIENT: a Kratos fixture, sent to RECIPIENT, in $WORK/fixture.json.
fixture() {
  python3 - "$FIXTURES/$1.json" "$2" "$WORK/fixture.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
m["recipient"] = m["template_data"]["to"] = sys.argv[2]
json.dump(m, open(sys.argv[3], "w"))
PY
}

# expect_accepted DESCRIPTION CHANNEL SID_PREFIX: the last answer is 200
# accepted on CHANNEL with a sid starting with SID_PREFIX; sets SID.
expect_accepted() {
  SID=$(json "$WORK/body" sid)
  local got="$STATUS $(json "$WORK/body" status) $(json "$WORK/body" channel) ${SID:0:2}"
  check "$1" "$got" "200 accepted $2 $3"
}

# expect_error DESCRIPTION STATUS CODE: the last answer is STATUS with error.code CODE.
expect_error() {
  check "$1" "$STATUS $(json "$WORK/body" error.code)" "$2 $3"
}

# inbox SID FIELD: FIELD of the sandbox inbox entry with this sid.
inbox() {
  curl -s --max-time 5 "http://$SANDBOX_ADDR/inbox.json" >"$WORK/inbox.json"
  python3 - "$WORK/inbox.json" "$1" "$2" <<'PY'
import json, sys
for entry in json.load(open(sys.argv[1]))["messages"]:
    if entry["sid"] == sys.argv[2]:
        print(entry.get(sys.argv[3]))
        break
else:
    print("<no inbox entry>")
PY
}

# inbox_form SID KEY: a form field Twilio got for the inbox entry with this
# sid ("<absent>" when it was not sent).
inbox_form() {
  curl -s --max-time 5 "http://$SANDBOX_ADDR/inbox.json" >"$WORK/inbox.json"
  python3 - "$WORK/inbox.json" "$1" "$2" <<'PY'
import json, sys
for entry in json.load(open(sys.argv[1]))["messages"]:
    if entry["sid"] == sys.argv[2]:
        print(next((v for k, v in entry["form"] if k == sys.argv[3]), "<absent>"))
        break
else:
    print("<no inbox entry>")
PY
}

# fault NAME: the sandbox fails the next create request this way.
fault() {
  curl -s -o /dev/null --max-time 5 -X POST -H 'Content-Type: application/json' \
    --data "{\"fault\":\"$1\",\"count\":1}" "http://$SANDBOX_ADDR/sandbox/faults"
}

# inbox_to NUMBER FIELD: FIELD of the newest sandbox inbox entry to NUMBER
# (as written, without `whatsapp:`: SMS and calls), `<none>` if none.
inbox_to() {
  curl -s --max-time 5 "http://$SANDBOX_ADDR/inbox.json" >"$WORK/inbox.json"
  python3 - "$WORK/inbox.json" "$1" "$2" <<'PY'
import json, sys
for entry in json.load(open(sys.argv[1]))["messages"]:
    if entry["to"] == sys.argv[2]:
        print(entry.get(sys.argv[3]))
        break
else:
    print("<none>")
PY
}

# wait_ready URL: poll until 200, at most ~10 s.
wait_ready() {
  for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1")" = 200 ] && return 0
    sleep 0.1
  done
  return 1
}

# The service's environment: nothing but these variables (for `env -i`), in
# COURIER_ENV.
courier_env() {
  COURIER_ENV=(PATH="$PATH" HOME="$WORK"
    PHONE_COURIER__SERVER__LISTEN="$COURIER_ADDR"
    PHONE_COURIER__SERVER__DRAIN_MS=0
    PHONE_COURIER__AUTH__BASIC__USERNAME="$USER_NAME"
    PHONE_COURIER__AUTH__BASIC__PASSWORD="$PASSWORD"
    PHONE_COURIER__TWILIO__BASE_URL="http://$SANDBOX_ADDR"
    PHONE_COURIER__TWILIO__ACCOUNT_SID="$ACCOUNT_SID"
    PHONE_COURIER__TWILIO__AUTH_TOKEN="$AUTH_TOKEN"
    PHONE_COURIER__TWILIO__FROM="$FROM"
    PHONE_COURIER__TWILIO__VERIFY_CREDENTIALS_ON_START=false
    PHONE_COURIER__TWILIO__TIMEOUT_MS=1000
    "${EXTRA_ENV[@]}")
}

# start_courier LOG: `kratos-phone-courier serve` in the background, its pid
# in COURIER_PID and PIDS. `env` is started directly and execs the server, so
# `$!` is the server's pid. (Backgrounding a shell function would make `$!`
# a subshell, and killing it would leave the server running.)
start_courier() {
  courier_env
  env -i "${COURIER_ENV[@]}" "$COURIER" serve >"$1" 2>&1 &
  COURIER_PID=$!
  PIDS+=("$COURIER_PID")
}

# ---------------------------------------------------------------------------
# Start the sandbox and the service
# ---------------------------------------------------------------------------

SANDBOX_ADDR=127.0.0.1:$(free_port)
COURIER_ADDR=127.0.0.1:$(free_port)

"$SANDBOX" --listen "$SANDBOX_ADDR" --account-sid "$ACCOUNT_SID" --auth-token "$AUTH_TOKEN" \
  >"$WORK/sandbox.log" 2>&1 &
PIDS+=($!)

# Rate limits are off here: this script walks the contract, not the abuse
# controls (tests/api/abuse.rs does). Every case that reaches Twilio uses its
# own recipient and code, so deduplication does not merge cases either.
EXTRA_ENV=(PHONE_COURIER__LIMITS__ENABLED=false PHONE_COURIER__VERIFY__ENABLED=true
  PHONE_COURIER__WHATSAPP__ENABLED=true PHONE_COURIER__WHATSAPP__FROM="$FROM"
  PHONE_COURIER__WHATSAPP__CONTENT_SID=HX0123456789abcdef0123456789abcdef
  PHONE_COURIER__WHATSAPP__COUNTRIES=BR)

start_courier "$WORK/courier.log"

if ! wait_ready "http://$SANDBOX_ADDR/health" || ! wait_ready "http://$COURIER_ADDR/health/ready"; then
  fail "sandbox and service start" "not ready after 10 s"
  echo "$PASSED passed, $FAILED failed"
  exit 1
fi

# ---------------------------------------------------------------------------
# Health
# ---------------------------------------------------------------------------

call GET /health/alive
check "GET /health/alive is 200" "$STATUS" 200
call GET /health/ready
check "GET /health/ready is 200" "$STATUS" 200

# ---------------------------------------------------------------------------
# The four Kratos templates, by SMS and by voice, and what Twilio received
# ---------------------------------------------------------------------------

n=110
for name in login registration verification recovery; do
  code=$(json "$FIXTURES/$name.json" template_data.login_code)
  [ "$code" = null ] && code=$(json "$FIXTURES/$name.json" template_data.registration_code)
  [ "$code" = null ] && code=$(json "$FIXTURES/$name.json" template_data.verification_code)
  body=$(json "$FIXTURES/$name.json" body)

  to=+14155550$n
  fixture "$name" "$to"
  send /v1/sms "$WORK/fixture.json"
  expect_accepted "$name fixture by SMS: 200 accepted, sms, SM sid" sms SM
  check "$name SMS: Twilio got To" "$(inbox "$SID" to)" "$to"
  check "$name SMS: Twilio got From" "$(inbox "$SID" from)" "$FROM"
  check "$name SMS: Twilio got the fixture body" "$(inbox "$SID" body)" "$body"
  n=$((n + 1))

  to=+14155550$n
  fixture "$name" "$to"
  send /v1/voice "$WORK/fixture.json"
  expect_accepted "$name fixture by voice: 200 accepted, voice, CA sid" voice CA
  check "$name voice: Twilio got To" "$(inbox "$SID" to)" "$to"
  spaced=$(echo "$code" | sed 's/./&, /g; s/, $//')
  check_contains "$name voice: the call speaks the code digit by digit" "$(inbox "$SID" spoken_text)" "$spaced"
  n=$((n + 1))
done

# ---------------------------------------------------------------------------
# Kratos after v26.2.0 (master of 2026-07-29): notices without a code, to a
# user whose trait says voice, and code SMS ending with the Web OTP line
# ---------------------------------------------------------------------------

# inbox_count TO: how many messages and calls the sandbox got for TO.
inbox_count() {
  curl -s --max-time 5 "http://$SANDBOX_ADDR/inbox.json" >"$WORK/inbox.json"
  python3 - "$WORK/inbox.json" "$1" <<'PY'
import json, sys
print(sum(1 for e in json.load(open(sys.argv[1]))["messages"] if e["to"] == sys.argv[2]))
PY
}

n=601
for name in verifiable_address_changed authenticator_key_added; do
  body=$(json "$FIXTURES/next/$name.json" body)
  for endpoint in /v1/sms /v1/voice; do
    to=+14155550$n
    fixture "next/$name" "$to"
    send "$endpoint" "$WORK/fixture.json"
    expect_accepted "$name on $endpoint (trait says voice): 200 accepted, sms, SM sid" sms SM
    FIRST_SID=$SID
    check "$name on $endpoint: Twilio got To" "$(inbox "$SID" to)" "$to"
    check "$name on $endpoint: Twilio got the notice as Kratos wrote it" "$(inbox "$SID" body)" "$body"
    # Kratos's five more attempts of the same message.
    for attempt in 2 3 4 5 6; do
      send "$endpoint" "$WORK/fixture.json"
    done
    check "$name on $endpoint, Kratos's sixth attempt: the same SMS, duplicate" \
      "$STATUS $(json "$WORK/body" sid) $(json "$WORK/body" duplicate)" "200 $FIRST_SID true"
    check "$name on $endpoint: one message over six attempts" "$(inbox_count "$to")" 1
    n=$((n + 1))
  done
done

# A notice to a London landline (FIXED_LINE): read out in one call.
fixture next/verifiable_address_changed +442071234568
send /v1/sms "$WORK/fixture.json"
expect_accepted "notice to a landline: 200 accepted, voice, CA sid" voice CA
check "notice to a landline: fallback true" "$(json "$WORK/body" fallback)" "true"
check "notice to a landline: the call reads the notice" "$(inbox "$SID" spoken_text)" \
  "An address on your account was changed. If this wasn't you, contact support."

# A login code with the Web OTP line: sent as written, spoken without it.
for name in login_web_otp verification_new_number; do
  body=$(json "$FIXTURES/next/$name.json" body)
  to=+14155550$n
  fixture "next/$name" "$to"
  send /v1/sms "$WORK/fixture.json"
  expect_accepted "$name by SMS: 200 accepted, sms, SM sid" sms SM
  check "$name by SMS: the Web OTP line is last, as written" "$(inbox "$SID" body)" "$body"
  n=$((n + 1))
  to=+14155550$n
  fixture "next/$name" "$to"
  send /v1/voice "$WORK/fixture.json"
  expect_accepted "$name by voice: 200 accepted, voice, CA sid" voice CA
  spoken=$(inbox "$SID" spoken_text)
  case "$spoken" in
    *auth.example.com* | *'#'*) fail "$name by voice: the Web OTP line is never spoken" "$spoken" ;;
    *) pass "$name by voice: the Web OTP line is never spoken" ;;
  esac
  n=$((n + 1))
done

# ---------------------------------------------------------------------------
# Refused before Twilio: authentication, body, schema, recipient, routing
# ---------------------------------------------------------------------------

message +14155550201 100201
call POST /v1/sms -H 'Content-Type: application/json' --data-binary "@$WORK/message.json"
expect_error "no credentials: 401 unauthorized" 401 unauthorized
check_contains "no credentials: WWW-Authenticate asks for basic auth" "$(header WWW-Authenticate)" "Basic"

call POST /v1/sms -u "$USER_NAME:wrong" -H 'Content-Type: application/json' --data-binary "@$WORK/message.json"
expect_error "wrong password: 401 unauthorized" 401 unauthorized
check_contains "wrong password: WWW-Authenticate asks for basic auth" "$(header WWW-Authenticate)" "Basic"

echo '{"recipient": "+14155550202", "body": ' >"$WORK/broken.json"
send /v1/sms "$WORK/broken.json"
expect_error "malformed JSON: 400 malformed_json" 400 malformed_json

echo '{"recipient": "+14155550203", "body": 42}' >"$WORK/schema.json"
send /v1/sms "$WORK/schema.json"
expect_error "schema violation: 400 schema_violation" 400 schema_violation

message 4155550204 100204
send /v1/sms "$WORK/message.json"
expect_error "recipient not in E.164: 422 invalid_recipient" 422 invalid_recipient

python3 -c 'import json; print(json.dumps({"recipient": "+14155550205", "body": "x" * 70000}))' >"$WORK/large.json"
send /v1/sms "$WORK/large.json"
expect_error "body over server.max_body_bytes: 413 body_too_large" 413 body_too_large

message +14155550206 100206
call POST /v1/sms -u "$USER_NAME:$PASSWORD" -H 'Content-Type: text/plain' --data-binary "@$WORK/message.json"
expect_error "Content-Type text/plain: 415 unsupported_media_type" 415 unsupported_media_type

call GET /v1/nothing-here -u "$USER_NAME:$PASSWORD"
expect_error "unknown path: 404 not_found" 404 not_found

call GET /v1/sms -u "$USER_NAME:$PASSWORD"
expect_error "GET /v1/sms: 405 method_not_allowed" 405 method_not_allowed
check_contains "GET /v1/sms: Allow names POST" "$(header Allow)" "POST"

# ---------------------------------------------------------------------------
# Twilio's test numbers: Twilio refuses, the number can never be reached
# ---------------------------------------------------------------------------

i=0
for pair in 1:21211 2:21612 3:21408 4:21610; do
  to=+1500555000${pair%%:*}
  i=$((i + 1))
  message "$to" "20030$i"
  send /v1/sms "$WORK/message.json"
  expect_error "To $to: 422 recipient_unreachable" 422 recipient_unreachable
  check "To $to: provider_code ${pair#*:}" "$(json "$WORK/body" error.provider_code)" "${pair#*:}"
done

# ---------------------------------------------------------------------------
# Fallback to voice (fallback.voice_on): a code SMS cannot carry is spoken
# ---------------------------------------------------------------------------

# Twilio's 21614 test number ("not a mobile number"): one Messages request
# refused, then the call, in the same request; Kratos's retry sends nothing.
message +15005550009 400401
send /v1/sms "$WORK/message.json"
expect_accepted "21614: 200 accepted, voice, CA sid" voice CA
check "21614: fallback true" "$(json "$WORK/body" fallback)" "true"
FIRST_SID=$SID
check "21614: Twilio got the call To" "$(inbox "$SID" to)" "+15005550009"
check_contains "21614: the call speaks the code" "$(inbox "$SID" spoken_text)" "4, 0, 0, 4, 0, 1"
send /v1/sms "$WORK/message.json"
check "21614, Kratos's retry: the same call, duplicate" \
  "$STATUS $(json "$WORK/body" sid) $(json "$WORK/body" duplicate) $(json "$WORK/body" fallback)" "200 $FIRST_SID true true"

# A London landline (FIXED_LINE): called at once, no SMS tried.
message +442071234567 400402
send /v1/sms "$WORK/message.json"
expect_accepted "landline: 200 accepted, voice, CA sid" voice CA
check "landline: fallback true" "$(json "$WORK/body" fallback)" "true"
check "landline: Twilio got the call To" "$(inbox "$SID" to)" "+442071234567"
check_contains "landline: the call speaks the code" "$(inbox "$SID" spoken_text)" "4, 0, 0, 4, 0, 2"

# ---------------------------------------------------------------------------
# WhatsApp ([whatsapp], on here for Brazil): the template, no Body
# ---------------------------------------------------------------------------

message +5511987650001 400501
send /v1/sms "$WORK/message.json"
expect_accepted "WhatsApp country: 200 accepted, whatsapp, SM sid" whatsapp SM
WA_SID=$SID
check "WhatsApp: Twilio got To whatsapp:+55..." "$(inbox_form "$SID" To)" "whatsapp:+5511987650001"
check "WhatsApp: Twilio got From whatsapp:..." "$(inbox_form "$SID" From)" "whatsapp:$FROM"
check "WhatsApp: Twilio got the template" "$(inbox_form "$SID" ContentSid)" "HX0123456789abcdef0123456789abcdef"
check "WhatsApp: Twilio got the code as variable 1" "$(inbox_form "$SID" ContentVariables)" '{"1":"400501"}'
check "WhatsApp: Twilio got no Body" "$(inbox_form "$SID" Body)" "<absent>"
send /v1/sms "$WORK/message.json"
check "WhatsApp, Kratos's retry: the same sid, duplicate" \
  "$STATUS $(json "$WORK/body" channel) $(json "$WORK/body" sid) $(json "$WORK/body" duplicate)" "200 whatsapp $WA_SID true"

# Asked for by the flow's transient payload, to a number outside the list.
cat >"$WORK/message.json" <<EOF
{"recipient":"+14155550410","body":"Your login code is: 400502","template_type":"login_code_valid",
 "template_data":{"login_code":"400502","transient_payload":{"phone_courier":{"channel":"whatsapp"}}}}
EOF
send /v1/sms "$WORK/message.json"
expect_accepted "WhatsApp asked for: 200 accepted, whatsapp" whatsapp SM
check "WhatsApp asked for: Twilio got To whatsapp:+1..." "$(inbox_form "$SID" To)" "whatsapp:+14155550410"

# A notification (no code) to a WhatsApp country goes by SMS.
cat >"$WORK/message.json" <<EOF
{"recipient":"+5511987650002","body":"An address on your account was changed.","template_type":"verifiable_address_changed","template_data":{}}
EOF
send /v1/sms "$WORK/message.json"
expect_accepted "notification to a WhatsApp country: 200 accepted, sms" sms SM
check "notification: Twilio got the Body" "$(inbox "$SID" body)" "An address on your account was changed."

# With whatsapp.notification_content_sid (an approved utility template; a
# second instance), the same kind of notice goes by WhatsApp: the template,
# the text on one line as variable 1, no Body. To the sandbox's
# not-on-WhatsApp number, the SMS stands in, with the text as Kratos wrote it.
MAIN_ADDR=$COURIER_ADDR
MAIN_ENV=("${EXTRA_ENV[@]}")
COURIER_ADDR=127.0.0.1:$(free_port)
EXTRA_ENV+=(PHONE_COURIER__WHATSAPP__NOTIFICATION_CONTENT_SID=HXabcdefabcdefabcdefabcdefabcdef01
  PHONE_COURIER__STATUS_CALLBACK__PUBLIC_URL="http://$COURIER_ADDR")
start_courier "$WORK/courier-notices.log"
if wait_ready "http://$COURIER_ADDR/health/ready"; then
  cat >"$WORK/message.json" <<EOF
{"recipient":"+5511987650003","body":"An address on your account was changed.\nIf this wasn't you, contact support.\n","template_type":"verifiable_address_changed","template_data":{}}
EOF
  send /v1/sms "$WORK/message.json"
  expect_accepted "notification by WhatsApp: 200 accepted, whatsapp, SM sid" whatsapp SM
  check "notification by WhatsApp: Twilio got To whatsapp:+55..." "$(inbox_form "$SID" To)" "whatsapp:+5511987650003"
  check "notification by WhatsApp: Twilio got the utility template" "$(inbox_form "$SID" ContentSid)" "HXabcdefabcdefabcdefabcdefabcdef01"
  check "notification by WhatsApp: Twilio got the text on one line as variable 1" \
    "$(inbox_form "$SID" ContentVariables)" \
    '{"1":"An address on your account was changed. If this wasn'"'"'t you, contact support."}'
  check "notification by WhatsApp: Twilio got no Body" "$(inbox_form "$SID" Body)" "<absent>"
  cat >"$WORK/message.json" <<EOF
{"recipient":"+5511987650063","body":"Your password was changed.","template_type":"password_changed","template_data":{}}
EOF
  send /v1/sms "$WORK/message.json"
  expect_accepted "notification to a number not on WhatsApp: 200 accepted, whatsapp" whatsapp SM
  # The sandbox reports it undelivered (63003) in a signed callback, and the
  # SMS follows (bounded wait).
  got="<none>"
  for _ in $(seq 1 50); do
    got=$(inbox_to +5511987650063 body)
    [ "$got" != "<none>" ] && break
    sleep 0.1
  done
  check "notification not on WhatsApp: the SMS carries the text" "$got" "Your password was changed."
else
  fail "service with whatsapp.notification_content_sid starts" "not ready"
fi
stop "$COURIER_PID"
COURIER_ADDR=$MAIN_ADDR
EXTRA_ENV=("${MAIN_ENV[@]}")

# Twilio's sender test numbers: a service configured with such a From is
# misconfigured (502, fix it) or its sender queue is full (503, retry). Each
# runs a second service instance with that From, on its own port.
MAIN_ADDR=$COURIER_ADDR
j=0
for triple in 1:21212:502:provider_configuration 7:21606:502:provider_configuration 8:21611:503:provider_unavailable; do
  IFS=: read -r digit code status error <<<"$triple"
  from=+1500555000$digit
  j=$((j + 1))
  COURIER_ADDR=127.0.0.1:$(free_port)
  FROM=$from start_courier "$WORK/courier-from-$digit.log"
  if wait_ready "http://$COURIER_ADDR/health/ready"; then
    message "+1415555031$j" "20040$j"
    send /v1/sms "$WORK/message.json"
    expect_error "From $from: $status $error" "$status" "$error"
    check "From $from: provider_code $code" "$(json "$WORK/body" error.provider_code)" "$code"
  else
    fail "service with From $from starts" "not ready"
  fi
  stop "$COURIER_PID"
done
COURIER_ADDR=$MAIN_ADDR

# ---------------------------------------------------------------------------
# Twilio Lookup (lookup.enabled): the sandbox's magic numbers, on a second
# instance with every package; refusals send nothing
# ---------------------------------------------------------------------------

# lookups NUMBER_MASK: how many lookups the sandbox answered for the number.
lookups() {
  curl -s --max-time 5 "http://$SANDBOX_ADDR/sandbox/lookups.json" >"$WORK/lookups.json"
  python3 - "$WORK/lookups.json" "$1" <<'PY'
import json, sys
print(sum(1 for l in json.load(open(sys.argv[1]))["lookups"] if l["number"] == sys.argv[2]))
PY
}

LOOKUP_ENV=(PHONE_COURIER__LOOKUP__ENABLED=true
  PHONE_COURIER__LOOKUP__BASE_URL="http://$SANDBOX_ADDR"
  PHONE_COURIER__LOOKUP__FIELDS=line_type_intelligence,sim_swap,sms_pumping_risk)
for on_error in allow refuse; do
  COURIER_ADDR=127.0.0.1:$(free_port)
  SAVED_ENV=("${EXTRA_ENV[@]}")
  EXTRA_ENV+=("${LOOKUP_ENV[@]}" PHONE_COURIER__LOOKUP__ON_ERROR=$on_error)
  start_courier "$WORK/courier-lookup-$on_error.log"
  EXTRA_ENV=("${SAVED_ENV[@]}")
  if ! wait_ready "http://$COURIER_ADDR/health/ready"; then
    fail "service with lookup.on_error = $on_error starts" "not ready"
    continue
  fi
  if [ "$on_error" = allow ]; then
    # Lookup says landline: called at once; Kratos's retry is answered from
    # the ledger and the cache (one lookup).
    message +14155550171 400501
    send /v1/sms "$WORK/message.json"
    expect_accepted "lookup landline: 200 accepted, voice, CA sid" voice CA
    check "lookup landline: fallback true" "$(json "$WORK/body" fallback)" "true"
    check "lookup landline: Twilio got the call To" "$(inbox "$SID" to)" "+14155550171"
    send /v1/sms "$WORK/message.json"
    check "lookup landline, Kratos's retry: the same call, duplicate" \
      "$STATUS $(json "$WORK/body" sid) $(json "$WORK/body" duplicate)" "200 $SID true"
    check "lookup landline: one lookup for both attempts" "$(lookups '+14…71')" "1"
    message +14155550173 400502
    send /v1/sms "$WORK/message.json"
    expect_error "lookup nonFixedVoip: 422 line_type_refused" 422 line_type_refused
    check "lookup nonFixedVoip: error.line_type" "$(json "$WORK/body" error.line_type)" "nonFixedVoip"
    message +14155550182 400503
    send /v1/sms "$WORK/message.json"
    expect_error "lookup swapped SIM, login code: 422 sim_swap_suspected" 422 sim_swap_suspected
    message +14155550183 400504
    send /v1/sms "$WORK/message.json"
    expect_error "lookup pumping score 95: 422 sms_pumping_risk" 422 sms_pumping_risk
    curl -s --max-time 5 "http://$SANDBOX_ADDR/inbox.json" >"$WORK/inbox.json"
    check "lookup refusals: Twilio got no message for them" "$(python3 - "$WORK/inbox.json" <<'PY'
import json, sys
print(sum(1 for e in json.load(open(sys.argv[1]))["messages"] if e["to"] in ("+14155550173", "+14155550182", "+14155550183")))
PY
)" "0"
    message +14155550184 400505
    send /v1/sms "$WORK/message.json"
    expect_accepted "lookup fails, on_error allow: 200 accepted by SMS" sms SM
  else
    message +14155550184 400506
    send /v1/sms "$WORK/message.json"
    expect_error "lookup fails, on_error refuse: 503 lookup_unavailable" 503 lookup_unavailable
    check "lookup fails, on_error refuse: Retry-After" "$(header Retry-After)" "1"
  fi
  stop "$COURIER_PID"
done
COURIER_ADDR=$MAIN_ADDR

# ---------------------------------------------------------------------------
# The verify API: request a code, read it where the user would (the SMS
# Twilio got), check it once
# ---------------------------------------------------------------------------

# verify PATH JSON: POST to the verify API with the service's credentials.
verify() {
  printf '%s' "$2" >"$WORK/verify.json"
  send "$1" "$WORK/verify.json"
}

# sent_codes TO: the 6-digit codes of every SMS Twilio got for TO, oldest first.
sent_codes() {
  curl -s --max-time 5 "http://$SANDBOX_ADDR/inbox.json" >"$WORK/inbox.json"
  python3 - "$WORK/inbox.json" "$1" <<'PY'
import json, re, sys
entries = [e for e in json.load(open(sys.argv[1]))["messages"] if e["to"] == sys.argv[2]]
print(" ".join(re.search(r"\b(\d{6})\b", e["body"]).group(1) for e in reversed(entries)))
PY
}

verify /v1/verify/request '{"to":"+14155550401"}'
check "verify request: 200 pending by sms for 600 s" \
  "$STATUS $(json "$WORK/body" status) $(json "$WORK/body" channel) $(json "$WORK/body" expires_in)" "200 pending sms 600"
check "verify request: the code is not in the answer" "$(json "$WORK/body" code)" null
code=$(sent_codes +14155550401)
check "verify request: Twilio got one SMS with a 6-digit code" "${#code}" 6
wrong=$(printf '%06d' $(( (10#$code + 1) % 1000000 )))
verify /v1/verify/check "{\"to\":\"+14155550401\",\"code\":\"$wrong\"}"
expect_error "verify check, wrong code: 422 code_mismatch" 422 code_mismatch
check "verify check, wrong code: 4 attempts left" "$(json "$WORK/body" error.attempts_left)" 4
verify /v1/verify/check "{\"to\":\"+14155550401\",\"code\":\"$code\"}"
check "verify check, right code: 200 approved" "$STATUS $(json "$WORK/body" status)" "200 approved"
verify /v1/verify/check "{\"to\":\"+14155550401\",\"code\":\"$code\"}"
expect_error "verify check, the same code again: 404 no_pending_code" 404 no_pending_code

verify /v1/verify/request '{"to":"+14155550402"}'
verify /v1/verify/request '{"to":"+14155550402"}'
codes=$(sent_codes +14155550402)
check "verify resend: Twilio got the same code twice" "$(echo "$codes" | tr ' ' '\n' | sort -u | wc -l) $(echo "$codes" | wc -w)" "1 2"

verify /v1/verify/request '{"to":"4155550403"}'
expect_error "verify request, not E.164: 422 invalid_recipient" 422 invalid_recipient
verify /v1/verify/request '{"to":"+14155550403","channel":"fax"}'
expect_error "verify request, unknown channel: 400 schema_violation" 400 schema_violation
verify /v1/verify/check '{"to":"+14155550404","code":"123456"}'
expect_error "verify check, nothing pending: 404 no_pending_code" 404 no_pending_code
call POST /v1/verify/check -H 'Content-Type: application/json' --data '{"to":"+14155550404","code":"123456"}'
expect_error "verify check without credentials: 401 unauthorized" 401 unauthorized

# ---------------------------------------------------------------------------
# Twilio misbehaving (sandbox faults): 503 means retry, 502 means fix config
# ---------------------------------------------------------------------------

# expect_unavailable FAULT RECIPIENT CODE
expect_unavailable() {
  fault "$1"
  message "$2" "$3"
  send /v1/sms "$WORK/message.json"
  expect_error "Twilio fault $1: 503 provider_unavailable" 503 provider_unavailable
  if [ -n "$(header Retry-After)" ]; then pass "Twilio fault $1: Retry-After given"; else fail "Twilio fault $1: Retry-After given" "no Retry-After"; fi
}

expect_unavailable 503 +14155550301 300301
expect_unavailable 500 +14155550302 300302
expect_unavailable 429 +14155550303 300303
expect_unavailable drop +14155550304 300304
expect_unavailable latency=3000 +14155550305 300305

fault not-json
message +14155550306 300306
send /v1/sms "$WORK/message.json"
check "Twilio fault not-json (201, unreadable body): 200 accepted, sid null" \
  "$STATUS $(json "$WORK/body" status) $(json "$WORK/body" sid)" "200 accepted null"

# A 201 whose body is cut off: Twilio created the message, so it must not be
# reported as failed (Kratos would retry and send a second SMS).
fault reset
message +14155550308 300308
send /v1/sms "$WORK/message.json"
check "Twilio fault reset (201, connection cut mid-body): 200 accepted, sid null" \
  "$STATUS $(json "$WORK/body" status) $(json "$WORK/body" sid)" "200 accepted null"

fault redirect
message +14155550307 300307
send /v1/sms "$WORK/message.json"
expect_error "Twilio fault redirect: 502 provider_configuration" 502 provider_configuration

# ---------------------------------------------------------------------------
# Two providers: the sandbox above as the Twilio primary, a second sandbox
# playing a SignalWire space as the secondary. Another service instance runs
# with them as [[providers]] (a configuration file: a list cannot be written
# in environment variables), on its own port.
# ---------------------------------------------------------------------------

SW_ADDR=127.0.0.1:$(free_port)
SW_TOKEN=contract-signalwire-token
SW_SIGNING_KEY=contract-signalwire-signing-key
SW_PROJECT=5a1e0000-5a1e-4000-8000-000000000001
SW_FROM=+15005550009
# The sandbox signs its own status callbacks with its API token; the service
# is given another signing key, so the sandbox's callbacks are refused and
# only the signed cases below count.
"$SANDBOX" --listen "$SW_ADDR" --flavor signalwire --auth-token "$SW_TOKEN" \
  >"$WORK/sandbox-signalwire.log" 2>&1 &
PIDS+=($!)

cat >"$WORK/providers.toml" <<EOF
[[providers]]
name = "twilio"
kind = "twilio"
base_url = "http://$SANDBOX_ADDR"
account_sid = "$ACCOUNT_SID"
auth_token = "$AUTH_TOKEN"
from = "$FROM"
timeout_ms = 1000
verify_credentials_on_start = false

[[providers]]
name = "signalwire"
kind = "signalwire"
space_url = "http://$SW_ADDR"
project_id = "$SW_PROJECT"
api_token = "$SW_TOKEN"
signing_key = "$SW_SIGNING_KEY"
from = "$SW_FROM"
timeout_ms = 1000
verify_credentials_on_start = true
EOF

# sw_inbox SID FIELD: FIELD of the SignalWire sandbox's inbox entry.
sw_inbox() {
  SANDBOX_ADDR=$SW_ADDR inbox "$1" "$2"
}

# inbox_count ADDR TO: how many messages the sandbox at ADDR accepted for TO.
inbox_count() {
  curl -s --max-time 5 "http://$1/inbox.json" >"$WORK/inbox-count.json"
  python3 - "$WORK/inbox-count.json" "$2" <<'PY'
import json, sys
print(sum(1 for e in json.load(open(sys.argv[1]))["messages"] if e["to"] == sys.argv[2]))
PY
}

# sw_signature URL KEY FORM: Twilio's algorithm (HMAC-SHA1 over the URL and
# the sorted parameters, base64), with which SignalWire signs.
sw_signature() {
  python3 - "$1" "$2" "$3" <<'PY'
import base64, hashlib, hmac, sys, urllib.parse
url, key, form = sys.argv[1:4]
data = url + "".join(k + v for k, v in sorted(urllib.parse.parse_qsl(form)))
print(base64.b64encode(hmac.new(key.encode(), data.encode(), hashlib.sha1).digest()).decode())
PY
}

MAIN_ADDR=$COURIER_ADDR
COURIER_ADDR=127.0.0.1:$(free_port)
env -i PATH="$PATH" HOME="$WORK" \
  PHONE_COURIER__SERVER__LISTEN="$COURIER_ADDR" \
  PHONE_COURIER__SERVER__DRAIN_MS=0 \
  PHONE_COURIER__AUTH__BASIC__USERNAME="$USER_NAME" \
  PHONE_COURIER__AUTH__BASIC__PASSWORD="$PASSWORD" \
  PHONE_COURIER__LIMITS__ENABLED=false \
  PHONE_COURIER__STATUS_CALLBACK__PUBLIC_URL="http://$COURIER_ADDR" \
  "$COURIER" --config "$WORK/providers.toml" serve >"$WORK/courier-providers.log" 2>&1 &
PROVIDERS_PID=$!
PIDS+=("$PROVIDERS_PID")

if wait_ready "http://$SW_ADDR/health" && wait_ready "http://$COURIER_ADDR/health/ready"; then
  call GET /health/ready
  check "two providers: /health/ready lists both in order, SignalWire's credentials verified" \
    "$STATUS $(json "$WORK/body" providers.0.name) $(json "$WORK/body" providers.1.name) $(json "$WORK/body" providers.1.kind) $(json "$WORK/body" providers.1.credentials)" \
    "200 twilio signalwire signalwire verified"

  message +14155550501 500501
  send /v1/sms "$WORK/message.json"
  expect_accepted "both providers healthy: the primary carries it (SM sid)" sms SM
  check "both providers healthy: the secondary got nothing" "$(inbox_count "$SW_ADDR" +14155550501)" 0

  fault 503
  message +14155550502 500502
  send /v1/sms "$WORK/message.json"
  SID=$(json "$WORK/body" sid)
  SW_SID=$SID
  check "primary answers 503: 200 accepted with the secondary's UUID sid" \
    "$STATUS $(json "$WORK/body" status) ${#SID}" "200 accepted 36"
  check "primary answers 503: SignalWire got To" "$(sw_inbox "$SID" to)" +14155550502
  check "primary answers 503: SignalWire got its own From" "$(sw_inbox "$SID" from)" "$SW_FROM"
  check "primary answers 503: SignalWire got the body" "$(sw_inbox "$SID" body)" "Your login code is: 500502"
  check "primary answers 503: one message in total, none at the primary" \
    "$(inbox_count "$SANDBOX_ADDR" +14155550502) $(inbox_count "$SW_ADDR" +14155550502)" "0 1"
  send /v1/sms "$WORK/message.json"
  check "Kratos retries after the failover: the same sid, still one message" \
    "$STATUS $(json "$WORK/body" sid) $(inbox_count "$SANDBOX_ADDR" +14155550502) $(inbox_count "$SW_ADDR" +14155550502)" \
    "200 $SID 0 1"

  message +15005550001 500503
  send /v1/sms "$WORK/message.json"
  expect_error "recipient refused by the primary (21211): 422, no failover" 422 recipient_unreachable
  check "recipient refused by the primary: the secondary got nothing" "$(inbox_count "$SW_ADDR" +15005550001)" 0

  # The sandbox's standing fault (serve --dev --failover's primary): every
  # other create request fails, the next one first.
  curl -s -o /dev/null --max-time 5 -X POST -H 'Content-Type: application/json' \
    --data '{"fault":"503","every":2}' "http://$SANDBOX_ADDR/sandbox/faults"
  lengths=""
  for k in 4 5 6 7; do
    message "+1415555050$k" "50050$k"
    send /v1/sms "$WORK/message.json"
    SID=$(json "$WORK/body" sid)
    lengths="$lengths $STATUS:${#SID}"
  done
  curl -s -o /dev/null --max-time 5 -X DELETE "http://$SANDBOX_ADDR/sandbox/faults"
  check "primary failing every other request: SignalWire (36-char sid), Twilio (34), SignalWire, Twilio" \
    "$lengths" " 200:36 200:34 200:36 200:34"

  call GET /metrics -u "$USER_NAME:$PASSWORD"
  check_contains "metrics: three failovers from twilio" "$(cat "$WORK/body")" \
    'phone_courier_provider_failovers_total{from="twilio",channel="sms"} 3'
  check_contains "metrics: three messages carried by signalwire" "$(cat "$WORK/body")" \
    'phone_courier_provider_requests_total{provider="signalwire",channel="sms",outcome="accepted"} 3'

  callback="MessageSid=$SW_SID&MessageStatus=delivered&To=%2B14155550502&From=%2B15005550009"
  url="http://$COURIER_ADDR/v1/signalwire/status"
  call POST /v1/signalwire/status -H 'Content-Type: application/x-www-form-urlencoded' \
    -H "X-SignalWire-Signature: $(sw_signature "$url" "$SW_SIGNING_KEY" "$callback")" --data "$callback"
  check "SignalWire status callback signed with the signing key: 204" "$STATUS" 204
  call POST /v1/signalwire/status -H 'Content-Type: application/x-www-form-urlencoded' \
    -H "X-Twilio-Signature: $(sw_signature "$url" "$SW_SIGNING_KEY" "$callback")" --data "$callback"
  check "SignalWire status callback, X-Twilio-Signature as the alias: 204" "$STATUS" 204
  call POST /v1/signalwire/status -H 'Content-Type: application/x-www-form-urlencoded' \
    -H "X-SignalWire-Signature: $(sw_signature "$url" not-the-signing-key "$callback")" --data "$callback"
  expect_error "SignalWire status callback signed with another key: 403 invalid_signature" 403 invalid_signature
  call POST /v1/signalwire/status -H 'Content-Type: application/x-www-form-urlencoded' \
    -H "X-SignalWire-Signature: $(sw_signature "$url" "$SW_SIGNING_KEY" "$callback")" \
    --data "${callback/delivered/failed}"
  expect_error "SignalWire status callback changed after signing: 403 invalid_signature" 403 invalid_signature
else
  fail "service with two providers starts" "not ready"
fi
stop "$PROVIDERS_PID"
COURIER_ADDR=$MAIN_ADDR

# ---------------------------------------------------------------------------
# Configuration errors stop the service before it starts
# ---------------------------------------------------------------------------

courier_env
env -i "${COURIER_ENV[@]}" env -u PHONE_COURIER__TWILIO__FROM "$COURIER" check-config >"$WORK/check-config.log" 2>&1
check "check-config without twilio.from exits 2" "$?" 2
check_contains "check-config without twilio.from names the key" "$(cat "$WORK/check-config.log")" "twilio.from"

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
