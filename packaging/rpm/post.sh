# ferricorn %post ($1 = number of versions installed after this one).
# Install: create the user, enable the socket as the preset says and, if it
# is enabled, start it, as the .deb does: the README's install ends with
# the socket listening and the service starting on the first request.
# (Fedora's %systemd_post only presets; a preset that disables the socket
# leaves it disabled and stopped.) Upgrade: reload the running service into
# the new binary; never restart the socket.
systemd-sysusers ferricorn.conf || :
systemctl daemon-reload >/dev/null 2>&1 || :
if [ "$1" -eq 1 ]; then
    for socket in ferricorn.socket ferricorn-metrics.socket; do
        systemctl --no-reload preset "$socket" >/dev/null 2>&1 || :
        if systemctl --quiet is-enabled "$socket"; then
            systemctl start "$socket" >/dev/null 2>&1 || :
        fi
    done
elif systemctl --quiet is-active ferricorn.service; then
    systemctl reload ferricorn.service ||
        echo "ferricorn: reload after upgrade failed; the previous code keeps serving (journalctl -u ferricorn)" >&2
fi
