#!/bin/bash
# Runs inside systemd-user-sandbox with the old version of the .deb installed: the installed
# user units serve on a socket while the package is upgraded under them. /health is asked all
# the time, and every answer must come: through the upgrade (the old process keeps serving),
# and through the restart that follows (the socket holds the connections that arrive while the
# service restarts). The restart is what postinst does on an upgrade with
# `deb-systemd-invoke try-restart` (system manager) and `--user restart` (users' managers);
# neither manager is reachable from a package script here (PID 1 is not systemd), so this
# script asks its user manager itself, as those helpers would.
# Set by the test: PORT, DIR (outputs), UPGRADE (a script that upgrades the package), OLD and
# NEW (the versions `openai-proxy --version` prints), BACKEND (the backend the edited
# /etc/openai-proxy/config.toml routes /v1 to).
set -euo pipefail
: "${PORT:?}" "${DIR:?}" "${UPGRADE:?}" "${OLD:?}" "${NEW:?}" "${BACKEND:?}"
U="http://127.0.0.1:$PORT"

# shellcheck source=tests/scripts/user-units.sh
. "$(dirname "$0")/user-units.sh"

step "the installed user socket, moved to 127.0.0.1:$PORT, started"
mkdir -p "$XDG_CONFIG_HOME/systemd/user/openai-proxy.socket.d"
printf '[Socket]\nListenStream=\nListenStream=127.0.0.1:%s\n' "$PORT" \
    > "$XDG_CONFIG_HOME/systemd/user/openai-proxy.socket.d/port.conf"
systemctl --user daemon-reload
systemctl --user start openai-proxy.socket
curl -fsS "$U/health" | grep -q '"ok"' || fail "/health before the upgrade"
old_pid=$(prop MainPID openai-proxy.service)
[ "$old_pid" != 0 ] || fail "the first connection did not start the service"
[ "$(/usr/bin/openai-proxy --version)" = "openai-proxy $OLD" ] || fail "not $OLD before the upgrade"

step "/health, asked all through the upgrade and the restart"
: > "$DIR/polls"
# The poller asks until $DIR/stop appears, and for 10 minutes at most. Its output goes to
# files, not to the test's pipe, and it is stopped however this script ends (a failed step
# included): each round takes 10 s at most (curl -m 10), so it ends soon after the stop file.
(
    deadline=$((SECONDS + 600))
    while [ ! -e "$DIR/stop" ]; do
        if [ "$SECONDS" -ge "$deadline" ]; then echo "poller: deadline reached" >> "$DIR/polls"; break; fi
        if curl -fsS -m 10 -o /dev/null "$U/health" 2>>"$DIR/poll-errors"; then
            echo ok >> "$DIR/polls"
        else
            echo "failed ($?) at $(date +%T.%N)" >> "$DIR/polls"
        fi
        sleep 0.05
    done
) </dev/null >/dev/null 2>&1 &
poller=$!
stop_poller() {
    [ -n "$poller" ] || return 0
    touch "$DIR/stop"
    wait "$poller" || true
    poller=
}
trap stop_poller EXIT
sleep 0.5

step "upgrade"
bash "$UPGRADE" > "$DIR/upgrade.log" 2>&1 || { cat "$DIR/upgrade.log"; fail "the upgrade failed"; }
[ "$(/usr/bin/openai-proxy --version)" = "openai-proxy $NEW" ] || fail "not $NEW after the upgrade"
[ "$(prop MainPID openai-proxy.service)" = "$old_pid" ] || fail "the upgrade itself restarted the service"
# The old process still runs, and its binary is the replaced one: deleted, and not the file
# now at /usr/bin/openai-proxy. (Compared by identity, -ef, and by the end of the link: the
# link reads as a path from the root of the mount namespace the service runs in, the user
# manager's own, which is / on a machine but not under a chroot.)
old_exe=$(readlink "/proc/$old_pid/exe")
{ [ "${old_exe%/usr/bin/openai-proxy (deleted)}" != "$old_exe" ] &&
    ! [ "/proc/$old_pid/exe" -ef /usr/bin/openai-proxy ]; } ||
    fail "the running binary was not replaced: $old_exe"
curl -fsS "$U/health" | grep -q '"ok"' || fail "/health after the upgrade, before the restart"

step "try-restart openai-proxy.service (the socket is not restarted)"
socket_since=$(prop ActiveEnterTimestampMonotonic openai-proxy.socket)
systemctl --user try-restart openai-proxy.service
new_pid=$(prop MainPID openai-proxy.service)
{ [ "$new_pid" != 0 ] && [ "$new_pid" != "$old_pid" ]; } || fail "not restarted: MainPID $new_pid"
[ "/proc/$new_pid/exe" -ef /usr/bin/openai-proxy ] ||
    fail "the restarted service runs $(readlink "/proc/$new_pid/exe"), not /usr/bin/openai-proxy"
[ "$(prop ActiveEnterTimestampMonotonic openai-proxy.socket)" = "$socket_since" ] ||
    fail "the socket was restarted"
curl -fsS "$U/health" | grep -q '"ok"' || fail "/health after the restart"
curl -fsS -D "$DIR/headers" -o /dev/null -H 'Content-Type: application/json' \
    -d '{"model":"m","messages":[]}' "$U/v1/chat/completions" || fail "POST /v1/chat/completions"
tr -d '\r' < "$DIR/headers" | grep -qix "x-backend: $BACKEND" ||
    fail "the kept config does not route to $BACKEND: $(cat "$DIR/headers")"
sleep 0.5

stop_poller
answered=$(grep -c '^ok$' "$DIR/polls" || true)
if grep -v '^ok$' "$DIR/polls"; then
    fail "$(grep -vc '^ok$' "$DIR/polls") of the /health requests failed: $(cat "$DIR/poll-errors")"
fi
[ "$answered" -ge 10 ] || fail "only $answered /health requests were made"
echo "$answered /health requests, all answered"
echo "ALL OK"
