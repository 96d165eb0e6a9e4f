"""A paper's results table (`results/<paper>/table.csv` and `table.md`): every cell of every experiment with its
published value and source, the measured mean +- std (n), the difference, a verdict, and where and how long it ran.

Pure pandas, no MLflow: the rows come from `repro_table.reproduction_table` plus the runs' records. The CSV is the
record; the Markdown is rendered from the CSV text alone (`render_markdown(*parse_csv(text))`), so a test can
re-render every committed table and compare it byte for byte. The CSV starts with `# key: value` lines (title,
command, settings) that the Markdown shows above the table.

The verdict rule (docs/reproduce.md, "Verdicts"):
- no finished run: "not run", or for a GPU experiment "needs GPU (est. H GPU-h)";
- no published number (none published, or published without a number): "no published value";
- fewer seeds than the protocol asks: "incomplete (n of N seeds)";
- no tolerance in the protocol: "no tolerance stated";
- |measured mean - published| <= tolerance: "within tolerance", otherwise "not reproduced".
"""
from __future__ import annotations

import io
import math
from typing import Any

import pandas as pd

from .protocol import Experiment
from .repro_table import RunRecord, reproduction_table

RESULT_COLUMNS = ["experiment", "dataset", "setting", "arm", "quantity", "published", "source", "measured", "std", "n",
                  "seeds", "difference", "tolerance", "verdict", "weight_sparsity", "gpu_hours", "commit", "hardware", "wall_s"]
HEADER_KEYS = ("title", "command", "settings")
_TEXT = ("experiment", "dataset", "setting", "arm", "quantity", "source", "verdict", "commit", "hardware")
_EPS = 1e-12   # a difference equal to the tolerance is within it (floating-point sums of seeds)


def verdict(published: float | None, measured: float | None, n: int, seeds: int, tolerance: float | None,
            gpu_hours: float | None = None) -> str:
    """The verdict of one row (module docstring); `gpu_hours` is the row's estimate when it needs a GPU."""
    if n == 0 or measured is None:
        return f"needs GPU (est. {gpu_hours:.1f} GPU-h)" if gpu_hours else "not run"
    if published is None:
        return "no published value"
    if n < seeds:
        return f"incomplete ({n} of {seeds} seeds)"
    if tolerance is None:
        return "no tolerance stated"
    return "within tolerance" if abs(measured - published) <= tolerance + _EPS else "not reproduced"


def _nan_none(v: Any) -> Any:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _joined(values) -> str:
    return "; ".join(sorted({v for v in values if v}))


def experiment_rows(exp: Experiment, records: list[RunRecord], seeds: int) -> list[dict[str, Any]]:
    """The rows of one experiment: `reproduction_table`'s, with the verdict, the GPU estimate of the cell (all its
    seeds) and the commits, hardware and summed wall time of the runs that made it."""
    table = reproduction_table(exp, records)
    by_cell: dict[tuple[str, str, str], list[RunRecord]] = {}
    for r in records:
        setting = f"{exp.sweep_key}={r.sweep}" if exp.sweep_key else ""
        by_cell.setdefault((r.dataset, setting, r.arm), []).append(r)
    gpu = exp.gpu_hours * seeds if exp.gpu_hours else None
    rows = []
    for row in table.to_dict("records"):
        recs = by_cell.get((row["dataset"], row["setting"], row["arm"]), [])
        published, measured = _nan_none(row["published"]), _nan_none(row["measured"])
        tol, n = _nan_none(row["tolerance"]), int(row["n"])
        walls = [r.wall_s for r in recs if r.wall_s is not None]
        rows.append({
            "experiment": exp.name, "dataset": row["dataset"], "setting": row["setting"], "arm": row["arm"],
            "quantity": row["quantity"], "published": published, "source": row["source"], "measured": measured,
            "std": _nan_none(row["std"]), "n": n, "seeds": seeds, "difference": _nan_none(row["difference"]),
            "tolerance": tol, "verdict": verdict(published, measured, n, seeds, tol, gpu),
            "weight_sparsity": _nan_none(row["weight_sparsity"]), "gpu_hours": gpu,
            "commit": _joined(r.commit for r in recs), "hardware": _joined(r.hardware for r in recs),
            "wall_s": sum(walls) if walls else None})
    return rows


