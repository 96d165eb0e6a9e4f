"""Command line: `sparsebench <command>` == `python3 -m sparsebench.workflows <command>`.

Bad input (unknown method or dataset, malformed search space, impossible values) is reported as one line
`sparsebench: error: ...` with exit code 2, before Ray or MLflow is started.
"""
from __future__ import annotations

import argparse
import faulthandler
import math
import os
import shlex
import signal
import sys
import time
from pathlib import Path

import sparsebench.methods as methods
from sparsebench.methods import ConfigError, DatasetError, UnknownMethodError, list_datasets, list_methods
from sparsebench.methods.core.budget import BUDGET_METRICS
from sparsebench.methods.data import dataset_label, looks_like_path
from sparsebench.methods.data.files import formats_help
from sparsebench.methods.families import MethodPathError, check_discovery

from . import catalog
from .checkpointing import CHECKPOINT_SECONDS
from .errors import ResourceError, SearchInterrupted, StoreError, TableError
from .protocol import ProtocolError
from .search_space import SearchSpaceError

# The commands that run trials (search, reproduce) import Ray Tune, which takes seconds, and the ones that read a
# store import MLflow (about 2 s); `sparsebench methods` and every refused command line wait for neither, so those
# modules are imported in the command functions that need them (tests/test_cli.py checks which modules load).

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # as a shell reports SIGINT


class UsageError(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage block
        raise UsageError(f"{self.prog.split()[-1] if ' ' in self.prog else self.prog}: {message}")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _positive_int(text: str) -> int:
    v = _int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} must be >= 1")
    return v


def _nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"{text} must be a finite number >= 0")
    return v


def _pos_float(text: str) -> float:
    v = _nonneg_float(text)
    if v == 0:
        raise argparse.ArgumentTypeError(f"{text} must be > 0")
    return v


def _port(text: str) -> int:
    v = _positive_int(text)
    if v > 65535:
        raise argparse.ArgumentTypeError(f"{v} must be <= 65535")
    return v


def _seed(text: str) -> int:
    v = _int(text)
    if not 0 <= v <= 2**32 - 1:  # numpy's seed range
        raise argparse.ArgumentTypeError(f"{v} must be in [0, 2**32 - 1]")
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


