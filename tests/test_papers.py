"""Paper protocol files (workflows/papers/*.yaml) stay runnable: every cell builds a valid config."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from methods import RunConfig, list_datasets

PAPERS = sorted((Path(__file__).resolve().parents[1] / "workflows" / "papers").glob("*.yaml"))


@pytest.mark.parametrize("path", PAPERS, ids=lambda p: p.stem)
def test_every_cell_is_a_valid_config(path):
    doc = yaml.safe_load(path.read_text())
    assert doc["paper"] == path.stem and doc["arxiv"]
    for exp in doc["experiments"]:
        datasets = exp.get("datasets") or [exp["dataset"]]
        sweep = exp.get("sweep", {})
        assert len(sweep) <= 1, "one swept setting per experiment (one table row per value)"
        sweep_points = [{k: v} for k, values in sweep.items() for v in values] or [{}]
        for ds in datasets:
            assert ds in list_datasets(), (exp["name"], ds)
            for point in sweep_points:
                for arm, overrides in exp["methods"].items():
                    overrides = dict(overrides)
                    method = overrides.pop("method", arm)
                    RunConfig.from_flat({"method": method, "data.dataset": ds, "train.epochs": exp["epochs"],
                                         **exp.get("data", {}), **exp.get("common", {}), **overrides, **point})
        for cell in exp["published"]:
            assert cell["method"] in exp["methods"]
            assert cell.get("dataset", datasets[0]) in datasets, (exp["name"], cell)
            # `at:` locates a cell: a value of the swept setting, or a percentage of the arm's pruning curve.
            arm = {**exp.get("common", {}), **exp["methods"][cell["method"]]}
            for key, value in cell.get("at", {}).items():
                if key == "percent":
                    assert value in arm.get("train.prune_curve", []), (exp["name"], cell)
                else:
                    assert value in sweep.get(key, []), (exp["name"], cell)
            assert cell.get("baseline") is None or cell["baseline"] in exp["methods"]
            assert cell["value"] is None or 0 <= cell["value"] <= 1
            source = cell.get("source") or exp.get("published_source")
            assert source and "verified_against_paper" in {**exp, **cell}
