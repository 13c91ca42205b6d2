"""Regenerate the committed gRPC/protobuf modules from ``protos/echo.proto``.

Run from the repository root::

    python -m protos.generate            # rewrite echo_pb2.py, echo_pb2.pyi, echo_pb2_grpc.py
    python -m protos.generate --check    # exit 1 if the committed files differ from a fresh build

The generated ``echo_pb2_grpc.py`` imports ``echo_pb2`` as a top-level module; we rewrite that
one import to ``protos.echo_pb2`` so the package imports cleanly from the repo root.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
GENERATED = ("echo_pb2.py", "echo_pb2.pyi", "echo_pb2_grpc.py")


def build(out_dir: Path) -> None:
    """Run grpcio-tools' protoc into ``out_dir`` and fix the package-relative import."""
    from grpc_tools import protoc  # imported lazily: a dev-time dependency only

    include = Path(protoc.__file__).resolve().parent / "_proto"
    rc = protoc.main(
        [
            "protoc",
            f"-I{HERE}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(HERE / "echo.proto"),
        ]
    )
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    grpc_file = out_dir / "echo_pb2_grpc.py"
    text = grpc_file.read_text()
    text = text.replace("import echo_pb2 as echo__pb2", "from protos import echo_pb2 as echo__pb2")
    grpc_file.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare, do not write")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        build(out)
        drift = [n for n in GENERATED if (out / n).read_bytes() != _read(HERE / n)]
        if args.check:
            if drift:
                print(f"generated files drift from echo.proto: {', '.join(drift)}", file=sys.stderr)
                print("run: python -m protos.generate", file=sys.stderr)
                return 1
            return 0
        for name in GENERATED:
            (HERE / name).write_bytes((out / name).read_bytes())
        print(f"regenerated {', '.join(GENERATED)}")
    return 0


def _read(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


if __name__ == "__main__":
    raise SystemExit(main())
