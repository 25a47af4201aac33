"""One live view of all experts' training, read from their metrics files.

Every training run appends JSONL metrics (`OUT.work/metrics.jsonl` while it runs, `OUT/` once
finished), so the same view works whether the experts train in this process or in worker
processes: the launcher only says which are waiting, running, done or failed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from xelm.experts import ExpertJob

STATUS_STYLE = {"waiting": "dim", "running": "cyan", "done": "green", "failed": "bold red"}


def latest_metrics(out: Path) -> dict:
    """Total steps and the last logged step of a run (finished or in progress)."""
    path = (
        out / "metrics.jsonl"
        if out.exists()
        else out.with_name(out.name + ".work") / ("metrics.jsonl")
    )
    found: dict = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line being written right now
            continue
        if record.get("event") == "start":
            found["steps"] = record["steps"]
            found["tokens_per_step"] = record["tokens_per_step"]
        elif "loss" in record:
            found.update(record)
    return found


def short_languages(langs: list[str], n: int = 5) -> str:
    """An expert's languages for a table cell: its main ones (clusters list languages by
    document count) and how many stray others, e.g. "ru zh ja vi ko +1"."""
    more = f" +{len(langs) - n}" if len(langs) > n else ""
    return " ".join(langs[:n]) + more


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ExpertsView:
    """A rich table, one row per expert: status, steps, tokens, loss, tokens/s, ETA."""

    def __init__(self, jobs: list[ExpertJob], enabled: bool = True, console: Console | None = None):
        self.jobs = jobs
        self.status = {job.cluster: "waiting" for job in jobs}
        self.enabled = enabled
        self.console = console
        self.start = time.perf_counter()
        self.live: Live | None = None

    def set(self, job: ExpertJob, status: str) -> None:
        self.status[job.cluster] = status

    def table(self) -> Table:
        elapsed = _duration(time.perf_counter() - self.start)
        table = Table(title=f"experts ({elapsed})", title_justify="left")
        for col in ("expert", "languages", "status", "steps", "tokens", "loss", "tok/s", "ETA"):
            table.add_column(col, justify="left" if col in ("expert", "languages") else "right")
        for job in self.jobs:
            m = latest_metrics(job.out)
            status = self.status[job.cluster]
            steps = f"{m.get('step', 0)}/{m['steps']}" if "steps" in m else ""
            eta = ""
            if status == "running" and m.get("tokens_per_s") and "steps" in m:
                left = (m["steps"] - m.get("step", 0)) * m["tokens_per_step"]
                eta = _duration(left / m["tokens_per_s"])
            table.add_row(
                job.name,
                short_languages(job.languages),
                f"[{STATUS_STYLE[status]}]{status}",
                steps,
                f"{m['tokens']:,}" if "tokens" in m else "",
                f"{m['loss']:.3f}" if "loss" in m else "",
                f"{m['tokens_per_s']:,.0f}" if "tokens_per_s" in m else "",
                eta,
            )
        return table

    def __enter__(self) -> ExpertsView:
        if self.enabled:
            self.live = Live(
                get_renderable=self.table,
                console=self.console,
                refresh_per_second=2,
                transient=True,
            )
            self.live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.stop()
