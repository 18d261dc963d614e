"""What a build was made with: the library's code version and the versions of the libraries that shape output."""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import metadata
from pathlib import Path

LIBRARIES = ("pyarrow", "jieba", "rjieba", "opencc", "py3langid", "mwparserfromhell", "trafilatura",
             "great-expectations", "prefect")


@cache
def code_version() -> str:
    """Hash of the library's source: changes whenever any code that shapes the output changes."""
    digest = hashlib.sha256()
    root = Path(__file__).parents[1]
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".txt", ".json"):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions
