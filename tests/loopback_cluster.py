"""A real multi-node Ray cluster on this machine for the cluster tests (issue 8): a head without CPUs (no trial
runs there, as in cluster.yaml), worker raylets started with `ray start --address`, token authentication on, and
a real `sparsebench server`. Workers can be removed (their raylet and every process under it killed) and the
server restarted on the same port and database.

Ray rewrites `--node-ip-address 127.0.0.1` to the host's own routable address (ray/_private/services.py,
`resolve_ip_for_localhost`), so the raylets listen on this machine's interface; the dashboard and the MLflow
server are bound to 127.0.0.1. Each worker raylet gets its own short --temp-dir: raylets sharing a session folder
share `runtime_resources`, whose cleanup by one node removes another's unpacked working_dir.

The head has its own --temp-dir and ray-client port too, and `stop` kills only this cluster's processes (those
naming its temp dirs or its GCS port, and everything under them), never `ray stop --force`: that stops every Ray
on the machine, a developer's own cluster or a second test session's included (issue 21).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient

from sparsebench.workflows import failpoints, tracking

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], env: dict, timeout: int = 300, check: bool = True, cwd=None) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if check and p.returncode:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


# ------------------------------------------------------------------ processes, read from /proc (Linux)
def processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            stat = (d / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])  # the command name may contain spaces: split after ')'
        out[int(d.name)] = (ppid, cmd)
    return out


def descendants(pid: int, table: dict[int, tuple[int, str]]) -> list[int]:
    kids = [p for p, (pp, _) in table.items() if pp == pid]
    return kids + [d for k in kids for d in descendants(k, table)]


def trial_workers(among: set[int] | None = None) -> list[int]:
    """Ray worker processes running a Tune function trainable (Ray sets their title to ray::ImplicitFunc...), of
    the processes `among` when given (a cluster's own: LoopbackCluster.trial_workers)."""
    return [p for p, (_, cmd) in processes().items()
            if cmd.startswith("ray::ImplicitFunc") and (among is None or p in among)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child that was not reaped yet is a zombie: dead for our purpose.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class LoopbackCluster:
    def __init__(self, base: Path):
        self.base = base
        self.home = base / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        # The environment the README tells a user to have: the suite's own interpreter (and its console scripts,
        # `ray` and `sparsebench`) first on PATH, as in an activated virtual environment. Ray's job supervisor and
        # worker processes inherit it from `ray start`; without it a job's `python` may be another interpreter.
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env = {**os.environ, "PATH": path, "HOME": str(self.home), "RAY_AUTH_MODE": "token",
                    "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_ADDRESS", None)
        self.gcs, self.dash_port, self.mlflow_port = free_port(), free_port(), free_port()
        self.workers: dict[str, Path] = {}   # node id -> its --temp-dir
        # Short: Ray's unix sockets live under it and their paths may not exceed 107 bytes.
        self.head_tmp = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))
        self.server: subprocess.Popen | None = None
        self.server_dir = base / "server"
        self.server_dir.mkdir(exist_ok=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs}"

    @property
    def session_dir(self) -> Path:
        """The head's session folder (Ray links session_latest to the newest)."""
        return self.head_tmp / "session_latest"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dash_port}"

    @property
    def mlflow(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.mlflow)

    # ------------------------------------------------------------------ nodes
    def start(self, workers: list[int]) -> "LoopbackCluster":
        # The README's first step: `ray start` refuses to start in token mode until the token exists.
        run([RAY, "get-auth-token", "--generate"], self.env)
        run([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(self.gcs), "--num-cpus", "0",
             "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dash_port), "--temp-dir", str(self.head_tmp),
             "--ray-client-server-port", str(free_port())], self.env)
        server = self._spawn_server()          # the server, the workers: all starting at once
        self.add_workers(workers)
        self._wait_for_server(server)
        return self

    def add_worker(self, cpus: int) -> str:
        return self.add_workers([cpus])[0]

    def add_workers(self, cpus: list[int]) -> list[str]:
        """Worker raylets with these CPU counts, started in parallel; returns their node ids."""
        # Short: Ray's unix sockets live under it and their paths may not exceed 107 bytes.
        tmps = [Path(tempfile.mkdtemp(prefix="rw", dir="/tmp")) for _ in cpus]
        procs = [subprocess.Popen([RAY, "start", "--address", self.address, "--node-ip-address", "127.0.0.1",
                                   "--num-cpus", str(n), "--temp-dir", str(tmp)], env=self.env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for n, tmp in zip(cpus, tmps)]
        for p in procs:
            out, _ = p.communicate(timeout=300)
            if p.returncode:
                raise AssertionError(f"ray start (worker) exited {p.returncode}:\n{out[-3000:]}")
        table = processes()
        ids = []
        for tmp in tmps:
            node_id = next(self._raylet_arg(cmd, "node_id") for _, (_, cmd) in table.items()
                           if "raylet/raylet " in cmd and f"--temp_dir={tmp} " in cmd + " ")
            self.workers[node_id] = tmp
            ids.append(node_id)
        return ids

    @staticmethod
    def _raylet_arg(cmd: str, name: str) -> str:
        return next(a.split("=", 1)[1] for a in cmd.split() if a.startswith(f"--{name}="))

    def raylet_pid(self, node_id: str) -> int:
        return next(p for p, (_, cmd) in processes().items() if "raylet/raylet " in cmd and f"--node_id={node_id}" in cmd)

    def remove_worker(self, node_id: str) -> list[int]:
        """The node dies as a machine would: its raylet and every process under it (trial workers, agents) are
        SIGKILLed at once. Returns the pids killed."""
        table = processes()
        raylet = self.raylet_pid(node_id)
        victims = descendants(raylet, table) + [raylet]
        for p in victims:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.workers.pop(node_id), ignore_errors=True)
        return victims

    def node_of(self, pid: int) -> str:
        """The node id of the raylet a worker process belongs to."""
        table = processes()
        while pid in table:
            ppid, cmd = table[pid]
            if "raylet/raylet " in cmd:
                return self._raylet_arg(cmd, "node_id")
            pid = ppid
        raise LookupError("no raylet above this process")

    def own_processes(self) -> list[int]:
        """This cluster's processes: every one whose command line names its temp dirs or its GCS address (the
        GCS server, raylets, dashboard, monitors, the ray-client proxy), and every process under them (agents,
        workers, job supervisors and drivers)."""
        table = processes()
        marks = [str(self.head_tmp), *map(str, self.workers.values()), f":{self.gcs} ", f":{self.gcs}\0"]
        roots = [p for p, (_, cmd) in table.items() if p != os.getpid()
                 and any(m in cmd + "\0" for m in marks)]
        return sorted({*roots, *(d for r in roots for d in descendants(r, table))})

    def trial_workers(self) -> list[int]:
        """This cluster's trial worker processes (another Ray on the machine may run trials of its own)."""
        return trial_workers(set(self.own_processes()))

    def stop(self) -> None:
        self.stop_server()
        for _ in range(3):    # a raylet may restart a worker while its siblings die: look again
            victims = self.own_processes()
            if not victims:
                break
            for p in victims:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.time() + 10
            while time.time() < deadline and any(alive(p) for p in victims):
                time.sleep(0.1)
        for tmp in [*self.workers.values(), self.head_tmp]:
            shutil.rmtree(tmp, ignore_errors=True)
        self.workers.clear()

    # ------------------------------------------------------------------ MLflow server
    def start_server(self, timeout: float = 120) -> None:
        self._wait_for_server(self._spawn_server(), timeout)

    def _spawn_server(self) -> subprocess.Popen:
        self.server = subprocess.Popen(
            [sys.executable, "-m", "sparsebench.workflows", "server", "--port", str(self.mlflow_port), "--workers", "2"],
            cwd=self.server_dir, env=self.env, stdout=open(self.server_dir / "server.log", "ab"), stderr=subprocess.STDOUT,
            start_new_session=True)
        return self.server

    def _wait_for_server(self, server: subprocess.Popen, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{self.mlflow}/health", timeout=2).read().strip() == b"OK":
                    return
            except OSError:
                if server.poll() is not None:
                    raise AssertionError(f"the MLflow server exited {server.returncode}:\n{self.server_log()[-3000:]}")
                time.sleep(0.5)
        raise AssertionError(f"the MLflow server did not come up in {timeout:.0f} s")

    def stop_server(self) -> None:
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGTERM)  # the server and its uvicorn workers
            self.server.wait(timeout=30)
        self.server = None

    def server_log(self) -> str:
        return (self.server_dir / "server.log").read_text(errors="replace")

    # ------------------------------------------------------------------ studies
    def search(self, *args: str, name: str, env: dict | None = None) -> subprocess.Popen:
        """`sparsebench search` as a driver process connected to the cluster (RAY_ADDRESS), logging to the
        server; its output goes to <base>/<name>.log (appended: a rerun adds to it)."""
        cmd = [sys.executable, "-m", "sparsebench.workflows", "search", "--tracking-uri", self.mlflow, *args]
        log = open(self.base / f"{name}.log", "a")
        return subprocess.Popen(cmd, cwd=REPO, env={**self.env, "RAY_ADDRESS": self.address, **(env or {})}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def log(self, name: str) -> str:
        return (self.base / f"{name}.log").read_text(errors="replace")

    def trial_runs(self, experiment: str) -> list:
        c = self.client()
        exp = c.get_experiment_by_name(experiment)
        if exp is None:
            return []
        return c.search_runs([exp.experiment_id], f"tags.`{tracking.TAG_KIND}` = 'trial'")

    def epochs(self, run_id: str) -> list[int]:
        """The steps at which the run logged `epoch`, in order (a duplicate would show twice)."""
        return sorted(m.step for m in self.client().get_metric_history(run_id, "epoch"))

    def wait_for(self, predicate, what: str, timeout: float = 180, driver: subprocess.Popen | None = None,
                 name: str = ""):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = predicate()
            if value:
                return value
            if driver is not None and driver.poll() is not None:
                raise AssertionError(f"the driver exited ({driver.returncode}) before {what}:\n{self.log(name)[-4000:]}")
            time.sleep(0.2)
        if driver is not None:  # the driver's threads, where it waits (workflows/cli.py registers SIGUSR2)
            os.kill(driver.pid, signal.SIGUSR2)
            time.sleep(2)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}" + (f":\n{self.log(name)[-12000:]}" if name else ""))

    def finish(self, driver: subprocess.Popen, name: str, timeout: float = 300) -> str:
        try:
            driver.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(driver.pid, signal.SIGKILL)
            raise AssertionError(f"the driver did not finish in {timeout:.0f} s:\n{self.log(name)[-4000:]}") from None
        out = self.log(name)
        assert driver.returncode == 0, f"the driver exited {driver.returncode}:\n{out[-4000:]}"
        return out


