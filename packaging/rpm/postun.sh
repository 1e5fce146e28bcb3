# openai-proxy %postun: what %systemd_postun_with_restart and %systemd_user_postun_with_restart
# do. Reload the units; on an upgrade restart a running service with the new binary, and only a
# running one (try-restart), in the system manager and in each user's manager. The socket is
# not restarted: it keeps the connections that arrive meanwhile.
if command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart openai-proxy.service >/dev/null 2>&1 || :
        for uid in $(systemctl --no-legend list-units 'user@*.service' 2>/dev/null |
            sed -n 's/.*user@\([0-9][0-9]*\)\.service.*/\1/p'); do
            systemctl --user --machine "$uid@" try-restart openai-proxy.service >/dev/null 2>&1 || :
        done
    fi
fi
