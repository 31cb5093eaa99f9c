"""What the user sees while raymlp works: progress, a closing summary, and quiet engines.

Every capability reports through this one layer:

- :func:`progress` shows work as it runs: a tqdm bar in a terminal, a live ipywidgets widget
  in Jupyter, and, where output is neither (a CI log, a pipe), a compact line at most every
  few seconds plus the final state;
- :func:`summary` closes with what came out and where to look (the run id, metrics, model
  URI, the MLflow UI command or server, the Ray dashboard): an HTML table in Jupyter, aligned
  lines elsewhere;
- :func:`quiet` keeps the engines' (Ray, Ray Train, Ray Serve, MLflow, alembic) INFO lines,
  warnings and progress bars out of the console unless ``RAYMLP_LOG_LEVEL`` (or
  ``raymlp.init(verbose=True)``) asks for them. Errors still surface in full.

Example:
    >>> with progress("training digits", total=15, unit="epoch") as bar:
    ...     for epoch in range(15):
    ...         bar.update(loss=0.12, val_accuracy=0.97)
    >>> summary("digits", {"run id": run_id, "model": model_uri, **where_to_look()})
"""

from __future__ import annotations

import html
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Mapping
from typing import Any

from raymlp import _config

__all__ = [
    "Progress",
    "engine_log_level",
    "progress",
    "quiet",
    "quiet_ray",
    "remember_dashboard",
    "summary",
    "verbose",
    "where_to_look",
]

# A line per update at most this often where output is neither a terminal nor Jupyter.
PLAIN_PERIOD_S = 5.0

# Loggers of the engines raymlp drives; their records below the configured level stay out.
_ENGINE_LOGGERS = ("ray", "ray.train", "ray.serve", "ray.data", "ray.tune", "mlflow",
                   "alembic")
# Python warnings the engines raise from their own code (Ray's and tqdm's "IProgress not
# found" in Jupyter, MLflow's and Ray's deprecation and hint warnings).
_ENGINE_MODULES = r"(ray|mlflow|tqdm|alembic|sqlalchemy|pydantic|google|keras|tensorflow|torch)(\.|$)"

_lock = threading.Lock()
_quieted: list[str | None] = [None]  # the level quiet() last applied
_dashboard: list[str | None] = [None]


def verbose() -> bool:
    """Whether the engines' INFO output was asked for (``RAYMLP_LOG_LEVEL`` INFO or DEBUG)."""
    return _config.get().log_level in ("DEBUG", "INFO")


def engine_log_level() -> str:
    """The level of the engines' log output that reaches the console (``"ERROR"`` by default).

    Pass it where an engine takes its own logging configuration, e.g.
    ``ray.train.LoggingConfig(log_level=engine_log_level())`` and Ray Serve's
    ``LoggingConfig(log_level=...)``, whose processes do not run :func:`quiet`.
    """
    return _config.get().log_level


def quiet() -> None:
    """Keep the engines' noise out of the console, at the configured level (idempotent).

    Called by :func:`raymlp.init` and by the tracking layer's first store access. It sets the
    engines' loggers to the level, turns off MLflow's artifact download bars, and filters the
    Python warnings raised from the engines' own modules; the variables it sets travel to Ray
    workers started afterwards. ``RAYMLP_LOG_LEVEL=INFO`` leaves everything as the engines
    have it.
    """
    level = engine_log_level()
    with _lock:
        before, _quieted[0] = _quieted[0], level
        if level in ("DEBUG", "INFO"):
            if before not in (None, level):  # quieted earlier: let the engines speak
                for name in _ENGINE_LOGGERS:
                    logging.getLogger(name).setLevel(level)
            return
        # Every call: an engine imported since (Ray Serve) sets its logger's level on import.
        for name in _ENGINE_LOGGERS:
            logging.getLogger(name).setLevel(level)
        if before == level:
            return
        # Read by MLflow on each download, and when it is imported (its loggers' level, in
        # this process and in Ray workers started afterwards); a value the user set is kept.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", level)
        # Ray's per-process log deduplication notes ("[repeated 2x across cluster]") are noise
        # when the lines themselves are filtered.
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        if level != "WARNING":
            warnings.filterwarnings("ignore", module=_ENGINE_MODULES)
            # tqdm's and Ray's notebook bars raise this one on behalf of their caller's module.
            warnings.filterwarnings("ignore", message=r".*IProgress not found")


