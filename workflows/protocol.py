"""Paper protocols (`workflows/papers/<paper>.yaml`): loaded, validated and expanded into runs.

A protocol is data: which runs reproduce a paper's experiment, and the published numbers with their provenance
(docs/design.md, "Published numbers are data"). Loading checks everything before anything runs and reports the
first problem as one line naming the file, the experiment and the key. Schema:

    paper: <file stem>   title: ...   arxiv: "NNNN.NNNNN"   notes: ... (optional)
    experiments:
      - name: unique id              description: ...
        dataset: NAME | datasets: [NAME, ...]      (or a file path, relative to the protocol file)
        epochs: N    seeds: N    metric: test_acc | val_acc | neuron_sparsity | ...    report: [...]
        sweep: {flat.key: [v1, v2, ...]}      (optional; one key; every arm runs at every value)
        budgets: [2k, 8000, ...]  budget_metric: params_trainable | weights_nonzero | flops_inference   (optional, instead of a
                                              sweep: every arm sized to every budget, workflows/budgets.py)
        gpu_hours: H   gpu_hours_source: ...  (optional: a GPU experiment, estimated GPU-hours of one run)
        data: {data.*: ...}  common: {...}    (flat keys every arm gets)
        methods: {arm: {method: NAME (default: the arm's name), flat.key: value, ...}}
        published_source / verified_against_paper / tolerance_source: defaults for the cells below
        published:
          - {method: ARM, value: 0.97 | null, source: SOURCE, verified_against_paper: true|false,
             metric: (default: the experiment's), statistic: final | max | relative_accuracy | ratio |
             relative_gain_epochs_1_5, baseline: ARM (for relative statistics), dataset: NAME,
             at: {sweep.key: value, percent: P}, tolerance: T, tolerance_source: ..., std, runs, claim, note}

SOURCE is "abstract", "paper table N", "paper figure N" or "authors' repository <owner/repo> <file> <commit
or 'commit not recorded'>". A value of null is unknown and is shown as such, never as 0.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparsebench.methods import ConfigError, DatasetError, RunConfig, list_datasets
from sparsebench.methods.data.files import check_path, formats_help, looks_like_path
from sparsebench.methods.core.registry import UnknownMethodError, get_method
from . import budgets as budgeting
from . import ray_job
from .yaml_input import YamlInputError, read_yaml

PAPERS_DIR = Path(__file__).resolve().parent / "papers"

# Statistics a published cell may state, and whether its value is a share in [0, 1] when its metric is one.
STATISTICS = ("final", "max", "relative_accuracy", "ratio", "relative_gain_epochs_1_5")
RELATIVE = ("relative_accuracy", "ratio", "relative_gain_epochs_1_5")       # need a baseline arm
# Metrics whose values are shares: a published final/max value outside [0, 1] is a typo.
SHARE_METRICS = ("test_acc", "val_acc", "train_acc", "weight_sparsity", "neuron_sparsity", "hoyer", "params_ratio")
METRICS = (*SHARE_METRICS, "params_trainable", "weights_nonzero", "neurons_active")
SOURCE = re.compile(r"^(abstract|paper (table|figure) \S+|authors' repository [\w.-]+/[\w.-]+ \S+ \S.*)$")
# Keys the protocol's own fields own: an arm, `common`, `data` or the sweep setting them would make cells
# collide or land elsewhere (the seed comes from `seeds`, the dataset from `dataset(s)`, epochs from `epochs`).
RESERVED = ("train.seed", "data.dataset", "train.epochs")
CURVE_METRICS = ("val_acc", "test_acc")   # what a pruning curve records (methods/nn/node_pruning.py)
TOP_KEYS = {"paper", "title", "arxiv", "notes", "experiments"}
EXP_KEYS = {"name", "description", "dataset", "datasets", "epochs", "seeds", "metric", "report", "sweep", "data",
            "common", "methods", "published", "published_source", "verified_against_paper", "tolerance_source",
            "notes", "budgets", "budget_metric", "gpu_hours", "gpu_hours_source"}
# A budget experiment's swept "setting" (issue 16): not a config key; each cell's config is sized to it in closed form
# (Method.size_to_budget) once its data's shapes are known (reproduce.plan), and `at: {budget: 2000}` names it.
BUDGET_KEY = "budget"
CELL_KEYS = {"method", "value", "source", "verified_against_paper", "metric", "statistic", "baseline", "dataset", "at",
             "tolerance", "tolerance_source", "std", "runs", "claim", "note"}


class ProtocolError(ValueError):
    """A malformed paper file; one line naming the file, the experiment and the key."""


@dataclass(frozen=True)
class Published:
    arm: str
    value: float | None
    source: str
    verified_against_paper: bool
    metric: str
    statistic: str = "final"
    baseline: str | None = None
    dataset: str | None = None
    at: dict[str, Any] = field(default_factory=dict)
    tolerance: float | None = None
    tolerance_source: str = ""
    std: float | None = None
    runs: int | None = None
    claim: str = ""

    @property
    def percent(self) -> int | None:
        return self.at.get("percent")

    @property
    def provenance(self) -> str:
        return f"{self.source} ({'verified' if self.verified_against_paper else 'not verified'} against the paper)"


@dataclass(frozen=True)
class Cell:
    """One run: an arm of an experiment at one dataset, sweep value and seed."""
    paper: str
    experiment: str
    dataset: str
    sweep: Any                 # the swept value (None without a sweep)
    arm: str
    seed: int
    flat: dict[str, Any]       # the run's flat config

    @property
    def sweep_json(self) -> str:
        return json.dumps(self.sweep)

    def config(self) -> RunConfig:
        return RunConfig.from_flat(self.flat)


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    datasets: tuple[str, ...]
    epochs: int
    seeds: int
    metric: str
    sweep_key: str | None
    sweep_values: tuple[Any, ...]
    common: dict[str, Any]
    arms: dict[str, dict[str, Any]]      # arm -> flat overrides including "method"
    published: tuple[Published, ...]
    budget_metric: str = ""              # with sweep_key == BUDGET_KEY: what the budgets count

    @property
    def budgets(self) -> tuple[float, ...]:
        return self.sweep_values if self.sweep_key == BUDGET_KEY else ()
    # A GPU experiment: the estimated GPU-hours of one run (one seed) and where the estimate comes from; the
    # results table lists its cells with that estimate until they are measured (workflows/results_table.py).
    gpu_hours: float | None = None
    gpu_hours_source: str = ""

    def cells(self, paper: str, seeds: int | None = None, overrides: dict[str, Any] | None = None) -> list[Cell]:
        out = []
        for ds in self.datasets:
            for value in self.sweep_values or (None,):
                for arm, arm_flat in self.arms.items():
                    for seed in range(seeds or self.seeds):
                        flat = {"data.dataset": ds, "train.epochs": self.epochs, **self.common, **arm_flat,
                                "train.seed": seed}
                        if self.sweep_key not in (None, BUDGET_KEY):   # a budget sizes the cell later
                            flat[self.sweep_key] = value
                        flat.update(overrides or {})
                        out.append(Cell(paper, self.name, ds, value, arm, seed, flat))
        return out


@dataclass(frozen=True)
class Paper:
    id: str
    title: str
    arxiv: str | None
    path: Path
    experiments: tuple[Experiment, ...]

    def experiment(self, name: str) -> Experiment:
        for e in self.experiments:
            if e.name == name:
                return e
        raise ProtocolError(f"paper {self.id}: unknown experiment {name!r}; available: "
                            f"{', '.join(e.name for e in self.experiments)}")


def list_papers(folder: Path = PAPERS_DIR) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load_paper(name_or_path: str | Path, folder: Path = PAPERS_DIR) -> Paper:
    """A paper protocol by name (a file under workflows/papers/) or path, validated."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = folder / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ProtocolError(f"unknown paper {name_or_path!r}; available: {', '.join(list_papers(folder)) or 'none'}")
    try:
        doc = read_yaml(path)
    except YamlInputError as e:
        raise ProtocolError(f"{path}: {e}") from None
    return _paper(doc, path)


