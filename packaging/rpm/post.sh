# openai-proxy %post: what %systemd_post and %systemd_user_post do for openai-proxy.socket.
# On a first install (not an upgrade), apply the distribution's presets: the socket is enabled
# where the presets say so; otherwise `systemctl enable --now openai-proxy.socket` (or
# `openai-proxy enable`) starts it. The service itself is started by the socket.
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload preset openai-proxy.socket >/dev/null 2>&1 || :
    systemctl --no-reload preset --global openai-proxy.socket >/dev/null 2>&1 || :
fi
