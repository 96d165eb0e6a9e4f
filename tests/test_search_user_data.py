"""`sparsebench search --dataset PATH [--target COLUMN] [--test-dataset PATH]`: the study's identity holds the
file's sha256 (the same file elsewhere is the same study, a changed file a new one), and every bad file is
refused with exit 2 and one line, before anything starts or is written."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import ray

from sparsebench.workflows.cli import main
from sparsebench.workflows.search import SearchSettings, plan


def _table(n: int = 45) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    return pd.DataFrame({"klass": np.array(["a", "b", "c"])[y], "f1": rng.normal(size=n) + y, "f2": rng.normal(size=n)})


def _settings(tmp_path, dataset, **kw) -> SearchSettings:
    return SearchSettings(methods=("dense",), dataset=str(dataset), tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
                          storage=str(tmp_path / "rr"), **kw)


def test_study_identity_is_the_file_content(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    _table().to_csv(tmp_path / "wine.csv", index=False)
    _table().to_csv(tmp_path / "elsewhere" / "wine.csv", index=False)
    a = plan(_settings(tmp_path, tmp_path / "wine.csv", target="klass"))[0]
    b = plan(_settings(tmp_path, tmp_path / "elsewhere" / "wine.csv", target="klass"))[0]
    assert a.name == b.name and a.name.startswith("dense-wine.csv-")
    assert a.base["data.dataset"] == str(tmp_path / "wine.csv")  # absolute: trials run in their own folder
    _table().iloc[:-3].to_csv(tmp_path / "elsewhere" / "wine.csv", index=False)
    assert plan(_settings(tmp_path, tmp_path / "elsewhere" / "wine.csv", target="klass"))[0].name != a.name
    # the target column is part of the identity too; a built-in set's study name has no data.target key
    assert "data.target" not in plan(_settings(tmp_path, "iris"))[0].base


def test_relative_path_and_test_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _table().to_csv("train.csv", index=False)
    _table(15).to_csv("test.csv", index=False)
    study = plan(_settings(tmp_path, "train.csv", target="klass", test_dataset="test.csv"))[0]
    assert study.base["data.test_dataset"] == str(tmp_path / "test.csv")


def _bad(p, case):
    if case == "missing":
        return ["--dataset", "wine.csv"], "wine.csv: no such file or folder"
    if case == "unknown format":
        (p / "wine.xls").write_text("x")
        return ["--dataset", "wine.xls"], "wine.xls: unknown format '.xls'"
    if case == "target absent":
        _table().to_csv(p / "t.csv", index=False)
        return ["--dataset", "t.csv", "--target", "label"], "t.csv: no target column 'label' (columns: klass, f1, f2)"
    if case == "single class":
        _table().assign(f2="same").to_csv(p / "t.csv", index=False)  # default target: the last column
        return ["--dataset", "t.csv"], "t.csv: a single class ('same')"
    if case == "missing test file":
        _table().to_csv(p / "t.csv", index=False)
        return ["--dataset", "t.csv", "--target", "klass", "--test-dataset", "nope.csv"], "nope.csv: no such file"
    if case == "target on a built-in set":
        return ["--dataset", "digits", "--target", "x"], "--target is for a --dataset given as a file"
    if case == "unknown name":
        return ["--dataset", "wine_red"], "unknown dataset 'wine_red'; available: digits"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing", "unknown format", "target absent", "single class", "missing test file",
                                  "target on a built-in set", "unknown name"])
def test_bad_file_exits_2_with_one_line_and_writes_nothing(case, capsys, in_tmp_cwd):
    argv, message = _bad(in_tmp_cwd, case)
    before = sorted(in_tmp_cwd.iterdir())
    assert main(["search", "--methods", "dense", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sparsebench: error: ") and message in err, err
    assert not ray.is_initialized()
    assert sorted(in_tmp_cwd.iterdir()) == before  # no mlflow.db, no ray_results


def test_a_protocol_names_a_file_relative_to_itself(tmp_path):
    from sparsebench.workflows.protocol import ProtocolError, load_paper

    (tmp_path / "data").mkdir()
    _table().to_csv(tmp_path / "data" / "mine.csv", index=False)
    doc = ("paper: mine\ntitle: my data\narxiv: null\nexperiments:\n  - name: e\n    dataset: data/mine.csv\n"
           "    epochs: 1\n    seeds: 1\n    metric: test_acc\n    data: {data.target: klass}\n    methods:\n      dense: {}\n")
    (tmp_path / "mine.yaml").write_text(doc)
    (exp,) = load_paper(tmp_path / "mine.yaml").experiments
    assert exp.datasets == (str(tmp_path / "data" / "mine.csv"),)
    cfg = exp.cells("mine")[0].config()
    assert (cfg.data.dataset, cfg.data.target) == (str(tmp_path / "data" / "mine.csv"), "klass")
    (tmp_path / "mine.yaml").write_text(doc.replace("data/mine.csv", "data/gone.csv"))
    with pytest.raises(ProtocolError, match=r"mine.yaml: experiment e: dataset 'data/gone.csv': .*gone.csv: no such file"):
        load_paper(tmp_path / "mine.yaml")
