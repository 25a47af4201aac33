"""Fetching Debian packages (`apt-get download`) into the user's cache, and reading their files.

No root is needed to download once apt's package lists exist; reading the files streams the
package's data archive through `dpkg-deb --fsys-tarfile`, so nothing is unpacked to disk.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from xelm.errors import XelmError
from xelm.paths import cache_dir


def _need(tool: str, why: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise XelmError(f"`{tool}` not found: {why}")
    return path


def cached_deb(package: str, directory: Path) -> Path | None:
    found = sorted(directory.glob(f"{package}_*.deb"))
    return found[-1] if found else None


def deb_version(path: Path) -> str:
    """`libreoffice-help-ja_4%3a7.4.7-1+deb12u14_all.deb` -> `4:7.4.7-1+deb12u14`."""
    return urllib.parse.unquote(path.name.split("_")[1])


def download_debs(packages: list[str], directory: Path | None = None) -> dict[str, Path]:
    """Return {package: .deb path}, downloading only the packages not cached yet."""
    directory = directory or cache_dir("debs")
    missing = [p for p in packages if cached_deb(p, directory) is None]
    if missing:
        apt = _need(
            "apt-get", "the demo corpus is built from Debian packages; run on Debian/Ubuntu"
        )
        proc = subprocess.run(
            [apt, "download", "-q", *missing], cwd=directory, capture_output=True, text=True
        )
        if proc.returncode != 0:
            err = proc.stderr.strip().splitlines()
            detail = err[-1] if err else f"exit code {proc.returncode}"
            hint = (
                "apt's package lists are missing: run `apt-get update` (as root) and try again"
                if "Unable to locate" in proc.stderr or "has no installation candidate" in detail
                else "check the network access to the Debian mirror"
            )
            raise XelmError(f"apt-get download {' '.join(missing)} failed ({detail}); {hint}")
    paths = {p: cached_deb(p, directory) for p in packages}
    for pkg, path in paths.items():
        if path is None:
            raise XelmError(f"apt-get download did not produce {pkg}_*.deb in {directory}")
    return paths  # type: ignore[return-value]


def iter_deb_files(deb: Path, suffix: str = "") -> Iterator[tuple[str, bytes]]:
    """Yield (path inside the package, content) for regular files ending with `suffix`."""
    dpkg = _need("dpkg-deb", "install the `dpkg` package to read Debian packages")
    proc = subprocess.Popen([dpkg, "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(suffix):
                    f = tar.extractfile(member)
                    if f is not None:
                        yield member.name.removeprefix("./"), f.read()
    finally:
        proc.stdout.close()
        if proc.wait() not in (0, -13):  # -13: SIGPIPE when the caller stops early
            raise XelmError(f"{deb}: dpkg-deb could not read the package; delete it to refetch")
