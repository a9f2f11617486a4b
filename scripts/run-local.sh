#!/usr/bin/env bash
# Runs Seminote locally: a standalone edge with the practice page on http://127.0.0.1:8080/.
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

echo "run-local: edge on http://$SEMINOTE_EDGE_SERVER__HOST:$SEMINOTE_EDGE_SERVER__PORT/ (practice page), Ctrl-C to stop"
exec "$PY" -m edge_node serve
