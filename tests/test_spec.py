"""The one spec layer: the same rules and the same errors for every capability's specs."""

from __future__ import annotations

import dataclasses
import math
import pickle
from collections.abc import Callable, Mapping
from typing import Any

import jsonschema
import pytest

from raymlp import _spec
from raymlp.errors import SpecError


@pytest.mark.parametrize(
    ("check", "value", "allowed"),
    [
        (lambda v: _spec.number("S.x", v, minimum=0), math.nan, "a number >= 0"),
        (lambda v: _spec.number("S.x", v, minimum=0), math.inf, "a number >= 0"),
        (lambda v: _spec.number("S.x", v, minimum=0), True, "a number >= 0"),
        (lambda v: _spec.number("S.x", v, minimum=0), "1", "a number >= 0"),
        (lambda v: _spec.number("S.x", v, minimum=0, strict=True), 0, "a number > 0"),
        (lambda v: _spec.number("S.x", v, minimum=0, maximum=100), 100.5, "a number >= 0 and <= 100"),
        (lambda v: _spec.integer("S.x", v, minimum=1), 2.0, "an integer >= 1"),
        (lambda v: _spec.integer("S.x", v, minimum=1), False, "an integer >= 1"),
        (lambda v: _spec.integer("S.x", v, minimum=1), 0, "an integer >= 1"),
        (lambda v: _spec.choice("S.x", v, ["a", "b"]), "c", "one of ['a', 'b']"),
        (lambda v: _spec.choice("S.x", v, ["a", "b"]), ["a"], "one of ['a', 'b']"),
        (lambda v: _spec.name("S.x", v), "Bad_Name", "a DNS label"),
        (lambda v: _spec.name("S.x", v, max_length=5), "toolong", "1-5 characters"),
        (lambda v: _spec.boolean("S.x", v), 1, "True or False"),
        (lambda v: _spec.mapping("S.x", v), [("a", 1)], "a mapping with string keys"),
        (lambda v: _spec.string("S.x", v), "  ", "a non-empty string"),
    ],
)
def test_a_bad_value_names_the_field_the_value_and_what_is_allowed(check, value, allowed):
    with pytest.raises(SpecError) as err:
        check(value)
    e = err.value
    assert e.field == "S.x"
    assert e.value is value or (isinstance(value, float) and math.isnan(value))
    assert allowed in e.allowed and allowed in str(e)
    assert str(e).startswith("S.x must be ") and f"got x={value!r}" in str(e)
    again = pickle.loads(pickle.dumps(e))  # crosses Ray worker boundaries intact
    assert (again.field, again.allowed, str(again)) == (e.field, e.allowed, str(e))


def test_good_values_pass_through():
    assert _spec.number("S.x", 0.5, minimum=0, maximum=1) == 0.5
    assert _spec.integer("S.x", 3, minimum=1) == 3
    assert _spec.integer("S.x", None, optional=True) is None
    assert _spec.choice("S.x", "b", ("a", "b")) == "b"
    assert _spec.name("S.x", "my-svc-1") == "my-svc-1"
    assert _spec.mapping("S.x", {"a": 1}, values=lambda f, v: _spec.integer(f, v)) == {"a": 1}
    with pytest.raises(SpecError) as err:
        _spec.mapping("S.x", {"a": "1"}, values=lambda f, v: _spec.integer(f, v))
    assert err.value.field == "S.x['a']"


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Inner:
    count: int = 1
    rate: float = 0.5

    def __post_init__(self) -> None:
        _spec.integer("Inner.count", self.count, minimum=1)
        _spec.number("Inner.rate", self.rate, minimum=0, maximum=1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Outer:
    fn: Callable[..., Any]
    name: str = "x"
    inner: _Inner = dataclasses.field(default_factory=_Inner)
    maybe: _Inner | None = None
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)


def _fn():
    return 1


