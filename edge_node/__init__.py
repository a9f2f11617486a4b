"""Seminote edge node: live piano-practice analysis close to the student.

Subpackages: ``dsp`` (numba kernels), ``material`` (ground-truth audio rendered from generated MIDI,
for tests, benchmarks and training). Modules: ``audio`` (decode/resample with PyAV), ``events``
(the feedback event schema), ``pipeline`` (the causal streaming pipeline every session runs).
"""

__version__ = "0.1.0"
