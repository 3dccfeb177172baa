#!/bin/sh
# forgestack: reboot for an installed update, in the stack's reboot window (forgestack-reboot-window.timer), only when
# an update asks for it and only after a backup that succeeded. Unattended upgrades install security updates daily
# and never reboot on their own (52forgestack-unattended-upgrades).
set -eu
REBOOT_REQUIRED="${REBOOT_REQUIRED:-/run/reboot-required}"
BACKUP_UNIT="${BACKUP_UNIT:?the backup unit: forgestack-reboot-window.service sets it}"

if [ ! -e "$REBOOT_REQUIRED" ]; then
  echo "forgestack-reboot: no update asks for a reboot"
  exit 0
fi
echo "forgestack-reboot: a reboot is required by: $(tr '\n' ' ' < "$REBOOT_REQUIRED.pkgs" 2>/dev/null || echo unknown packages)"
echo "forgestack-reboot: backing up first ($BACKUP_UNIT)"
if ! systemctl start "$BACKUP_UNIT"; then
  echo "forgestack-reboot: the backup failed: not rebooting (the next window tries again)" >&2
  exit 1
fi
echo "forgestack-reboot: backup done, rebooting"
systemctl reboot
