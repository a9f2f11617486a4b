"""Edge node settings (pydantic-settings, environment prefix ``SEMINOTE_EDGE_``).

One :class:`EdgeSettings` is built in ``__main__`` and passed down as typed sub-models; library code
never reads the environment. An env file (``--env-file``, default none) is read for systemd.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Mode = Literal["light", "detailed"]


class AnalysisSettings(BaseModel):
    """Knobs of the streaming pipeline. Defaults are the tuned values; see README."""

    default_mode: Mode = "light"
    pitch_events_every_chunks: int = Field(1, ge=1, description="emit a pitch event every N chunks while voiced")
    dynamics_interval_s: float = Field(0.1, gt=0, description="period of dynamics events")
    tempo_interval_s: float = Field(1.0, gt=0, description="period of tempo events once a tempo is known")
    model_path: Path | None = Field(None, description="ONNX transcription model for detailed mode")


class EdgeSettings(BaseSettings):
    """All settings of one edge process."""

    model_config = SettingsConfigDict(
        env_prefix="SEMINOTE_EDGE_", env_nested_delimiter="__", extra="ignore"
    )

    edge_id: str = "edge-local"
    analysis: AnalysisSettings = AnalysisSettings()
