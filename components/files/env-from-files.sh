#!/bin/sh
# For images that read secrets only from environment variables (Drone): for every NAME_FILE=path in
# the environment, export NAME with the file's content, then run the image's own program. The
# secret reaches the process environment, never the container's configuration (docker inspect).
set -eu

for pair in $(env | grep -E '^[A-Z0-9_]+_FILE=' | cut -d= -f1); do
  name="${pair%_FILE}"
  path="$(printenv "$pair")"
  if [ ! -r "$path" ]; then
    echo "env-from-files: $pair points at $path, which is not readable" >&2
    exit 1
  fi
  value="$(cat "$path")"
  export "$name=$value"
  unset "$pair"
done
exec "$@"
