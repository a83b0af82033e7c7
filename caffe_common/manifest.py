"""What a shipped model folder (``models/<name>/``) records of its making: ``MANIFEST.json`` with the exact
command, the git revision, the data in words and the sha256 of every file, beside the copied files. Used by
``scripts/ship_cascade.py`` (MTCNN) and ``scripts/ship_face_model.py`` (the face network)."""
from __future__ import annotations

import argparse
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .assets import file_sha256


def add_manifest_options(parser: argparse.ArgumentParser) -> None:
    """``--command`` (required), ``--revision`` and ``--data``: what every manifest records."""
    parser.add_argument("--command", required=True, help="the exact command that made the run")
    parser.add_argument("--revision", help="git revision the run was made with (default: HEAD)")
    parser.add_argument("--data", default="", help="what data the run used, in words")


def git_revision(repo: str | Path | None = None) -> str:
    """The checked-out commit of ``repo`` (the working folder by default), or "" outside git."""
    proc = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False, cwd=repo)
    return proc.stdout.strip()


def manifest_head(args: argparse.Namespace) -> dict[str, Any]:
    """The manifest's ``command``, ``revision`` and ``data`` from :func:`add_manifest_options`' arguments."""
    return {"command": args.command, "revision": args.revision or git_revision(), "data": args.data}


def copy_files(sources: Iterable[Path], target: Path) -> dict[str, str]:
    """Copy ``sources`` into the folder ``target`` (made if needed); their sha256 by file name."""
    target.mkdir(parents=True, exist_ok=True)
    digests = {}
    for source in sources:
        shutil.copyfile(source, target / source.name)
        digests[source.name] = file_sha256(target / source.name)
    return digests
