"""What a job needs on a stock Ray image, and how it travels: raymlp's runtime.

A ``rayproject/ray`` image has Ray (with train, tune and serve) and nothing of raymlp. A job
that imports raymlp gets it one of two ways:

* **shipped** (the default): raymlp's own package goes with the job as a runtime-env
  ``py_modules`` entry, and its requirements as the runtime env's ``pip`` list, installed on
  each node the job touches (Ray caches the environment per node and reuses it for later jobs
  with the same list);
* **image**: the cluster runs an image built from ``cluster/image/Dockerfile``, which installs
  the very same requirements and raymlp itself; nothing is shipped.

The requirement list is read from the installed distribution's metadata
(``importlib.metadata.requires("raymlp")``), markers evaluated for the extras the job uses, so
it never drifts from ``pyproject.toml``. Ray itself is left out: the image provides it, at the
cluster's version. :func:`dockerfile` writes the image recipe from the same list, and a test
checks that the checked-in Dockerfile is what it writes.
"""

from __future__ import annotations

import importlib.metadata as md
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from raymlp._spec import choice
from raymlp.errors import SpecError

__all__ = [
    "RUNTIMES",
    "dockerfile",
    "extras_for",
    "known_extras",
    "package_uri",
    "requirements",
    "runtime_env",
    "upload_package",
]

#: How raymlp reaches a cluster: shipped with each job, or already in the image.
RUNTIMES = ("ship", "image")
#: Extras a job uses unless told otherwise: torch (the training examples). ``s3`` is added when
#: the storage root is on S3.
DEFAULT_EXTRAS = ("torch",)
#: Distributions the Ray image provides itself; shipping them would replace the cluster's Ray.
_PROVIDED = {"ray"}
_DIST = "raymlp"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _extras() -> tuple[str, ...]:
    return tuple(md.metadata(_DIST).get_all("Provides-Extra") or ())


def requirements(extras: Iterable[str] = DEFAULT_EXTRAS) -> list[str]:
    """raymlp's runtime requirements for ``extras``, as pip requirement strings.

    Read from the installed distribution's metadata; markers are evaluated for this platform
    and the extras (nested extras such as ``all`` are followed); Ray itself is left out.

    Raises:
        SpecError: an extra raymlp does not define.

    Example:
        >>> any(r.startswith("mlflow") for r in requirements(()))
        True
    """
    from packaging.requirements import Requirement

    wanted = set()
    todo = list(extras)
    known = _extras()
    while todo:
        extra = todo.pop()
        if extra in wanted:
            continue
        choice("extras", extra, known)
        wanted.add(extra)
    out: list[str] = []
    for text in md.requires(_DIST) or ():
        req = Requirement(text)
        envs = [{"extra": e} for e in ("", *sorted(wanted))]
        if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
            continue
        if _norm(req.name) == _DIST:  # raymlp[torch,...]: its extras, recursively
            for extra in req.extras - wanted:
                out += [r for r in requirements([extra]) if r not in out]
            continue
        if _norm(req.name) in _PROVIDED:
            continue
        req.marker = None
        line = str(req)
        if line not in out:
            out.append(line)
    return out


def extras_for(storage_root: str | None, extras: Iterable[str] | None = None) -> tuple[str, ...]:
    """The extras a job uses: ``extras`` (default :data:`DEFAULT_EXTRAS`), plus ``s3`` when
    ``storage_root`` is on S3."""
    out = list(DEFAULT_EXTRAS if extras is None else extras)
    if storage_root and storage_root.startswith(("s3://", "s3a://")) and "s3" not in out:
        out.append("s3")
    return tuple(out)


def package_dir() -> str:
    """The folder of the raymlp package this process runs (what ``py_modules`` uploads)."""
    import raymlp

    return str(Path(raymlp.__file__).resolve().parent)


def runtime_env(base: Mapping[str, Any] | None = None, *, runtime: str = "ship",
                extras: Sequence[str] = DEFAULT_EXTRAS, field: str = "runtime",
                package: str | None = "local") -> dict[str, Any]:
    """``base`` (a Ray runtime env) with raymlp's runtime added when ``runtime="ship"``.

    ``package="local"`` adds this raymlp package's folder to ``py_modules`` (Ray's job client
    uploads it: ``raymlp submit``); None leaves ``py_modules`` as ``base`` has it (a rendered
    manifest refers to the uploaded zip itself). User ``pip`` entries follow raymlp's own.

    Raises:
        SpecError: an unknown ``runtime`` or extra.
    """
    choice(field, runtime, RUNTIMES)
    env = dict(base or {})
    if runtime == "image":
        return env
    reqs = requirements(extras)
    pip = env.get("pip") or []
    if isinstance(pip, Mapping):
        raise SpecError("runtime_env['pip'] as a mapping cannot be merged with raymlp's "
                        "requirements; give a list", field="runtime_env.pip", value=pip,
                        allowed="a list of requirement strings")
    if isinstance(pip, str):
        pip = [pip]
    env["pip"] = reqs + [p for p in pip if p not in reqs]
    if package == "local":
        env["py_modules"] = [package_dir(), *list(env.get("py_modules") or [])]
    return env


