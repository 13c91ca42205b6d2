"""``python -m servers grpc|ws|tcp [flags]`` — start one echo server (see README)."""

from __future__ import annotations

import argparse
import sys

from servers.common import EXIT_USAGE, UsageError, setup_logging


def build_parser() -> argparse.ArgumentParser:
    from servers import grpc_server, tcp, ws_server

    parser = argparse.ArgumentParser(prog="python -m servers", description=__doc__)
    sub = parser.add_subparsers(dest="kind", required=True, metavar="{grpc,ws,tcp}")
    for name, module in (("grpc", grpc_server), ("ws", ws_server), ("tcp", tcp)):
        p = sub.add_parser(name, help=module.__doc__.splitlines()[0] if module.__doc__ else name)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
