"""The network a final run keeps: a trial's final checkpoint holds its trained model (trainable.save_model), the
driver's MlflowTrialCallback logs it through MLflow's PyTorch flavour, and `mlflow.pytorch.load_model(
"runs:/<id>/model")` gives back a network with the run's logged test accuracy on the same test data, sparse
layers (SparseLinear's CSR views), spectral and Lp-sphere layers included. Read back from a real SQLite store."""
from __future__ import annotations

from types import SimpleNamespace

import mlflow
import mlflow.pytorch
import pytest
import torch
from ray import tune

from sparsebench.methods import Trainer, list_methods, metrics
from sparsebench.methods.core.train import evaluation_data
from sparsebench.methods.nn.sparse_linear import SparseLinear
from sparsebench.workflows import tracking
from sparsebench.workflows.trainable import EXAMPLE_ROWS, MODEL_FILE, save_model
from sparsebench.workflows.trial import MlflowTrialCallback

from .conftest import small_config

CASES = {"dense": {}, "set_mask": {"method": "set", "model.sparse_compute": "mask"},
         # epsilon 1: the test's small layers stay below the density where sparse storage outgrows dense (refused)
         "set_sparse": {"method": "set", "model.sparse_compute": "sparse", "model.epsilon": 1.0},
         "spectral": {}, "lp_sphere": {}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating its tables takes seconds); each case has its own parent run."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'm.db'}"
    c = tracking.client(uri)
    return uri, c, tracking.get_or_create_experiment(c, "reproduce/search-digits")


@pytest.mark.parametrize("case", list(CASES))
def test_a_final_runs_model_loads_back_with_its_logged_test_accuracy(tmp_path, digits, store, case):
    flat = dict(CASES[case])
    cfg = small_config(flat.pop("method", case), **{"train.epochs": 1, **flat})
    tr = Trainer(cfg, data=digits)
    tr.fit()
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    save_model(tr, folder)

    uri, c, exp_id = store
    parent = tracking.start_parent_run(c, exp_id, f"study-{case}", "best_configs", tags={}, params={})
    cb = MlflowTrialCallback(uri, "reproduce/search-digits", f"study-{case}", stage="final", decode=lambda x: x,
                             tags={}, max_epochs=0, echo=False, log_models=True)
    trial = SimpleNamespace(trial_id="t1", config=cfg.flat(), last_result=tr.history[-1],
                            checkpoint=tune.Checkpoint.from_directory(str(folder)))
    cb.on_trial_start(0, [], trial)
    cb.on_trial_result(0, [], trial, dict(tr.history[-1]))
    cb.on_trial_complete(0, [], trial)

    (run,) = tracking.children(c, exp_id, parent)
    assert run.info.status == "FINISHED"
    model = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
    if case == "set_sparse":
        assert any(isinstance(m, SparseLinear) for m in model.modules())
    # The inputs rebuilt from the config in the model's metadata, as docs/tracking.md tells a user to.
    info = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model")
    data = evaluation_data(type(cfg).from_flat(info.metadata["sparsebench_config"]))
    assert torch.equal(data.x_test, tr.data.x_test)
    assert metrics.accuracy(model, data.x_test, data.y_test).item() == run.data.metrics["test_acc"]
    # Signature and input example: the first test inputs, shape (-1, C, H, W) for digits.
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, *digits.info.input_shape]
    assert list(info.signature.outputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, digits.info.num_classes]
    assert info.saved_input_example_info["type"] == "ndarray"
    assert len(torch.load(folder / "input_example.pt")) == EXAMPLE_ROWS


@pytest.mark.parametrize("method", list_methods())
def test_the_saved_network_of_every_method_is_the_one_measured_last(tmp_path, digits, method):
    """What trainable.save_model writes and the driver reads back (pickled whole) gives the last epoch's test_acc:
    no method changes the network after its last measurement (SET rewiring, neuron pruning, the spectral filter's
    shrinking all happen between epochs only)."""
    tr = Trainer(small_config(method, **{"train.epochs": 2}), data=digits)
    tr.fit()
    save_model(tr, tmp_path)
    model = torch.load(tmp_path / MODEL_FILE, map_location="cpu", weights_only=False)
    assert metrics.accuracy(model, tr.data.x_test, tr.data.y_test).item() == tr.history[-1]["test_acc"]
