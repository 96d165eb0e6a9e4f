"""`sparsebench reproduce <paper>`: run a paper protocol's cells over seeds and write its tables and plots.

Every cell (an arm at one dataset, swept value and seed) is one Ray Tune trial of the same trainable as
`search` (workflows/trainable.py), so it gets the same checkpoints, retries and MLflow logging: one child run per
cell, tagged `stage=final` and with its cell identity (`cell.*` tags), under one parent run per experiment in
the MLflow experiment `reproduce/<paper>`. The table and the plots are artifacts of that parent run.

Resumable through MLflow, not through Tune: before an experiment runs, its FINISHED runs are looked up by
cell key (experiment, arm, config hash), and only the missing cells are run. Runs a killed driver left
RUNNING are closed as KILLED and their cells run again. `--quick` shrinks every cell (data, epochs, seeds) so
that a whole protocol runs in CI; its configs hash differently and its tables say QUICK in their title.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ray import tune

from sparsebench.methods import ConfigError
from sparsebench.methods.data import dataset_label, load_dataset

from . import budgets as budgeting
from . import tracking
from .budgets import label
from .protocol import Cell, Experiment, Paper, ProtocolError, load_paper
from .repro_table import RunRecord, render_table, reproduction_table
from .results_table import experiment_rows, parse_csv, render_markdown, to_csv
from .runner import (RunnerSettings, SearchInterrupted, check_resources, check_stores, fit, init_ray, quiet,
                     under_parent)
from .trial import MlflowTrialCallback

QUICK_EPOCHS, QUICK_SEEDS, QUICK_SAMPLES = 2, 2, 1000
TAG_CELL = tracking.TAG_CELL


@dataclass(frozen=True, kw_only=True)
class ReproduceSettings(RunnerSettings):
    paper: str
    experiments: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()   # run only these of each experiment's datasets (empty: all)
    seeds: int = 0                   # 0: the protocol's
    quick: bool = False
    output: str = ""                 # default: reproductions/<paper>
    command: str = ""                # the command line, for the results table (default: this process's argv)


@dataclass(frozen=True)
class Plan:
    paper: Paper
    experiments: tuple[Experiment, ...]  # as in the protocol: the table and completeness cover all of it
    cells: dict[str, list[Cell]]         # experiment name -> every cell of the experiment
    run: dict[str, list[Cell]]           # experiment name -> the cells this command may run (--dataset)


def _shrink(cell: Cell) -> Cell:
    """--quick: at most QUICK_SAMPLES training / test samples (never more than the protocol asks) and QUICK_EPOCHS."""
    flat = dict(cell.flat)
    for key in ("data.max_train", "data.max_test"):
        flat[key] = min(int(flat.get(key) or QUICK_SAMPLES), QUICK_SAMPLES)
    flat["train.epochs"] = min(int(flat["train.epochs"]), QUICK_EPOCHS)
    return replace(cell, flat=flat)


def cells_of(exp: Experiment, paper: str, s: ReproduceSettings) -> list[Cell]:
    seeds = s.seeds or exp.seeds
    if not s.quick:
        return exp.cells(paper, seeds)
    return [_shrink(c) for c in exp.cells(paper, min(seeds, QUICK_SEEDS))]


def plan(s: ReproduceSettings) -> Plan:
    """Everything checked before Ray starts: the protocol, every cell's config, the data, the stores."""
    quiet()
    paper = load_paper(s.paper)
    exps = tuple(paper.experiment(n) for n in s.experiments) if s.experiments else paper.experiments
    if s.datasets:
        exps = tuple(e for e in exps if set(e.datasets) & set(s.datasets))
        if not exps:
            raise ProtocolError(f"paper {paper.id}: no selected experiment uses {', '.join(s.datasets)}")
    cells, run = {}, {}
    infos: dict[str, Any] = {}   # data config -> DataInfo, each set loaded once (and checked: missing, corrupt)
    for exp in exps:
        cells[exp.name] = cells_of(exp, paper.id, s)
        if exp.budgets:
            cells[exp.name] = [sized_cell(c, exp, paper, infos) for c in cells[exp.name]]
        keys: dict[str, Cell] = {}
        for c in cells[exp.name]:
            try:
                key = cell_key(c)
            except ConfigError as e:
                why = " (--quick shrinks epochs to 2; run this experiment without it)" if s.quick else ""
                raise ProtocolError(f"{paper.path}: experiment {exp.name}: arm {c.arm}: {e}{why}") from None
            if key in keys:  # two cells would be one run: the protocol (or --quick) cannot tell them apart
                o = keys[key]
                raise ProtocolError(f"{paper.path}: experiment {exp.name}: cells {o.arm}/{o.sweep_json}/seed {o.seed} "
                                    f"and {c.arm}/{c.sweep_json}/seed {c.seed} have the same config"
                                    + (" once --quick shrinks them" if s.quick else ""))
            keys[key] = c
        run[exp.name] = [c for c in cells[exp.name] if not s.datasets or c.dataset in s.datasets]
    for c in (c for cs in run.values() for c in cs):
        data_info(c, infos)   # a missing or corrupt file fails here, before anything starts
    check_stores(s)
    return Plan(paper, exps, cells, run)


