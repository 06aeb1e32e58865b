"""The package's version (``version.txt``, which setup.cfg reads too)."""

from pathlib import Path

__version__ = (Path(__file__).parent / "version.txt").read_text().strip()
