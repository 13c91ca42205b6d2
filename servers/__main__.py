"""``python -m servers grpc|ws|tcp|jobs [flags]`` — start one server (see README)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from servers.common import EXIT_USAGE, UsageError, fail_usage, setup_logging

# kind -> (module exposing add_arguments(parser) and run(args) -> int, one-line help).
# Only the chosen backend is imported: a ws server need not load grpc, and a backend that fails
# to import cannot break the other two.
BACKENDS = {
    "grpc": ("servers.grpc_server", "gRPC echo server: four RPC kinds, health, reflection"),
    "ws": ("servers.ws_server", "WebSocket echo server at /echo (optional numpy stats work)"),
    "tcp": ("servers.tcp", "raw TCP byte-echo server (several concurrency models)"),
    "jobs": ("servers.jobs", "S004 HTTP upload API: CPU-bound jobs inline or on rq + Redis"),
}


class OneLineParser(argparse.ArgumentParser):
    """Usage errors are one line on stderr (no usage block), exit 2; ``--help`` still works."""

    def error(self, message: str) -> NoReturn:
        fail_usage(self.prog, message)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser, with full flags for the kind named in ``argv`` (all kinds if None)."""
    parser = OneLineParser(prog="python -m servers", description=__doc__)
    sub = parser.add_subparsers(dest="kind", required=True, metavar="{grpc,ws,tcp,jobs}")
    chosen = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    for name, (module_name, help_text) in BACKENDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if chosen is None or chosen == name:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    setup_logging(args.log_level)
    try:
        return int(args.run(args))
    except UsageError as exc:
        print(f"python -m servers {args.kind}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
