#!/usr/bin/env bash
# Reproduces models/transcriber.onnx end to end (not CI): render data, train 30 min, fine-tune 13 min at a
# lower learning rate from the last weights, tune thresholds, export. Needs torch==2.13.0 (CPU) and onnx,
# and the training soundfonts (musescore-general-soundfont-small csound-soundfont fluidr3mono-gm-soundfont).
set -euo pipefail
cd "$(dirname "$0")/../.."
CKPT="${HOME}/.cache/seminote/transcriber.pt"
STAGE1="${HOME}/.cache/seminote/transcriber-stage1.pt"
nice -n 10 python3 -m models.training.train --max-minutes 30 --out "${TMPDIR:-/tmp}/transcriber-stage1.onnx"
cp "$CKPT" "$STAGE1"
nice -n 10 python3 -m models.training.train --init "$STAGE1" --lr 1e-3 --max-minutes 13
