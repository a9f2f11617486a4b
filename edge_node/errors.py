"""Errors raised by the edge node.

    SeminoteEdgeError
    ├── AudioInputError        the audio could not be read or decoded (file or live frames)
    ├── ConfigError            a setting is invalid (raised at start-up with the setting's name)
    └── PipelineError          the analysis pipeline was misused (e.g. fed after finish())
"""

from __future__ import annotations


class SeminoteEdgeError(Exception):
    """Root of every error the edge node raises on purpose."""


class AudioInputError(SeminoteEdgeError):
    """Audio could not be opened or decoded.

    ``source`` names what was being read (a path or a session id); ``reason`` is one line for people.
    """

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class ConfigError(SeminoteEdgeError):
    """A setting has a value the edge cannot run with."""

    def __init__(self, setting: str, reason: str) -> None:
        super().__init__(f"setting {setting}: {reason}")
        self.setting = setting
        self.reason = reason


class PipelineError(SeminoteEdgeError):
    """The streaming pipeline was used out of order."""
