"""Loading specs from Python files and manifests from YAML files, for the CLI and the client."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from raymlp._util import load_object
from raymlp.cluster._specs import RayClusterSpec, RayJobSpec, RayServiceSpec
from raymlp.cluster._validate import ValidationIssue, is_ray_resource, validate_manifest
from raymlp.errors import SpecError

SPEC_TYPES = (RayClusterSpec, RayJobSpec, RayServiceSpec)


def load_specs(target: str) -> list[Any]:
    """The specs named by ``FILE.py[:NAME]`` or ``package.module:NAME``.

    Without ``:NAME``, every public module-level RayClusterSpec, RayJobSpec and RayServiceSpec
    of the file, in definition order. The file is imported as a module (not run as
    ``__main__``), so its ``if __name__ == "__main__":`` block does not run.

    Raises:
        SpecError: the file or module is missing, NAME is not a spec, or the file defines none.
    """
    where, _, attr = target.rpartition(":") if ":" in target else (target, "", "")
    if not attr:
        path = Path(where)
        if path.suffix != ".py" or not path.is_file():
            raise SpecError(f"SPEC must be FILE.py[:NAME] naming an existing Python file, or module:NAME, "
                            f"got {target!r}", field="SPEC", value=target)
    # A module's namespace is its __dict__: one reference loader for the whole file and for NAME.
    namespace = load_object(f"{where}:__dict__", field="SPEC")
    if attr:
        if not isinstance(namespace.get(attr), SPEC_TYPES):
            found = sorted(k for k, v in namespace.items() if isinstance(v, SPEC_TYPES))
            raise SpecError(f"{where}:{attr} is not a RayClusterSpec/RayJobSpec/RayServiceSpec; specs there: {found}",
                            field="SPEC", value=target)
        return [namespace[attr]]
    specs = [v for k, v in namespace.items() if not k.startswith("_") and isinstance(v, SPEC_TYPES)]
    if not specs:
        raise SpecError(f"{where} defines no RayClusterSpec, RayJobSpec or RayServiceSpec at module level",
                        field="SPEC", value=target)
    return specs


def load_manifests(path: str | Path) -> list[Any]:
    """Every YAML document of a file (``None`` for empty documents is dropped).

    Raises:
        SpecError: the file is missing or is not YAML.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror}", field="FILE", value=str(path)) from exc
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise SpecError(f"{path} is not valid YAML: {exc}", field="FILE", value=str(path)) from exc


@dataclasses.dataclass(frozen=True)
class DocumentResult:
    """The validation result of one YAML document of a file.

    Attributes:
        file: the file.
        index: the document's position in the file (0-based).
        kind: its ``kind`` (``None`` when it has none).
        name: its ``metadata.name``.
        checked: False when the document is not a Ray resource and was skipped.
        issues: the problems found; empty when valid.
    """

    file: str
    index: int
    kind: str | None
    name: str | None
    checked: bool
    issues: tuple[ValidationIssue, ...]

    @property
    def ok(self) -> bool:
        return not self.issues


def validate_file(path: str | Path) -> Iterator[DocumentResult]:
    """Validate every Ray resource of a YAML file; other kinds are reported as skipped."""
    for i, doc in enumerate(load_manifests(path)):
        kind = doc.get("kind") if isinstance(doc, dict) else None
        meta = doc.get("metadata") if isinstance(doc, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        if is_ray_resource(doc):
            yield DocumentResult(str(path), i, kind, name, True, tuple(validate_manifest(doc)))
        else:
            yield DocumentResult(str(path), i, kind, name, False, ())
