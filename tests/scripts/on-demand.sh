#!/bin/bash
# Runs inside systemd-user-sandbox (a real `systemd --user`), with the proxy's user units and
# the on-demand templates loaded: two mock model servers (a and b, one GPU: they conflict) made
# with `openai-proxy enable-backend`, and the proxy routing model a to one and b to the other
# (both in swap_group "gpu", with start_timeout).
# Set by the test: PORT (the proxy's socket), PA and PB (the backends' sockets), SA and SB (where
# the servers listen), PC (a third backend's socket), BIN (the built binary), CFG (the proxy's
# config), MOCK (tests/scripts/mock-model-server.py), DIR (a scratch directory).
set -euo pipefail
: "${PORT:?}" "${PA:?}" "${PB:?}" "${SA:?}" "${SB:?}" "${PC:?}" "${BIN:?}" "${CFG:?}" "${MOCK:?}" "${DIR:?}"
U="http://127.0.0.1:$PORT"
IDLE=3

. "${BASH_SOURCE%/*}/sandbox-common.sh"
ms_since() { echo $((($(now) - $1) / 1000000)); }
# chat MODEL [URL]: a chat completion through the proxy (or URL); prints the status and the
# model that answered.
chat() {
    curl -sS -m 30 -o "$DIR/chat.json" -w '%{http_code}' -H 'Content-Type: application/json' \
        -d "{\"model\":\"$1\",\"messages\":[]}" "${2:-$U}/v1/chat/completions" || true
    echo " $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("model"))' "$DIR/chat.json" 2>/dev/null)"
}
server() { echo "openai-proxy-server@$1.service"; }
forwarder() { echo "openai-proxy-backend@$1.service"; }

# Records, every 20 ms, whether both servers are active at once.
watch_both() {
    while :; do
        if is "$(server a)" active && is "$(server b)" active; then echo both >> "$DIR/both"; fi
        sleep 0.02
    done
}
WATCH=
stop_watch() { [ -z "$WATCH" ] || { kill "$WATCH" 2>/dev/null || true; wait "$WATCH" 2>/dev/null || true; WATCH=; }; }
trap stop_watch EXIT

step "enable-backend a and b: conflicting mock servers, ${IDLE}s idle"
for m in a b; do
    if [ $m = a ]; then p=$PA s=$SA o=b; else p=$PB s=$SB o=a; fi
    "$BIN" enable-backend $m --user --port "$p" --server-port "$s" --idle ${IDLE}s --conflicts $o \
        --exec "/usr/bin/python3 $MOCK --model $m --port \$PORT" | tee "$DIR/enable-$m.txt"
    grep -q "url = \"http://127.0.0.1:$p\"" "$DIR/enable-$m.txt" || fail "enable-backend $m does not show the config"
    grep -q "swap_group = \"gpu\"    # the same group in \[backends.$o\]" "$DIR/enable-$m.txt" \
        || fail "enable-backend $m does not show the swap group: $(cat "$DIR/enable-$m.txt")"
    is openai-proxy-backend@$m.socket active || fail "socket $m not listening"
    is "$(server $m)" inactive || fail "server $m started before any request"
    [ "$(systemctl --user is-enabled openai-proxy-backend@$m.socket)" = enabled ] || fail "socket $m not enabled"
done
grep -q "^Conflicts=openai-proxy-server@b.service" \
    "$XDG_CONFIG_HOME/systemd/user/openai-proxy-server@a.service.d/openai-proxy.conf" || fail "no Conflicts= in a's drop-in"
systemctl --user start openai-proxy.socket
: > "$DIR/both"
watch_both & WATCH=$!

step "the first request for a starts its server and succeeds, once it has loaded"
t=$(now)
[ "$(chat a)" = "200 a" ] || fail "first request for a: $(chat a) $(cat "$DIR/chat.json")"
took=$(ms_since "$t")
[ "$took" -ge 1000 ] || fail "answered after $took ms: the mock server takes 1 s to load"
is "$(server a)" active || fail "server a not active"
is "$(forwarder a)" active || fail "forwarder a not active"
is "$(server b)" inactive || fail "server b started"
pid=$(systemctl --user show -p MainPID --value "$(server a)")

step "later requests reuse the running server"
for _ in 1 2 3; do [ "$(chat a)" = "200 a" ] || fail "later request for a"; done
[ "$(systemctl --user show -p MainPID --value "$(server a)")" = "$pid" ] || fail "server a was restarted"

step "status --user and the / page show a running and b stopped"
"$BIN" --config "$CFG" status --user | tee "$DIR/status.txt" >/dev/null
grep -Eq "^  a +running +openai-proxy-server@a.service \(socket openai-proxy-backend@a.socket on 127.0.0.1:$PA\)" "$DIR/status.txt" \
    || fail "status: $(cat "$DIR/status.txt")"