def known_extras() -> tuple[str, ...]:
    """The extras raymlp defines."""
    return _extras()


_SKIP = {"__pycache__", ".git", ".venv", "venv", ".raymlp", "node_modules", ".pytest_cache",
         ".ruff_cache", ".mypy_cache"}


def _files(folder: str) -> list[Path]:
    root = Path(folder)
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).parts
        if any(p in _SKIP or p.endswith(".egg-info") for p in rel) or path.suffix == ".pyc":
            continue
        if path.is_file():
            out.append(path)
    return out


def package_uri(folder: str, root: str, name: str, *, wrap: str | None = None) -> str:
    """``<root>/<name>-<content hash>.zip``: where :func:`upload_package` puts ``folder``."""
    import hashlib

    digest = hashlib.sha256((wrap or "").encode())
    base = Path(folder)
    for path in _files(folder):
        digest.update(path.relative_to(base).as_posix().encode() + b"\0" + path.read_bytes())
    return f"{root.rstrip('/')}/{name}-{digest.hexdigest()[:16]}.zip"


def upload_package(folder: str, uri: str, *, wrap: str | None = None) -> None:
    """Zip ``folder`` the way Ray unpacks a remote package (one top-level folder, which Ray
    removes; ``wrap`` names a folder kept inside it, as a ``py_modules`` package needs) and
    copy it to ``uri`` (any fsspec URL). An existing ``uri`` is kept: the name is its hash."""
    import tempfile
    import zipfile

    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    if fs.exists(path):
        return
    base = Path(folder)
    top = Path(uri.rsplit("/", 1)[-1]).stem
    with tempfile.TemporaryDirectory(prefix="raymlp-pkg-") as tmp:
        local = Path(tmp) / "package.zip"
        with zipfile.ZipFile(local, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in _files(folder):
                inner = f"{wrap}/" if wrap else ""
                zf.write(f, f"{top}/{inner}{f.relative_to(base).as_posix()}")
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(local), path)


def dockerfile(extras: Sequence[str] = ("torch", "s3")) -> str:
    """The image recipe: ``rayproject/ray`` at this Ray version, plus raymlp and what
    :func:`requirements` gives for ``extras`` (the same list a shipped job installs).

    Build it from the repository root; ``--build-arg VARIANT=gpu`` for the CUDA image::

        docker build -f cluster/image/Dockerfile -t raymlp:cpu .
        docker build -f cluster/image/Dockerfile --build-arg VARIANT=gpu -t raymlp:gpu .
    """
    ray_version = md.version("ray")
    reqs = requirements(extras)
    lines = [
        "# raymlp on the stock Ray image. Generated by raymlp.cluster._ship.dockerfile() from",
        "# raymlp's package metadata (tests/cluster/test_runtime.py checks that this file is what",
        "# it writes, and that it installs exactly what `raymlp submit` ships); regenerate with",
        "#   raymlp cluster dockerfile > cluster/image/Dockerfile",
        "# Build from the repository root: VARIANT=cpu (default) or gpu (CUDA).",
        "#   docker build -f cluster/image/Dockerfile -t raymlp:cpu .",
        "#   docker build -f cluster/image/Dockerfile --build-arg VARIANT=gpu -t raymlp:gpu .",
        "ARG VARIANT=cpu",
        f"FROM rayproject/ray:{ray_version}-py{_py_tag()}-${{VARIANT}}",
        "",
        f"# raymlp's runtime requirements (extras: {', '.join(extras) or 'none'}); Ray is the image's.",
        "RUN pip install --no-cache-dir \\",
        *[f"    '{r}' \\" for r in reqs[:-1]],
        f"    '{reqs[-1]}'",
        "",
        "# raymlp itself, without dependencies (they are above).",
        "COPY --chown=ray:users pyproject.toml README.md /tmp/raymlp/",
        "COPY --chown=ray:users raymlp /tmp/raymlp/raymlp",
        "RUN pip install --no-cache-dir --no-deps /tmp/raymlp && rm -rf /tmp/raymlp",
        "",
    ]
    return "\n".join(lines)


def _py_tag() -> str:
    import sys

    return f"{sys.version_info.major}{sys.version_info.minor}"


def dockerfile_requirements(text: str) -> list[str]:
    """The requirement strings a Dockerfile written by :func:`dockerfile` installs."""
    return re.findall(r"^\s+'([^']+)'", text, flags=re.MULTILINE)
