"""``python -m analysis report|compare|sweep|s000 ...``

    python -m analysis report <results-dir>
    python -m analysis compare <dir-a> <dir-b>
    python -m analysis sweep <sweep-dir>
    python -m analysis s000 <results-dir>

report  — writes report.md, report.html (self-contained) and the PNG plots into the results
          directory and prints the summary table.
compare — prints both runs side by side (throughput and p50/p99/p99.9, A, B and B/A) with the
          changes beyond --threshold (a percentage) flagged over all figures (rps, error rate,
          mean, p50 … max), and writes the combined percentile plot (--plot, default
          <dir-b>/compare.png). --fail-on-regression makes a regression exit 1.
sweep   — the table, notes and plot of a finished ``python -m echoswarm sweep`` (sweep.csv,
          sweep.md, sweep.png in the sweep directory); prints the table.
s000    — the S000 comparison of an audio_stream run: one line per transport (what
          ``python -m echoswarm demo`` prints).

Exit codes: 0 ok, 1 a regression with --fail-on-regression, 2 usage error or unreadable results
(including a summary.csv that is not the one the run wrote: cut short or altered; see
echoswarm.results). What cannot be checked — a results directory from before run.json recorded
the summary's row count and checksum — is read, with one warning line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import NoReturn

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2 (argparse prints usage too)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _threshold(text: str) -> float:
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage") from None
    if not 0 <= value < 1000:
        raise argparse.ArgumentTypeError(f"{text} is outside 0..1000 %")
    return value / 100.0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m analysis",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    rep = sub.add_parser("report", help="write report.md/report.html, print the summary")
    rep.add_argument("results_dir", type=Path)
    cmp_ = sub.add_parser("compare", help="compare two runs side by side")
    cmp_.add_argument("dir_a", type=Path)
    cmp_.add_argument("dir_b", type=Path)
    cmp_.add_argument(
        "--threshold",
        type=_threshold,
        default=0.10,
        help="flag changes beyond this many percent (default 10)",
    )
    cmp_.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="where to write the combined plot (default <dir-b>/compare.png)",
    )
    cmp_.add_argument(
        "--fail-on-regression", action="store_true", help="exit 1 when a regression is flagged"
    )
    swp = sub.add_parser("sweep", help="tables and plot of a finished sweep")
    swp.add_argument("sweep_dir", type=Path)
    s0 = sub.add_parser("s000", help="the S000 transport comparison of a run")
    s0.add_argument("results_dir", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from analysis import ResultsError, ResultsWarning

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResultsWarning)
            code = COMMANDS[args.command](args)
    except ResultsError as exc:
        print(f"python -m analysis {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. piped into head: not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (keeps interpreter exit quiet)
        return 0
    except OSError as exc:
        print(f"python -m analysis {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for w in caught:  # what could not be checked: one line each, after the output
        print(f"python -m analysis {args.command}: warning: {w.message}", file=sys.stderr)
    return code


def _report(args: argparse.Namespace) -> int:
    from analysis import load
    from analysis.report import write_report
    from analysis.summaries import format_table

    run = load(args.results_dir)
    rep = write_report(run)
    status = "" if run.complete else f"  [status: {run.status_text}]"
    print(f"{run.name}{status}")
    print(format_table(rep.summary))
    print(f"\nreport: {rep.html}  ({rep.markdown.name}, {len(rep.pngs)} plots)")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from analysis import load
    from analysis.compare import compare, figure, regressions, side_by_side
    from analysis.plots import png_bytes
    from analysis.summaries import format_table

    a, b = load(args.dir_a), load(args.dir_b)
    table = compare(a, b, args.threshold)
    print(f"A = {a.path}\nB = {b.path}   (ratio = B / A; threshold {args.threshold:.0%})")
    for label, run in (("A", a), ("B", b)):
        if not run.complete:  # a partial or crashed run is not a like-for-like comparison
            print(f"note: {label} is {run.status_text}")
    print(format_table(side_by_side(table)))
    bad = regressions(table)
    if not bad.empty:
        print(
            f"\n{len(bad)} regression(s): "
            + "; ".join(
                f"{r.request_type} {r.name} {r.metric} x{r.ratio:.2f}" for r in bad.itertuples()
            )
        )
    plot = args.plot or (b.path / "compare.png")
    plot.write_bytes(png_bytes(figure(a, b, f"A {a.name}", f"B {b.name}")))
    print(f"plot: {plot}")
    return 1 if args.fail_on_regression and not bad.empty else 0


def _sweep(args: argparse.Namespace) -> int:
    from analysis.sweeps import render_sweep

    text, files = render_sweep(args.sweep_dir)
    print(text)
    if files:
        print("\nwrote " + ", ".join(str(f) for f in files))
    return 0


def _s000(args: argparse.Namespace) -> int:
    from analysis.s000 import render

    print(render(args.results_dir))
    return 0


COMMANDS = {"report": _report, "compare": _compare, "sweep": _sweep, "s000": _s000}


if __name__ == "__main__":
    sys.exit(main())
