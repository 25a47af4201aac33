"""The command line as a user meets it: help, version, and one-line errors with exit code 2."""

import json
import os
import subprocess
import sys

import pytest


def xelm(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "xelm", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_help_lists_every_command_group_and_each_group_its_commands():
    from xelm.cli import app

    groups = {g.name: g.typer_instance for g in app.registered_groups}
    commands = [c.name for c in app.registered_commands]
    out = xelm("--help").stdout
    for name in [*groups, *commands]:  # the help's overview names every command there is
        assert f"\n  {name} " in out, name
    for name, group in groups.items():
        sub = xelm(name, "--help")
        assert sub.returncode == 0
        for command in group.registered_commands:
            assert command.name in sub.stdout, (name, command.name)
    assert xelm("--version").stdout.startswith("xelm ")


def test_option_help_and_defaults_come_from_the_settings_classes():
    from xelm.allocate.tfidf import TfidfAllocationSpec
    from xelm.spec import describe

    out = " ".join(xelm("allocate", "tfidf", "--help").stdout.split())
    for field in ("svd_dims", "max_ratio", "workers"):
        assert describe(TfidfAllocationSpec, field) in out, field


def test_import_and_show(tmp_path):
    src = tmp_path / "docs.jsonl"
    src.write_text(
        "".join(
            json.dumps({"id": str(i), "lang": "de", "text": f"Text {i}"}) + "\n" for i in range(4)
        )
    )
    res = xelm("data", "import", str(src), "--out", str(tmp_path / "c"))
    assert res.returncode == 0, res.stderr
    assert "de" in xelm("data", "show", str(tmp_path / "c")).stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"lang": "en"}\n', "docs.jsonl:1: record has no string field 'text'"),
        ('{"lang": "xx", "text": "t"}\n', "docs.jsonl:1: field 'lang': unknown language code"),
    ],
)
def test_bad_input_is_one_line_exit_2_no_traceback_no_output(tmp_path, content, message):
    src = tmp_path / "docs.jsonl"
    src.write_text(content)
    res = xelm("data", "import", str(src), "--out", str(tmp_path / "out"))
    assert res.returncode == 2
    assert message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_config_key_and_missing_path(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("run_dir: x\ntokenizer:\n  vocab: 10\n")
    res = xelm("run", str(cfg))
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: {cfg}: tokenizer.vocab: unknown key"
    res = xelm("data", "import", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "no such file" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--k", "0,2"], "--k [0, 2]: give numbers of experts ≥ 1"),
        (["--k", "two"], "--k 'two': expected numbers separated by commas"),
        (["--methods", "kmeans"], "--methods: unknown kmeans"),
        (["--router", "tfidf"], "--router tfidf needs tfidf allocations"),
    ],
)
def test_sweep_rejects_bad_choices_before_running_anything(tmp_path, args, message):
    res = xelm(
        "sweep",
        "configs/tiny.yaml",
        "--out",
        str(tmp_path / "run"),
        *args,
        cwd=os.path.join(os.path.dirname(__file__), ".."),
    )
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
