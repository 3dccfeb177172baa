#!/usr/bin/env bash
# Mounts the forgestack data volume at a fixed path, by filesystem UUID.
# Formats the volume only when blkid finds no signature on it at all: an existing filesystem
# (or anything blkid cannot classify) is never touched.
# Usage: forgestack-mount-data VOLUME_ID MOUNT_POINT
set -euo pipefail

if [ "$#" -ne 2 ] || [ "$1" = "--help" ]; then
  echo "usage: $0 VOLUME_ID MOUNT_POINT  (mounts the EBS data volume, formatting it only if blank)" >&2
  exit 2
fi
volume_id="$1"
mount_point="$2"

# Nitro instances expose EBS as NVMe, named by the volume id without its dash; Xen ones as xvdf.
nvme_link="/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${volume_id//-/}"
xen_device="/dev/xvdf"
device=""
for attempt in $(seq 1 120); do
  if [ -e "$nvme_link" ]; then device="$nvme_link"; break; fi
  if [ -e "$xen_device" ]; then device="$xen_device"; break; fi
  echo "waiting for data volume ${volume_id} to be attached (attempt ${attempt}/120)"
  sleep 5
done
if [ -z "$device" ]; then
  echo "data volume ${volume_id} is not attached after 10 minutes; not mounting" >&2
  exit 1
fi
device="$(readlink -f "$device")"

set +e
blkid -p "$device" >/dev/null 2>&1
probe_status=$?
set -e
case "$probe_status" in
  0) echo "${device} already holds a filesystem: keeping it" ;;
  2) echo "${device} is blank: creating an ext4 filesystem"
     mkfs.ext4 -q -L forgestack-data "$device" ;;
  *) echo "cannot tell whether ${device} holds data (blkid exit ${probe_status}); refusing to format" >&2
     exit 1 ;;
esac

uuid="$(blkid -s UUID -o value "$device")"
mkdir -p "$mount_point"
# nodev, nosuid: the data volume holds repositories and databases, never device files or set-uid programs.
# (Not noexec: Gitea runs the repositories' git hooks from it.)
fstab_line="UUID=${uuid} ${mount_point} ext4 defaults,nofail,nodev,nosuid,x-systemd.device-timeout=60s 0 2"
if ! grep -q "^UUID=${uuid} " /etc/fstab; then
  echo "$fstab_line" >> /etc/fstab
elif ! grep -qx "$fstab_line" /etc/fstab; then
  # An older line for this volume (before nodev,nosuid): replace it in place.
  sed -i "s|^UUID=${uuid} .*|${fstab_line}|" /etc/fstab
fi
if mountpoint -q "$mount_point"; then
  mount -o remount "$mount_point"  # apply the current options to a volume mounted by an older line
else
  mount "$mount_point"
fi
echo "data volume ${volume_id} mounted at ${mount_point}"