def _fail(where: str, message: str):
    raise ProtocolError(f"{where}: {message}")


def _keys(d: dict, where: str, allowed: set[str], required: tuple[str, ...] = ()) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        _fail(where, f"unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
    missing = next((k for k in required if k not in d), None)
    if missing:
        _fail(where, f"missing key {missing!r}")


def _paper(doc: Any, path: Path) -> Paper:
    where = str(path)
    if not isinstance(doc, dict):
        _fail(where, "expected a mapping with keys paper, title, arxiv, experiments")
    _keys(doc, where, TOP_KEYS, ("paper", "title", "arxiv", "experiments"))
    if doc["paper"] != path.stem:
        _fail(where, f"paper: {doc['paper']!r} must equal the file name {path.stem!r}")
    # null only for protocols that reproduce no paper (baselines.yaml).
    if doc["arxiv"] is not None and not re.fullmatch(r"\d{4}\.\d{4,5}", str(doc["arxiv"])):
        _fail(where, f"arxiv: {doc['arxiv']!r} is not an arXiv id like 2106.09021 (quote it in YAML), or null")
    exps = doc["experiments"]
    if not isinstance(exps, list) or not exps:
        _fail(where, "experiments: expected a non-empty list")
    parsed = [_experiment(e, f"{where}: experiment {i + 1}", Path(path).parent) for i, e in enumerate(exps)]
    names = [e.name for e in parsed]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        _fail(where, f"experiment name {dup!r} is used twice")
    return Paper(doc["paper"], str(doc["title"]), doc["arxiv"] and str(doc["arxiv"]), path, tuple(parsed))


def _positive_int(v: Any, where: str, key: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        _fail(where, f"{key}: {v!r} must be an integer >= 1")
    return v


def _dataset_ref(ds: Any, where: str, base: Path) -> str:
    """A registered name as it is, or a file / image folder (methods/data/files.py) as an absolute path, relative to
    the protocol file's folder (the trials run in folders of their own); a missing or unknown-format file fails here."""
    if not isinstance(ds, str):
        _fail(where, f"dataset: {ds!r} is not a name or a path")
    if ds in list_datasets():
        return ds
    if not looks_like_path(ds):
        _fail(where, f"unknown dataset {ds!r}; available: {', '.join(list_datasets())}, or {formats_help()}")
    path = (base / Path(ds).expanduser()).resolve()
    try:
        check_path(path)
    except DatasetError as err:
        _fail(where, f"dataset {ds!r}: {err}")
    return ray_job.driver_path(str(path))


def _budgets(values: Any, where: str) -> list[float]:
    """`budgets:` as `--budgets` takes them: numbers, or strings like "2k" (workflows/budgets.py), each > 0, no repeats."""
    if not isinstance(values, list) or not values:
        _fail(where, f"budgets: expected a non-empty list of {budgeting.ALLOWED.split(', comma')[0]}; got {values!r}")
    try:
        parsed = [budgeting.parse_budgets(v) if isinstance(v, str) else (v,) for v in values]
        bad = next((v for v, p in zip(values, parsed) if len(p) != 1), None)
        if bad is not None:
            _fail(where, f"budgets: {bad!r} is more than one budget; give one per list item")
        return list(budgeting.check_budgets([p[0] for p in parsed]))
    except budgeting.BudgetError as err:
        _fail(where, f"budgets: {err}")


def _experiment(e: Any, where: str, base: Path = PAPERS_DIR) -> Experiment:
    if not isinstance(e, dict):
        _fail(where, "expected a mapping")
    if "name" not in e:
        _fail(where, "missing key 'name'")
    where = f"{where.rsplit(': experiment', 1)[0]}: experiment {e['name']}"
    _keys(e, where, EXP_KEYS, ("epochs", "seeds", "metric", "methods"))
    if ("dataset" in e) == ("datasets" in e):
        _fail(where, "give exactly one of 'dataset' and 'datasets'")
    if "datasets" in e and (not isinstance(e["datasets"], list) or not e["datasets"]):
        _fail(where, "datasets: expected a non-empty list")
    datasets = tuple(_dataset_ref(ds, where, base) for ds in (e["datasets"] if "datasets" in e else (e["dataset"],)))
    if len(set(datasets)) != len(datasets):
        _fail(where, f"datasets: {list(datasets)} repeats a dataset")
    epochs, seeds = _positive_int(e["epochs"], where, "epochs"), _positive_int(e["seeds"], where, "seeds")
    if e["metric"] not in METRICS:
        _fail(where, f"metric: unknown {e['metric']!r}; allowed: {', '.join(METRICS)}")
    sweep = e.get("sweep") or {}
    if not isinstance(sweep, dict) or len(sweep) > 1:
        _fail(where, "sweep: expected one flat key mapped to a list of values")
    if BUDGET_KEY in sweep:
        _fail(where, f"sweep: {BUDGET_KEY!r} is not a config key; give budgets: [...] to size every arm to each budget")
    if "budget_metric" in e and "budgets" not in e:
        _fail(where, "budget_metric: give budgets with it")
    if "budgets" in e:
        if sweep:
            _fail(where, "budgets: give either a sweep or budgets (the budgets are the experiment's swept setting)")
        sweep = {BUDGET_KEY: _budgets(e["budgets"], where)}
    budget_metric = e.get("budget_metric", "params_trainable") if "budgets" in e else ""
    if budget_metric and budget_metric not in budgeting.BUDGET_METRICS:
        _fail(where, f"budget_metric: unknown {budget_metric!r}; allowed: {', '.join(budgeting.BUDGET_METRICS)}")
    sweep_key, sweep_values = next(iter(sweep.items()), (None, ()))
    if sweep_key is not None and (not isinstance(sweep_values, list) or not sweep_values):
        _fail(where, f"sweep: {sweep_key} needs a non-empty list of values")
    if sweep_key in RESERVED:
        _fail(where, f"sweep: {sweep_key} is set by the experiment itself (seeds, dataset(s), epochs)")
    if any(sweep_values.count(v) > 1 for v in sweep_values):
        _fail(where, f"sweep: {sweep_key} repeats a value in {sweep_values}")
    for key in ("data", "common"):
        if not isinstance(e.get(key) or {}, dict):
            _fail(where, f"{key}: expected a mapping of flat config keys to values")
    common = {**(e.get("data") or {}), **(e.get("common") or {})}
    if not isinstance(e["methods"], dict) or not e["methods"]:
        _fail(where, "methods: expected a mapping of arm name to config overrides")
    arms = {}
    for arm, over in e["methods"].items():
        if not isinstance(over or {}, dict):
            _fail(f"{where}: arm {arm}", "expected a mapping of flat config keys to values")
        over = dict(over or {})
        reserved = next((k for k in RESERVED if k in over or k in common), None)
        if reserved:
            _fail(f"{where}: arm {arm}", f"{reserved} is set by the experiment itself (seeds, dataset(s), epochs)")
        method = over.pop("method", arm)
        try:
            get_method(method)
        except UnknownMethodError as err:
            _fail(f"{where}: arm {arm}", str(err))
        arms[arm] = {"method": method, **over}
    exp = Experiment(str(e["name"]), " ".join(str(e.get("description", "")).split()), datasets, epochs, seeds,
                     e["metric"], sweep_key, tuple(sweep_values), common, arms, (), budget_metric)
    for cell in exp.cells("-", seeds=1):   # every run must be a valid config: checked now, not on the cluster
        try:
            cell.config()
        except ConfigError as err:
            _fail(f"{where}: arm {cell.arm}" + (f" at {sweep_key}={cell.sweep_json}" if sweep_key else ""), str(err))
    gpu_hours = e.get("gpu_hours")
    if gpu_hours is not None and (isinstance(gpu_hours, bool) or not isinstance(gpu_hours, (int, float)) or gpu_hours <= 0):
        _fail(where, f"gpu_hours: {gpu_hours!r} must be a number > 0 (estimated GPU-hours of one run)")
    if gpu_hours is not None and not str(e.get("gpu_hours_source") or "").strip():
        _fail(where, "gpu_hours: give gpu_hours_source (how the estimate was made)")
    exp = Experiment(**{**exp.__dict__, "gpu_hours": None if gpu_hours is None else float(gpu_hours),
                        "gpu_hours_source": " ".join(str(e.get("gpu_hours_source") or "").split())})
    defaults = {k: e[k] for k in ("published_source", "verified_against_paper", "tolerance_source") if k in e}
    published = tuple(_published(c, f"{where}: published cell {i + 1}", exp, defaults)
                      for i, c in enumerate(e.get("published") or []))
    return Experiment(**{**exp.__dict__, "published": published})


def _published(c: Any, where: str, exp: Experiment, defaults: dict[str, Any]) -> Published:
    if not isinstance(c, dict):
        _fail(where, "expected a mapping")
    _keys(c, where, CELL_KEYS)
    if c.get("method") not in exp.arms:
        _fail(where, f"method: {c.get('method')!r} is not an arm of the experiment; arms: {', '.join(exp.arms)}")
    source = c.get("source", defaults.get("published_source"))
    if not source:
        _fail(where, "missing source (paper table N | paper figure N | abstract | authors' repository <repo> <file> <commit>)")
    source = " ".join(str(source).split())
    if not SOURCE.match(source):
        _fail(where, f"source: {source!r} is not one of: abstract, paper table N, paper figure N, "
                     f"authors' repository <owner/repo> <file> <commit>")
    verified = c.get("verified_against_paper", defaults.get("verified_against_paper"))
    if not isinstance(verified, bool):
        _fail(where, "verified_against_paper: missing or not true/false")
    metric = c.get("metric", exp.metric)
    if metric not in METRICS:
        _fail(where, f"metric: unknown {metric!r}; allowed: {', '.join(METRICS)}")
    statistic = c.get("statistic", "final")
    if statistic not in STATISTICS:
        _fail(where, f"statistic: unknown {statistic!r}; allowed: {', '.join(STATISTICS)}")
    baseline = c.get("baseline")
    if statistic in RELATIVE and baseline not in exp.arms:
        _fail(where, f"statistic {statistic} needs a baseline arm; got {baseline!r}, arms: {', '.join(exp.arms)}")
    if statistic not in RELATIVE and baseline is not None:
        _fail(where, f"baseline: only the relative statistics ({', '.join(RELATIVE)}) compare with a baseline arm")
    if baseline is not None and baseline == c["method"]:
        _fail(where, f"baseline: {baseline!r} is the cell's own arm")
    if statistic == "relative_gain_epochs_1_5" and exp.epochs < 5:
        _fail(where, f"statistic relative_gain_epochs_1_5 needs epochs >= 5, the experiment has {exp.epochs}")
    value = c.get("value", "missing")
    if value == "missing":
        _fail(where, "missing value (a number, or null when unknown)")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(where, f"value: {value!r} is not a number (or null)")
        if statistic in ("final", "max") and metric in SHARE_METRICS and not 0.0 <= value <= 1.0:
            _fail(where, f"value: {value} is outside [0, 1] for {metric}")
    tolerance = c.get("tolerance")
    if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0):
        _fail(where, f"tolerance: {tolerance!r} must be a number >= 0")
    for key in ("std",):
        if c.get(key) is not None and (isinstance(c[key], bool) or not isinstance(c[key], (int, float)) or c[key] < 0):
            _fail(where, f"{key}: {c[key]!r} must be a number >= 0")
    if c.get("runs") is not None and (isinstance(c["runs"], bool) or not isinstance(c["runs"], int) or c["runs"] < 1):
        _fail(where, f"runs: {c['runs']!r} must be an integer >= 1")
    dataset = c.get("dataset")
    if dataset is not None and dataset not in exp.datasets:
        _fail(where, f"dataset: {dataset!r} is not one of the experiment's ({', '.join(exp.datasets)})")
    if not isinstance(c.get("at") or {}, dict):
        _fail(where, f"at: {c.get('at')!r} is not a mapping (sweep key or percent -> value)")
    at = dict(c.get("at") or {})
    for key, v in at.items():
        if key == "percent":
            for arm in filter(None, (c["method"], baseline)):
                curve = {**exp.common, **exp.arms[arm]}.get("train.prune_curve", [])
                if v not in curve:
                    _fail(where, f"at: percent {v} is not in arm {arm}'s train.prune_curve {list(curve)}")
            if metric not in CURVE_METRICS:
                _fail(where, f"at: percent: a pruning curve records {' and '.join(CURVE_METRICS)}, not {metric}")
        elif key != exp.sweep_key:
            _fail(where, f"at: {key!r} is not the experiment's swept setting ({exp.sweep_key or 'none'})")
        elif v not in exp.sweep_values:
            _fail(where, f"at: {key}={v!r} is not a swept value ({list(exp.sweep_values)})")
    return Published(c["method"], None if value is None else float(value), source, verified, metric, statistic,
                     baseline, dataset, at, None if tolerance is None else float(tolerance),
                     str(c.get("tolerance_source", defaults.get("tolerance_source", "")) or ""),
                     c.get("std"), c.get("runs"), " ".join(str(c.get("claim", "")).split()))
