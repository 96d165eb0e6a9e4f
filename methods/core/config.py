"""Typed trial configuration with a canonical form and a stable hash (open_lth's convention).

A trial is `RunConfig(method, data, train, model)`. Its canonical form keeps only the fields that differ
from their defaults, with sorted keys, so adding a new field with a default never changes the hash of
old configs (tests/test_config_hash.py pins a few). Every field is validated on construction from
metadata (`choices`, `ge`, `gt`, `le`, `lt`): a bad value raises `ConfigError` naming the key, the value
and what is allowed. Flat dotted keys (`train.lr`, `model.hidden`) are the interface to search spaces,
MLflow params and the command line.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..data.augment import PRESETS
from .registry import get_method  # methods register themselves on package import, before any config is built

HASH_LENGTH = 12  # hex characters of sha256; 48 bits is plenty for the trials of one project


class ConfigError(ValueError):
    """A config key or value is invalid. The message is one line naming the key and what is allowed."""


def spec(default, *, choices=None, ge=None, gt=None, le=None, lt=None, help: str = ""):
    """A dataclass field with validation metadata (and a help line for `--help`-style listings)."""
    meta = {k: v for k, v in dict(choices=choices, ge=ge, gt=gt, le=le, lt=lt, help=help).items() if v is not None}
    if isinstance(default, (list, dict)):
        raise TypeError("mutable defaults are not allowed; use tuples")
    return field(default=default, metadata=meta)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Coerce a YAML/JSON/CLI value to the annotated type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        (elem, *_rest) = typing.get_args(tp)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected a list of {elem.__name__}")
        return tuple(_coerce(v, elem, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r}: expected true or false")
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{key}={value!r}: expected an integer")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r}: expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r}: expected a string")
        return value
    raise TypeError(f"unsupported config field type {tp!r} for {key}")  # a programming error, not user input


def _check(value: Any, meta: dict, key: str) -> None:
    items = [(f"{key}[{i}]", v) for i, v in enumerate(value)] if isinstance(value, tuple) else [(key, value)]
    for name, v in items:
        if "choices" in meta and v not in meta["choices"]:
            raise ConfigError(f"{name}={v!r}: allowed values are {', '.join(map(str, meta['choices']))}")
        for op, test, word in (("ge", lambda a, b: a >= b, ">="), ("gt", lambda a, b: a > b, ">"),
                               ("le", lambda a, b: a <= b, "<="), ("lt", lambda a, b: a < b, "<")):
            if op in meta and not test(v, meta[op]):
                raise ConfigError(f"{name}={v!r}: must be {word} {meta[op]}")


@dataclass(frozen=True)
class Section:
    """Base of every config section: typed, validated, with a canonical (defaults-omitted) form."""

    section: ClassVar[str] = ""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            key = f"{self.section}.{f.name}" if self.section else f.name
            value = _coerce(getattr(self, f.name), hints[f.name], key)
            _check(value, f.metadata, key)
            object.__setattr__(self, f.name, value)
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; override in subclasses."""

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        unknown = sorted(set(values) - set(cls.keys()))
        if unknown:
            where = f"{cls.section}." if cls.section else ""
            raise ConfigError(f"unknown key {where}{unknown[0]}; allowed: {', '.join(where + k for k in cls.keys())}")
        return cls(**values)

    def canonical(self) -> dict[str, Any]:
        """Fields that differ from their defaults, JSON-ready (tuples become lists)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v != f.default:
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class DataConfig(Section):
    section: ClassVar[str] = "data"
    dataset: str = spec("digits", help="dataset name (methods.data.list_datasets()), or a file / image folder (docs/datasets.md)")
    val_fraction: float = spec(0.1, gt=0.0, lt=1.0, help="fraction of the training split held out for validation")
    split_seed: int = spec(0, ge=0, le=2**32 - 1, help="seed of the train/val split; fixed across trials so that their val_acc compare")
    max_train: int = spec(0, ge=0, help="use at most this many training samples (0 = all), a fixed subset per split_seed")
    max_test: int = spec(0, ge=0, help="use at most this many test samples (0 = all), a fixed random subset per split_seed")
    # For a dataset given as a file (methods/data/files.py); empty: the defaults, so old config hashes do not change.
    target: str = spec("", help="label column of a CSV/TSV/Parquet dataset (default: its last column)")
    test_dataset: str = spec("", help="a file of the same kind holding the test split (default: stratified 1/3 holdout)")


@dataclass(frozen=True)
class TrainConfig(Section):
    section: ClassVar[str] = "train"
    epochs: int = spec(20, ge=1)
    batch_size: int = spec(64, ge=1)
    optimizer: str = spec("sgd", choices=("sgd", "adam", "adamax"))
    lr: float = spec(0.01, gt=0.0)
    momentum: float = spec(0.9, ge=0.0, lt=1.0, help="SGD momentum (beta1 for adam/adamax)")
    nesterov: bool = spec(False)
    weight_decay: float = spec(0.0, ge=0.0, help="L2 penalty added to the gradient by the optimizer")
    # W <- W - wd * W after every optimizer step, not scaled by the learning rate, as the SET authors' NumPy
    # code does (set_mlp_sparse_data_structures.py, dcmocanu/sparse-evolutionary-artificial-neural-networks;
    # wiegerw/SET-MLP-ONE-MILLION-NEURONS). With SGD it equals an L2 coefficient of wd/lr.
    decoupled_weight_decay: float = spec(0.0, ge=0.0, lt=1.0, help="per-step multiplicative decay, not scaled by lr")
    schedule: str = spec("constant", choices=("constant", "step", "cosine", "piecewise"),
                         help="lr per epoch (constant/step/cosine), or per optimizer step (piecewise)")
    step_size: int = spec(10, ge=1, help="epochs between decays of the step schedule")
    gamma: float = spec(0.1, gt=0.0, le=1.0, help="decay factor of the step schedule")
    # Piecewise-linear rate, evaluated at every optimizer step (LpSS demo.py: PiecewiseLinear(knots=[0, E/6, E/3, E-3,
    # E], vals)(step / len(loader)), WilliamLiPro/LpSS at commit 9c8cbc1). Knots are fractions of train.epochs,
    # values multiply train.lr. Defaults: demo.py's LpSS shape at E = 50 (0.94 = (50 - 3)/50), its vals [0.04, 2,
    # 0.5, 0.004, 0.0002] divided by the peak 2, so train.lr is the peak rate. The authors sum the loss over the
    # batch and step at schedule/batch_size (optimizer/lpcgd.py); with our mean loss that is train.lr = 2.
    piecewise_knots: tuple[float, ...] = spec((0.0, 1 / 6, 1 / 3, 0.94, 1.0), ge=0.0, le=1.0,
                                              help="piecewise schedule: knots as fractions of training, 0 ... 1")
    piecewise_values: tuple[float, ...] = spec((0.02, 1.0, 0.25, 0.002, 0.0001), ge=0.0,
                                               help="piecewise schedule: multipliers of train.lr at the knots")
    # Drop each epoch's last partial batch, as demo.py's DataLoader(drop_last=True); BatchNorm fails on a batch of 1.
    drop_last: bool = spec(False, help="drop the last partial batch of every epoch")
    # On-device crop/flip/Cutout of every training batch (methods/data/augment.py); the preset's normalisation is applied
    # once to every split when the Trainer loads the data. Image datasets only.
    augment: str = spec("none", choices=("none", *PRESETS), help="training-batch augmentation preset")
    seed: int = spec(0, ge=0, le=2**32 - 1, help="seed of initialisation, data order and dropout")
    # Post-training node pruning (Sci. Rep. 12, 11201, 2022; methods/nn/node_pruning.py): after the last epoch, each
    # percentage of hidden nodes is removed from a copy of the trained network and the copy evaluated, so one run
    # gives the whole accuracy-vs-pruned-share curve. Empty: no curve.
    prune_curve: tuple[int, ...] = spec((), ge=0, le=100, help="percentages of hidden nodes removed after training")
    prune_score: str = spec("auto", choices=("auto", "eigenvalue", "connectivity"),
                            help="node ranking: |lam_out| of spectral layers, or incoming connectivity sum_j |w_ij|")

    def validate(self) -> None:
        if len(set(self.prune_curve)) != len(self.prune_curve):
            raise ConfigError(f"train.prune_curve={list(self.prune_curve)}: percentages must be distinct")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0.0):
            raise ConfigError(f"train.nesterov=True: needs train.optimizer=sgd and train.momentum>0 "
                              f"(got {self.optimizer}, momentum={self.momentum})")
        self._validate_piecewise()

    def _validate_piecewise(self) -> None:
        knots, values = self.piecewise_knots, self.piecewise_values
        if self.schedule != "piecewise":
            for key in ("piecewise_knots", "piecewise_values"):
                if getattr(self, key) != getattr(TrainConfig, key):   # the class attribute is the default
                    raise ConfigError(f"train.{key} is only read by train.schedule=piecewise, not "
                                      f"{self.schedule!r}; set the schedule or drop the key")
            return
        if len(knots) < 2 or len(knots) != len(values):
            raise ConfigError(f"train.piecewise_knots has {len(knots)} entries and train.piecewise_values "
                              f"{len(values)}: give the same number, at least 2")
        if knots[0] != 0.0 or knots[-1] != 1.0 or any(b <= a for a, b in zip(knots, knots[1:])):
            raise ConfigError(f"train.piecewise_knots={list(knots)}: must increase strictly from 0 to 1 "
                              f"(fractions of train.epochs)")


@dataclass(frozen=True)
class ModelConfig(Section):
    """Base of every method's model config. Subclasses set their defaults to the paper's values."""

    section: ClassVar[str] = "model"


@dataclass(frozen=True)
class RunConfig:
    """One trial: a registered method, its data, its training schedule and its model config."""

    method: str
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    model: ModelConfig | None = None

    def __post_init__(self):

        method = get_method(self.method)
        cls = method.Config
        if self.model is None:
            object.__setattr__(self, "model", cls())
        elif type(self.model) is not cls:
            raise ConfigError(f"model config {type(self.model).__name__} does not belong to method {self.method!r} ({cls.__name__})")
        flat = self.flat()
        for key, value in method.requires.items():
            if flat[key] != value:
                raise ConfigError(f"{key}={flat[key]!r}: method {self.method!r} needs {key}={value!r}")
        scores = ("auto", *method.node_scores)
        if not self.train.prune_curve and self.train.prune_score != "auto":
            raise ConfigError(f"train.prune_score={self.train.prune_score!r} without train.prune_curve ranks nothing; "
                              f"set the curve's percentages or leave the score at auto")
        if self.train.prune_curve and getattr(self.model, "hidden", None) == ():
            raise ConfigError("train.prune_curve removes hidden nodes, but model.hidden=[] has none")
        if self.train.prune_curve and self.train.prune_score not in scores:
            raise ConfigError(f"train.prune_score={self.train.prune_score!r} is not defined for method {self.method!r}; "
                              f"allowed: {', '.join(scores)}")
        method.check(self)

    # ---- flat dotted keys: the interface to search spaces, MLflow params and the CLI ----
    @classmethod
    def allowed_keys(cls, method: str) -> list[str]:

        return (["method"] + [f"data.{k}" for k in DataConfig.keys()] + [f"train.{k}" for k in TrainConfig.keys()]
                + [f"model.{k}" for k in get_method(method).Config.keys()])

    @classmethod
    def field_type(cls, method: str, key: str) -> Any:
        """The annotated type of a flat key, e.g. `int` for `train.epochs`."""

        head, _, name = key.partition(".")
        section = {"data": DataConfig, "train": TrainConfig, "model": get_method(method).Config}[head]
        return typing.get_type_hints(section)[name]

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> "RunConfig":

        if "method" not in flat:
            raise ConfigError("missing key 'method'")
        method = flat["method"]
        model_cls = get_method(method).Config
        sections: dict[str, dict[str, Any]] = {"data": {}, "train": {}, "model": {}}
        for key, value in flat.items():
            if key == "method":
                continue
            head, _, name = key.partition(".")
            if head not in sections or not name:
                raise ConfigError(f"unknown key {key}; keys look like data.<name>, train.<name> or model.<name>")
            sections[head][name] = value
        return cls(method=method, data=DataConfig.from_dict(sections["data"]),
                   train=TrainConfig.from_dict(sections["train"]), model=model_cls.from_dict(sections["model"]))

    def flat(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method}
        for name in ("data", "train", "model"):
            for k, v in getattr(self, name).as_dict().items():
                out[f"{name}.{k}"] = v
        return out

    def replace(self, **flat_updates: Any) -> "RunConfig":
        """A copy with some flat keys changed, e.g. `cfg.replace(**{"train.epochs": 3})`."""
        return RunConfig.from_flat({**self.flat(), **flat_updates})

    # ---- canonical form and hash ----
    def canonical(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method}
        for name in ("data", "train", "model"):
            c = getattr(self, name).canonical()
            if c:
                out[name] = c
        return out

    def canonical_json(self) -> str:
        return json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))

    def hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:HASH_LENGTH]

    def without_seed(self) -> "RunConfig":
        """The same config at the default seed: the identity of a setting repeated over seeds."""
        return self.replace(**{"train.seed": TrainConfig().seed})
