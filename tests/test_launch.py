"""Launchers: worker processes survive a killed sibling, a re-run trains only what is missing,
Ray trains experts as tasks, and bad launcher input fails fast with one line."""

import threading
import time

import psutil
import pytest
from rich.console import Console

from xelm.config import TrainConfig
from xelm.errors import XelmError
from xelm.experts import BranchSpec, ExpertRecord, plan_experts
from xelm.launch import LaunchSpec, check_reachable, launch, worker_command
from xelm.monitor import ExpertsView
from xelm.spec import load_spec
from xelm.train.checkpoint import Checkpointer


def branch(tokens, split="proportional", match="updates", **train):
    config = TrainConfig(seq_len=32, micro_batch_size=4, checkpoint_every=5, **train)
    return BranchSpec(tokens=tokens, split=split, match=match, train=config)


def _checkpoints(work):
    return Checkpointer(work, TrainConfig()).complete()


def kill_worker_after_checkpoint(job, timeout=120):
    """Wait for the expert's first checkpoint, then SIGKILL the process training it."""
    work = job.out.with_name(job.out.name + ".work")
    deadline = time.time() + timeout
    while not _checkpoints(work):
        assert time.time() < deadline, "the expert never wrote a checkpoint"
        time.sleep(0.05)
    for proc in psutil.process_iter(["cmdline"]):
        if any(arg.endswith(f"{job.name}.yaml") for arg in proc.info["cmdline"] or []):
            proc.kill()
            return
    raise AssertionError(f"no worker process for {job.name}")


def test_killed_worker_leaves_the_others_intact_and_a_rerun_trains_only_it(branch_setup):
    root, seed, alloc = branch_setup
    out = root / "killed"
    # ~300 steps per expert: long enough to be killed mid-run after its first checkpoint
    jobs = plan_experts(seed, alloc, out, branch(600 * 4 * 32, "even", "batch"))
    spec = LaunchSpec(launcher="local", workers=2)
    result = {}
    runner = threading.Thread(
        target=lambda: result.update(first=launch(jobs, spec, out / "jobs", progress=False))
    )
    runner.start()
    kill_worker_after_checkpoint(jobs[0])
    runner.join()

    killed, survivor = result["first"]
    assert killed.status == "failed" and "SIGKILL" in killed.error
    assert survivor.status == "trained" and survivor.info.tokens == jobs[1].config.max_tokens
    assert not jobs[0].done and _checkpoints(jobs[0].out.with_name("expert_00.work"))
    survivor_info = (jobs[1].out / ExpertRecord.FILE).read_text()

    again = launch(jobs, spec, out / "jobs", progress=False)
    assert [o.status for o in again] == ["trained", "skipped"]
    assert again[0].info.resumed_at, "the killed expert resumed from its checkpoint"
    assert again[0].info.tokens == jobs[0].config.max_tokens
    assert (jobs[1].out / ExpertRecord.FILE).read_text() == survivor_info  # untouched


def test_ray_launcher_trains_experts_as_tasks(branch_setup):
    pytest.importorskip("ray")
    root, seed, alloc = branch_setup
    jobs = plan_experts(seed, alloc, root / "ray", branch(8 * 4 * 32, "even", "batch"))
    outcomes = launch(
        jobs, LaunchSpec(launcher="ray", workers=2), root / "ray" / "jobs", progress=False
    )
    assert [o.status for o in outcomes] == ["trained", "trained"]
    for o in outcomes:
        info = ExpertRecord.read(o.job.out)
        assert info.tokens == o.job.config.max_tokens and info.cluster == o.job.cluster


def test_sequential_launcher_and_the_live_view(branch_setup):
    root, seed, alloc = branch_setup
    jobs = plan_experts(seed, alloc, root / "seq", branch(8 * 4 * 32, "even", "batch"))
    view = ExpertsView(jobs)
    assert [view.status[j.cluster] for j in jobs] == ["waiting", "waiting"]
    outcomes = launch(jobs, LaunchSpec(), root / "seq" / "jobs", progress=False)
    assert [o.status for o in outcomes] == ["trained", "trained"]
    for job in jobs:
        view.set(job, "done")
    console = Console(width=200, record=True)
    console.print(view.table())
    text = console.export_text()
    for o in outcomes:  # each expert's row: done, all its steps
        row = next(line for line in text.splitlines() if o.job.name in line)
        assert "done" in row and f"{o.info.steps}/{o.info.steps}" in row