class Holds:
    """A test's side of workflows/failpoints.py: arm a study's trials to hold after `epoch`, see which are held
    and which checkpoints the driver registered, release them."""

    def __init__(self, folder: Path, epoch: int):
        self.folder, self.epoch = folder, epoch
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def env(self) -> dict:
        return {failpoints.DIR_VAR: str(self.folder), failpoints.EPOCH_VAR: str(self.epoch)}

    def _marks(self, suffix: str) -> dict[str, int]:
        return {p.name.removesuffix(suffix): int(p.read_text()) for p in self.folder.glob(f"*{suffix}")}

    def held(self) -> set[str]:
        """Trials held now (marked held, not yet released)."""
        released = {p.name.removesuffix(".release") for p in self.folder.glob("*.release")}
        return set() if "all" in released else set(self._marks(".held")) - released

    def saved(self) -> dict[str, int]:
        """Trial id -> epoch of the latest checkpoint the driver registered."""
        return self._marks(".saved")

    def reported(self) -> dict[str, int]:
        """Trial id -> epoch of the latest result the driver processed."""
        return self._marks(".reported")

    def ready(self, count: int):
        """The held trials whose hold-point checkpoint the driver registered, when there are `count`."""
        saved = self.saved()
        ready = {t for t in self.held() if saved.get(t) == self.epoch}
        return ready if len(ready) >= count else None

    def release(self, *trials: str) -> None:
        for t in trials or ("all",):
            (self.folder / f"{t}.release").touch()
