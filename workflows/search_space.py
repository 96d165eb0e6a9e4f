"""Search spaces: one YAML per method in `search_spaces/`, turned into an Optuna define-by-run function.

Format (all keys are flat RunConfig keys, see methods/core/config.py):

    method: dense
    fixed:                       # optional: values every trial uses
      model.activation: relu
    space:                       # Optuna distributions
      train.lr: {type: float, low: 1.0e-3, high: 0.3, log: true}
      train.batch_size: {type: int, low: 16, high: 128, log: true}
      model.hidden: {type: categorical, choices: [[64], [128, 64]]}

Validation happens on load, before anything starts: unknown top-level keys, config keys the method does not
have, bad bounds, wrong value types and values the config would reject all raise `SearchSpaceError` naming
the file and the key. `data.dataset` and `train.epochs` come from the command line (ASHA's max_t depends on
the epochs), so a space may not sample or fix them.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sparsebench.search_spaces as search_spaces

from sparsebench.methods.core.config import ConfigError, RunConfig
from sparsebench.methods.core.registry import get_method
from .yaml_input import YamlInputError, read_yaml

SEARCH_SPACE_DIR = Path(search_spaces.__file__).resolve().parent
COMMAND_LINE_KEYS = ("method", "data.dataset", "data.target", "data.test_dataset", "train.epochs", "train.seed")
_TOP_KEYS = {"method", "fixed", "space"}
_PARAM_KEYS = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
               "categorical": {"type", "choices"}}


class SearchSpaceError(ValueError):
    """A malformed search space; the message names the file and the key."""


@dataclass(frozen=True)
class Param:
    key: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()

    def encoded_choices(self) -> list:
        """Optuna categoricals hold scalars only: list-valued choices (widths) travel as JSON strings."""
        return [json.dumps(c) if isinstance(c, list) else c for c in self.choices]

    def decode(self, value: Any) -> Any:
        if isinstance(value, str) and any(isinstance(c, list) for c in self.choices):
            return json.loads(value)
        return value

    def suggest(self, trial) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.key, self.low, self.high, log=self.log, step=self.step or 1)
        return self.decode(trial.suggest_categorical(self.key, self.encoded_choices()))

    def extremes(self) -> list:
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]


@dataclass(frozen=True)
class DefineByRun:
    """A picklable define-by-run function (Tune pickles the searcher with its state)."""

    params: tuple[Param, ...]
    constants: dict[str, Any]

    def __call__(self, trial) -> dict[str, Any]:
        for p in self.params:
            p.suggest(trial)
        return dict(self.constants)


@dataclass(frozen=True)
class SearchSpace:
    method: str
    source: str
    fixed: dict[str, Any] = field(default_factory=dict)
    params: tuple[Param, ...] = ()

    def define_by_run(self, base: dict[str, Any]) -> "DefineByRun":
        """The function OptunaSearch calls per trial: sample `params`, return the constants to merge."""
        return DefineByRun(self.params, {**self.fixed, **base})

    def decode(self, config: dict[str, Any]) -> dict[str, Any]:
        """Turn a sampled Tune config back into RunConfig flat keys and values."""
        by_key = {p.key: p for p in self.params}
        return {k: (by_key[k].decode(v) if k in by_key else v) for k, v in config.items()}

    def fingerprint(self) -> dict[str, Any]:
        return {"method": self.method, "fixed": self.fixed,
                "space": {p.key: {k: v for k, v in p.__dict__.items() if k != "key" and v not in (None, False, ())}
                          for p in self.params}}


def default_path(method: str) -> Path:
    """`search_spaces/<method>.yaml`; for a method kept outside the package ($SPARSEBENCH_METHOD_PATH), the
    `<method>.yaml` beside its file when search_spaces/ has none (methods/families/__init__.py)."""
    packaged = SEARCH_SPACE_DIR / f"{method}.yaml"
    if packaged.is_file():
        return packaged
    source = sys.modules[get_method(method).__module__].__file__
    beside = Path(source).with_name(f"{method}.yaml")
    return beside if beside.is_file() else packaged


def load_search_space(method: str, path: str | Path | None = None) -> SearchSpace:
    get_method(method)  # UnknownMethodError first: a clearer message than a missing file
    path = Path(path) if path is not None else default_path(method)
    where = str(path)
    if not path.is_file():
        raise SearchSpaceError(f"{where}: search space file not found")
    try:
        doc = read_yaml(path)
    except YamlInputError as e:
        raise SearchSpaceError(f"{where}: {e}") from None
    return parse_search_space(doc, method, where)


def _fail(where: str, key: str, msg: str) -> SearchSpaceError:
    return SearchSpaceError(f"{where}: {key}: {msg}")


def _number(where: str, key: str, name: str, v: Any, integer: bool):
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok or not math.isfinite(v):
        raise _fail(where, key, f"{name}={v!r} must be {'an integer' if integer else 'a finite number'}")
    return v


def parse_search_space(doc: Any, method: str, where: str = "<search space>") -> SearchSpace:
    if not isinstance(doc, dict):
        raise SearchSpaceError(f"{where}: expected a mapping with keys {', '.join(sorted(_TOP_KEYS))}")
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise _fail(where, unknown[0], f"unknown top-level key; allowed: {', '.join(sorted(_TOP_KEYS))}")
    if doc.get("method") != method:
        raise _fail(where, "method", f"{doc.get('method')!r} does not match the method it is used for ({method!r})")
    allowed = set(RunConfig.allowed_keys(method)) - set(COMMAND_LINE_KEYS)
    fixed = doc.get("fixed") or {}
    space = doc.get("space") or {}
    for name, section in (("fixed", fixed), ("space", space)):
        if not isinstance(section, dict):
            raise _fail(where, name, "must be a mapping of config keys")
        for key in section:
            if key in COMMAND_LINE_KEYS:
                raise _fail(where, key, "is set on the command line, not in a search space")
            if key not in allowed:
                raise _fail(where, key, f"unknown config key for method {method!r}; allowed: {', '.join(sorted(allowed))}")
    both = sorted(set(fixed) & set(space))
    if both:
        raise _fail(where, both[0], "is both fixed and searched")

    params = []
    for key, p in space.items():
        if not isinstance(p, dict) or p.get("type") not in _PARAM_KEYS:
            raise _fail(where, key, f"needs a mapping with type: {' | '.join(_PARAM_KEYS)}")
        kind = p["type"]
        extra = sorted(set(p) - _PARAM_KEYS[kind])
        if extra:
            raise _fail(where, key, f"unknown field {extra[0]!r} for a {kind} parameter; allowed: {', '.join(sorted(_PARAM_KEYS[kind]))}")
        if kind == "categorical":
            choices = p.get("choices")
            if not isinstance(choices, list) or not choices:
                raise _fail(where, key, "choices must be a non-empty list")
            params.append(Param(key, kind, choices=tuple(choices)))
            continue
        integer = kind == "int"
        if kind == "float" and RunConfig.field_type(method, key) is int:
            raise _fail(where, key, "is an integer setting: use type: int")
        for name in ("low", "high"):
            if name not in p:
                raise _fail(where, key, f"missing {name}")
            _number(where, key, name, p[name], integer)
        low, high, log, step = p["low"], p["high"], p.get("log", False), p.get("step")
        if not isinstance(log, bool):
            raise _fail(where, key, f"log={log!r} must be true or false")
        if not low < high:
            raise _fail(where, key, f"low={low} must be < high={high}")
        if log and low <= 0:
            raise _fail(where, key, f"log scale needs low > 0, got low={low}")
        if step is not None:
            _number(where, key, "step", step, integer)
            if step <= 0 or log:
                raise _fail(where, key, "step must be > 0 and cannot be combined with log")
        params.append(Param(key, kind, low=low, high=high, log=log, step=step))

    ss = SearchSpace(method=method, source=where, fixed=dict(fixed), params=tuple(params))
    _check_values(ss, where)
    return ss


def _check_values(ss: SearchSpace, where: str) -> None:
    """Every fixed value, every bound and every choice must be accepted by the method's typed config."""
    base = {"method": ss.method, **ss.fixed}
    try:
        RunConfig.from_flat(base)
    except ConfigError as e:
        raise SearchSpaceError(f"{where}: fixed: {e}") from None
    for p in ss.params:
        for value in p.extremes():
            try:
                RunConfig.from_flat({**base, p.key: value})
            except ConfigError as e:
                raise _fail(where, p.key, str(e)) from None
