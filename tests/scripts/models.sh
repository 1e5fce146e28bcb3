#!/bin/bash
# Runs inside systemd-user-sandbox (a real `systemd --user`), with the proxy's user units and
# the on-demand templates loaded: one mock model server m (on demand, made with
# `openai-proxy enable-backend`, 1 s to load), and a backend "plain" that is not on demand.
# Checks the models' state in GET /models, POST /models/load and /models/unload (unload waits
# for a running stream, force does not), the refusals that must never reach systemd, and
# `openai-proxy models`.
# Set by the test: PORT (the proxy's socket), PM (m's socket), SM (where m's server listens),
# PP (where plain's server listens),
# BIN (the built binary), CFG (the proxy's config), MOCK (tests/scripts/mock-model-server.py),
# DIR (a scratch directory).
set -euo pipefail
: "${PORT:?}" "${PM:?}" "${SM:?}" "${PP:?}" "${BIN:?}" "${CFG:?}" "${MOCK:?}" "${DIR:?}"
U="http://127.0.0.1:$PORT"
SERVER=openai-proxy-server@m.service
# plain's server, started here (not on demand); stopped by its PID however the script ends.
python3 "$MOCK" --model plain --port "$PP" --load-seconds 0 2>>"$DIR/plain.log" & PLAIN=$!
trap 'kill "$PLAIN" 2>/dev/null || true; wait "$PLAIN" 2>/dev/null || true' EXIT

. "${BASH_SOURCE%/*}/sandbox-common.sh"
# model_state NAME: the status.value of NAME in GET /models.
model_state() {
    curl -fsS -m 10 "$U/models" | python3 -c '
import json, sys
for m in json.load(sys.stdin)["data"]:
    if m["id"] == sys.argv[1]:
        print(m["status"]["value"], m["backend"])' "$1"
}
# poll_state NAME STATE SECONDS: until GET /models says STATE for NAME.
poll_state() {
    local end=$(($(now) + $3 * 1000000000)) got
    while :; do
        got=$(model_state "$1" | cut -d' ' -f1)
        [ "$got" = "$2" ] && return 0
        [ "$(now)" -lt "$end" ] || fail "GET /models: $1 is '$got', not '$2' within $3 s"
        sleep 0.1
    done
}
# post PATH BODY [CURL ARGS...]: prints the status code; the answer is in $DIR/answer.json.
post() {
    local path=$1 body=$2; shift 2
    curl -sS -m 120 -o "$DIR/answer.json" -w '%{http_code}' -H 'Content-Type: application/json' \
        "$@" -d "$body" "$U$path"
}
# stream SECONDS TAG: a streamed chat completion for m, its end time in $DIR/TAG.end.
stream() {
    curl -sS -N -m 60 -H 'Content-Type: application/json' \
        -d "{\"model\":\"m\",\"stream\":true,\"seconds\":$1,\"messages\":[]}" \
        "$U/v1/chat/completions" > "$DIR/$2.txt" || true
    now > "$DIR/$2.end"
}

step "enable-backend m: a mock server on demand, 60s idle"
"$BIN" enable-backend m --user --port "$PM" --server-port "$SM" --idle 60s \
    --exec "/usr/bin/python3 $MOCK --model m --port \$PORT" > "$DIR/enable-m.txt"
is openai-proxy-backend@m.socket active || fail "socket m not listening"
systemctl --user start openai-proxy.socket

step "GET /models: m is unloaded (its server is stopped), plain is loaded"
[ "$(model_state m)" = "unloaded m" ] || fail "m: $(model_state m); $(curl -sS "$U/models")"
[ "$(model_state plain)" = "loaded plain" ] || fail "plain: $(model_state plain)"
is "$SERVER" inactive || fail "server m started by GET /models"

step "refused before systemd is asked: another origin, a model not on demand, an unknown one"
code=$(post /models/load '{"model":"m"}' -H 'Origin: http://evil.example')
[ "$code" = 403 ] || fail "cross-origin load: $code $(cat "$DIR/answer.json")"
code=$(post /models/load '{"model":"m"}' -H 'Sec-Fetch-Site: cross-site')
[ "$code" = 403 ] || fail "cross-site load: $code $(cat "$DIR/answer.json")"
code=$(post /models/load '{"model":"plain"}')
[ "$code" = 400 ] && grep -q '"model_not_on_demand"' "$DIR/answer.json" \
    || fail "load of plain: $code $(cat "$DIR/answer.json")"
code=$(post /models/load '{"model":"nope"}')
[ "$code" = 404 ] || fail "load of nope: $code $(cat "$DIR/answer.json")"
sleep 0.5
is "$SERVER" inactive || fail "a refused load started server m"

