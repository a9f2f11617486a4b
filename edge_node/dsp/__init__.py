"""Numba DSP kernels: pure functions over (state arrays, chunk) with no I/O.

Compiled with ``cache=True``. Numba writes its cache beside the sources when it can; under a
read-only install (a wheel in /usr, systemd ``ProtectSystem=strict``) it falls back to the directory
in ``NUMBA_CACHE_DIR``, which the deploy units point at the service's ``CacheDirectory``. When neither
is usable we point numba at the user cache directory (``~/.cache/seminote/numba``) ourselves, before
any kernel is compiled, so a read-only install still starts warm after its first run.
"""

from __future__ import annotations

import os
from pathlib import Path

import numba
import platformdirs


def _ensure_cache_dir() -> None:
    if numba.config.CACHE_DIR:  # type: ignore[attr-defined]
        return
    here = Path(__file__).parent
    if os.access(here, os.W_OK):
        return
    fallback = Path(platformdirs.user_cache_dir("seminote")) / "numba"
    try:
        fallback.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # numba will still run; it just cannot cache
    numba.config.CACHE_DIR = str(fallback)  # type: ignore[attr-defined]


_ensure_cache_dir()
