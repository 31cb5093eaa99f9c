"""Shared helpers: object references, polling with a bound, KEY=VALUE overrides, fsspec copies."""

from __future__ import annotations

import time

import pytest

from raymlp import _util
from raymlp.errors import SpecError, TimeoutError


def test_load_object_reads_modules_and_files(tmp_path, monkeypatch):
    assert _util.load_object("os.path:join") is __import__("os").path.join
    assert _util.load_object("raymlp.errors:SpecError.__name__") == "SpecError"
    (tmp_path / "helper_mod.py").write_text("VALUE = 41\n")
    (tmp_path / "user_loop.py").write_text("import helper_mod\ndef loop():\n    return helper_mod.VALUE + 1\n")
    fn = _util.load_object(f"{tmp_path}/user_loop.py:loop")
    assert fn() == 42  # the file's folder is importable from it
    assert _util.load_object(fn) is fn  # not a string: as it is
    assert _util.reference(SpecError) == "raymlp.errors:SpecError"


@pytest.mark.parametrize(
    ("ref", "says"),
    [
        ("no_colon", "'package.module:attr' or 'path/to/file.py:attr'"),
        ("nowhere/x.py:f", "does not exist"),
        ("raymlp_no_such_module:f", "cannot import module"),
        ("os.path:no_such_function", "has no attribute 'no_such_function'"),
    ],
)
def test_load_object_errors_name_the_field(ref, says):
    with pytest.raises(SpecError) as err:
        _util.load_object(ref, field="TrainJob.loop")
    assert err.value.field == "TrainJob.loop" and err.value.value == ref
    assert says in str(err.value)


def test_load_object_reports_a_file_that_fails_to_import(tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(SpecError, match="importing .*broken.py.* failed: RuntimeError: boom"):
        _util.load_object(f"{tmp_path}/broken.py:f")


def test_poll_returns_the_first_value_and_raises_raymlp_timeout_with_the_last_status():
    calls = iter([None, None, "ready"])
    assert _util.poll(lambda: next(calls), timeout_s=5, what="x", interval_s=0.01) == "ready"
    started = time.monotonic()
    with pytest.raises(TimeoutError) as err:
        _util.poll(lambda: None, timeout_s=0.3, what="service 'a' to be RUNNING",
                   interval_s=0.05, status=lambda: "DEPLOYING")
    assert 0.25 <= time.monotonic() - started < 2
    assert err.value.timeout_s == 0.3 and err.value.last_status == "DEPLOYING"
    assert "service 'a' to be RUNNING" in str(err.value) and "DEPLOYING" in str(err.value)
    assert isinstance(err.value, __import__("builtins").TimeoutError)  # `except TimeoutError` works


def test_key_values_parse_scalars_and_collections_and_overrides_nest():
    got = _util.parse_key_values(["lr=0.01", "epochs=3", "flag=true", "name=digits",
                                  "layers=[64, 32]", "opt={beta: 0.9}", "empty="])
    assert _util.parse_key_values(["A=01", "B=yes"], raw=True) == {"A": "01", "B": "yes"}
    assert got == {"lr": 0.01, "epochs": 3, "flag": True, "name": "digits", "layers": [64, 32],
                   "opt": {"beta": 0.9}, "empty": ""}
    with pytest.raises(SpecError) as err:
        _util.parse_key_values(["novalue"], field="--set")
    assert err.value.field == "--set" and "KEY=VALUE" in str(err.value)
    base = {"scaling": {"workers": 2, "cpus_per_worker": 1}, "name": "a"}
    out = _util.apply_overrides(base, {"scaling.workers": 4, "config.lr": 0.1})
    assert out == {"scaling": {"workers": 4, "cpus_per_worker": 1}, "name": "a",
                   "config": {"lr": 0.1}}
    assert base["scaling"]["workers"] == 2  # the input is untouched


def test_directories_round_trip_through_fsspec(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub" / "b.bin").write_bytes(b"\x00\x01")
    dest = f"memory://raymlp-test-{time.time_ns()}/model"
    _util.upload_dir(src, dest)
    _util.upload_dir(src, dest)  # replaces, does not nest
    back = _util.download_dir(dest, tmp_path / "back")
    assert sorted(p.relative_to(back).as_posix() for p in back.rglob("*") if p.is_file()) == [
        "a.txt", "sub/b.bin"]
    assert (back / "sub" / "b.bin").read_bytes() == b"\x00\x01"
