"""Pure-torch building blocks: weight layers, MLP and wide ResNets, spectral and semi-masked layers, LpSGD,
correlation statistics, decorrelation, node pruning. Nothing here knows a method, a config or a dataset."""
