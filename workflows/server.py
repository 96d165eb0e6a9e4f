"""`sparsebench server`: an MLflow tracking server for studies that run on a cluster (issue 8; docs/design.md,
"MLflow layout": the driver creates experiments and runs, trials never do; SQLite has one writer).

    sparsebench server                                  SQLite mlflow.db + ./mlartifacts here, on 127.0.0.1:5000
    sparsebench server --backend-store-uri postgresql://USER@HOST/DB --host 0.0.0.0 --allowed-hosts mlflow.lab:5000

The search and reproduce drivers then log with `--tracking-uri http://HOST:PORT`. Artifacts (pruning curves,
tables, plots) go through the server (`--serve-artifacts`, stored under `--artifacts-destination`), so no worker or
driver needs a shared filesystem. Defaults are the safe ones: loopback only, MLflow's host-header and CORS
middleware left on. Binding to another interface is the user's explicit choice and gets a warning line: MLflow's
server has no authentication unless `--app-name basic-auth` is given, so put it behind a VPN or an authenticating
proxy. Credentials belong in the environment or `~/.pgpass`, never on the command line shown in logs: the printed
command masks a password in the store URI.
"""
from __future__ import annotations

import ipaddress
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

from .tracking import StoreError

# Backends a tracking server can persist to (SQLAlchemy URIs); an http(s) URI would be another server.
SQL_SCHEMES = {"sqlite": None, "postgresql": "psycopg2", "mysql": "pymysql", "mssql": "pyodbc"}
DRIVER_PACKAGES = {"psycopg2": "psycopg2-binary", "pymysql": "PyMySQL", "pyodbc": "pyodbc"}


def default_backend() -> str:
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def mask(uri: str) -> str:
    """The URI with any password replaced by ***, for printing."""
    return re.sub(r"(://[^/:@]+):[^/@]+@", r"\1:***@", uri)


def check_backend(uri: str) -> None:
    scheme = urlsplit(uri).scheme.split("+", 1)[0]
    if scheme not in SQL_SCHEMES:
        raise StoreError(f"--backend-store-uri {mask(uri)}: a tracking server needs a SQL database; allowed schemes: "
                         f"{', '.join(SQL_SCHEMES)} (e.g. sqlite:///mlflow.db on one machine, postgresql://... on a "
                         f"cluster)")
    if scheme == "sqlite":
        path = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
        if path is None or not path.parent.is_dir():
            raise StoreError(f"--backend-store-uri {uri}: expected sqlite:///<path to a database file> in an existing "
                             f"folder")
        return
    driver = urlsplit(uri).scheme.partition("+")[2] or SQL_SCHEMES[scheme]
    try:
        __import__(driver)
    except ImportError:
        package = DRIVER_PACKAGES.get(driver, driver)
        raise StoreError(f"--backend-store-uri {mask(uri)}: the {scheme} driver {driver!r} is not installed; "
                         f"pip install {package}") from None


def server_command(backend: str, artifacts: str, host: str, port: int, workers: int,
                   allowed_hosts: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
           "--serve-artifacts", "--artifacts-destination", artifacts,
           "--host", host, "--port", str(port), "--workers", str(workers)]
    if allowed_hosts:
        cmd += ["--allowed-hosts", allowed_hosts]
    return cmd