def to_csv(rows: list[dict[str, Any]], header: dict[str, str]) -> str:
    """The CSV text: `# key: value` header lines, then one line per row (raw numbers; empty when unknown)."""
    lines = [f"# {k}: {' '.join(str(header.get(k, '')).split())}\n" for k in HEADER_KEYS]
    return "".join(lines) + pd.DataFrame(rows, columns=RESULT_COLUMNS).to_csv(index=False, lineterminator="\n")


def parse_csv(text: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """(rows, header) of a results CSV written by `to_csv`."""
    lines = text.splitlines(keepends=True)
    header: dict[str, str] = {}
    while lines and lines[0].startswith("# "):
        key, _, value = lines.pop(0)[2:].rstrip("\n").partition(": ")
        header[key] = value
    df = pd.read_csv(io.StringIO("".join(lines)), keep_default_na=False, na_values=[""])
    for col in _TEXT:
        df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str)
    return df, header


def _num(v: Any, digits: int = 4, sign: bool = False) -> str:
    v = _nan_none(v)
    if v is None:
        return ""
    return f"{round(float(v), digits) + 0.0:+.{digits}f}" if sign else f"{float(v):.{digits}f}"


def _duration(seconds: Any) -> str:
    s = _nan_none(seconds)
    if s is None:
        return ""
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _cell(r: dict[str, Any]) -> str:
    dataset = "" if r["dataset"] == r["experiment"] else r["dataset"]   # "mnist / dense", not "mnist / mnist / dense"
    return " / ".join(x for x in (r["experiment"], dataset, r["setting"], r["arm"]) if x)


def budget_line(df: pd.DataFrame) -> str:
    """What the measured rows cost and what the unmeasured GPU rows are estimated to cost."""
    # One row per cell (its first, the experiment's metric): a cell's other rows (a gain over a baseline arm, a
    # maximum) come from the same runs and would count them twice.
    df = df.drop_duplicates(subset=["experiment", "dataset", "setting", "arm"], keep="first")
    runs, planned = int(df["n"].sum()), int(df["seeds"].sum())
    wall = float(df["wall_s"].fillna(0).sum())
    todo = df[(df["n"] < df["seeds"]) & df["gpu_hours"].notna()]
    gpu = float((todo["gpu_hours"] * (todo["seeds"] - todo["n"]) / todo["seeds"]).sum()) if len(todo) else 0.0
    return (f"Compute budget: {runs} of {planned} runs measured, {_duration(wall) or '0 s'} of run wall time in all; "
            f"GPU cells not measured: {gpu:.1f} GPU-hours estimated.")


def render_markdown(df: pd.DataFrame, header: dict[str, str]) -> str:
    """The Markdown table of a parsed results CSV; deterministic, so that a committed table can be re-rendered."""
    out = [f"# {header.get('title', '')}", "", "Produced by:", "", "```bash", header.get("command", ""), "```", "",
           budget_line(df) + (f" Settings: {header['settings']}." if header.get("settings") else ""), "",
           "Verdict: within tolerance when |measured mean - published| <= tolerance over the protocol's seeds "
           "(docs/reproduce.md, \"Verdicts\").", "",
           "| cell | quantity | published | source | measured (n) | difference | tolerance | verdict | weight sparsity | "
           "commit | hardware | wall time |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in df.to_dict("records"):
        measured = ""
        if _nan_none(r["measured"]) is not None:
            std = _nan_none(r["std"])
            measured = _num(r["measured"]) + (f" ± {_num(std)}" if std is not None else "") + f" ({int(r['n'])})"
        cells = [_cell(r), r["quantity"], _num(r["published"]) or "none", r["source"], measured,
                 _num(r["difference"], sign=True), _num(r["tolerance"]), r["verdict"], _num(r["weight_sparsity"], 3),
                 r["commit"], r["hardware"], _duration(r["wall_s"])]
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    if (df["verdict"] == "not reproduced").any():
        # The measured analysis of every miss is written by hand beside the table (results/<paper>/analysis.md).
        out += ["", f"{int((df['verdict'] == 'not reproduced').sum())} cell(s) not reproduced: the measured analysis "
                    "of each is in [analysis.md](analysis.md)."]
    return "\n".join(out) + "\n"
