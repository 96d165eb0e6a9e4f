"""How far set_neuron's trained networks end from the closed form that sizes them to a budget (issue 16).

`SetNeuron.deployed_size` (methods/families/set_prune.py) predicts the network left after the last pruning round:
ER densities of the final shape plus the selection excess of the kept units (those of largest incoming |w| sum hold
more connections than average). For random configurations of the method's search space (search_spaces/
set_neuron.yaml: prune_every, prune_target, hidden shape, zeta, regrowth and initialisation), each sized to a
budget on digits, this prints the budget's relative error of (a) the pruning rounds applied to the untrained
network (what tests/test_budgets.py checks) and (b) the network after training all epochs (SET rewiring between
rounds, trained magnitudes), which is what a budget search measures.

    python benchmarks/set_neuron_budget_bias.py --configs 12 --seed 0 --epochs 12
"""
from __future__ import annotations

import argparse
import random
import statistics

import torch

from sparsebench.methods import RunConfig, Trainer, get_method, load_dataset
from sparsebench.methods.core import metrics


def untrained_rounds(cfg: RunConfig, info) -> int:
    """params_trainable after every pruning round applied to the freshly built network, no training between."""
    method = get_method("set_neuron")(cfg, info)
    model = method.make_model()
    opt = method.optimizer(model)
    for epoch in method.schedule(cfg):
        method.before_rewiring(model, opt, epoch)
    return int(metrics.params_trainable(model, opt))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    data = load_dataset(RunConfig.from_flat({"method": "dense"}).data, "cpu")
    cls, rng = get_method("set_neuron"), random.Random(a.seed)
    untrained, trained = [], []
    print("budget  hidden        every target zeta  init    untrained  trained")
    for _ in range(a.configs):
        flat = {"method": "set_neuron", "train.epochs": a.epochs, "model.prune_start": 1, "model.importance": "in",
                "model.prune_every": rng.choice([1, 2, 3]), "model.prune_target": rng.uniform(0.3, 0.7),
                "model.hidden": rng.choice([[256], [512, 256], [1000, 1000]]), "model.zeta": rng.uniform(0.05, 0.5),
                "model.regrow_init": rng.choice(["zero", "normal", "he_uniform"]), "train.lr": 0.05,
                "model.init": rng.choice(["torch", "normal"])}
        budget = rng.choice([2000, 8000, 32000])
        cfg = cls.size_to_budget(RunConfig.from_flat(flat), data.info, budget, "params_trainable")
        torch.manual_seed(0)
        u = untrained_rounds(cfg, data.info) / budget - 1
        t = Trainer(cfg, data=data).fit()[-1]["params_trainable"] / budget - 1
        untrained.append(u)
        trained.append(t)
        m = cfg.model
        print(f"{budget:6d}  {str(m.hidden):12s}  {m.prune_every:5d} {m.prune_target:6.2f} {m.zeta:4.2f}  "
              f"{m.init:6s}  {u:+9.1%}  {t:+7.1%}", flush=True)
    for name, xs in (("untrained", untrained), ("trained", trained)):
        print(f"{name}: {min(xs):+.1%} to {max(xs):+.1%}, median {statistics.median(xs):+.1%}, "
              f"{sum(abs(x) > 0.05 for x in xs)} of {len(xs)} more than 5% off")


if __name__ == "__main__":
    main()