def quiet_ray() -> None:
    """:func:`quiet`, plus Ray Train's per-report worker lines, in a process that uses Ray.

    ``raymlp.init`` calls it in the driver; a Ray Train worker calls it before the user's loop
    (the report lines are logged there). It imports Ray Train: not for processes that only
    track.
    """
    quiet()
    level = engine_log_level()
    if level in ("DEBUG", "INFO"):
        return
    from raymlp import _ray_compat

    # Ray Train's workers log each report ("Reporting training result ... TrainingReport(...)")
    # at INFO through a logger that RunConfig's LoggingConfig does not cover.
    _ray_compat.train_report_logger().setLevel(level)


def remember_dashboard(url: str | None) -> None:
    """Record the Ray dashboard's URL (``raymlp.init`` knows it) for :func:`where_to_look`."""
    if url:
        _dashboard[0] = url if "://" in url else f"http://{url}"


def where_to_look() -> dict[str, str]:
    """Where a user finds the results: the MLflow UI (a command for a local store, the
    server's URL otherwise) and the Ray dashboard when there is one."""
    uri = _config.get().tracking_uri
    out = {}
    if uri.startswith(("http://", "https://")):
        out["MLflow UI"] = uri
    elif uri.startswith("databricks"):
        out["MLflow"] = uri
    else:
        out["MLflow UI"] = f"mlflow ui --backend-store-uri {uri}"
    if _dashboard[0]:
        out["Ray dashboard"] = _dashboard[0]
    return out


# --- where the output goes -----------------------------------------------------------------------

