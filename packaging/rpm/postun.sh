# openai-proxy %postun: what %systemd_postun_with_restart does. Reload the units; on an
# upgrade restart a running service with the new binary (the socket keeps the connections that
# arrive meanwhile).
if command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart openai-proxy.service >/dev/null 2>&1 || :
    fi
fi
