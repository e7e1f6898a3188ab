#!/usr/bin/env bash
# Starts and stops the storage emulators the end-to-end tests read from, as scripts/tools.sh
# installs them: Azurite (Azure Blob, npm package `azurite`, in .tools/node/) and moto's server
# (S3, PyPI package `moto`, in .venv/).
#
#   scripts/emulator.sh azurite|s3 start
#       starts the emulator on 127.0.0.1 on a free port, in memory, and once it answers prints
#       shell assignments to eval:
#         export AZURITE_BLOB_STORAGE_URL=http://127.0.0.1:PORT   (azurite; object_store reads it)
#         export S3_EMULATOR_URL=http://127.0.0.1:PORT            (s3)
#         export AZURITE_STATE_DIR=... / S3_EMULATOR_STATE_DIR=...   (pid and log)
#   scripts/emulator.sh azurite|s3 stop [STATE_DIR]
#       stops the emulator started with that state directory (default: the *_STATE_DIR
#       variable) and removes the directory; silent, and a no-op when it is gone.
#
# Typical use:  env=$(scripts/emulator.sh azurite start) && eval "$env"; ...;
#               scripts/emulator.sh azurite stop
set -euo pipefail
cd "$(dirname "$0")/.."

startup_timeout_secs=60

case "${1:-}" in
  azurite)
    name=Azurite
    bin="$PWD/.tools/node/node_modules/.bin/azurite-blob"
    url_var=AZURITE_BLOB_STORAGE_URL
    state_var=AZURITE_STATE_DIR
    # Runs in the foreground of its own process: "$@" is the port.
    run() {
      exec "$bin" --blobHost 127.0.0.1 --blobPort "$1" --inMemoryPersistence \
        --skipApiVersionCheck --loose --silent --disableTelemetry
    }
    ;;
  s3)
    name="moto (S3)"
    bin="$PWD/.venv/bin/moto_server"
    url_var=S3_EMULATOR_URL
    state_var=S3_EMULATOR_STATE_DIR
    run() {
      exec "$bin" -H 127.0.0.1 -p "$1"
    }
    ;;
  *)
    echo "usage: $0 azurite|s3 start | stop [STATE_DIR]" >&2
    exit 2
    ;;
esac

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Whether anything answers HTTP at $1 (any status counts: the emulators refuse anonymous calls).
answers() {
  python3 - "$1" <<'EOF'
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1] + "/", timeout=2)
except urllib.error.HTTPError:
    pass
except Exception:
    sys.exit(1)
EOF
}

stop() {
  local dir="${1:-${!state_var:-}}"
  if [ -z "$dir" ]; then
    echo "emulator.sh: no state directory given and $state_var unset: nothing stopped" >&2
    return 0
  fi
  [ -d "$dir" ] || return 0
  if [ -f "$dir/pid" ]; then
    local pid
    pid=$(cat "$dir/pid")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -rf "$dir"
}

start() {
  if [ ! -x "$bin" ]; then
    echo "emulator.sh: $bin not found: run scripts/tools.sh first" >&2
    exit 1
  fi
  local dir port url pid attempt
  dir=$(mktemp -d "${TMPDIR:-/tmp}/emulator.XXXXXX")
  # The port is free when picked but could be taken before Azurite binds it: then retry.
  for attempt in 1 2 3; do
    port=$(free_port)
    url="http://127.0.0.1:$port"
    # Run in $dir, in case it writes anything; stdin/stdout/stderr detached so that
    # `$(scripts/emulator.sh NAME start)` returns.
    (cd "$dir" && run "$port") </dev/null >"$dir/log" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/pid"
    for _ in $(seq $((startup_timeout_secs * 5))); do
      if answers "$url"; then
        printf 'export %s=%q\n' "$url_var" "$url" "$state_var" "$dir"
        return 0
      fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "emulator.sh: $name did not answer at $url within ${startup_timeout_secs}s; log:" >&2
      tail -n 30 "$dir/log" >&2
      stop "$dir"
      exit 1
    fi
    if grep -qiE "EADDRINUSE|address already in use" "$dir/log" && [ "$attempt" -lt 3 ]; then
      continue
    fi
    echo "emulator.sh: $name exited before answering at $url; log:" >&2
    tail -n 30 "$dir/log" >&2
    stop "$dir"
    exit 1
  done
}

case "${2:-}" in
  start) start ;;
  stop) stop "${3:-}" ;;
  *)
    echo "usage: $0 azurite|s3 start | stop [STATE_DIR]" >&2
    exit 2
    ;;
esac
