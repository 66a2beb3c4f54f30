"""Lay the package out as installed, for mkdocstrings (griffe) to read statically.

``pyproject.toml`` maps folders into ``nas`` (``nas.hardware`` is ``hardware/``, ...), so
no folder of the checkout is named after those modules, and griffe, which finds modules
by their folders (it reads an editable install's ``MAPPING`` only as top-level folders),
finds ``nas`` but not ``nas.hardware``. This hook builds ``build/docs-packages/nas``: a
folder of links to ``nas/``'s files with ``hardware``, ``supernets``, ... linked in where
the mapping puts them, and mkdocs.yml points griffe's ``paths`` there. Everything is then
read from source, without importing it: aliases across packages resolve, and names that
``nas/__init__.py`` imports only under ``if TYPE_CHECKING:`` (resolved at run time by a
module ``__getattr__``) are documented like any other import.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority

TREE = Path("build") / "docs-packages"


@event_priority(100)  # before mkdocstrings reads any module
def on_config(config: MkDocsConfig) -> MkDocsConfig:
    repo = Path(config.config_file_path).parent
    build_tree(repo, repo / TREE)
    return config


def build_tree(repo: Path, tree: Path) -> None:
    """Write the links (a fresh tree each build, so renamed files never linger)."""
    mapping = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"]
    if tree.exists():
        shutil.rmtree(tree)
    for package, folder in sorted(mapping.items(), key=lambda item: item[0].count(".")):
        target = tree.joinpath(*package.split("."))
        source = (repo / folder).resolve()
        if "." not in package:
            target.mkdir(parents=True)
            for entry in source.iterdir():
                if entry.name != "__pycache__":
                    (target / entry.name).symlink_to(entry)
        else:
            if target.is_symlink() or target.exists():
                raise ValueError(f"{package} ({folder}/) collides with {target} in the tree")
            target.symlink_to(source, target_is_directory=True)
