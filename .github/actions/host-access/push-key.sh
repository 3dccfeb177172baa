#!/usr/bin/env bash
# Keeps an ephemeral SSH public key valid on the stack's host for as long as the deploy runs: EC2 Instance
# Connect accepts a pushed key for 60 seconds, and Pulumi opens new ssh connections (through Session Manager)
# throughout an update, including on the first deploy, when the instance appears only midway.
# Usage: push-key.sh STACK PUBLIC_KEY_FILE [--once]   (AWS credentials and region from the environment)
set -euo pipefail

usage="usage: $0 STACK PUBLIC_KEY_FILE [--once]  (pushes the key to the running forge host of STACK, tagged stack=STACK and forgestack:role=forge-host, every ${PUSH_EVERY_SECONDS:-40} s)"
if [ "$#" -lt 2 ] || [ "$1" = "--help" ] || [ "$1" = "-h" ]; then
  echo "$usage" >&2
  exit 2
fi
stack="$1"
key_file="$2"
once="${3:-}"
every="${PUSH_EVERY_SECONDS:-40}"
os_user="${HOST_OS_USER:-ubuntu}"
if [ ! -r "$key_file" ]; then
  echo "push-key: cannot read the public key ${key_file}" >&2
  exit 2
fi

while true; do
  instance_id="$(aws ec2 describe-instances \
    --filters "Name=tag:stack,Values=${stack}" "Name=tag:forgestack:role,Values=forge-host" "Name=instance-state-name,Values=running" \
    --query 'Reservations[].Instances[].InstanceId' --output text || true)"
  case "$instance_id" in
    ""|None) echo "push-key: no running instance of stack ${stack} yet" ;;
    *[[:space:]]*) echo "push-key: more than one running instance of stack ${stack} (${instance_id}); pushing to none" >&2 ;;
    *)
      if aws ec2-instance-connect send-ssh-public-key --instance-id "$instance_id" --instance-os-user "$os_user" \
           --ssh-public-key "file://${key_file}" >/dev/null; then
        echo "push-key: key valid on ${instance_id} for 60 s"
      else
        echo "push-key: pushing the key to ${instance_id} failed; retrying" >&2
      fi ;;
  esac
  if [ "$once" = "--once" ]; then
    exit 0
  fi
  sleep "$every"
done