def data_info(c: Cell, infos: dict[str, Any]):
    data = c.config().data
    key = json.dumps(data.canonical(), sort_keys=True)
    if key not in infos:
        infos[key] = load_dataset(data, "cpu").info
    return infos[key]


def sized_cell(c: Cell, exp: Experiment, paper: Paper, infos: dict[str, Any]) -> Cell:
    """A budget experiment's cell (protocol `budgets:`) sized to its budget by the method's closed-form hook
    (workflows/budgets.py, as `search --budgets` sizes a trial); a budget the arm cannot reach is the protocol's error."""
    info = data_info(c, infos)
    try:
        budgeting.check_floor((c.sweep,), info, exp.budget_metric)
        sized = budgeting.sized_overrides(c.flat, info, c.sweep, exp.budget_metric)
    except ConfigError as e:
        raise ProtocolError(f"{paper.path}: experiment {exp.name}: arm {c.arm} at budget {label(c.sweep)} "
                            f"{exp.budget_metric}: {e}") from None
    return replace(c, flat={**c.flat, **sized})


def experiment_name(paper: str) -> str:
    return f"reproduce/{paper}"


def study_name(paper: str, exp: str, s: ReproduceSettings, extra: Any = None) -> str:
    """The parent run's identity. Seeds and the dataset filter are not part of it: a later command with more seeds
    or other datasets continues the same parent, and only runs of the cells it plans count in its table."""
    ident = {"quick": s.quick, "extra": extra}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{paper}-{exp}-{'quick-' if s.quick else ''}{digest}"


def cell_key(c: Cell) -> str:
    return f"{c.experiment}|{c.arm}|{c.config().hash()}"


class CellDecoder:
    """Tune's grid samples an index; this maps it to the cell's flat config (picklable, for Tuner.restore)."""

    def __init__(self, cells: list[Cell]):
        self.flats = [c.flat for c in cells]
        self.tags_of = [{TAG_CELL: cell_key(c), "cell.experiment": c.experiment, "cell.arm": c.arm,
                         "cell.sweep": c.sweep_json, "cell.seed": str(c.seed),
                         "cell.setting_hash": c.config().without_seed().hash()} for c in cells]

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        return dict(self.flats[config["cell"]])

    def tags(self, config: dict[str, Any]) -> dict[str, str]:
        return self.tags_of[config["cell"]]


def _finals(c, exp_id: str, parent: str, status: str):
    return tracking.children(c, exp_id, parent, status, where="tags.stage = 'final'")


def finished_keys(c, exp_id: str, parent: str) -> set[str]:
    return {r.data.tags[TAG_CELL] for r in _finals(c, exp_id, parent, "FINISHED") if TAG_CELL in r.data.tags}


def close_runs_of(c, exp_id: str, parent: str, keys: set[str], status: str) -> int:
    """Mark this command's cells' runs still RUNNING with `status`; another driver's cells are left alone."""
    return tracking.close_open_children(c, exp_id, parent, status, only=lambda r: r.data.tags.get(TAG_CELL) in keys)[0]


