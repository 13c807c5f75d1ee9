# ferricorn %preun ($1 = versions left after this one): on erase, stop and
# disable the socket and the service; on upgrade, leave them serving.
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable --now ferricorn-metrics.socket ferricorn.socket ferricorn.service >/dev/null 2>&1 || :
fi