def _jupyter() -> bool:
    """True in a Jupyter kernel (an IPython kernel shell), not in a terminal IPython."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()
    except Exception:  # IPython imported but not running
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def _widgets():
    """ipywidgets, when installed (``pip install 'raymlp[examples]'``), else None."""
    try:
        import ipywidgets
    except ImportError:
        return None
    return ipywidgets


def _terminal() -> bool:
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None)) and stream.isatty()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


def _fields_text(fields: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())


# --- progress ------------------------------------------------------------------------------------

class Progress:
    """Progress of one piece of work; use it as a context manager (see :func:`progress`).

    Attributes:
        title: what is being done.
        total: the number of units when known.
        unit: the unit counted (``"epoch"``, ``"replica"``).
        n: units done so far.
        fields: the latest fields shown beside the bar (``loss=0.12``).
    """

    def __init__(self, title: str, *, total: int | None = None, unit: str = "step"):
        self.title = title
        self.total = total
        self.unit = unit
        self.n = 0
        self.fields: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._closed = False
        self._view = (_WidgetView(self) if _jupyter() else
                      _TqdmView(self) if _terminal() else _PlainView(self))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)

    @property
    def elapsed_s(self) -> float:
        """Seconds since the work started."""
        return time.monotonic() - self._start

    def update(self, n: int = 1, **fields: Any) -> None:
        """Count ``n`` more units done and show ``fields`` (e.g. ``loss=0.12``) beside them."""
        with self._lock:
            if self._closed:
                return
            self.n += n
            self.fields.update(fields)
            self._view.update(n)

    def note(self, text: str) -> None:
        """Show a line of text under the progress (an event: a restart, a checkpoint)."""
        with self._lock:
            if not self._closed:
                self._view.note(str(text))

    def close(self, *, failed: bool = False) -> None:
        """Show the final state (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._view.close(failed)

    def _line(self, state: str | None = None) -> str:
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        parts = [self.title, f"{count} {self.unit}{'' if self.n == 1 else 's'}"]
        if self.fields:
            parts.append(_fields_text(self.fields))
        parts.append(f"{self.elapsed_s:.1f} s" + (f" {state}" if state else ""))
        return " | ".join(parts)


def progress(title: str, *, total: int | None = None, unit: str = "step") -> Progress:
    """Show the progress of work as it runs.

    In a terminal: a tqdm bar with the fields beside it. In Jupyter: a live widget. Elsewhere
    (a CI log, a pipe): one compact line at most every few seconds, and the final state.

    Args:
        title: what is being done (``"training digits"``).
        total: the number of units, when known.
        unit: what is counted (``"epoch"``).

    Returns:
        Progress: a context manager with ``update(n=1, **fields)`` and ``note(text)``.

    Example:
        >>> with progress("training", total=3, unit="epoch") as bar:
        ...     for loss in (0.9, 0.5, 0.3):
        ...         bar.update(loss=loss)
    """
    return Progress(title, total=total, unit=unit)


class _PlainView:
    """Lines on stdout, at most one per :data:`PLAIN_PERIOD_S`, and the final state."""

    def __init__(self, p: Progress):
        self.p = p
        self.last = -float("inf")

    def update(self, n: int) -> None:
        now = time.monotonic()
        if now - self.last >= PLAIN_PERIOD_S:
            self.last = now
            print(self.p._line(), flush=True)

    def note(self, text: str) -> None:
        print(f"{self.p.title}: {text}", flush=True)

    def close(self, failed: bool) -> None:
        print(self.p._line("(failed)" if failed else "(done)"), flush=True)


class _TqdmView:
    def __init__(self, p: Progress):
        from tqdm import tqdm

        self.bar = tqdm(total=p.total, desc=p.title, unit=p.unit, dynamic_ncols=True,
                        leave=True, file=sys.stderr)
        self.p = p

    def update(self, n: int) -> None:
        if self.p.fields:
            self.bar.set_postfix_str(_fields_text(self.p.fields), refresh=False)
        self.bar.update(n)

    def note(self, text: str) -> None:
        self.bar.write(text, file=sys.stderr)

    def close(self, failed: bool) -> None:
        if failed:
            self.bar.set_description_str(f"{self.p.title} (failed)", refresh=False)
        self.bar.close()


class _WidgetView:
    """A live ipywidgets widget (title, bar, fields, notes); HTML updated in place without
    ipywidgets."""

    def __init__(self, p: Progress):
        from IPython.display import HTML, display

        self.p = p
        self.notes: list[str] = []
        widgets = _widgets()
        if widgets is None:
            self.widget = None
            self.handle = display(HTML(self._html()), display_id=True)
            return
        self.bar = (widgets.IntProgress(min=0, max=p.total, value=0) if p.total
                    else widgets.IntProgress(min=0, max=1, value=0, bar_style="info"))
        self.label = widgets.HTML(self._label())
        self.text = widgets.HTML(self._fields_html())
        self.widget = widgets.VBox([widgets.HBox([self.label, self.bar]), self.text])
        display(self.widget)

    def _label(self) -> str:
        count = f"{self.p.n}/{self.p.total}" if self.p.total is not None else str(self.p.n)
        return (f"<b>{html.escape(self.p.title)}</b>&nbsp;{html.escape(count)} "
                f"{html.escape(self.p.unit)}s&nbsp;")

    def _fields_html(self, state: str = "") -> str:
        fields = " &nbsp; ".join(f"{html.escape(str(k))}=<code>{html.escape(_fmt(v))}</code>"
                                 for k, v in self.p.fields.items())
        notes = "".join(f"<br>{html.escape(t)}" for t in self.notes)
        when = f"{self.p.elapsed_s:.1f} s{(' ' + state) if state else ''}"
        return f"{fields} &nbsp; <i>{html.escape(when)}</i>{notes}"

    def _html(self, state: str = "") -> str:
        return f"<div>{self._label()} {self._fields_html(state)}</div>"

    def _refresh(self, state: str = "") -> None:
        if self.widget is None:
            from IPython.display import HTML

            self.handle.update(HTML(self._html(state)))
            return
        self.label.value = self._label()
        self.text.value = self._fields_html(state)

    def update(self, n: int) -> None:
        if self.widget is not None and self.p.total:
            self.bar.value = min(self.p.n, self.p.total)
        self._refresh()

    def note(self, text: str) -> None:
        self.notes.append(text)
        self._refresh()

    def close(self, failed: bool) -> None:
        if self.widget is not None:
            self.bar.bar_style = "danger" if failed else "success"
            if not self.p.total:
                self.bar.value = self.bar.max
        self._refresh("failed" if failed else "done")


# --- summary -------------------------------------------------------------------------------------

def summary(title: str, fields: Mapping[str, Any]) -> None:
    """Close a piece of work with what came out and where to look.

    Entries whose value is None are left out. In Jupyter an HTML table (every value escaped);
    elsewhere aligned lines on stdout.

    Args:
        title: what finished (``"TrainJob digits finished"``).
        fields: label -> value (``{"run id": ..., "val_accuracy": 0.97, "model": uri}``);
            add :func:`where_to_look` for the MLflow UI and the Ray dashboard.

    Example:
        >>> summary("digits finished", {"run id": "3f2a", "model": "models:/m-1",
        ...                             **where_to_look()})
    """
    rows = [(str(k), _fmt(v)) for k, v in fields.items() if v is not None]
    if _jupyter():
        from IPython.display import HTML, display

        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
            f"<td style='text-align:left'><code>{html.escape(v)}</code></td></tr>"
            for k, v in rows)
        display(HTML(f"<b>{html.escape(title)}</b><table>{body}</table>"))
        return
    width = max((len(k) for k, _ in rows), default=0)
    lines = [title, *(f"  {k.ljust(width)}  {v}" for k, v in rows)]
    print("\n".join(lines), flush=True)
