"""``seminote-control serve`` refuses to start on bad configuration with one clear line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from control_plane.settings import ControlSettings

from .conftest import ADMIN, CLIENT, ENROLL

START_TIMEOUT_S = 60


def serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SEMINOTE_CONTROL_")}
    clean.update({"SEMINOTE_CONTROL_STATE_DIR": str(tmp_path / "cp"), "SEMINOTE_CONTROL_GRPC__PORT": "0",
                  "SEMINOTE_CONTROL_GATEWAY__ENABLED": "false", **env})
    return subprocess.run([sys.executable, "-m", "control_plane", "serve"], env=clean, capture_output=True,
                          text=True, timeout=START_TIMEOUT_S)


def test_missing_secrets_short_tokens_and_half_tls_are_usage_errors(tmp_path: Path) -> None:
    done = serve(tmp_path)
    assert done.returncode == 2 and "SEMINOTE_CONTROL_AUTH__ENROLLMENT_TOKENS" in done.stderr
    tokens = {"SEMINOTE_CONTROL_AUTH__ENROLLMENT_TOKENS": ENROLL, "SEMINOTE_CONTROL_AUTH__ADMIN_TOKENS": "short",
              "SEMINOTE_CONTROL_AUTH__CLIENT_API_KEYS": CLIENT}
    done = serve(tmp_path, **tokens)
    assert done.returncode == 2 and "at least 16 characters" in done.stderr
    tokens["SEMINOTE_CONTROL_AUTH__ADMIN_TOKENS"] = ADMIN
    done = serve(tmp_path, **tokens, SEMINOTE_CONTROL_GRPC__TLS_CERT_PATH=str(tmp_path / "missing.crt"))
    assert done.returncode == 2 and "tls_key_path" in done.stderr
    done = serve(tmp_path, **tokens, SEMINOTE_CONTROL_GRPC__PORT="not-a-port")
    assert done.returncode == 2 and "invalid settings" in done.stderr


def test_token_lists_are_comma_separated_in_the_environment() -> None:
    settings = ControlSettings(_env_file=None, auth={"admin_tokens": " a-token , b-token ,"})  # type: ignore[call-arg,arg-type]
    assert settings.auth.admin_tokens == ["a-token", "b-token"]
