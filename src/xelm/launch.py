"""Launchers: where the planned experts train. Experts are independent jobs (embarrassingly
parallel), so a launcher only decides where each job runs:

- `sequential`: one after another in this process;
- `local`: N worker processes on this host (a thread pool waiting on one `xelm train job FILE`
  subprocess per expert), CPU threads split between them, GPUs assigned per worker slot; an
  expert with several GPUs runs under `accelerate launch` with its slot's rendezvous port;
- `ray`: one Ray task per expert with declared CPU/GPU resources and retries, on a local
  `ray.init` or a running cluster (`--address`).

Every launcher writes the jobs to `OUT/jobs/expert_XX.yaml` first (the same files a SLURM array
could run), skips finished experts (`xelm_expert.json` exists) and resumes interrupted ones from
their last checkpoint, so re-running after a crash trains only what is missing.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import field_validator

from xelm.errors import XelmError
from xelm.experts import ExpertJob, ExpertRecord, train_expert, write_job
from xelm.monitor import ExpertsView
from xelm.spec import Spec, no_effect, one_of


class LaunchSpec(Spec):
    """Where the experts train; none of it changes the trained experts."""

    launcher: str = no_effect("sequential")
    """sequential: in this process; local: worker processes; ray: Ray tasks"""
    workers: int = no_effect(2, ge=1)
    """experts trained at once (local; ray: sets the default CPUs per expert)"""
    gpus_per_expert: int = no_effect(0, ge=0)
    """GPUs per expert; more than 1 runs each expert under `accelerate launch`"""
    cpus_per_expert: int | None = no_effect(None, ge=1)
    """CPU threads per expert (default: this host's cores / workers)"""
    address: str | None = no_effect(None)
    """ray: a running cluster (host:6379, ray://host:10001 or auto); default: a local one"""
    retries: int = no_effect(2, ge=0)
    """ray: retries of a task whose worker died (or hit an OS/runtime error)"""
    port: int = no_effect(29500, ge=1, le=65535)
    """first rendezvous port of multi-GPU experts; worker slot i uses port + i"""

    @field_validator("launcher")
    @classmethod
    def _known(cls, name: str) -> str:
        return one_of(name, LAUNCHERS, "launcher")

    def threads(self) -> int:
        return self.cpus_per_expert or max(1, (os.cpu_count() or 1) // self.workers)


@dataclass
class Outcome:
    job: ExpertJob
    status: Literal["trained", "skipped", "failed", "done"]  # done: found finished, not launched
    info: ExpertRecord | None = None  # the finished expert's record
    error: str | None = None


def launch(
    jobs: list[ExpertJob], spec: LaunchSpec, job_dir: str | Path, progress: bool = True
) -> list[Outcome]:
    """Train every job that is not finished yet with the chosen launcher; never raises for a
    failed expert (the outcomes say which failed and why), so the others' results stand."""
    if spec.launcher == "ray" and spec.address:
        check_reachable(spec.address)  # before anything is written
    if spec.launcher != "sequential" and not any(j.config.threads for j in jobs):
        jobs = [_with_threads(j, spec.threads()) for j in jobs]
    files = {j.cluster: write_job(j, job_dir) for j in jobs}
    outcomes = {j.cluster: Outcome(j, "skipped", j.info()) for j in jobs if j.done}
    todo = [j for j in jobs if not j.done]
    view = ExpertsView(jobs, enabled=progress)
    for j in outcomes.values():
        view.set(j.job, "done")
    with view:
        outcomes |= LAUNCHERS[spec.launcher](todo, files, spec, Path(job_dir), view)
    return [outcomes[j.cluster] for j in jobs]


def _run_sequential(todo, files, spec: LaunchSpec, job_dir: Path, view) -> dict[int, Outcome]:
    outcomes = {}
    for job in todo:
        view.set(job, "running")
        outcomes[job.cluster] = Outcome(job, "trained", train_expert(job, progress=False))
        view.set(job, "done")
    return outcomes


def _with_threads(job: ExpertJob, threads: int) -> ExpertJob:
    return job.replace(config=job.config.replace(threads=threads))


# ---------------------------------------------------------------------------------------------
# local: worker processes on this host
# ---------------------------------------------------------------------------------------------


def worker_command(job_file: Path, gpus: int, port: int) -> list[str]:
    """The command one worker runs: `xelm train job FILE`, under `accelerate launch` when the
    expert spans several GPUs (each concurrent expert with its own rendezvous port)."""
    xelm = ["-m", "xelm", "train", "job", str(job_file), "--quiet"]
    if gpus <= 1:
        return [sys.executable, *xelm]
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(gpus),
        "--main_process_port",
        str(port),
        *xelm,
    ]


def _run_local(todo, files, spec: LaunchSpec, job_dir: Path, view) -> dict[int, Outcome]:
    slots: queue.Queue[int] = queue.Queue()
    for slot in range(spec.workers):
        slots.put(slot)

    def run(job: ExpertJob) -> Outcome:
        slot = slots.get()
        try:
            env = {**os.environ, "OMP_NUM_THREADS": str(job.config.threads or spec.threads())}
            if spec.gpus_per_expert:
                first = slot * spec.gpus_per_expert
                gpus = range(first, first + spec.gpus_per_expert)
                env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
            cmd = worker_command(files[job.cluster], spec.gpus_per_expert, spec.port + slot)
            log = job_dir / f"{job.name}.log"
            view.set(job, "running")
            with log.open("w") as fh:
                code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
            if code == 0 and job.done:
                view.set(job, "done")
                return Outcome(job, "trained", job.info())
            view.set(job, "failed")
            return Outcome(job, "failed", error=_failure(code, log))
        finally:
            slots.put(slot)

    with ThreadPoolExecutor(spec.workers, thread_name_prefix="expert") as pool:
        return {o.job.cluster: o for o in pool.map(run, todo)}


def _failure(code: int, log: Path) -> str:
    """Why a worker failed, in one line: the signal that killed it, or its last error line."""
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    last = (errors or lines or [f"exit code {code}"])[-1]
    return f"{last.strip()} (log: {log})"


# ---------------------------------------------------------------------------------------------
# ray: one task per expert
# ---------------------------------------------------------------------------------------------


def _ray_task(job_dict: dict, threads: int, gpus: int, port: int, job_file: str) -> dict:
    """Runs on a Ray worker: train one expert (resuming its checkpoints after a retry)."""
    job = ExpertJob.model_validate(job_dict)
    if gpus > 1:  # several GPUs for one expert: its own accelerate launch inside the task
        subprocess.run(worker_command(Path(job_file), gpus, port), check=True)
        return job.info()
    import torch

    torch.set_num_threads(threads)
    return train_expert(job, progress=False)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a wrong cluster address (ray.init would keep retrying for minutes)."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise XelmError(
            f"--address {address!r}: expected host:port (e.g. 10.0.0.1:6379 or "
            "ray://10.0.0.1:10001) or auto"
        )
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise XelmError(
            f"--address {address}: Ray cluster unreachable ({e.strerror or e}); "
            "start one with `ray start --head`, or drop --address to run Ray "
            "on this machine"
        ) from None


