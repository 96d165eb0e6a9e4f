"""The contract and the loop: method registry, run config, the Method base class, optimisers, metrics, Trainer."""
