"""Outputs are written whole or not at all, never over a file, and what killed writers left is
cleaned up; model and tokenizer references are local folders or explicit hub ids."""

import os
import subprocess
import sys

import pytest

from xelm.errors import XelmError
from xelm.paths import atomic_dir, atomic_write_text, hf_ref


def test_an_existing_file_is_never_replaced_by_a_folder(tmp_path):
    target = tmp_path / "afile"
    target.write_text("keep me")
    with pytest.raises(XelmError, match="is a file, not a folder"), atomic_dir(target):
        pass
    assert target.read_text() == "keep me"
    with pytest.raises(XelmError, match="a part of the path is a file"), atomic_dir(target / "x"):
        pass
    with pytest.raises(XelmError, match="a part of the path is a file"):
        atomic_write_text(target / "x.json", "{}")
    assert target.read_text() == "keep me"


def test_a_killed_writers_leftovers_are_removed_by_the_next(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    stale = tmp_path / f".out.tmp-{dead}-abc123"
    stale.mkdir()
    (stale / "half.bin").write_bytes(b"x")
    old = tmp_path / f".out.old-{dead}"
    old.mkdir()
    mine = tmp_path / f".out.tmp-{os.getpid()}-live"  # a live writer's: kept
    mine.mkdir()
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "done.txt").write_text("ok")
    assert not stale.exists() and not old.exists() and mine.exists()
    assert (tmp_path / "out" / "done.txt").read_text() == "ok"


def test_missing_local_paths_are_errors_not_hub_lookups(tmp_path, monkeypatch):
    with pytest.raises(XelmError, match="no such model folder"):
        hf_ref(tmp_path / "missing")
    with pytest.raises(XelmError, match="no such tokenizer folder"):
        hf_ref("./missing", "tokenizer")
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(XelmError, match="no such model folder"):
        hf_ref("runs/seed")  # its first part is a folder here: a local path
    assert hf_ref("hf:facebook/xglm-564M") == ("facebook/xglm-564M", False)
    assert hf_ref("facebook/xglm-564M") == ("facebook/xglm-564M", False)
    assert hf_ref(tmp_path) == (str(tmp_path), True)


def test_broken_or_pickled_weights_are_refused_with_the_folder_named(lm_setup, tmp_path):
    from xelm.models import build_model, load_model, save_model
    from xelm.tokenizer import load_tokenizer

    tok = load_tokenizer(lm_setup / "tok")
    folder = save_model(build_model("tiny", tok, 32), tok, tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    with pytest.raises(XelmError, match="the weights changed since xelm wrote them"):
        load_model(folder)  # xelm's own folders carry their weights' hashes
    (folder / "xelm_weights.json").unlink()  # as a model from elsewhere
    with pytest.raises(XelmError, match=f"{folder}: cannot load a causal LM"):
        load_model(folder)
    weights.unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not even a pickle")
    with pytest.raises(XelmError, match="no file named model.safetensors"):
        load_model(folder)


def test_records_keep_working_when_used_from_another_directory(branch_setup, tmp_path, monkeypatch):
    """An allocation made with a relative corpus path, then read from elsewhere."""
    import shutil

    from xelm.allocate.allocation import Allocation
    from xelm.allocate.typology import TypologySpec, allocate_typology

    _, _, alloc = branch_setup
    project = tmp_path / "project"
    shutil.copytree(Allocation(alloc).corpus, project / "corpus")
    monkeypatch.chdir(project)
    allocate_typology("corpus", "alloc", TypologySpec(k=2))
    moved = tmp_path / "moved"
    shutil.move(project, moved)
    monkeypatch.chdir(tmp_path)
    record = Allocation(moved / "alloc")
    assert record.record.settings.corpus == "../corpus"
    assert record.corpus == moved / "corpus" and (record.corpus / "manifest.json").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_worker_dies_with_its_parent_even_when_the_parent_is_killed(tmp_path):
    """The TF-IDF allocation's embedding workers call `die_with_parent`: a SIGKILLed run leaves
    no worker behind."""
    import signal
    import time

    child_pid = tmp_path / "child.pid"
    child = (
        "from xelm.paths import die_with_parent; die_with_parent()\n"
        f"open({str(child_pid)!r}, 'w').write(str(__import__('os').getpid()))\n"
        "import time; time.sleep(120)"
    )
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', {child!r}])\ntime.sleep(120)",
        ]
    )
    deadline = time.time() + 120
    while not child_pid.exists() or not child_pid.read_text():  # its death signal is set
        assert time.time() < deadline
        time.sleep(0.05)
    pid = int(child_pid.read_text())
    os.kill(pid, 0)  # alive
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError("the worker outlived its killed parent")