def _run_ray(
    todo: list[ExpertJob], files: dict[int, Path], spec: LaunchSpec, job_dir: Path, view
) -> dict[int, Outcome]:
    try:
        import ray
    except ImportError:
        raise XelmError("--launcher ray needs Ray: pip install 'xelm[ray]'") from None
    import logging

    if spec.address:
        try:
            ray.init(address=spec.address, logging_level=logging.WARNING, log_to_driver=False)
        except ConnectionError as e:
            raise XelmError(
                f"--address {spec.address}: {e}. Clusters started by `ray start` (Ray ≥ 2.59) "
                "want a token: export RAY_AUTH_MODE=token, with the cluster's token in "
                "~/.ray/auth_token or RAY_AUTH_TOKEN (`ray get-auth-token` on the head node)"
            ) from None
    else:
        ray.init(
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    try:
        threads = spec.threads()
        task = ray.remote(_ray_task).options(
            num_cpus=threads,
            num_gpus=spec.gpus_per_expert,
            max_retries=spec.retries,
            retry_exceptions=[OSError, RuntimeError],  # not xelm's own errors: bad input
        )
        refs = {}
        for i, job in enumerate(todo):
            ref = task.remote(
                job.to_dict(),
                job.config.threads or threads,
                spec.gpus_per_expert,
                spec.port + i,
                str(files[job.cluster]),
            )
            refs[ref] = job
        outcomes, pending = {}, list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            job = refs[ready[0]]
            try:
                outcomes[job.cluster] = Outcome(job, "trained", ray.get(ready[0]))
            except ray.exceptions.RayError as e:
                lines = [line for line in str(e).splitlines() if line.strip()]
                outcomes[job.cluster] = Outcome(job, "failed", error=lines[-1] if lines else "?")
        return outcomes
    finally:
        ray.shutdown()


# The launchers by name: each trains the jobs not done yet and returns their outcomes.
LAUNCHERS = {"sequential": _run_sequential, "local": _run_local, "ray": _run_ray}
