"""A stand-in for a stock ``rayproject/ray`` image: a virtual environment holding only
``ray[default,train,tune,serve]`` and torch (no raymlp, no MLflow).

Installing those with pip takes 2.5 minutes on the 2-core test machine, over the whole suite's
budget for this module, so the environment is assembled from the test environment's own
installed distributions instead: ``python -m venv`` and, in its site-packages, a link to each
file of each distribution in the dependency closure of those requirements (markers evaluated,
extras followed). What is not in the closure (raymlp, MLflow, Optuna, s3fs, ...) is not
importable there, exactly as in the image, and pip sees the linked distributions as installed.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import subprocess
import sys
import sysconfig
from collections import defaultdict
from pathlib import Path

from packaging.requirements import Requirement

#: What the stock image holds (and torch, which the training example needs).
IMAGE_REQUIREMENTS = ("ray[default,train,tune,serve]", "torch")


def closure(roots: tuple[str, ...] = IMAGE_REQUIREMENTS) -> dict[str, md.Distribution]:
    """The installed distributions that ``roots`` need, by normalized name."""
    seen: dict[tuple[str, frozenset], md.Distribution] = {}
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            continue  # a marker-less optional dependency that is not installed here
        key = (_norm(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen[key] = dist
        envs = [{"extra": e} for e in (*req.extras, "")]
        for text in dist.requires or ():
            dep = Requirement(text)
            if dep.marker is None or any(dep.marker.evaluate(e) for e in envs):
                todo.append(dep)
    return {_norm(d.metadata["Name"]): d for d in seen.values()}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def build(dest: Path, roots: tuple[str, ...] = IMAGE_REQUIREMENTS) -> Path:
    """Create the environment at ``dest``; returns its ``bin`` folder (``python``, ``ray``)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(dest), "platbase": str(dest)}))
    here = Path(sysconfig.get_path("purelib"))
    owners: dict[tuple[str, ...], set[str]] = defaultdict(set)
    # pip too: the image has it, and Ray's runtime_env pip plugin runs it.
    for name, dist in closure((*roots, "pip")).items():
        for f in dist.files or ():
            parts = Path(f).parts
            if parts and parts[0] != "..":
                owners[parts[:2] if len(parts) > 1 else parts].add(name)
    top: dict[str, set[str]] = defaultdict(set)
    for parts, names in owners.items():
        top[parts[0]] |= names
    for first, names in top.items():
        if not (here / first).exists():
            continue
        if len(names) == 1 or not (here / first).is_dir():
            os.symlink(here / first, site / first)
            continue
        # A folder several distributions share (a namespace package such as google/):
        # link only their own entries in it.
        (site / first).mkdir(exist_ok=True)
        for parts in owners:
            if parts[0] == first and len(parts) == 2 and (here / first / parts[1]).exists():
                target = site / first / parts[1]
                if not target.exists():
                    os.symlink(here / first / parts[1], target)
    bin_dir = dest / "bin"
    for script, entry in (("ray", "ray.scripts.scripts:main"), ("serve", "ray.serve.scripts:cli")):
        module, func = entry.split(":")
        path = bin_dir / script
        path.write_text(f"#!{bin_dir / 'python'}\nimport sys\nfrom {module} import {func}\n"
                        f"sys.exit({func}())\n")
        path.chmod(0o755)
    return bin_dir


def link_wheelhouse(dest: Path, roots: tuple[str, ...],
                    exclude: tuple[str, ...] = IMAGE_REQUIREMENTS) -> Path:
    """A local package index for the stand-in head: one wheel per distribution that ``roots``
    need beyond ``exclude``, each installing in a moment.

    pip would otherwise download and unpack 600 MB (MLflow, scikit-learn, SciPy, ...) on each
    node, minutes on this machine. Each wheel here carries the distribution's real metadata
    (name, version, requirements: pip resolves them as it would the real ones) and, instead of
    its files, a ``.pth`` line adding a folder of links to the test environment's installed
    copy. A package that raymlp did not ship (directly or as a dependency) is not installed by
    pip and stays unimportable in the job, as on the real image.
    """
    import zipfile

    dest.mkdir(parents=True, exist_ok=True)
    links = dest / "links"
    here = Path(sysconfig.get_path("purelib"))
    skip = set(closure(exclude))
    for name, dist in closure(roots).items():
        if name in skip:
            continue
        folder = links / name
        folder.mkdir(parents=True, exist_ok=True)
        for first in {Path(f).parts[0] for f in dist.files or () if Path(f).parts[0] != ".."}:
            if first.endswith((".dist-info", ".pth")) or first == "__pycache__":
                continue
            if (here / first).exists() and not (folder / first).exists():
                os.symlink(here / first, folder / first)
        version = dist.version
        wheel_name = name.replace("-", "_")
        info = f"{wheel_name}-{version}.dist-info"
        files = {
            f"{info}/METADATA": dist.read_text("METADATA") or "",
            f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: raymlp-tests\nRoot-Is-Purelib: true\n"
                             "Tag: py3-none-any\n",
            f"{wheel_name}-links.pth": f"{folder}\n",
        }
        files[f"{info}/RECORD"] = "".join(f"{f},,\n" for f in [*files, f"{info}/RECORD"])
        with zipfile.ZipFile(dest / f"{wheel_name}-{version}-py3-none-any.whl", "w") as zf:
            for arc, text in files.items():
                zf.writestr(arc, text)
    return dest
