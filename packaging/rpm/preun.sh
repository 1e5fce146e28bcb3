# openai-proxy %preun: what %systemd_preun and %systemd_user_preun do. On removal (not on an
# upgrade) disable and stop the socket and the service.
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload disable --now openai-proxy.socket openai-proxy.service >/dev/null 2>&1 || :
    systemctl --global disable openai-proxy.socket openai-proxy.service >/dev/null 2>&1 || :
fi
