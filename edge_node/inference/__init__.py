"""Detailed-mode transcription: numba features, the ONNX model runner, the cross-session batcher,
note decoding and the per-session transcriber that the streaming pipeline feeds."""
