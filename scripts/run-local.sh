#!/usr/bin/env bash
# Runs Seminote locally: a control plane (gRPC :50051, route gateway :8081) and an edge registered with
# it, with the practice page on http://127.0.0.1:8080/ (open the URL printed below: the page gets its
# ticket through the control plane's POST /v1/route).
#
# Without a control plane the edge mints its own session tickets: a local Ed25519 ticket key is
# generated into the state dir (once) unless SEMINOTE_EDGE_SERVER__TICKET_PRIVATE_KEY names one, and
# the page gets tickets from the edge's loopback-only POST /v1/dev/ticket (on here, off by default).
# Any SEMINOTE_EDGE_* variable set by the caller wins. Ctrl-C stops it cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3

STATE_DIR=${SEMINOTE_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/seminote}
mkdir -p "$STATE_DIR"
chmod 700 "$STATE_DIR"

if [ -z "${SEMINOTE_EDGE_SERVER__TICKET_PRIVATE_KEY:-}" ]; then
  KEY="$STATE_DIR/edge-ticket-key.pem"
  if [ ! -s "$KEY" ]; then
    echo "run-local: generating a local ticket key in $KEY"
    (umask 077 && "$PY" -c 'import sys; from edge_node.tickets import generate_keypair, private_key_pem; sys.stdout.write(private_key_pem(generate_keypair()[0]))' > "$KEY.tmp")
    mv "$KEY.tmp" "$KEY"
  fi
  export SEMINOTE_EDGE_SERVER__TICKET_PRIVATE_KEY="$KEY"
fi
export SEMINOTE_EDGE_SERVER__DEV_TICKETS=${SEMINOTE_EDGE_SERVER__DEV_TICKETS:-true}
export SEMINOTE_EDGE_SERVER__HOST=${SEMINOTE_EDGE_SERVER__HOST:-127.0.0.1}
export SEMINOTE_EDGE_SERVER__PORT=${SEMINOTE_EDGE_SERVER__PORT:-8080}

