# shellcheck shell=bash
# Sourced by the scripts that run inside systemd-user-sandbox with the package installed
# (package-user.sh, upgrade-user.sh): a step's title, a failure with the units' status, and a
# unit's property.
step() { echo "== $(date +%T.%N) $*"; }
fail() {
    echo "FAIL: $*"
    systemctl --user status openai-proxy.socket openai-proxy.service --no-pager -l || true
    exit 1
}
prop() { systemctl --user show -p "$1" --value "$2"; }
