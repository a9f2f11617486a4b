"""Seminote Edge models: the shipped ONNX transcription model and the code that trains it."""
