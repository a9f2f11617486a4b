"""The committed generated code under control_plane/_proto matches what scripts/gen_protos.sh makes now."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ROOT / "control_plane" / "_proto"
# Lines that only stamp the generator's version: a newer grpcio-tools must not count as drift.
_VERSION_STAMP = re.compile(
    r"^(# Protobuf Python Version:.*|GRPC_GENERATED_VERSION = .*|\s*\d+,\s*$|\s*'[0-9.]*',?\s*$)"
)


def _normalised(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not _VERSION_STAMP.match(line)]


def _tree(root: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(root)): p
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_code_matches_proto_sources(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    subprocess.run(["bash", str(ROOT / "scripts" / "gen_protos.sh"), str(out)], check=True, cwd=ROOT,
                   capture_output=True, timeout=120)
    fresh, committed = _tree(out), _tree(GENERATED)
    assert sorted(fresh) == sorted(committed), "generated file set differs: run scripts/gen_protos.sh"
    stale = [name for name in fresh if _normalised(fresh[name]) != _normalised(committed[name])]
    assert not stale, f"generated code is stale for {stale}: run scripts/gen_protos.sh"


def test_every_proto_source_has_generated_modules() -> None:
    protos = sorted((ROOT / "protos").rglob("*.proto"))
    assert protos
    for proto in protos:
        rel = proto.relative_to(ROOT / "protos").with_suffix("")
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            assert (GENERATED / f"{rel}{suffix}").is_file(), f"{rel}{suffix} missing: run scripts/gen_protos.sh"
