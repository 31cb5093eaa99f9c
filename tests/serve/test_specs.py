"""InferenceService spec validation: each error names the field, the value and what is allowed,
before any Ray work starts."""

from __future__ import annotations

import dataclasses

import pytest

from raymlp import serve
from raymlp.errors import SpecError


def test_public_surface_is_pinned():
    assert sorted(serve.__all__) == sorted([
        "Autoscaling", "Batching", "InferenceService", "Resources", "ServiceError",
        "ServiceStatus", "Transformer", "VariantStatus", "canary", "delete", "deploy", "list_services",
        "promote", "rollback", "set_canary_percent", "start", "status"])


@pytest.mark.parametrize("kwargs, field, fragment", [
    ({"name": "Bad_Name", "model": "models:/m/1"}, "InferenceService.name", "DNS label"),
    ({"name": "ok", "model": "models:/m/latest"}, "InferenceService.model", "models:/NAME@ALIAS"),
    ({"name": "ok", "model": "/no/such/dir"}, "InferenceService.model", "no model directory"),
    ({"name": "ok", "model": "models:/m/1", "canary_percent": 10},
     "InferenceService.canary_percent", "0 when no canary_model"),
    ({"name": "ok", "model": "models:/m/1", "canary_model": "models:/m/2",
      "canary_percent": 101}, "InferenceService.canary_percent", "0 to 100"),
    ({"name": "ok", "model": "models:/m/1", "flavor": "onnx"}, "InferenceService.flavor",
     "'sklearn'"),
    ({"name": "ok", "model": "models:/m/1", "replicas": 0}, "InferenceService.replicas", ">= 1"),
    ({"name": "ok", "model": "models:/m/1", "max_request_bytes": 10},
     "InferenceService.max_request_bytes", ">= 1024"),
    ({"name": "ok", "model": "models:/m/1", "autoscaling": {"min_replicas": 1}},
     "InferenceService.autoscaling", "serve.Autoscaling"),
    ({"name": "ok", "model": "models:/m/1", "auth_token": "short"},
     "InferenceService.auth_token", "at least 8"),
    ({"name": "ok", "model": "models:/m/1", "access_log": "yes"},
     "InferenceService.access_log", "True or False"),
    ({"name": "ok", "model": "models:/m/1", "transformer": object()},
     "InferenceService.transformer", "preprocess and/or postprocess"),
    ({"name": "ok", "model": "models:/m/1", "transformer": "no_such_module_xyz:T"},
     "InferenceService.transformer", "cannot import no_such_module_xyz:T"),
    ({"name": "ok", "model": "models:/m/1", "transformer": "just-a-name"},
     "InferenceService.transformer", "'module:Class'"),
])
def test_bad_service_spec_names_field_value_and_allowed(kwargs, field, fragment):
    with pytest.raises(SpecError) as info:
        serve.InferenceService(**kwargs)
    assert info.value.field == field
    assert field in str(info.value) and fragment in str(info.value)


@pytest.mark.parametrize("cls, kwargs, field", [
    (serve.Autoscaling, {"min_replicas": -1}, "Autoscaling.min_replicas"),
    (serve.Autoscaling, {"min_replicas": 3, "max_replicas": 2}, "Autoscaling.max_replicas"),
    (serve.Autoscaling, {"target_ongoing_requests": 0}, "Autoscaling.target_ongoing_requests"),
    (serve.Batching, {"max_batch_size": 0}, "Batching.max_batch_size"),
    (serve.Batching, {"max_wait_ms": -1}, "Batching.max_wait_ms"),
    (serve.Resources, {"num_cpus": 0}, "Resources.num_cpus"),
    (serve.Resources, {"num_gpus": -0.5}, "Resources.num_gpus"),
])
def test_bad_sub_specs_name_their_field(cls, kwargs, field):
    with pytest.raises(SpecError) as info:
        cls(**kwargs)
    assert info.value.field == field and repr(list(kwargs.values())[-1]) in str(info.value)


def test_valid_spec_keeps_values_and_maps_to_serve_autoscaling():
    spec = serve.InferenceService(
        name="digits", model="models:/digits@champion", canary_model="models:/digits/7",
        canary_percent=10, autoscaling=serve.Autoscaling(min_replicas=0, max_replicas=4),
        resources=serve.Resources(num_cpus=0.5, num_gpus=0.25))
    assert spec.canary_percent == 10 and spec.resources.num_gpus == 0.25
    cfg = spec.autoscaling.serve_config()
    assert cfg["min_replicas"] == 0 and cfg["max_replicas"] == 4 and cfg["initial_replicas"] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # frozen


class _NeedsArgs(serve.Transformer):
    def __init__(self, vocabulary):
        self.vocabulary = vocabulary


class _BadTensors(serve.Transformer):
    inputs = [("text", "STRING", [-1])]


class _Unpicklable(serve.Transformer):
    def __init__(self):
        import threading

        self.lock = threading.Lock()


@pytest.mark.parametrize("transformer, field, fragment", [
    (_NeedsArgs, "InferenceService.transformer", "constructible without arguments"),
    (_BadTensors, "InferenceService.transformer.inputs", "'BYTES'"),
    (_Unpicklable(), "InferenceService.transformer", "cannot be pickled"),
])
def test_bad_transformer_is_refused_before_deploy(transformer, field, fragment):
    with pytest.raises(SpecError) as info:
        serve.InferenceService(name="ok", model="models:/m/1", transformer=transformer)
    assert info.value.field == field
    assert fragment in str(info.value)


def test_transformer_by_class_instance_or_reference():
    ref = f"{__name__}:_NeedsArgs"
    with pytest.raises(SpecError):  # the reference resolves to the class, which needs args
        serve.InferenceService(name="ok", model="models:/m/1", transformer=ref)
    spec = serve.InferenceService(name="ok", model="models:/m/1",
                                  transformer=_NeedsArgs({"a": 1}))
    assert isinstance(spec.transformer, _NeedsArgs)
    spec = serve.InferenceService(name="ok", model="models:/m/1",
                                  transformer=f"{__name__}:_Plain")
    assert spec.transformer is _Plain


class _Plain(serve.Transformer):
    def preprocess(self, inputs):
        return inputs
