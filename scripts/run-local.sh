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
  trap 'kill "$CONTROL_PID" 2>/dev/null; wait "$CONTROL_PID" 2>/dev/null' EXIT
  export SEMINOTE_EDGE_CONTROL__ADDR=${SEMINOTE_EDGE_CONTROL__ADDR:-127.0.0.1:$SEMINOTE_CONTROL_GRPC__PORT}
  export SEMINOTE_EDGE_CONTROL__ENROLLMENT_TOKEN=${SEMINOTE_EDGE_CONTROL__ENROLLMENT_TOKEN:-${SEMINOTE_CONTROL_AUTH__ENROLLMENT_TOKENS%%,*}}
  ROUTE="http://127.0.0.1:$SEMINOTE_CONTROL_GATEWAY__PORT/v1/route"
  echo "run-local: control plane on 127.0.0.1:$SEMINOTE_CONTROL_GRPC__PORT (gRPC), $ROUTE (route gateway)"
  echo "run-local: practice page: http://$SEMINOTE_EDGE_SERVER__HOST:$SEMINOTE_EDGE_SERVER__PORT/?route=$ROUTE&key=${SEMINOTE_CONTROL_AUTH__CLIENT_API_KEYS%%,*}"
  echo "run-local: operator CLI: SEMINOTE_TOKEN=${SEMINOTE_CONTROL_AUTH__ADMIN_TOKENS%%,*} seminotectl edges list"
  unset SEMINOTE_CONTROL_AUTH__ENROLLMENT_TOKENS SEMINOTE_CONTROL_AUTH__ADMIN_TOKENS SEMINOTE_CONTROL_AUTH__CLIENT_API_KEYS
  "$PY" -m edge_node serve &
  EDGE_PID=$!
  trap 'kill "$EDGE_PID" "$CONTROL_PID" 2>/dev/null; wait "$EDGE_PID" "$CONTROL_PID" 2>/dev/null' EXIT INT TERM
  wait "$EDGE_PID"
  exit $?
fi
# --- end control plane

echo "run-local: edge on http://$SEMINOTE_EDGE_SERVER__HOST:$SEMINOTE_EDGE_SERVER__PORT/ (practice page), Ctrl-C to stop"
exec "$PY" -m edge_node serve
