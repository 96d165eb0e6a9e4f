"""Search-space YAML: every method's file loads, samples valid configs; malformed files fail clearly."""
from __future__ import annotations

import optuna
import pytest

from sparsebench.methods import RunConfig, get_method, list_methods
from sparsebench.workflows.search_space import SearchSpaceError, default_path, load_search_space

VALID = """
method: dense
fixed:
  model.bias: false
space:
  train.lr: {type: float, low: 1.0e-3, high: 0.1, log: true}
  train.batch_size: {type: int, low: 16, high: 128, step: 16}
  model.hidden: {type: categorical, choices: [[8], [16, 8]]}
"""


@pytest.mark.parametrize("method", list_methods())
def test_every_method_has_a_valid_space_that_samples_valid_configs(method):
    assert default_path(method).is_file(), f"search_spaces/{method}.yaml is missing"
    space = load_search_space(method)
    base = {"method": method, "data.dataset": "digits", "train.epochs": 2}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        constants = space.define_by_run(base)(trial)
        cfg = RunConfig.from_flat(space.decode({**trial.params, **constants}))
        assert cfg.method == method and cfg.train.epochs == 2
        study.tell(trial, 0.0)


def test_list_choices_round_trip(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(VALID)
    space = load_search_space("dense", f)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(20):
        t = study.ask()
        constants = space.define_by_run({"method": "dense"})(t)
        cfg = RunConfig.from_flat(space.decode({**t.params, **constants}))
        seen.add(cfg.model.hidden)
        assert cfg.train.batch_size % 16 == 0 and 1e-3 <= cfg.train.lr <= 0.1 and cfg.model.bias is False
        study.tell(t, 0.0)
    assert seen == {(8,), (16, 8)}


@pytest.mark.parametrize("text,message", [
    ("method: dense\nspace:\n  train.lr: {type: float, low: 0.1, high: 0.01}\n", r"train.lr: low=0.1 must be < high=0.01"),
    ("method: dense\nspace:\n  train.lr: {type: float, low: 0, high: 0.1, log: true}\n", r"train.lr: log scale needs low > 0"),
    ("method: dense\nspace:\n  train.lr: {type: float, low: a, high: 0.1}\n", r"train.lr: low='a' must be a finite number"),
    ("method: dense\nspace:\n  train.lr: {type: float, low: 0.1, high: .inf}\n", r"train.lr: high=inf must be a finite number"),
    ("method: dense\nspace:\n  train.lr: {type: float, low: 0.1, high: 1, step: .nan}\n", r"train.lr: step=nan must be a finite"),
    ("method: dense\nspace:\n  train.batch_size: {type: float, low: 16, high: 128}\n", r"train.batch_size: is an integer setting"),
    ("method: dense\nfixed:\n  train.seed: 5\n", r"train.seed: is set on the command line"),
    ("method: dense\nspace:\n  train.batch_size: {type: int, low: 1.5, high: 8}\n", r"train.batch_size: low=1.5 must be an integer"),
    ("method: dense\nspace:\n  train.lr: {type: uniform, low: 0, high: 1}\n", r"train.lr: needs a mapping with type"),
    ("method: dense\nspace:\n  train.lr: {type: float, low: 0.1, high: 1, q: 2}\n", r"train.lr: unknown field 'q'"),
    ("method: dense\nspace:\n  train.lrate: {type: float, low: 0.1, high: 1}\n", r"train.lrate: unknown config key for method 'dense'"),
    ("method: dense\nspace:\n  model.activation: {type: categorical, choices: []}\n", r"choices must be a non-empty list"),
    ("method: dense\nspace:\n  model.activation: {type: categorical, choices: [relu, swish]}\n",
     r"model.activation: model.activation='swish': allowed values are"),
    ("method: dense\nspace:\n  train.momentum: {type: float, low: 0.5, high: 1.5}\n", r"train.momentum=1.5: must be < 1.0"),
    ("method: dense\nspace:\n  train.epochs: {type: int, low: 1, high: 5}\n", r"train.epochs: is set on the command line"),
    ("method: dense\nfixed:\n  train.lr: 0.1\nspace:\n  train.lr: {type: float, low: 0.1, high: 1}\n", r"train.lr: is both fixed"),
    ("method: dense\nfixed:\n  train.optimizer: lbfgs\n", r"fixed: train.optimizer='lbfgs'"),
    ("method: set\nspace: {}\n", r"method: 'set' does not match the method it is used for \('dense'\)"),
    ("method: dense\nspaces: {}\n", r"spaces: unknown top-level key"),
    ("- just\n- a list\n", r"expected a mapping"),
    ("method: dense\nspace: [1, 2\n", r"not valid YAML at line"),
])
def test_malformed_spaces_name_file_and_key(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(SearchSpaceError, match=message) as e:
        load_search_space("dense", f)
    assert str(e.value).startswith(str(f)) and "\n" not in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(SearchSpaceError, match="search space file not found"):
        load_search_space("dense", tmp_path / "none.yaml")


def test_shared_hyperparameters_have_the_same_range_in_every_space():
    """A fair comparison: what every method has (optimizer, widths, ...) is searched over the same ranges."""
    spaces = {m: {p.key: p for p in load_search_space(m).params} for m in list_methods()}
    shared = set.intersection(*(set(RunConfig.allowed_keys(m)) for m in spaces))
    for key in sorted(shared):
        # A method that needs a value of the key (Method.requires, e.g. LpSGD's train.optimizer=sgd) fixes it.
        specs = {m: space.get(key) for m, space in spaces.items() if key not in get_method(m).requires}
        assert len({repr(s) for s in specs.values()}) == 1, (key, specs)
