"""The ``medqa`` command line: ``serve``, ``simulate``, ``ingest-logs``, ``tick``, ``untouched-evaluation``.

Subcommands register themselves with :func:`command`; adding one is a ``configure`` function for
its flags and a ``run`` function returning the exit code. Errors a person can fix (configuration,
store access, missing inputs) print ``error: <message>`` on one line and exit with 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from medqa_assets.console import VERBOSE_VAR, one_line, verbose
from medqa_assets.serving import CommandError
from medqa_assets.settings import ConfigurationError
from medqa_assets.storage.object_store import StoreError

USAGE_ERROR = 2
HANDLED_ERRORS = (ConfigurationError, StoreError, CommandError)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def command(
    name: str, help: str, configure: Callable[[argparse.ArgumentParser], None]
) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register ``run`` as the subcommand ``name``."""

    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = Command(name=name, help=help, configure=configure, run=run)
        return run

    return register


def _positive(kind: type) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
        return value

    return parse


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


# -- serve ----------------------------------------------------------------------------------------
def _configure_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--workers", type=_positive(int), default=1, help="uvicorn worker processes (default 1)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--access-log", action="store_true", help="log every request (off by default)")


@command("serve", "run the reference inference endpoint (TF-IDF nearest training question)", _configure_serve)
def _serve(args: argparse.Namespace) -> int:
    from medqa_assets.serving.endpoint import serve

    serve(args.host, args.port, workers=args.workers, log_level=args.log_level, access_log=args.access_log)
    return 0


# -- simulate -------------------------------------------------------------------------------------
def _configure_simulate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="set_name", metavar="SET", required=True, help="production set, e.g. set1")
    parser.add_argument(
        "--endpoint",
        required=True,
        help="the app's URL: a base URL means /api/v1/answer (http://127.0.0.1:8000); a URL with a path is "
        "called as given (http://127.0.0.1:5000/ask)",
    )
    parser.add_argument("--rate", type=_positive(float), default=10.0, help="requests per second (default 10)")
    parser.add_argument("--concurrency", type=_positive(int), default=64, help="most requests in flight (default 64)")
    parser.add_argument(
        "--limit", type=_non_negative_int, default=None, help="send N questions, a seeded random sample (default all)"
    )
    parser.add_argument(
        "--order",
        choices=["sample", "file"],
        default="sample",
        help="with --limit: a seeded random sample (default) or the first N rows of the set (file)",
    )
    parser.add_argument("--arrivals", choices=["poisson", "uniform"], default="poisson", help="default poisson")
    parser.add_argument("--slice", dest="slice_tag", metavar="TAG", default=None, help="slice tag of every request")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample and the Poisson arrivals (default 0)")
    parser.add_argument("--batch-size", type=_positive(int), default=200, help="log records per object (default 200)")
    parser.add_argument("--timeout", type=_positive(float), default=10.0, help="seconds per request (default 10)")
    parser.add_argument("--retries", type=_non_negative_int, default=2, help="retries per request (default 2)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


@command("simulate", "replay a production set against an endpoint and log its answers", _configure_simulate)
def _simulate(args: argparse.Namespace) -> int:
    from medqa_assets.serving.simulator import simulate

    summary = simulate(
        args.set_name,
        args.endpoint,
        rate=args.rate,
        concurrency=args.concurrency,
        limit=args.limit,
        arrivals=args.arrivals,
        slice_tag=args.slice_tag,
        seed=args.seed,
        batch_size=args.batch_size,
        timeout=args.timeout,
        retries=args.retries,
        progress=not args.no_progress,
        order=args.order,
    )
    print(summary.format())
    return 1 if summary.sent and not summary.ok else 0


# -- ingest-logs ----------------------------------------------------------------------------------
def _configure_ingest(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="log files or directories of log files")
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="refuse a file that is still being written instead of waiting until it settles",
    )


@command("ingest-logs", "upload a serving app's log files into retraining_data_raw/", _configure_ingest)
def _ingest_logs(args: argparse.Namespace) -> int:
    from medqa_assets.serving.ingest import ingest_logs

    ingest_logs(args.paths, wait=not args.no_wait)
    return 0


@command(
    "tick",
    "evaluate raw_logs_sensor once and build the versions it requests (no daemon needed)",
    lambda parser: None,
)
def _tick(args: argparse.Namespace) -> int:
    from medqa_assets.retraining.tick import main as tick_main

    return tick_main()


# -- untouched-evaluation ---------------------------------------------------------------------------
def _configure_untouched(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", "-o", metavar="PATH", help="write the rows as JSON Lines to this local file (default: only count)"
    )


@command(
    "untouched-evaluation",
    "the evaluation rows whose question is in no published retraining version (a clean test set)",
    _configure_untouched,
)
def _untouched_evaluation(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medqa_assets.evaluation.versions import current_untouched_evaluation
    from medqa_assets.serving import MissingInputError
    from medqa_assets.storage.layout import SPLIT_KEYS
    from medqa_assets.storage.object_store import ObjectStore, frame_to_jsonl

    store = ObjectStore.from_settings()
    try:
        untouched, summary = current_untouched_evaluation(store)
    except FileNotFoundError:
        raise MissingInputError(
            f"the evaluation split is missing at {store.uri(SPLIT_KEYS['evaluation'])}; run the offline pipeline "
            "first, or check MEDQA_STORE_URL"
        ) from None
    versions = ", ".join(summary["versions"]) or "none"
    print(
        f"{summary['rows']} of {summary['evaluation_rows']} evaluation rows have a question that no published "
        f"retraining version holds (versions: {versions})"
    )
    if args.output:
        Path(args.output).write_bytes(frame_to_jsonl(untouched))
        print(f"written to {args.output}")
    return 0


# -- entry point ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medqa", description="MedQA data platform tools")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help=f"show tracebacks of errors (or set {VERBOSE_VAR}=1)"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for spec in COMMANDS.values():
        sub = subparsers.add_parser(spec.name, help=spec.help, description=spec.help)
        spec.configure(sub)
        sub.set_defaults(run=spec.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``medqa`` subcommand; returns the exit code (argparse exits by itself on bad flags)."""
    args = build_parser().parse_args(argv)
    if args.verbose:
        os.environ[VERBOSE_VAR] = "1"
    try:
        return int(args.run(args) or 0)
    except HANDLED_ERRORS as error:
        if verbose():
            raise
        print(f"error: {one_line(str(error)) or type(error).__name__}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
