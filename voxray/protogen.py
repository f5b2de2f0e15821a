"""Generate the Python gRPC stubs in voxray/v1 from protos/ (`python -m voxray.protogen`).

`--check` regenerates into a temporary folder and fails when the committed
stubs differ, so a stale stub is caught by the tests.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

from voxray import REPO_ROOT

PROTO_ROOT = REPO_ROOT / "protos"
OUT_PACKAGE = REPO_ROOT / "voxray" / "v1"


def generate(out_root: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    from grpc_tools import protoc  # dev dependency; only needed to regenerate

    files = [str(p.relative_to(proto_root)) for p in sorted(proto_root.glob("voxray/v1/*.proto"))]
    args = ["protoc", f"-I{proto_root}", f"--python_out={out_root}", f"--pyi_out={out_root}",
            f"--grpc_python_out={out_root}", *files]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")
    out = out_root / "voxray" / "v1"
    (out / "__init__.py").write_text('"""Generated from protos/voxray/v1 by voxray.protogen."""\n')
    return sorted(out.iterdir())


def stale_stubs(proto_root: Path = PROTO_ROOT, package: Path = OUT_PACKAGE) -> list[str]:
    """Names of stub files in `package` that differ from what the protos generate."""
    with tempfile.TemporaryDirectory() as tmp:
        generated = Path(tmp) / "voxray" / "v1"
        names = {p.name for p in generate(Path(tmp), proto_root) if p.is_file()}
        committed = {p.name for p in package.glob("*") if p.is_file()}
        return sorted(
            (names ^ committed)
            | {n for n in names & committed
               if not filecmp.cmp(generated / n, package / n, shallow=False)}
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true", help="fail if voxray/v1 is stale")
    ns = ap.parse_args(argv)
    if ns.check:
        stale = stale_stubs()
        if stale:
            print(f"stale stubs in {OUT_PACKAGE}: {', '.join(stale)}; run "
                  "`python -m voxray.protogen`", file=sys.stderr)
            return 1
        print("stubs up to date")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generated = generate(Path(tmp))
        names = {p.name for p in generated if p.is_file()}
        OUT_PACKAGE.mkdir(parents=True, exist_ok=True)
        for p in OUT_PACKAGE.glob("*"):
            if p.is_file() and p.name not in names:
                p.unlink()
        for p in generated:
            if p.is_file():
                (OUT_PACKAGE / p.name).write_bytes(p.read_bytes())
    print(f"wrote {len(names)} files to {OUT_PACKAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