def run_experiment(p: Plan, exp: Experiment, s: ReproduceSettings, echo: bool = True, study: str | None = None,
                   log_models: bool = False) -> dict[str, Any]:
    """Run the experiment's missing cells; `log_models`: each finished cell's run gets its trained network as
    its MLflow model (a search's final stage)."""
    uri = s.uri
    c = tracking.client(uri)
    experiment = experiment_name(p.paper.id)
    exp_id = tracking.get_or_create_experiment(c, experiment)
    study = study or study_name(p.paper.id, exp.name, s)
    parent = tracking.start_parent_run(
        c, exp_id, study, run_name=exp.name + (" (quick)" if s.quick else ""),
        tags={"stage": "final", "paper": p.paper.id, "cell.experiment": exp.name, "quick": str(s.quick).lower()},
        params={"paper": p.paper.id, "experiment": exp.name, "arxiv": p.paper.arxiv or "none", "quick": s.quick,
                "seeds": s.seeds or exp.seeds, "protocol": str(p.paper.path.name), "description": exp.description})
    cells = p.run[exp.name]
    mine = {cell_key(x) for x in cells}
    close_runs_of(c, exp_id, parent, mine, "KILLED")   # left RUNNING by a killed driver: rerun below
    done = finished_keys(c, exp_id, parent)
    todo = [cell for cell in cells if cell_key(cell) not in done]
    if echo:
        print(f"[{exp.name}] {len(cells)} runs, {len(cells) - len(todo)} already finished in MLflow, "
              f"{len(todo)} to run", flush=True)
    errors = 0
    if todo:
        decoder = CellDecoder(todo)
        # A Tune experiment per set of missing cells: a rerun after a crash runs what MLflow lacks then.
        name = f"{study}-{hashlib.sha256(''.join(sorted(cell_key(x) for x in todo)).encode()).hexdigest()[:8]}"
        callback = MlflowTrialCallback(uri, experiment, study, stage="final", decode=decoder,
                                       tags={"paper": p.paper.id}, max_epochs=0, echo=echo, trial_tags=decoder.tags,
                                       log_models=log_models)
        grid, killed, _ = under_parent(
            c, exp_id, parent, only=lambda r: r.data.tags.get(TAG_CELL) in mine,
            run=lambda: fit(name, s, decoder, callback, echo=echo, keep_model=log_models,
                            param_space={"cell": tune.grid_search(list(range(len(todo))))}))
        errors = grid.num_errors
        missing = len(mine - finished_keys(c, exp_id, parent))
        if killed or missing > errors:
            c.set_terminated(parent, status="KILLED")
            raise SearchInterrupted(f"reproduction of {p.paper.id}/{exp.name} interrupted with {missing} of "
                                    f"{len(mine)} runs unfinished; run the same command again to resume it")
    return {"experiment": exp, "parent_run_id": parent, "mlflow_experiment": experiment, "errors": errors,
            "ran": len(todo)}


def read_records(uri: str, paper: str, exp: Experiment, parent: str, planned: set[str]) -> list[RunRecord]:
    """The newest FINISHED run of each planned cell under `parent`. Runs of cells the plan no longer has (the
    protocol was edited, fewer seeds) stay in MLflow but never reach the table."""
    c = tracking.client(uri)
    exp_id = c.get_experiment_by_name(experiment_name(paper)).experiment_id
    runs = _finals(c, exp_id, parent, "FINISHED")
    histories = {c_.metric for c_ in exp.published if c_.statistic in ("max", "relative_gain_epochs_1_5")}
    curves = any(c_.percent is not None for c_ in exp.published) or any(
        "train.prune_curve" in {**exp.common, **arm} for arm in exp.arms.values())
    records = {}
    for r in runs:
        t = r.data.tags
        if t.get(TAG_CELL) not in planned or t[TAG_CELL] in records:   # not planned, or an older run of a cell
            continue
        rec = RunRecord(experiment=t["cell.experiment"], dataset=t["dataset"], sweep=t["cell.sweep"], arm=t["cell.arm"],
                        method=t["method"], seed=int(t["cell.seed"]), setting_hash=t["cell.setting_hash"],
                        metrics=dict(r.data.metrics), run_id=r.info.run_id, commit=_commit(t), hardware=_hardware(t),
                        wall_s=(r.info.end_time - r.info.start_time) / 1000 if r.info.end_time else None)
        for m in histories:
            rec.history[m] = [x.value for x in sorted(c.get_metric_history(r.info.run_id, m), key=lambda x: x.step)]
        if curves:
            for split in ("val_acc", "test_acc"):
                for x in c.get_metric_history(r.info.run_id, f"pruned_{split}"):
                    rec.curve.setdefault(int(x.step), {})[split] = x.value
        records[t[TAG_CELL]] = rec
    return list(records.values())


def _commit(tags: dict[str, str]) -> str:
    commit = tags.get("git.commit", "unknown")[:10]
    return commit + ("+dirty" if tags.get("git.dirty") == "true" else "")


def _hardware(tags: dict[str, str]) -> str:
    """The trial's machine in a few words (trial.* tags of workflows/trainable.py; the driver's where absent)."""
    get = lambda k: tags.get(f"trial.{k}", tags.get(f"driver.{k}", "?"))   # noqa: E731
    gpus = get("gpus")
    return (gpus if gpus not in ("none", "?") else "CPU") + f", {get('cpu_count')} cores, {get('torch_threads')} thread(s)"


