"""One module per source family; each registers its datasets on import (methods/data/registry.py).

Imported in this order so that `list_datasets()` groups the families as before: the image sets first (MNIST,
Fashion-MNIST, digits), then scikit-feature, scikit-learn's tabular sets, CIFAR-10, Tiny ImageNet and the UCI sets.
"""
from . import idx, mat, sklearn, cifar, tiny_imagenet, uci  # noqa: F401  (registration on import)

SOURCE_MODULES = (idx, mat, sklearn, cifar, tiny_imagenet, uci)
