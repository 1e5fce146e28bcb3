# Shell helpers of the scripts that run in tests/tools/systemd-user-sandbox (sourced by
# on-demand.sh and models.sh): steps with their times, failing with the units' status, unit
# states, bounded waits, clock readings in nanoseconds.
step() { echo "== $(date +%T.%N) $*"; }
fail() {
    echo "FAIL: $*"
    systemctl --user status 'openai-proxy*' --no-pager -l || true
    exit 1
}
state() { systemctl --user show -p ActiveState --value "$1"; }
is() { [ "$(state "$1")" = "$2" ]; }
# wait_until DESCRIPTION SECONDS COMMAND...: retries every 0.1 s.
wait_until() {
    local what=$1 limit=$2; shift 2
    local end=$(($(date +%s%N) + limit * 1000000000))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s%N)" -lt "$end" ] || fail "not within $limit s: $what"
        sleep 0.1
    done
}
now() { date +%s%N; }
# ms START END: the milliseconds between two readings of now.
ms() { echo $((($2 - $1) / 1000000)); }
