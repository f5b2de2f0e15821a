"""Lower layers never import higher ones: voxray (the base) < deployments, gateway <
loadtest; a stage's engine and service run without Ray."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from voxray import REPO_ROOT

ABOVE = {"voxray": ("deployments", "gateway", "loadtest"), "deployments": ("gateway", "loadtest"),
         "gateway": ("deployments", "loadtest")}
ENTRY_POINTS = {"voxray/cli.py"}  # the command line starts everything, so it may import it


def imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append((node.lineno, node.module))
    return out


@pytest.mark.parametrize("package", sorted(ABOVE))
def test_no_package_imports_a_higher_one(package: str) -> None:
    bad = []
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        rel = path.relative_to(REPO_ROOT).as_posix()
        if rel in ENTRY_POINTS or rel.startswith("voxray/v1/"):
            continue
        bad += [f"{rel}:{line} imports {name}" for line, name in imports(path)
                if name.split(".")[0] in ABOVE[package]]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("stage", ["asr", "llm", "tts", "moshi"])
def test_stage_services_import_without_ray(stage: str) -> None:
    """Only deployment.py (and the Serve glue it imports) needs Ray."""
    code = (f"import sys; sys.modules['ray'] = None; import deployments.{stage}.service, "
            f"deployments.{stage}.engine, deployments.{stage}.config")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False, cwd=REPO_ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
