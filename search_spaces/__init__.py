"""Default search spaces, one YAML per method (`<method>.yaml`), shipped with the package as data.
Loaded and validated by workflows/search_space.py."""
