#!/bin/bash
# Runs inside systemd-user-sandbox (a real `systemd --user`): drives the user units the way a
# desktop user would. Set by the test: PORT (the socket's port), BIN (the built binary), CFG
# (the config the units use), DIR (b.toml, broken.toml, idle.toml to copy over CFG).
set -euo pipefail
: "${PORT:?}" "${BIN:?}" "${CFG:?}" "${DIR:?}"
U="http://127.0.0.1:$PORT"

step() { echo "== $*"; }
fail() {
    echo "FAIL: $*"
    systemctl --user status openai-proxy.socket openai-proxy.service --no-pager -l || true
    exit 1
}
backend() { curl -sS -o /dev/null -D - "$U/v1/models" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-backend"{print $2}'; }
# wait_until DESCRIPTION COMMAND...: retries for up to 20 s.
wait_until() {
    local what=$1; shift
    for _ in $(seq 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    fail "timed out waiting for: $what"
}
service_state() { systemctl --user show -p ActiveState --value openai-proxy.service; }
service_is() { [ "$(service_state)" = "$1" ]; }
routes_to() { [ "$(backend)" = "$1" ]; }
status_text() { systemctl --user show -p StatusText --value openai-proxy.service; }

step "enable --now the socket: listening, service not started yet"
systemctl --user enable --now openai-proxy.socket
[ "$(systemctl --user is-active openai-proxy.socket)" = active ] || fail "socket not active"
[ "$(service_state)" = inactive ] || fail "service started before any connection: $(service_state)"

step "the first request starts the service and is answered"
curl -fsS "$U/health" | grep -q '"ok"' || fail "/health"
[ "$(service_state)" = active ] || fail "service not active after the first request"
[ "$(backend)" = a ] || fail "expected backend a, got $(backend)"
systemctl --user status openai-proxy.service --no-pager -l | tee "$DIR/status.txt" | grep -q 'Status: "Serving 2 routes on 127.0.0.1:' \
    || fail "no STATUS line in systemctl status: $(cat "$DIR/status.txt")"

step "openai-proxy status --user"
"$BIN" --config "$CFG" status --user -v | tee "$DIR/ours.txt" || fail "status --user exited $?"
grep -q "openai-proxy.service: active (running)" "$DIR/ours.txt" || fail "status --user output"
grep -q "/health → 200" "$DIR/ours.txt" || fail "status --user health"

step "reload with a changed config changes routing"
cp "$DIR/b.toml" "$CFG"
systemctl --user reload openai-proxy.service
wait_until "routing to b" routes_to b

step "reload with a broken config keeps the old one and shows the error"
cp "$DIR/broken.toml" "$CFG"
systemctl --user reload openai-proxy.service
wait_until "a failed reload in STATUS" bash -c "systemctl --user show -p StatusText --value openai-proxy.service | grep -q 'reload FAILED'"
status_text | grep -q "$CFG:" || fail "the error lacks file:line: $(status_text)"
systemctl --user status openai-proxy.service --no-pager -l | grep -q 'reload FAILED' || fail "systemctl status lacks the error"
[ "$(backend)" = b ] || fail "the previous config should still route to b"

step "stop drains a stream in flight"
cp "$DIR/idle.toml" "$CFG"
systemctl --user reload openai-proxy.service
wait_until "good reload" bash -c "! systemctl --user show -p StatusText --value openai-proxy.service | grep -q FAILED"
# In the background for 60 s at most (-m 60), and stopped however this script ends.
curl -sS -N -m 60 -X POST -H 'Content-Type: application/json' -d '{"stream":true}' \
    "$U/v1/chat/completions" </dev/null > "$DIR/stream.out" 2>"$DIR/stream.err" &
CURL=$!
stop_curl() {
    [ -n "$CURL" ] || return 0
    kill "$CURL" 2>/dev/null || true
    wait "$CURL" 2>/dev/null || true
    CURL=
}
trap stop_curl EXIT
wait_until "the stream to start" grep -q 'data: 0' "$DIR/stream.out"
systemctl --user stop openai-proxy.service
rc=0; wait "$CURL" || rc=$?
CURL=
[ $rc = 0 ] || fail "curl of the stream failed ($rc): $(cat "$DIR/stream.err")"
grep -q 'data: \[DONE\]' "$DIR/stream.out" || fail "the stream was cut by stop: $(cat "$DIR/stream.out")"

step "the socket stayed: the next request starts the service again"
curl -fsS "$U/health" >/dev/null || fail "/health after stop"
[ "$(service_state)" = active ] || fail "not restarted by the socket"

step "idle exit, then a new request is answered"
wait_until "idle exit" service_is inactive
systemctl --user show -p Result --value openai-proxy.service | grep -qx success || fail "idle exit was not clean"
curl -fsS "$U/health" >/dev/null || fail "/health after idle exit was refused"
[ "$(service_state)" = active ] || fail "not started again after idle exit"

step "status --user when nothing serves"
systemctl --user stop openai-proxy.socket openai-proxy.service
set +e
"$BIN" --config "$CFG" status --user > "$DIR/stopped.txt"
rc=$?
set -e
[ $rc = 3 ] || fail "status --user should exit 3 when not serving, got $rc: $(cat "$DIR/stopped.txt")"
echo "ALL OK"
