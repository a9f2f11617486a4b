"""Training pipeline of the detailed-mode transcription model (PyTorch; not a runtime dependency)."""