step "POST /models/load: answers once the server is up (it takes 1 s to load)"
t=$(now)
code=$(post /models/load '{"model":"m"}')
took=$(ms "$t" "$(now)")
[ "$code" = 200 ] || fail "load: $code $(cat "$DIR/answer.json")"
python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); assert a["success"] is True and a["status"]["value"] == "loaded" and a["backend"] == "m", a' \
    "$DIR/answer.json" || fail "load answer: $(cat "$DIR/answer.json")"
echo "load answered after $took ms"
[ "$took" -ge 900 ] || fail "load answered after $took ms, before the server could be up"
is "$SERVER" active || fail "server m is $(state "$SERVER") after load"
poll_state m loaded 10

step "openai-proxy models shows m loaded"
"$BIN" --config "$CFG" models --url "$U" > "$DIR/models.txt" || fail "models: $(cat "$DIR/models.txt")"
cat "$DIR/models.txt"
grep -Eq '^MODEL +BACKEND +STATE +REQUESTS +TOKENS' "$DIR/models.txt" || fail "no heading"
grep -Eq '^m +m +loaded ' "$DIR/models.txt" || fail "models: m is not loaded"
grep -Eq '^plain +plain +loaded ' "$DIR/models.txt" || fail "models: plain is not loaded"

step "unload waits for the stream running on m, then stops its server"
stream 2 slow & SPID=$!
sleep 0.4
t=$(now)
code=$(post /models/unload '{"model":"m"}')
answered=$(now)
wait $SPID
ended=$(cat "$DIR/slow.end")
[ "$code" = 200 ] || fail "unload: $code $(cat "$DIR/answer.json")"
grep -q '^data: \[DONE\]' "$DIR/slow.txt" || fail "the stream was cut: $(cat "$DIR/slow.txt")"
echo "the stream ended $(ms "$t" "$ended") ms after the unload was asked for, which answered $(ms "$ended" "$answered") ms after the stream ended"
[ "$(ms "$t" "$ended")" -ge 300 ] || fail "the stream ended $(ms "$t" "$ended") ms after the unload: it was not running"
[ "$answered" -gt "$ended" ] || fail "unload answered $(ms "$answered" "$ended") ms before the stream ended"
is "$SERVER" inactive || fail "server m is $(state "$SERVER") after unload"
is openai-proxy-backend@m.socket active || fail "socket m stopped listening"
poll_state m unloaded 5

step "openai-proxy models load, then unload --force stops the server at once, cutting the stream"
"$BIN" --config "$CFG" models --url "$U" load m | tee "$DIR/load.txt"
grep -q '^m: loaded (backend m)$' "$DIR/load.txt" || fail "models load: $(cat "$DIR/load.txt")"
is "$SERVER" active || fail "server m is $(state "$SERVER") after models load"
stream 5 long & SPID=$!
sleep 0.5
t=$(now)
"$BIN" --config "$CFG" models --url "$U" unload m --force | tee "$DIR/unload.txt"
answered=$(now)
grep -q '^m: unloaded (backend m)$' "$DIR/unload.txt" || fail "models unload: $(cat "$DIR/unload.txt")"
echo "unload --force answered after $(ms "$t" "$answered") ms"
[ "$(ms "$t" "$answered")" -lt 3000 ] || fail "unload --force took $(ms "$t" "$answered") ms"
is "$SERVER" inactive || fail "server m is $(state "$SERVER") after unload --force"
wait $SPID
# The stream had 4.5 s to go: it was cut when the server stopped, not waited for.
echo "the stream ended $(ms "$t" "$(cat "$DIR/long.end")") ms after unload --force was asked for"
[ "$(ms "$t" "$(cat "$DIR/long.end")")" -lt 3000 ] || fail "the stream ran on after unload --force"
if grep -q '^data: \[DONE\]' "$DIR/long.txt"; then fail "the stream was not cut by unload --force"; fi

step "openai-proxy models counts the requests for m (GET /usage) and shows it unloaded"
"$BIN" --config "$CFG" models --url "$U" > "$DIR/models.txt" || fail "models: $(cat "$DIR/models.txt")"
cat "$DIR/models.txt"
requests=$(awk '$1 == "m" { print $4 }' "$DIR/models.txt")
[ "$(awk '$1 == "m" { print $3 }' "$DIR/models.txt")" = unloaded ] || fail "models: m is not unloaded"
[ "$requests" -ge 1 ] 2>/dev/null || fail "models: m has '$requests' requests, not the streams'"

step "the CLI's refusals exit 1 with the proxy's message"
if "$BIN" --config "$CFG" models --url "$U" load plain 2> "$DIR/refused.txt"; then fail "models load plain succeeded"; fi
grep -q "model_not_on_demand" "$DIR/refused.txt" || fail "models load plain: $(cat "$DIR/refused.txt")"
echo "ALL OK"
