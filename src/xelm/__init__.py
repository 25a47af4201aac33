"""xelm: cross-lingual expert language models (multilingual Branch-Train-Merge)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("xelm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