def test_from_data_builds_nested_specs_and_reads_back_what_to_data_wrote():
    spec = _spec.from_data(_Outer, {"fn": "tests.test_spec:_fn", "inner": {"count": 3},
                                    "maybe": {"rate": 0.25}, "tags": {"team": "a"}},
                           convert={"fn": _spec_loader})
    assert spec == _Outer(fn=_fn, inner=_Inner(count=3), maybe=_Inner(rate=0.25),
                          tags={"team": "a"})
    data = _spec.to_data(spec, convert={"fn": lambda f: f"{f.__module__}:{f.__qualname__}"})
    assert data["inner"] == {"count": 3, "rate": 0.5} and data["fn"] == "tests.test_spec:_fn"
    assert _spec.from_data(_Outer, data, convert={"fn": _spec_loader}) == spec


def _spec_loader(ref):
    from raymlp._util import load_object

    return load_object(ref, field="Outer.fn")


@pytest.mark.parametrize(
    ("data", "field", "says"),
    [
        ({"fn": _fn, "colour": "red"}, "Outer.colour", "unknown field 'colour'"),
        ({"fn": _fn, "inner": {"count": 1, "size": 2}}, "Outer.inner.size", "unknown field 'size'"),
        ({"fn": _fn, "inner": {"count": "3"}}, "Outer.inner.count", "an integer"),
        ({"fn": _fn, "inner": {"count": True}}, "Outer.inner.count", "an integer"),
        ({"fn": _fn, "inner": {"rate": math.nan}}, "Inner.rate", "a number"),  # the spec's own check
        ({"fn": _fn, "inner": 5}, "Outer.inner", "a mapping of _Inner fields"),
        ({"fn": _fn, "name": 7}, "Outer.name", "a string"),
        ({"fn": _fn, "tags": {"a": 1}}, "Outer.tags", "Mapping[str, str]"),
        ({"name": "x"}, "Outer", "missing required field(s) ['fn']"),
        (["fn"], "Outer", "a mapping of _Outer fields"),
    ],
)
def test_from_data_rejects_unknown_and_ill_typed_fields_by_name(data, field, says):
    with pytest.raises(SpecError) as err:
        _spec.from_data(_Outer, data, field="Outer")
    assert err.value.field == field
    assert says in str(err.value)


def test_json_schema_validates_good_data_and_rejects_unknown_fields():
    schema = _spec.json_schema(_Outer, title="outer")
    assert schema["title"] == "outer"
    good = {"fn": "pkg.mod:fn", "inner": {"count": 2}, "tags": {"a": "b"}}
    jsonschema.validate(good, schema)
    for bad in ({**good, "colour": 1}, {**good, "inner": {"count": "two"}},
                {**good, "inner": {"cnt": 2}}, {"inner": {}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def _capability_specs():
    """One numeric, one integer-count and one choice field from each capability's specs."""
    from raymlp import cluster, serve, train

    return {
        "train": {
            "nan": lambda v: train.Scaling(cpus=v),
            "int": lambda v: train.Scaling(workers=v),
            "choice": lambda v: train.Scaling(placement_strategy=v),
        },
        "serve": {
            "nan": lambda v: serve.Resources(cpus=v),
            "int": lambda v: serve.Autoscaling(max_replicas=v),
            "choice": lambda v: serve.InferenceService(name="svc", model="models:/m/1", flavor=v),
        },
        "cluster": {
            "nan": lambda v: cluster.WorkerGroup(name="w", cpus=v),
            "int": lambda v: cluster.WorkerGroup(name="w", replicas=v),
            "choice": lambda v: cluster.Autoscaling(upscaling_mode=v),
        },
    }


@pytest.mark.parametrize("capability", ["train", "serve", "cluster"])
@pytest.mark.parametrize(
    ("kind", "value", "allowed"),
    [
        ("nan", math.nan, "a number"),
        ("nan", math.inf, "a number"),
        ("int", True, "an integer"),
        ("int", -1, "an integer"),
        ("int", 2.5, "an integer"),
        ("choice", "bogus", "one of ["),
    ],
)
def test_the_same_bad_value_gets_the_same_error_from_every_capability(capability, kind, value,
                                                                      allowed):
    build = _capability_specs()[capability][kind]
    with pytest.raises(SpecError) as err:
        build(value)
    e = err.value
    assert type(e) is SpecError
    assert e.field and e.allowed and allowed in e.allowed
    assert str(e).startswith(f"{e.field} must be {e.allowed}, got ")
    assert repr(value) in str(e)