def title(p: Paper, exp: Experiment, s: ReproduceSettings) -> str:
    """The table's title: the paper, the experiment, and for --quick what was shrunk."""
    head = f"{p.title}" + (f" (arXiv {p.arxiv})" if p.arxiv else "") + f": {exp.name}"
    if s.quick:
        head += (f" [QUICK: at most {QUICK_SAMPLES} training and test samples, {QUICK_EPOCHS} epochs, "
                 f"{QUICK_SEEDS} seeds; not comparable with the published values]")
    return head


def write_outputs(p: Plan, exp: Experiment, s: ReproduceSettings, result: dict[str, Any]) -> dict[str, Path]:
    """Table (Markdown, CSV, LaTeX, HTML) and plots to the output folder and to the parent run's artifacts. The
    table covers the whole experiment (cells not run yet show n = 0); the parent is FINISHED when every cell
    this command was asked to run has finished, and tagged complete=true when the whole experiment has."""
    uri = s.uri
    c = tracking.client(uri)
    parent = result["parent_run_id"]
    try:
        return _write_outputs(p, exp, s, result, uri, c, parent)
    except BaseException:
        c.set_terminated(parent, status="FAILED")   # never leave the parent RUNNING
        raise


def _write_outputs(p: Plan, exp: Experiment, s: ReproduceSettings, result: dict[str, Any], uri: str, c, parent: str
                   ) -> dict[str, Path]:
    from .plots import experiment_figures

    planned = {cell_key(x) for x in p.cells[exp.name]}
    records = read_records(uri, p.paper.id, exp, parent, planned)
    table = reproduction_table(exp, records)
    out = Path(s.output or Path("reproductions") / p.paper.id) / (exp.name + ("-quick" if s.quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    head = title(p.paper, exp, s)
    files = {}
    for fmt, ext in (("markdown", "md"), ("csv", "csv"), ("latex", "tex"), ("html", "html")):
        text = render_table(table, fmt)
        if fmt == "markdown":
            text = f"### {head}\n\nMLflow: experiment {experiment_name(p.paper.id)}, parent run {parent}\n\n{text}\n"
        elif fmt == "html":
            text = f"<h3>{head}</h3>\n{text}"
        path = out / f"table.{ext}"
        path.write_text(text)
        c.log_text(parent, text, f"table.{ext}")
        files[f"table.{ext}"] = path
    for name, fig in experiment_figures(exp, records).items():
        fig.savefig(out / name, dpi=120)
        c.log_figure(parent, fig, name)
        files[name] = out / name
    n_cells = len(planned)
    finished = {r_key for r_key in finished_keys(c, c.get_experiment_by_name(experiment_name(p.paper.id)).experiment_id,
                                                 parent)} & planned
    selected = {cell_key(x) for x in p.run[exp.name]}
    ok = selected <= finished and not result["errors"]
    tracking.set_tags(c, parent, {"runs_finished": str(len(finished)), "runs_planned": str(n_cells),
                                  "complete": str(finished == planned).lower()})
    c.set_terminated(parent, status="FINISHED" if ok else "FAILED")
    result.update(table=table, title=head, files=files, complete=ok, finished=len(finished), planned=n_cells)
    return files


def reproduce(s: ReproduceSettings, p: Plan | None = None, echo: bool = True) -> list[dict[str, Any]]:
    p = p or plan(s)
    init_ray()
    check_resources(s)   # a trial larger than every node would wait for ever
    out = []
    for exp in p.experiments:
        start = time.perf_counter()
        result = run_experiment(p, exp, s, echo)
        write_outputs(p, exp, s, result)
        result["seconds"] = time.perf_counter() - start
        out.append(result)
    write_paper_results(p, s)
    return out


def paper_folder(p: Plan, s: ReproduceSettings) -> Path:
    return Path(s.output or Path("reproductions") / p.paper.id)


def write_paper_results(p: Plan, s: ReproduceSettings) -> dict[str, Path]:
    """The paper's results table (workflows/results_table.py) over EVERY experiment of the protocol, not only the
    ones this command ran: an experiment without a parent run yet has rows with n = 0 (or its GPU estimate)."""
    c = tracking.client(s.uri)
    exp_id = tracking.get_or_create_experiment(c, experiment_name(p.paper.id))
    rows = []
    for exp in p.paper.experiments:
        cells = cells_of(exp, p.paper.id, s)
        parent = tracking.find_run(c, exp_id, {tracking.TAG_STUDY: study_name(p.paper.id, exp.name, s),
                                               tracking.TAG_KIND: "parent"})
        records = read_records(s.uri, p.paper.id, exp, parent.info.run_id, {cell_key(x) for x in cells}) if parent else []
        rows += experiment_rows(exp, records, min(s.seeds or exp.seeds, QUICK_SEEDS) if s.quick else s.seeds or exp.seeds)
    head = p.paper.title + (f" (arXiv {p.paper.arxiv})" if p.paper.arxiv else "") + ": published vs measured"
    if s.quick:
        head += f" [QUICK: {QUICK_EPOCHS} epochs, at most {QUICK_SAMPLES} samples; not comparable]"
    settings = (f"{s.max_concurrent or 'as many as fit'} trial(s) at once, {s.cpus_per_trial:g} CPU and "
                f"{s.gpus_per_trial:g} GPU per trial")
    text = to_csv(rows, {"title": head, "command": s.command or tracking.env_tags()["command"], "settings": settings})
    folder = paper_folder(p, s)
    folder.mkdir(parents=True, exist_ok=True)
    name = "table-quick" if s.quick else "table"
    (folder / f"{name}.csv").write_text(text)
    (folder / f"{name}.md").write_text(render_markdown(*parse_csv(text)))
    return {f"{name}.csv": folder / f"{name}.csv", f"{name}.md": folder / f"{name}.md"}


def final_stage(results: list[dict[str, Any]], dataset: str, seeds: int, s: ReproduceSettings,
                echo: bool = True) -> dict[str, Any]:
    """A search's final stage: each method's best configuration re-run over `seeds` seeds as final-stage runs, with
    the same kind of table as a reproduction (no published values). MLflow experiment reproduce/search-<dataset>."""
    # One arm per (method, budget) cell of a budget search (workflows/budgets.py), per method otherwise.
    arms = {(r["best_config"]["method"] if r.get("budget") is None else f"{r['best_config']['method']}_{label(r['budget'])}"):
            {k: v for k, v in r["best_config"].items() if k != "data.dataset"}
            for r in results if r.get("best_config")}
    if not arms:
        raise ProtocolError("final stage: no finished trial to take a best configuration from")
    epochs = max(int(a.get("train.epochs", 1)) for a in arms.values())
    exp = Experiment(name="best_configs", description=f"best configuration of each method's search on {dataset_label(dataset)}, "
                     f"re-run over {seeds} seeds", datasets=(dataset,), epochs=epochs, seeds=seeds, metric="test_acc",
                     sweep_key=None, sweep_values=(), common={}, arms=arms, published=())
    name = dataset_label(dataset)   # a file's name, not its place (a path in a folder name or title)
    paper = Paper(f"search-{name}", f"Best configurations found by sparsebench search on {name}", None,
                  Path("search"), (exp,))
    cells = cells_of(exp, paper.id, s)
    p = Plan(paper, (exp,), {exp.name: cells}, {exp.name: cells})
    init_ray()             # as reproduce() does: the Python API may call this first, in a fresh process
    check_resources(s)
    # Its own parent per set of configurations: a later search's best configs never share this one's table.
    # The networks a user would keep: every final run logs its trained model (runs:/<run id>/model).
    result = run_experiment(p, exp, s, echo, study=study_name(paper.id, exp.name, s, extra=arms), log_models=True)
    write_outputs(p, exp, s, result)
    # For a budget search's comparison run (workflows/comparison.py): which arm is which (method, budget) cell,
    # and the cells planned (a later command with fewer seeds shares this parent; only its own cells count).
    result["budget_arms"] = {f"{r['method']}_{label(r['budget'])}": [r["method"], r["budget"]]
                             for r in results if r.get("budget") is not None and r.get("best_config")}
    result["planned_keys"] = sorted(cell_key(x) for x in cells)
    return result


def list_protocols() -> str:
    from .protocol import list_papers

    lines = []
    for name in list_papers():
        try:
            paper = load_paper(name)
        except ProtocolError as e:   # one broken file does not hide the others
            lines.append(f"{name}: INVALID: {e}")
            continue
        lines.append(f"{name}: {paper.title}" + (f" (arXiv {paper.arxiv})" if paper.arxiv else ""))
        for e in paper.experiments:
            n_pub = sum(c.value is not None for c in e.published)
            lines.append(f"  {e.name}: {', '.join(e.datasets)}; {len(e.arms)} arm(s) x "
                         f"{len(e.sweep_values) or 1} setting(s) x {e.seeds} seeds, {e.epochs} epochs; "
                         f"{n_pub} published value(s)")
    return "\n".join(lines)

