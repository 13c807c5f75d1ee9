# ferricorn %postun: systemd forgets the removed unit files.
systemctl daemon-reload >/dev/null 2>&1 || :