def _budgets(text: str) -> tuple[float, ...]:
    from .budgets import parse_budgets   # light: the methods package and the search-space reader

    try:
        return parse_budgets(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _dataset(text: str) -> str:
    if text not in list_datasets():
        raise argparse.ArgumentTypeError(f"unknown dataset {text!r}; available: {', '.join(list_datasets())}")
    return text


def _dataset_or_file(text: str) -> str:
    """A registered name, or a file / image folder (methods/data/files.py); plan() reads it and reports what is wrong."""
    if text in list_datasets() or looks_like_path(text):
        return text
    raise argparse.ArgumentTypeError(f"unknown dataset {text!r}; available: {', '.join(list_datasets())}, "
                                     f"or {formats_help()}")


def runner_options(sp) -> None:
    """The options of every command that runs trials (workflows/runner.py RunnerSettings), as one group."""
    g = sp.add_argument_group("running trials")
    g.add_argument("--max-concurrent", type=_positive_int, default=None, help="trials at once (default: as the CPUs allow)")
    g.add_argument("--cpus-per-trial", type=_pos_float, default=1.0)
    g.add_argument("--gpus-per-trial", type=_nonneg_float, default=0.0)
    g.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite:///mlflow.db here)")
    g.add_argument("--storage", default=None, help="Ray Tune storage path or URI (default: ./ray_results)")
    g.add_argument("--checkpoint-seconds", type=_nonneg_float, default=CHECKPOINT_SECONDS,
                   help="a trial saves its state at most this often, and after its last epoch (0: every epoch)")


def runner_settings(args) -> dict:
    """RunnerSettings' fields from the parsed `runner_options`."""
    return dict(max_concurrent=args.max_concurrent or 0, cpus_per_trial=args.cpus_per_trial,
                gpus_per_trial=args.gpus_per_trial, tracking_uri=args.tracking_uri or "", storage=args.storage or "",
                checkpoint_seconds=args.checkpoint_seconds)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sparsebench", description="Compare parameter-efficient ways to train neural networks.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(sp, epochs: int, samples: int):
        sp.add_argument("--dataset", type=_dataset_or_file, default="digits",
                        help=f"one of {', '.join(list_datasets())}, or {formats_help()} (docs/datasets.md)")
        sp.add_argument("--target", default="", help="label column of a CSV/TSV/Parquet --dataset (default: its last column)")
        sp.add_argument("--test-dataset", default="", help="a file of the same kind as --dataset holding the test split "
                                                           "(default: a stratified 1/3 holdout by data.split_seed)")
        sp.add_argument("--num-samples", type=_positive_int, default=samples, help="trials per method")
        sp.add_argument("--epochs", type=_positive_int, default=epochs, help="epochs per trial (ASHA's max_t)")
        sp.add_argument("--seed", type=_seed, default=0, help="seed of the Optuna sampler and of every trial")
        runner_options(sp)

    s = sub.add_parser("search", help="Optuna search per method, scheduled by Ray Tune + ASHA, logged to MLflow")
    s.add_argument("--methods", type=_methods, required=True, help=f"comma-separated, or 'all' ({', '.join(list_methods())})")
    common(s, epochs=10, samples=8)
    s.add_argument("--search-space", default=None, help="YAML file overriding the method's search_spaces/<method>.yaml")
    s.add_argument("--experiment", default=None, help="MLflow experiment (default: search/<dataset>)")
    s.add_argument("--grace-period", type=_positive_int, default=None,
                   help="ASHA: epochs every trial runs before it may be stopped (default 1; not with --objective pareto)")
    s.add_argument("--final-seeds", type=_positive_int, default=None,
                   help="then re-run each method's best configuration over this many seeds (final stage, with a table)")
    s.add_argument("--budgets", type=_budgets, default=None,
                   help="parameter budgets, e.g. 2k,8k,32k: each method is sized to each budget in closed form, and "
                        "every (method, budget) cell gets --num-samples trials (docs/search.md)")
    s.add_argument("--budget-metric", choices=BUDGET_METRICS, default="params_trainable",
                   help="what a budget counts, measured at the end of training (default: params_trainable)")
    s.add_argument("--objective", choices=("val_acc", "pareto"), default="val_acc",
                   help="val_acc: maximise it, ASHA stops poor trials; pareto: one multi-objective Optuna study per "
                        "method (and budget), val_acc up and --budget-metric down, no early stopping (docs/search.md)")
    s.add_argument("--optuna-storage", default=None, metavar="URL|none",
                   help="database of the Optuna studies, for optuna-dashboard (default: optuna.db beside a SQLite "
                        "MLflow store, else in --storage; none: in memory)")

    sub.add_parser("methods", help="the registered methods: what each is, its paper, its file and search space")

    t = sub.add_parser("table", help="best trial per method from MLflow, as a table")
    t.add_argument("--experiment", default=None, help="MLflow experiment (default: all)")
    t.add_argument("--format", choices=("markdown", "csv", "latex", "html"), default="markdown")
    t.add_argument("--tracking-uri", default=None)
    t.add_argument("--by", choices=("trial", "budget"), default="trial",
                   help="trial: each study's best trial; budget: the method x budget table of the newest budget "
                        "comparison of each experiment (docs/search.md)")

    d = sub.add_parser("demo", help="every registered method on digits at two parameter budgets (2k, 8k): a small "
                                    "search of each, its best configuration over 3 seeds, the method x budget table")
    # The question users come with is which method wins at their budget (issue 16), so the demo compares at two
    # budgets every method reaches on digits (tests/test_budgets.py), with final seeds for the significance test;
    # two, so that the accuracy-vs-budget figure has lines, and small ones, so that it stays under 5 minutes.
    common(d, epochs=12, samples=4)
    d.set_defaults(budgets=(2000.0, 8000.0), final_seeds=3)

    r = sub.add_parser("reproduce", help="run a paper's protocol over seeds; its table and plots, published vs measured")
    r.add_argument("paper", nargs="?", help="a protocol under workflows/papers/ (see --list)")
    r.add_argument("--list", action="store_true", help="list the papers and their experiments")
    r.add_argument("--experiment", action="append", default=[], help="run only this experiment (repeatable)")
    r.add_argument("--dataset", action="append", default=[], type=_dataset,
                   help="run only this of each experiment's datasets (repeatable; default: all)")
    r.add_argument("--seeds", type=_positive_int, default=None, help="seeds per cell (default: the protocol's)")
    r.add_argument("--quick", action="store_true",
                   help="at most 1000 samples, 2 epochs, 2 seeds per cell: a smoke run (its tables say so)")
    runner_options(r)
    r.add_argument("--output", default=None, help="folder for the tables and plots (default: reproductions/<paper>)")

    u = sub.add_parser("ui", help="MLflow UI on 127.0.0.1 against the same store")
    u.add_argument("--tracking-uri", default=None)
    u.add_argument("--port", type=_port, default=5000)
    u.add_argument("--workers", type=_positive_int, default=1, help="server processes (one is plenty for one user)")
    v = sub.add_parser("server", help="MLflow tracking server (SQL store + artifacts) for studies on a cluster")
    v.add_argument("--backend-store-uri", default=None,
                   help="SQL store: sqlite:///<file> (default: mlflow.db here) or postgresql://... for a cluster")
    v.add_argument("--artifacts-destination", default=None, help="where served artifacts are stored (default: ./mlartifacts)")
    v.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    v.add_argument("--port", type=_port, default=5000)
    v.add_argument("--workers", type=_positive_int, default=4, help="server processes (concurrent trials log at once)")
    v.add_argument("--allowed-hosts", default=None,
                   help="Host headers the server accepts when reached by name (MLflow's DNS-rebinding protection)")
    return p


def _settings(args, method_names):
    from .search import SearchSettings

    if getattr(args, "search_space", None) and len(method_names) > 1:
        raise UsageError("--search-space: give one method with it (it replaces that method's space)")
    if (args.target or args.test_dataset) and args.dataset in list_datasets():
        raise UsageError(f"--{'target' if args.target else 'test-dataset'} is for a --dataset given as a file; "
                         f"{args.dataset!r} is a built-in set")
    objective = getattr(args, "objective", "val_acc")
    if objective == "pareto" and getattr(args, "grace_period", None) is not None:
        raise UsageError("--grace-period is ASHA's, and --objective pareto runs no ASHA (a multi-objective study "
                         "cannot stop trials early): drop one of them")
    return SearchSettings(methods=tuple(method_names), dataset=args.dataset, target=args.target,
                          test_dataset=args.test_dataset, num_samples=args.num_samples, epochs=args.epochs,
                          seed=args.seed, search_space=getattr(args, "search_space", None) or "",
                          experiment=getattr(args, "experiment", None) or "", grace_period=getattr(args, "grace_period", None) or 1,
                          objective=objective,
                          budgets=getattr(args, "budgets", None) or (),
                          budget_metric=getattr(args, "budget_metric", None) or "params_trainable",
                          optuna_storage=getattr(args, "optuna_storage", None) or "",
                          **runner_settings(args))


def cmd_search(args, method_names) -> int:
    from .reproduce import ReproduceSettings, final_stage
    from .search import data_path, plan, search
    from .tables import best_table, render, runs_frame
    from .tracking import client, ui_route

    s = _settings(args, method_names)
    studies = plan(s)  # everything is validated before Ray starts
    start = time.perf_counter()
    results = search(s, studies)
    uri = s.uri
    # The table of the studies just run (the experiment may hold earlier searches with other settings).
    ran = [r["parent_run_id"] for r in results if r["parent_run_id"]]
    table = best_table(runs_frame(uri, results[0]["experiment"], parent_run_ids=ran)) if ran else None
    print()
    if table is not None:
        print(render(table, "markdown"))
    for r in results:
        if r.get("unreachable"):
            print(f"{r['method']} at budget {r['budget']:g}: unreachable ({r['unreachable']})")
    print(f"\n{sum(r['trials'] for r in results)} trials in {time.perf_counter() - start:.1f} s; "
          f"MLflow experiment {results[0]['experiment']!r} at {uri}")
    exp = client(uri).get_experiment_by_name(results[0]["experiment"])
    if exp is not None:   # none when every study was unreachable
        print(f"In the MLflow UI (sparsebench ui): http://127.0.0.1:5000/{ui_route(exp.experiment_id)}")
    code = 1 if any(r["errors"] for r in results) else 0
    final = None
    if getattr(args, "final_seeds", None):
        rs = ReproduceSettings(paper=f"search-{dataset_label(s.dataset)}", seeds=args.final_seeds, **runner_settings(args))
        if not any(r.get("best_config") for r in results):
            print("sparsebench: no finished trial to take a best configuration from: no final stage", file=sys.stderr)
            return 1
        final = final_stage(results, data_path(s.dataset), args.final_seeds, rs)
        print(f"\n### {final['title']}\n")
        print(f"MLflow: the final runs and their models at http://127.0.0.1:5000/"
              f"{ui_route(client(uri).get_experiment_by_name(final['mlflow_experiment']).experiment_id)}\n")
        print(final["files"]["table.md"].read_text().split("\n\n", 2)[-1])
        code = code or (0 if final["complete"] else 1)
    comparison = results[0].get("comparison_run_id")
    if comparison:   # a budget or pareto search: its comparison run's table and figures, of the final seeds where run
        from .comparison import finish

        shown = finish(uri, comparison, results, data_path(s.dataset), s.budget_metric, final)
        how = ("test accuracy mean ± std (n) over the final seeds; winner: Welch's t-test against the runner-up, "
               "p < 0.05; else tie" if final else "each cell's best trial: one run, never a winner; --final-seeds N "
               "gives mean ± std and a significance test")
        if s.budgets:
            print(f"\n### Method x budget ({how})\n")
            print(shown["markdown"])
        pngs = [str(f) for n, f in shown["files"].items() if n.endswith(".png")]
        print(f"\nMLflow comparison run {comparison}; figures: {', '.join(pngs)}")
    return code


def cmd_demo(args) -> int:
    args.search_space, args.experiment = None, f"demo/{dataset_label(args.dataset)}"
    code = cmd_search(args, list_methods())
    uri = args.tracking_uri
    ui = "sparsebench ui" + (f" --tracking-uri {uri}" if uri else "")
    print(f"\nOpen the MLflow UI on these runs: {ui}   (then browse the address above)")
    return code


def cmd_table(args) -> int:
    from .tables import best_table, render, runs_frame
    from .tracking import check_store, default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri()
    check_store(uri, must_exist=True)
    if args.by == "budget":
        from .comparison import stored_table

        print(render(stored_table(uri, args.experiment), args.format))
        return 0
    print(render(best_table(runs_frame(uri, args.experiment)), args.format))
    return 0


def cmd_reproduce(args) -> int:
    from .reproduce import ReproduceSettings, list_protocols, paper_folder, plan, reproduce

    if args.list:
        print(list_protocols())
        return 0
    if not args.paper:
        raise UsageError("reproduce: name a paper (sparsebench reproduce --list shows them)")
    s = ReproduceSettings(paper=args.paper, experiments=tuple(args.experiment), datasets=tuple(args.dataset),
                          seeds=args.seeds or 0, quick=args.quick, output=args.output or "",
                          command=getattr(args, "command_line", ""), **runner_settings(args))
    p = plan(s)  # protocol, configs, data and stores checked before Ray starts
    results = reproduce(s, p)
    for r in results:
        print(f"\n### {r['title']}\n")
        print(r["files"]["table.md"].read_text().split("\n\n", 2)[-1])
        print(f"{r['finished']} of {r['planned']} runs finished ({r['ran']} run now, {r['seconds']:.1f} s); "
              f"files: {', '.join(str(f) for f in r['files'].values())}")
    table = paper_folder(p, s) / ("table-quick.md" if s.quick else "table.md")
    print(f"\nresults table of {p.paper.id} (every experiment, published vs measured, verdicts): {table}")
    return 0 if all(r["complete"] for r in results) else 1


def cmd_ui(args) -> int:
    from .tracking import check_store, default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri()
    check_store(uri, must_exist=True)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(args.port),
           "--workers", str(args.workers)]
    print(f"MLflow UI for {uri} at http://127.0.0.1:{args.port}", flush=True)
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover - execv does not return


