"""Command line: `sparsebench <command>` == `python -m workflows <command>`.

Bad input (unknown method or dataset, malformed search space, impossible values) is reported as one line
`sparsebench: error: ...` with exit code 2, before Ray or MLflow is started.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import methods
from methods import ConfigError, DatasetError, UnknownMethodError, list_datasets, list_methods

from .search_space import SearchSpaceError

EXIT_USAGE = 2


class UsageError(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage block
        raise UsageError(f"{self.prog.split()[-1] if ' ' in self.prog else self.prog}: {message}")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} must be >= 1")
    return v


def _nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{v} must be >= 0")
    return v


def _methods(text: str) -> tuple[str, ...]:
    names = list_methods() if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
    for m in names:
        try:
            methods.get_method(m)
        except UnknownMethodError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    if not names:
        raise argparse.ArgumentTypeError("no method given")
    return tuple(dict.fromkeys(names))


def _dataset(text: str) -> str:
    if text not in list_datasets():
        raise argparse.ArgumentTypeError(f"unknown dataset {text!r}; available: {', '.join(list_datasets())}")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sparsebench", description="Compare parameter-efficient ways to train neural networks.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(sp, epochs: int, samples: int):
        sp.add_argument("--dataset", type=_dataset, default="digits", help=f"one of {', '.join(list_datasets())}")
        sp.add_argument("--num-samples", type=_positive_int, default=samples, help="trials per method")
        sp.add_argument("--epochs", type=_positive_int, default=epochs, help="epochs per trial (ASHA's max_t)")
        sp.add_argument("--max-concurrent", type=_positive_int, default=None, help="trials at once (default: as the CPUs allow)")
        sp.add_argument("--cpus-per-trial", type=_nonneg_float, default=1.0)
        sp.add_argument("--gpus-per-trial", type=_nonneg_float, default=0.0)
        sp.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite:///mlflow.db here)")
        sp.add_argument("--storage", default=None, help="Ray Tune storage path or URI (default: ./ray_results)")
        sp.add_argument("--seed", type=int, default=0, help="seed of the Optuna sampler and of every trial")

    s = sub.add_parser("search", help="Optuna search per method, scheduled by Ray Tune + ASHA, logged to MLflow")
    s.add_argument("--methods", type=_methods, required=True, help=f"comma-separated, or 'all' ({', '.join(list_methods())})")
    common(s, epochs=10, samples=8)
    s.add_argument("--search-space", default=None, help="YAML file overriding the method's search_spaces/<method>.yaml")
    s.add_argument("--experiment", default=None, help="MLflow experiment (default: search/<dataset>)")

    t = sub.add_parser("table", help="best trial per method from MLflow, as a table")
    t.add_argument("--experiment", default=None, help="MLflow experiment (default: all)")
    t.add_argument("--format", choices=("markdown", "csv", "latex", "html"), default="markdown")
    t.add_argument("--tracking-uri", default=None)

    d = sub.add_parser("demo", help="small search over every registered method on digits, then the table")
    common(d, epochs=15, samples=6)

    u = sub.add_parser("ui", help="MLflow UI on 127.0.0.1 against the same store")
    u.add_argument("--tracking-uri", default=None)
    u.add_argument("--port", type=_positive_int, default=5000)
    return p


def _settings(args, method_names) -> "SearchSettings":
    from .search import SearchSettings

    if args.seed < 0:
        raise UsageError(f"--seed {args.seed}: must be >= 0")
    if getattr(args, "search_space", None) and len(method_names) > 1:
        raise UsageError("--search-space: give one method with it (it replaces that method's space)")
    return SearchSettings(methods=tuple(method_names), dataset=args.dataset, num_samples=args.num_samples, epochs=args.epochs,
                          max_concurrent=args.max_concurrent or 0, cpus_per_trial=args.cpus_per_trial,
                          gpus_per_trial=args.gpus_per_trial, tracking_uri=args.tracking_uri or "", storage=args.storage or "",
                          seed=args.seed, search_space=getattr(args, "search_space", None) or "",
                          experiment=getattr(args, "experiment", None) or "")


def cmd_search(args, method_names) -> int:
    from .search import plan, search
    from .tables import best_table, render, runs_frame
    from .tracking import default_tracking_uri

    s = _settings(args, method_names)
    plan(s)  # validates everything before Ray starts; search() plans again cheaply (data cached by the OS)
    start = time.perf_counter()
    results = search(s)
    uri = s.tracking_uri or default_tracking_uri()
    table = best_table(runs_frame(uri, results[0]["experiment"]))
    print()
    print(render(table, "markdown"))
    print(f"\n{sum(r['trials'] for r in results)} trials in {time.perf_counter() - start:.1f} s; "
          f"MLflow experiment {results[0]['experiment']!r} at {uri}")
    return 1 if any(r["errors"] for r in results) else 0


def cmd_demo(args) -> int:
    args.search_space, args.experiment = None, "demo/digits" if args.dataset == "digits" else f"demo/{args.dataset}"
    code = cmd_search(args, list_methods())
    uri = args.tracking_uri
    ui = "sparsebench ui" + (f" --tracking-uri {uri}" if uri else "")
    print(f"\nOpen the MLflow UI on these runs: {ui}   (then browse http://127.0.0.1:5000)")
    return code


def cmd_table(args) -> int:
    from .tables import best_table, render, runs_frame
    from .tracking import default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise UsageError(f"--tracking-uri {uri}: no MLflow database there; run 'sparsebench search' or 'sparsebench demo' first")
    print(render(best_table(runs_frame(uri, args.experiment)), args.format))
    return 0


def cmd_ui(args) -> int:
    from .tracking import default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri()
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(args.port)]
    print(f"MLflow UI for {uri} at http://127.0.0.1:{args.port}", flush=True)
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover - execv does not return


def main(argv: list[str] | None = None) -> int:
    from .tables import TableError

    try:
        args = build_parser().parse_args(argv)
        if args.command == "search":
            return cmd_search(args, args.methods)
        if args.command == "demo":
            return cmd_demo(args)
        if args.command == "table":
            return cmd_table(args)
        return cmd_ui(args)
    except (UsageError, ConfigError, DatasetError, UnknownMethodError, SearchSpaceError, TableError) as e:
        print(f"sparsebench: error: {e}", file=sys.stderr)
        return EXIT_USAGE
