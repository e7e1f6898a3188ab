#!/usr/bin/env bash
# Starts and stops the Azure Blob Storage emulator Azurite that scripts/tools.sh installs into
# .tools/node/, for the end-to-end tests.
#
#   scripts/azurite.sh start   starts azurite-blob on 127.0.0.1 on a free port, in memory, and
#                              once it answers prints shell assignments to eval:
#                                export AZURITE_BLOB_STORAGE_URL=http://127.0.0.1:PORT
#                                export AZURITE_STATE_DIR=/tmp/azurite.XXXXXX  (pid, log)
#   scripts/azurite.sh stop [STATE_DIR]
#                              stops the emulator started with that state directory (default
#                              $AZURITE_STATE_DIR) and removes the directory; silent, and a
#                              no-op when the directory is gone (already stopped).
#
# Typical use:  env=$(scripts/azurite.sh start) && eval "$env"; ...; scripts/azurite.sh stop
set -euo pipefail
cd "$(dirname "$0")/.."

bin="$PWD/.tools/node/node_modules/.bin/azurite-blob"
startup_timeout_secs=60

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Whether anything answers HTTP at $1 (any status counts: the emulator refuses anonymous calls).
answers() {
  python3 - "$1" <<'EOF'
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1] + "/devstoreaccount1?comp=list", timeout=2)
except urllib.error.HTTPError:
    pass
except Exception:
    sys.exit(1)
EOF
}

stop() {
  local dir="${1:-${AZURITE_STATE_DIR:-}}"
  if [ -z "$dir" ]; then
    echo "azurite.sh stop: no state directory given and AZURITE_STATE_DIR unset: nothing stopped" >&2
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
    echo "azurite.sh: $bin not found: run scripts/tools.sh first" >&2
    exit 1
  fi
  local dir port url pid attempt
  dir=$(mktemp -d "${TMPDIR:-/tmp}/azurite.XXXXXX")
  # The port is free when picked but could be taken before Azurite binds it: then retry.
  for attempt in 1 2 3; do
    port=$(free_port)
    url="http://127.0.0.1:$port"
    # Run in $dir, in case it writes anything; stdin/stdout/stderr detached so that
    # `$(scripts/azurite.sh start)` returns.
    (cd "$dir" && exec "$bin" --blobHost 127.0.0.1 --blobPort "$port" --inMemoryPersistence \
      --skipApiVersionCheck --loose --silent --disableTelemetry) </dev/null >"$dir/log" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/pid"
    for _ in $(seq $((startup_timeout_secs * 5))); do
      if answers "$url"; then
        printf 'export AZURITE_BLOB_STORAGE_URL=%q\n' "$url"
        printf 'export AZURITE_STATE_DIR=%q\n' "$dir"
        return 0
      fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "azurite.sh: Azurite did not answer at $url within ${startup_timeout_secs}s; log:" >&2
      tail -n 30 "$dir/log" >&2
      stop "$dir"
      exit 1
    fi
    if grep -q EADDRINUSE "$dir/log" && [ "$attempt" -lt 3 ]; then
      continue
    fi
    echo "azurite.sh: Azurite exited before answering at $url; log:" >&2
    tail -n 30 "$dir/log" >&2
    stop "$dir"
    exit 1
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  *)
    echo "usage: $0 start | stop [STATE_DIR]" >&2
    exit 2
    ;;
esac