def cmd_server(args) -> int:
    from .server import check_backend, default_backend, is_loopback, mask, server_command

    from .sqlite_seed import seed

    backend = args.backend_store_uri or default_backend()
    check_backend(backend)
    seed(backend)  # the server's workers would otherwise each start migrating a new SQLite store
    artifacts = args.artifacts_destination or str(Path.cwd() / "mlartifacts")
    if not is_loopback(args.host):
        print(f"sparsebench: warning: the MLflow server binds to {args.host}, reachable beyond this machine and without "
              f"authentication; use a VPN or an authenticating proxy (or mlflow's --app-name basic-auth)",
              file=sys.stderr, flush=True)
    cmd = server_command(backend, artifacts, args.host, args.port, args.workers, args.allowed_hosts)
    print(f"MLflow tracking server for {mask(backend)}, artifacts in {artifacts}, at http://{args.host}:{args.port} "
          f"(trials log with --tracking-uri http://{args.host}:{args.port})", flush=True)
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover - execv does not return


def main(argv: list[str] | None = None) -> int:
    if hasattr(signal, "SIGUSR2"):  # `kill -USR2 <pid>`: every thread's stack on stderr, the process runs on
        # (not SIGUSR1: Ray Tune takes that one to end a run, ray/tune/tune.py)
        try:
            faulthandler.register(signal.SIGUSR2, file=sys.__stderr__, all_threads=True)
        except (AttributeError, ValueError, OSError):  # no real stderr (embedded, redirected): no dump, nothing else
            pass
    try:
        check_discovery()  # a broken $SPARSEBENCH_METHOD_PATH file: one line, before anything else
        args = build_parser().parse_args(argv)
        if args.command == "search":
            return cmd_search(args, args.methods)
        if args.command == "demo":
            return cmd_demo(args)
        if args.command == "table":
            return cmd_table(args)
        if args.command == "methods":
            print(catalog.markdown())
            return 0
        if args.command == "reproduce":
            # The exact command, written at the top of the results table it produces (shell-quoted, re-runnable).
            args.command_line = shlex.join(["sparsebench", *(sys.argv[1:] if argv is None else argv)])
            return cmd_reproduce(args)
        if args.command == "server":
            return cmd_server(args)
        return cmd_ui(args)
    except (UsageError, ConfigError, DatasetError, UnknownMethodError, SearchSpaceError, TableError, StoreError,
            ResourceError, ProtocolError, MethodPathError) as e:
        print(f"sparsebench: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SearchInterrupted as e:
        print(f"sparsebench: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
