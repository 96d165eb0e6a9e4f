"""sparsebench workflows: Ray Tune + Optuna searches over `methods`, MLflow tracking, pandas tables.

Imports `methods`; `methods` never imports this package.
"""
