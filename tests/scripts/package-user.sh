#!/bin/bash
# Runs inside systemd-user-sandbox with the .deb installed on the machine: the sandbox is given
# an empty unit directory, so the user manager finds the package's own units in
# /usr/lib/systemd/user, as it would for any user after `apt install`. Port 2020 may be taken
# on a shared test machine, so a drop-in (the way `systemctl --user edit` would) moves the
# socket to PORT. Set by the test: PORT, BACKEND (the backend /etc/openai-proxy/config.toml
# routes /v1 to), DIR (a directory for outputs).
set -euo pipefail
: "${PORT:?}" "${BACKEND:?}" "${DIR:?}"
U="http://127.0.0.1:$PORT"

# shellcheck source=tests/scripts/user-units.sh
. "$(dirname "$0")/user-units.sh"

step "the user manager loads the installed units"
for unit in openai-proxy.socket openai-proxy.service; do
    [ "$(prop FragmentPath "$unit")" = "/usr/lib/systemd/user/$unit" ] ||
        fail "$unit is loaded from '$(prop FragmentPath "$unit")', not /usr/lib/systemd/user"
done
[ "$(prop UnitFileState openai-proxy.socket)" = disabled ] ||
    fail "the package enabled the user socket for every user: $(prop UnitFileState openai-proxy.socket)"

step "a drop-in moves the socket from 127.0.0.1:2020 to 127.0.0.1:$PORT"
[ "$(prop Listen openai-proxy.socket)" = "127.0.0.1:2020 (Stream)" ] ||
    fail "the installed socket listens on $(prop Listen openai-proxy.socket)"
mkdir -p "$XDG_CONFIG_HOME/systemd/user/openai-proxy.socket.d"
printf '[Socket]\nListenStream=\nListenStream=127.0.0.1:%s\n' "$PORT" \
    > "$XDG_CONFIG_HOME/systemd/user/openai-proxy.socket.d/port.conf"
systemctl --user daemon-reload
[ "$(prop Listen openai-proxy.socket)" = "127.0.0.1:$PORT (Stream)" ] ||
    fail "the drop-in did not apply: $(prop Listen openai-proxy.socket)"

step "systemctl --user enable --now openai-proxy.socket"
systemctl --user enable --now openai-proxy.socket
[ "$(systemctl --user is-enabled openai-proxy.socket)" = enabled ] || fail "not enabled"
[ "$(systemctl --user is-active openai-proxy.socket)" = active ] || fail "socket not active"
[ "$(prop ActiveState openai-proxy.service)" = inactive ] ||
    fail "the service started before any connection: $(prop ActiveState openai-proxy.service)"

step "/health: the first connection starts the installed service"
curl -fsS "$U/health" | grep -q '"ok"' || fail "/health"
[ "$(prop ActiveState openai-proxy.service)" = active ] || fail "service not active"
prop ExecStart openai-proxy.service | grep -q 'path=/usr/bin/openai-proxy ' ||
    fail "the service does not run /usr/bin/openai-proxy: $(prop ExecStart openai-proxy.service)"
prop StatusText openai-proxy.service | grep -q "^Serving .* on 127.0.0.1:$PORT" ||
    fail "STATUS: $(prop StatusText openai-proxy.service)"

step "a routed request goes where /etc/openai-proxy/config.toml says"
curl -fsS -D "$DIR/headers" -o "$DIR/body" -H 'Content-Type: application/json' \
    -d '{"model":"m","messages":[]}' "$U/v1/chat/completions" || fail "POST /v1/chat/completions"
tr -d '\r' < "$DIR/headers" | grep -qix "x-backend: $BACKEND" ||
    fail "not answered by backend $BACKEND: $(cat "$DIR/headers")"
grep -q "\"backend\":\"$BACKEND\"" "$DIR/body" || fail "body: $(cat "$DIR/body")"

step "openai-proxy status --user"
/usr/bin/openai-proxy status --user > "$DIR/status" || fail "status --user exited $?: $(cat "$DIR/status")"
grep -q "openai-proxy.service: active (running)" "$DIR/status" || fail "status: $(cat "$DIR/status")"
grep -q "127.0.0.1:$PORT /health → 200" "$DIR/status" || fail "status: $(cat "$DIR/status")"

step "disable --now: nothing listens any more"
systemctl --user disable --now openai-proxy.socket
systemctl --user stop openai-proxy.service
if curl -fsS -m 5 "$U/health" >/dev/null 2>&1; then fail "still answering after disable --now"; fi
echo "ALL OK"
