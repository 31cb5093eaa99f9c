"""Regenerate the compact CRD schemas from a KubeRay release's CRD files.

Usage::

    python -m raymlp.cluster._crds.generate ../shared/kuberay-crds

It reads ``ray.io_{rayclusters,rayjobs,rayservices}.yaml``, keeps the ``v1`` version's
``openAPIV3Schema`` minus every ``description`` (they are 90 % of the bytes and never used for
validation), and writes ``<plural>.json.gz`` beside this file, byte-reproducibly (gzip mtime 0,
sorted keys) so a regeneration with the same input gives no diff.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from raymlp.cluster._crds import KINDS


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        # A property literally named "description" lives under "properties" and must stay.
        return {
            k: (_strip_props(v) if k == "properties" else _strip(v))
            for k, v in node.items()
            if k != "description"
        }
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _strip_props(props: dict[str, Any]) -> dict[str, Any]:
    return {name: _strip(schema) for name, schema in props.items()}


def compact_schema(crd_file: Path) -> dict[str, Any]:
    """The description-free ``v1`` ``openAPIV3Schema`` of one CRD file."""
    # libyaml's loader when present: the CRD files are 1-1.4 MB, ~15 s with the pure-Python one.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(crd_file.read_text(), Loader=loader)
    for version in crd["spec"]["versions"]:
        if version["name"] == "v1":
            return _strip(version["schema"]["openAPIV3Schema"])
    raise ValueError(f"{crd_file} has no v1 version")


def encode(schema: dict[str, Any]) -> bytes:
    """Deterministic gzip of the minified JSON."""
    raw = json.dumps(schema, separators=(",", ":"), sort_keys=True).encode()
    return gzip.compress(raw, compresslevel=9, mtime=0)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    src = Path(args[0])
    out = Path(__file__).parent
    for plural in KINDS.values():
        data = encode(compact_schema(src / f"ray.io_{plural}.yaml"))
        (out / f"{plural}.json.gz").write_bytes(data)
        print(f"{plural}.json.gz: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