# --- result sync (issue 5): a local NATS JetStream, when nats-server is installed, carries each
# session's results from the edge's outbox to the control plane's progress store. RUN_LOCAL_NATS=0
# skips it; SEMINOTE_LOCAL_NATS_PORT picks its port (default 4250, away from a system NATS on 4222).
NATS_PID=""
if [ "${RUN_LOCAL_NATS:-1}" != "0" ] && command -v nats-server >/dev/null 2>&1; then
  NATS_PORT=${SEMINOTE_LOCAL_NATS_PORT:-4250}
  mkdir -p "$STATE_DIR/nats"
  nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$STATE_DIR/nats" > "$STATE_DIR/nats.log" 2>&1 &
  NATS_PID=$!
  export SEMINOTE_EDGE_SYNC__ENABLED=${SEMINOTE_EDGE_SYNC__ENABLED:-true}
  export SEMINOTE_EDGE_SYNC__NATS_URLS=${SEMINOTE_EDGE_SYNC__NATS_URLS:-"[\"nats://127.0.0.1:$NATS_PORT\"]"}
  export SEMINOTE_EDGE_SYNC__OUTBOX_PATH=${SEMINOTE_EDGE_SYNC__OUTBOX_PATH:-$STATE_DIR/edge-outbox.db}
  export SEMINOTE_CONTROL_SYNC__ENABLED=${SEMINOTE_CONTROL_SYNC__ENABLED:-true}
  export SEMINOTE_CONTROL_SYNC__NATS_URLS=${SEMINOTE_CONTROL_SYNC__NATS_URLS:-nats://127.0.0.1:$NATS_PORT}
  echo "run-local: NATS JetStream on 127.0.0.1:$NATS_PORT for result sync (log: $STATE_DIR/nats.log)"
  trap 'kill "$NATS_PID" 2>/dev/null; wait "$NATS_PID" 2>/dev/null' EXIT
fi
# --- end result sync

# --- control plane (issue 4): a local control plane the edge registers with; the page routes through it.
# Shared secrets are generated once into $STATE_DIR/control.env (0600); SEMINOTE_CONTROL_* set by the
# caller win. RUN_LOCAL_CONTROL=0 runs the standalone edge alone.
if [ "${RUN_LOCAL_CONTROL:-1}" != "0" ]; then
  CONTROL_ENV="$STATE_DIR/control.env"
  if [ ! -s "$CONTROL_ENV" ]; then
    (umask 077 && "$PY" - > "$CONTROL_ENV.tmp" <<'PYEOF'
import secrets
for name in ("ENROLLMENT_TOKENS", "ADMIN_TOKENS", "CLIENT_API_KEYS"):
    print(f"SEMINOTE_CONTROL_AUTH__{name}={secrets.token_urlsafe(24)}")
PYEOF
    )
    mv "$CONTROL_ENV.tmp" "$CONTROL_ENV"
  fi
  set -a; . "$CONTROL_ENV"; set +a
  export SEMINOTE_CONTROL_STATE_DIR=${SEMINOTE_CONTROL_STATE_DIR:-$STATE_DIR/control}
  export SEMINOTE_CONTROL_GRPC__PORT=${SEMINOTE_CONTROL_GRPC__PORT:-50051}
  export SEMINOTE_CONTROL_GATEWAY__PORT=${SEMINOTE_CONTROL_GATEWAY__PORT:-8081}
  "$PY" -m control_plane serve &
  CONTROL_PID=$!
  trap 'kill "$CONTROL_PID" $NATS_PID 2>/dev/null; wait "$CONTROL_PID" $NATS_PID 2>/dev/null' EXIT
  export SEMINOTE_EDGE_CONTROL__ADDR=${SEMINOTE_EDGE_CONTROL__ADDR:-127.0.0.1:$SEMINOTE_CONTROL_GRPC__PORT}
  export SEMINOTE_EDGE_CONTROL__ENROLLMENT_TOKEN=${SEMINOTE_EDGE_CONTROL__ENROLLMENT_TOKEN:-${SEMINOTE_CONTROL_AUTH__ENROLLMENT_TOKENS%%,*}}
  ROUTE="http://127.0.0.1:$SEMINOTE_CONTROL_GATEWAY__PORT/v1/route"
  echo "run-local: control plane on 127.0.0.1:$SEMINOTE_CONTROL_GRPC__PORT (gRPC), $ROUTE (route gateway)"
  echo "run-local: practice page: http://$SEMINOTE_EDGE_SERVER__HOST:$SEMINOTE_EDGE_SERVER__PORT/?route=$ROUTE&key=${SEMINOTE_CONTROL_AUTH__CLIENT_API_KEYS%%,*}"
  echo "run-local: operator CLI: SEMINOTE_TOKEN=${SEMINOTE_CONTROL_AUTH__ADMIN_TOKENS%%,*} seminotectl edges list"
  unset SEMINOTE_CONTROL_AUTH__ENROLLMENT_TOKENS SEMINOTE_CONTROL_AUTH__ADMIN_TOKENS SEMINOTE_CONTROL_AUTH__CLIENT_API_KEYS
  "$PY" -m edge_node serve &
  EDGE_PID=$!
  trap 'kill "$EDGE_PID" "$CONTROL_PID" $NATS_PID 2>/dev/null; wait "$EDGE_PID" "$CONTROL_PID" $NATS_PID 2>/dev/null' EXIT INT TERM
  wait "$EDGE_PID"
  exit $?
fi
# --- end control plane

echo "run-local: edge on http://$SEMINOTE_EDGE_SERVER__HOST:$SEMINOTE_EDGE_SERVER__PORT/ (practice page), Ctrl-C to stop"
if [ -n "$NATS_PID" ]; then
  "$PY" -m edge_node serve &
  EDGE_PID=$!
  trap 'kill "$EDGE_PID" $NATS_PID 2>/dev/null; wait "$EDGE_PID" $NATS_PID 2>/dev/null' EXIT INT TERM
  wait "$EDGE_PID"
  exit $?
fi
exec "$PY" -m edge_node serve