grep -Eq "^  b +stopped " "$DIR/status.txt" || fail "status: $(cat "$DIR/status.txt")"
curl -fsS "$U/" > "$DIR/page.txt"
grep -q "Backends on demand (systemd user units):" "$DIR/page.txt" || fail "/ page: $(cat "$DIR/page.txt")"
grep -Eq "^  a +running " "$DIR/page.txt" || fail "/ page: $(cat "$DIR/page.txt")"

step "swap: a 5 s stream on a is not cut when b is asked for; b answers after it, never both"
proxy_pid=$(systemctl --user show -p MainPID --value openai-proxy.service)
( curl -sS -N -m 30 -H 'Content-Type: application/json' \
    -d '{"model":"a","stream":true,"seconds":5,"messages":[]}' "$U/v1/chat/completions" > "$DIR/stream.txt"
  now > "$DIR/stream.end" ) &
SPID=$!
sleep 1
[ "$(chat b)" = "200 b" ] || fail "request for b through the proxy: $(cat "$DIR/chat.json")"
b_end=$(now)
wait $SPID || fail "the stream on a failed"
events=$(grep -c '^data: {' "$DIR/stream.txt" || true)
[ "$events" = 10 ] || fail "the stream on a has $events events of 10: $(cat "$DIR/stream.txt")"
grep -q '^data: \[DONE\]' "$DIR/stream.txt" || fail "the stream on a was cut: $(cat "$DIR/stream.txt")"
echo "b answered $((($b_end - $(cat "$DIR/stream.end")) / 1000000)) ms after the stream on a ended"
[ "$b_end" -gt "$(cat "$DIR/stream.end")" ] || fail "b answered before the stream on a ended"
is "$(server a)" inactive || fail "server a still $(state "$(server a)")"
is "$(server b)" active || fail "server b not active"
[ "$(chat a)" = "200 a" ] || fail "request for a after b"
is "$(server b)" inactive || fail "server b still $(state "$(server b)")"
stop_watch
[ ! -s "$DIR/both" ] || fail "both servers were active at once ($(wc -l < "$DIR/both") samples)"

step "idle: after the last request through the proxy, the forwarder and the server stop; the proxy runs on"
# Its pooled connection to a is closed after 1 to 2 s idle: systemd-socket-proxyd sees none.
wait_until "server a to stop when idle" $((IDLE + 5)) is "$(server a)" inactive
is "$(forwarder a)" inactive || fail "forwarder a still $(state "$(forwarder a)")"
is openai-proxy-backend@a.socket active || fail "socket a stopped listening"
is openai-proxy.service active || fail "the proxy is $(state openai-proxy.service)"
[ "$(systemctl --user show -p MainPID --value openai-proxy.service)" = "$proxy_pid" ] || fail "the proxy was restarted"

step "the next request through the proxy starts them again"
[ "$(chat a)" = "200 a" ] || fail "request for a after idle"
is "$(server a)" active || fail "server a not started again"

step "a server that cannot start: the waiting request is refused at once, the socket stays"
"$BIN" enable-backend c --user --port "$PC" --exec /bin/false > "$DIR/enable-c.txt"
grep -q "^    on_demand = true$" "$DIR/enable-c.txt" || fail "enable-backend c: $(cat "$DIR/enable-c.txt")"
t=$(now)
if curl -sS -m 20 -o /dev/null "http://127.0.0.1:$PC/" 2>"$DIR/c.err"; then fail "a request to c succeeded"; fi
took=$(ms_since "$t")
echo "refused after $took ms: $(cat "$DIR/c.err")"
[ "$took" -lt 10000 ] || fail "the request to c took $took ms"
is openai-proxy-backend@c.socket active || fail "socket c: $(state openai-proxy-backend@c.socket)"

step "disable-backend removes its drop-ins and its socket"
"$BIN" disable-backend c --user | tee "$DIR/disable.txt"
grep -q "Removed .*/openai-proxy-server@c.service.d/openai-proxy.conf" "$DIR/disable.txt" || fail "disable-backend output"
[ ! -e "$XDG_CONFIG_HOME/systemd/user/openai-proxy-backend@c.socket.d" ] || fail "drop-in directory left"
is openai-proxy-backend@c.socket inactive || fail "socket c: $(state openai-proxy-backend@c.socket)"
if curl -sS -m 5 -o /dev/null "http://127.0.0.1:$PC/" 2>/dev/null; then fail "c still answers"; fi
echo "ALL OK"