def test_multi_gpu_experts_run_under_accelerate_with_distinct_ports(tmp_path):
    one = worker_command(tmp_path / "expert_00.yaml", gpus=1, port=29500)
    assert one[1:5] == ["-m", "xelm", "train", "job"]
    a = worker_command(tmp_path / "expert_00.yaml", gpus=4, port=29500)
    b = worker_command(tmp_path / "expert_01.yaml", gpus=4, port=29501)
    assert "accelerate.commands.launch" in a and a[a.index("--num_processes") + 1] == "4"
    ports = {c[c.index("--main_process_port") + 1] for c in (a, b)}
    assert ports == {"29500", "29501"}


def test_bad_launcher_input_is_a_clear_error(branch_setup, lm_setup, tmp_path):
    from xelm.tokenizer import TokenizerSpec, train_tokenizer

    root, seed, alloc = branch_setup
    with pytest.raises(XelmError, match="unreachable"):
        check_reachable("127.0.0.1:1", timeout=2)
    with pytest.raises(XelmError, match="host:port"):
        check_reachable("nowhere")
    # a tokenizer with more tokens than the seed has embeddings
    train_tokenizer(
        lm_setup / "corpus", tmp_path / "big", TokenizerSpec(vocab_size=600, sample_chars=200_000)
    )
    with pytest.raises(XelmError, match="embeddings"):
        plan_experts(
            seed, alloc, tmp_path / "x", branch(8 * 4 * 32, tokenizer=str(tmp_path / "big"))
        )
    jobs = plan_experts(seed, alloc, tmp_path / "x", branch(8 * 4 * 32))
    assert len(jobs) == 2
    with pytest.raises(XelmError, match="workers: input should be greater than or equal to 1"):
        load_spec(LaunchSpec, values={"launcher": "local", "workers": 0})
    with pytest.raises(XelmError, match="unknown launcher 'slurm'; use one of sequential, local"):
        load_spec(LaunchSpec, values={"launcher": "slurm"})


def test_cli_reports_an_unreachable_ray_cluster_in_one_line(branch_setup):
    import os
    import subprocess
    import sys

    root, seed, alloc = branch_setup
    args = [
        "train",
        "experts",
        "--seed",
        str(seed),
        "--allocation",
        str(alloc),
        "--tokens",
        "4096",
        "--out",
        str(root / "cli"),
        "--launcher",
        "ray",
        "--address",
        "127.0.0.1:1",
        "--set",
        "seq_len=32",
        "--set",
        "micro_batch_size=4",
        "--quiet",
    ]
    res = subprocess.run(
        [sys.executable, "-m", "xelm", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
    )
    assert res.returncode == 2
    assert res.stderr.startswith("error: --address 127.0.0.1:1: Ray cluster unreachable")
    assert "Traceback" not in res.stderr and not (root / "cli").exists()


def test_ray_retries_an_expert_whose_worker_died(branch_setup):
    pytest.importorskip("ray")
    root, seed, alloc = branch_setup
    out = root / "ray-retry"
    jobs = plan_experts(seed, alloc, out, branch(600 * 4 * 32, "even", "batch"))
    # one expert at a time (2 CPUs each), so the one task running when a checkpoint appears
    # is the expert that wrote it
    spec = LaunchSpec(launcher="ray", workers=1, retries=1)
    result = {}
    runner = threading.Thread(
        target=lambda: result.update(outcomes=launch(jobs, spec, out / "jobs", progress=False))
    )
    runner.start()
    work = jobs[0].out.with_name("expert_00.work")
    deadline = time.time() + 120
    while not _checkpoints(work):
        assert time.time() < deadline, "expert_00 never wrote a checkpoint"
        time.sleep(0.05)
    tasks = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "ray::_ray_task" in " ".join(p.info["cmdline"] or [])
    ]
    assert len(tasks) == 1
    tasks[0].kill()
    runner.join()
    assert [o.status for o in result["outcomes"]] == ["trained", "trained"]
    assert result["outcomes"][0].info.resumed_at  # the retry resumed from the checkpoint


def test_an_allocation_with_an_empty_cluster_is_refused_before_training(branch_setup, tmp_path):
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    root, seed, alloc = branch_setup
    broken = tmp_path / "alloc"
    shutil.copytree(alloc, broken)
    table = pq.read_table(broken / "assignments.parquet")
    zeros = pa.array([0] * table.num_rows, type=table.schema.field("cluster").type)
    table = table.set_column(table.schema.get_field_index("cluster"), "cluster", zeros)
    pq.write_table(table, broken / "assignments.parquet")  # every document in cluster 0
    with pytest.raises(XelmError, match="cluster 1 has no training documents"):
        plan_experts(seed, broken, tmp_path / "x", branch(8 * 4 * 32))
