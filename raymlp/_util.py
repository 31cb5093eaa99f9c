"""Helpers every capability shares: object references, polling, ``KEY=VALUE`` overrides, and
copying directories to and from any fsspec URL."""

from __future__ import annotations

import importlib
import importlib.util
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from raymlp.errors import SpecError, TimeoutError

__all__ = [
    "apply_overrides",
    "download_dir",
    "free_ports",
    "load_object",
    "parse_key_values",
    "poll",
    "read_data_file",
    "reference",
    "upload_dir",
]

T = TypeVar("T")


def load_object(ref: Any, *, field: str = "reference") -> Any:
    """Resolve ``"package.module:attr"`` or ``"path/to/file.py:attr"`` (dots in ``attr`` walk
    attributes); anything that is not a string is returned as it is.

    A file's directory goes on ``sys.path`` first, so it can import its neighbours.

    Raises:
        SpecError: malformed reference, missing file or module, or no such attribute; naming
            ``field``.
    """
    if not isinstance(ref, str):
        return ref
    allowed = "'package.module:attr' or 'path/to/file.py:attr'"
    target, sep, attr = ref.rpartition(":")
    if not sep or not target or not attr:
        raise SpecError(f"{field} must be {allowed}, got {ref!r}", field=field, value=ref,
                        allowed=allowed)
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise SpecError(f"{field}: file {target!r} does not exist (in {Path.cwd()})",
                            field=field, value=ref, allowed=allowed)
        folder = str(path.parent.resolve())
        if folder not in sys.path:
            sys.path.insert(0, folder)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(path.stem, None)
            raise SpecError(f"{field}: importing {target!r} failed: {type(exc).__name__}: {exc}",
                            field=field, value=ref, allowed=allowed) from exc
    else:
        if str(Path.cwd()) not in sys.path and "" not in sys.path:
            sys.path.insert(0, str(Path.cwd()))  # like `python -m`: the working directory first
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise SpecError(f"{field}: cannot import module {target!r}: {exc}", field=field,
                            value=ref, allowed=allowed) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SpecError(f"{field}: {target!r} has no attribute {attr!r}", field=field,
                            value=ref, allowed=allowed) from None
    return obj


def reference(obj: Any) -> str:
    """The ``module:qualname`` reference of a function or class (what :func:`load_object` reads)."""
    if isinstance(obj, str):
        return obj
    target = obj if hasattr(obj, "__qualname__") else type(obj)
    return f"{target.__module__}:{target.__qualname__}"


def poll(check: Callable[[], T | None], *, timeout_s: float | None, what: str,
         interval_s: float = 0.2, max_interval_s: float = 2.0,
         status: Callable[[], Any] | None = None) -> T:
    """Call ``check()`` until it returns something other than None; return that.

    The interval grows by half each round up to ``max_interval_s``. ``timeout_s=None`` waits
    for ever.

    Raises:
        raymlp.errors.TimeoutError: ``timeout_s`` ran out (``what`` names what was waited for;
            ``status()``, when given, is reported as the last status seen).
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    delay = interval_s
    while True:
        result = check()
        if result is not None:
            return result
        if deadline is not None and time.monotonic() >= deadline:
            last = status() if status is not None else None
            seen = f"; last status: {last}" if last is not None else ""
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}{seen}",
                               what=what, timeout_s=timeout_s, last_status=last)
        pause = delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic()))
        time.sleep(pause)
        delay = min(delay * 1.5, max_interval_s)


def parse_value(text: str) -> Any:
    """A ``--set`` value: YAML/JSON scalars and collections (``3``, ``0.1``, ``true``,
    ``[1, 2]``, ``{a: 1}``), anything else as the string itself."""
    import yaml

    try:
        return yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        return text


def parse_key_values(items: Iterable[str], *, field: str = "--set",
                     raw: bool = False) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": 1, "c": "x"}`` (values through :func:`parse_value`;
    with ``raw``, kept as the strings given, as environment variables want them).

    Raises:
        SpecError: an item without ``=`` or with an empty key, naming ``field``.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise SpecError(f"{field} takes KEY=VALUE, got {item!r}", field=field, value=item,
                            allowed="KEY=VALUE")
        out[key.strip()] = value if raw else parse_value(value)
    return out


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with dotted keys set (``{"scaling.workers": 4}`` sets
    ``data["scaling"]["workers"]``), creating nested mappings as needed."""
    out = _deep_copy(data)
    for dotted, value in overrides.items():
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return out


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def read_data_file(path: str, *, what: str = "file") -> dict[str, Any]:
    """The mapping a YAML or JSON file holds (a ``.json`` suffix reads JSON, anything else YAML).

    Raises:
        SpecError: a missing file, a file that does not parse, or one that holds no mapping;
            ``what`` names the file in the message (``"experiment file"``).
    """
    import json

    import yaml

    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{what} {path!r} does not exist", field="file", value=path,
                        allowed="an existing YAML or JSON file")
    try:
        data = json.loads(p.read_text()) if p.suffix == ".json" else yaml.safe_load(p.read_text())
    except (ValueError, yaml.YAMLError) as exc:
        raise SpecError(f"{what} {path!r} is not valid {p.suffix or 'YAML'}: {exc}",
                        field="file", value=path, allowed="YAML or JSON") from exc
    if not isinstance(data, dict):
        raise SpecError(f"{what} {path!r} must hold a mapping of fields", field="file",
                        value=path, allowed="a mapping")
    return data


def upload_dir(src: str | Path, dest: str) -> None:
    """Copy local directory ``src`` to ``dest`` (a path or fsspec URL), replacing what is there."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(dest)
    if fs.exists(root):
        fs.rm(root, recursive=True)
    fs.makedirs(root.rsplit("/", 1)[0], exist_ok=True)
    fs.put(str(src).rstrip("/") + "/", root, recursive=True)


def download_dir(src: str, dest: str | Path) -> Path:
    """Copy directory ``src`` (a path or fsspec URL) to local ``dest``; returns ``dest``."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(src)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fs.get(root.rstrip("/") + "/", str(dest), recursive=True)
    return dest


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports free on ``host`` right now (held together while chosen)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def ray_storage(root: str):
    """(storage_path, filesystem) for Ray Train and Tune: local paths as they are, URLs via fsspec."""
    if "://" not in root or root.startswith("file://"):
        path = Path(root.removeprefix("file://")).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return str(path), None
    import fsspec
    import pyarrow.fs

    fs, path = fsspec.core.url_to_fs(root)
    return path, pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))
