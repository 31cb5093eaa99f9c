"""InferenceService spec validation: values only at construction (each error names the field,
the value and what is allowed); the checks that need the runtime at deploy, before any Ray
work; the same spec from plain data (YAML, ``--set``) and its JSON Schema."""

from __future__ import annotations

import dataclasses

import pytest

from raymlp import serve
from raymlp._spec import from_data, json_schema, to_data
from raymlp.errors import SpecError


def test_public_surface_is_pinned():
    assert sorted(serve.__all__) == sorted([
        "Autoscaling", "Batching", "InferenceService", "Resources", "Service", "ServiceStatus",
        "Transformer", "VariantStatus", "get", "list_services", "start"])
    for gone in ("canary", "promote", "rollback", "status", "delete", "deploy",
                 "set_canary_percent", "ServiceError"):
        assert not hasattr(serve, gone), gone
    for method in ("canary", "promote", "rollback", "status", "delete", "set_canary_percent"):
        assert not hasattr(serve.InferenceService, method), method  # spec -> action -> handle


@pytest.mark.parametrize("kwargs, field, fragment", [
    ({"name": "Bad_Name", "model": "models:/m/1"}, "InferenceService.name", "DNS label"),
    ({"name": "ok", "model": "models:/m/latest"}, "InferenceService.model", "models:/NAME@ALIAS"),
    ({"name": "ok", "model": "models:/m/1", "canary_percent": 10},
     "InferenceService.canary_percent", "0 when no canary_model"),
    ({"name": "ok", "model": "models:/m/1", "canary_model": "models:/m/2",
      "canary_percent": 101}, "InferenceService.canary_percent", "<= 100"),
    ({"name": "ok", "model": "models:/m/1", "canary_model": "models:/m/2",
      "canary_percent": float("nan")}, "InferenceService.canary_percent", ">= 0"),
    ({"name": "ok", "model": "models:/m/1", "flavor": "onnx"}, "InferenceService.flavor",
     "'sklearn'"),
    ({"name": "ok", "model": "models:/m/1", "replicas": 0}, "InferenceService.replicas", ">= 1"),
    ({"name": "ok", "model": "models:/m/1", "replicas": True}, "InferenceService.replicas",
     "an integer"),
    ({"name": "ok", "model": "models:/m/1", "max_request_bytes": 10},
     "InferenceService.max_request_bytes", ">= 1024"),
    ({"name": "ok", "model": "models:/m/1", "autoscaling": {"min_replicas": 1}},
     "InferenceService.autoscaling", "serve.Autoscaling"),
    ({"name": "ok", "model": "models:/m/1", "auth_token": "short"},
     "InferenceService.auth_token", "at least 8"),
    ({"name": "ok", "model": "models:/m/1", "access_log": "yes"},
     "InferenceService.access_log", "True or False"),
    ({"name": "ok", "model": "models:/m/1", "explainer": "lime"},
     "InferenceService.explainer", "'shap'"),
    ({"name": "ok", "model": "models:/m/1", "payload_log": "kafka://topic"},
     "InferenceService.payload_log", "http://"),
    ({"name": "ok", "model": "models:/m/1", "transformer": object()},
     "InferenceService.transformer", "preprocess and/or postprocess"),
    ({"name": "ok", "model": "models:/m/1", "transformer": "just-a-name"},
     "InferenceService.transformer", "'module:Class'"),
])
def test_bad_service_spec_names_field_value_and_allowed(kwargs, field, fragment):
    with pytest.raises(SpecError) as info:
        serve.InferenceService(**kwargs)
    assert info.value.field == field
    assert field in str(info.value) and fragment in str(info.value)
    assert info.value.allowed and fragment in info.value.allowed


def test_a_hidden_token_is_not_shown_in_the_error():
    with pytest.raises(SpecError) as info:
        serve.InferenceService(name="ok", model="models:/m/1", auth_token="secret7")
    assert "secret7" not in str(info.value) and info.value.value == "<hidden>"


@pytest.mark.parametrize("cls, kwargs, field", [
    (serve.Autoscaling, {"min_replicas": -1}, "Autoscaling.min_replicas"),
    (serve.Autoscaling, {"min_replicas": 3, "max_replicas": 2}, "Autoscaling.max_replicas"),
    (serve.Autoscaling, {"target_ongoing_requests": 0}, "Autoscaling.target_ongoing_requests"),
    (serve.Autoscaling, {"upscale_delay_s": float("inf")}, "Autoscaling.upscale_delay_s"),
    (serve.Batching, {"max_batch_size": 0}, "Batching.max_batch_size"),
    (serve.Batching, {"max_batch_size": 2.0}, "Batching.max_batch_size"),
    (serve.Batching, {"max_wait_s": -1}, "Batching.max_wait_s"),
    (serve.Resources, {"cpus": 0}, "Resources.cpus"),
    (serve.Resources, {"gpus": -0.5}, "Resources.gpus"),
    (serve.Resources, {"memory": 0}, "Resources.memory"),
])
def test_bad_sub_specs_name_their_field(cls, kwargs, field):
    with pytest.raises(SpecError) as info:
        cls(**kwargs)
    assert info.value.field == field and repr(list(kwargs.values())[-1]) in str(info.value)


def test_valid_spec_keeps_values_and_maps_to_serve_options():
    spec = serve.InferenceService(
        name="digits", model="models:/digits@champion", canary_model="models:/digits/7",
        canary_percent=10, autoscaling=serve.Autoscaling(min_replicas=0, max_replicas=4),
        resources=serve.Resources(cpus=0.5, gpus=0.25, memory=2**30))
    assert spec.canary_percent == 10 and spec.resources.gpus == 0.25
    cfg = spec.autoscaling.serve_config()
    assert cfg["min_replicas"] == 0 and cfg["max_replicas"] == 4 and cfg["initial_replicas"] == 1
    assert spec.resources.actor_options() == {"num_cpus": 0.5, "num_gpus": 0.25,
                                              "memory": 2**30}
    assert serve.Resources().actor_options() == {"num_cpus": 1.0, "num_gpus": 0.0}
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # frozen


def test_construction_imports_nothing_and_looks_for_no_directory():
    """A reference stays a string and a local path is not looked for: the spec can be built,
    compared and written out anywhere."""
    spec = serve.InferenceService(name="ok", model="/no/such/dir",
                                  transformer="no_such_module_xyz:T", explainer="shap")
    assert spec.transformer == "no_such_module_xyz:T" and spec.model == "/no/such/dir"
    assert spec == serve.InferenceService(name="ok", model="/no/such/dir",
                                          transformer="no_such_module_xyz:T", explainer="shap")
    assert to_data(spec)["transformer"] == "no_such_module_xyz:T"


def test_html_of_a_spec_is_escaped_and_hides_the_token():
    spec = serve.InferenceService(name="ok", model="/models/<script>", auth_token="s3cret-token")
    page = spec._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "s3cret-token" not in page and "&lt;hidden&gt;" in page


@pytest.mark.parametrize("kwargs, field, fragment", [
    ({"model": "/no/such/dir"}, "InferenceService.model", "an existing model directory"),
    ({"transformer": "no_such_module_xyz:T"}, "InferenceService.transformer",
     "cannot import module 'no_such_module_xyz'"),
    ({"transformer": "tests.serve.test_specs:_NoSuchClass"}, "InferenceService.transformer",
     "has no attribute"),
    ({"transformer": "tests.serve.test_specs:_NeedsArgs"}, "InferenceService.transformer",
     "constructible without arguments"),
])
def test_runtime_checks_fail_at_deploy_before_any_ray_work(kwargs, field, fragment):
    spec = serve.InferenceService(**{"name": "ok", "model": "models:/m/1", **kwargs})
    with pytest.raises(SpecError) as info:
        spec.deploy(timeout_s=1)
    assert info.value.field == field
    assert fragment in str(info.value)


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
])
def test_bad_transformer_is_refused_at_construction(transformer, field, fragment):
    with pytest.raises(SpecError) as info:
        serve.InferenceService(name="ok", model="models:/m/1", transformer=transformer)
    assert info.value.field == field
    assert fragment in str(info.value)


def test_unpicklable_transformer_is_refused_at_deploy():
    spec = serve.InferenceService(name="ok", model="models:/m/1", transformer=_Unpicklable())
    with pytest.raises(SpecError) as info:
        spec.deploy(timeout_s=1)
    assert info.value.field == "InferenceService.transformer"
    assert "picklable" in str(info.value)


def test_transformer_by_class_instance_or_reference():
    spec = serve.InferenceService(name="ok", model="models:/m/1",
                                  transformer=_NeedsArgs({"a": 1}))
    assert isinstance(spec.transformer, _NeedsArgs)
    spec = serve.InferenceService(name="ok", model="models:/m/1", transformer=_Plain)
    assert spec.transformer is _Plain
    spec = serve.InferenceService(name="ok", model="models:/m/1",
                                  transformer=f"{__name__}:_Plain")
    assert spec.transformer == f"{__name__}:_Plain"


class _Plain(serve.Transformer):
    def preprocess(self, inputs):
        return inputs


def test_spec_round_trips_through_plain_data_and_rejects_unknown_or_ill_typed_fields():
    spec = serve.InferenceService(
        name="digits", model="models:/digits@champion",
        autoscaling=serve.Autoscaling(min_replicas=0, max_replicas=3),
        batching=serve.Batching(max_wait_s=0.01), resources=serve.Resources(cpus=0.5),
        transformer="my_module:Scale")
    data = to_data(spec)
    assert data["resources"] == {"cpus": 0.5, "gpus": 0.0, "memory": None}
    assert from_data(serve.InferenceService, data) == spec
    with pytest.raises(SpecError) as info:
        from_data(serve.InferenceService, {**data, "num_cpus": 1})
    assert info.value.field == "InferenceService.num_cpus"
    with pytest.raises(SpecError) as info:
        from_data(serve.InferenceService, {**data, "resources": {"num_gpus": 1}})
    assert info.value.field == "InferenceService.resources.num_gpus"
    with pytest.raises(SpecError) as info:
        from_data(serve.InferenceService, {**data, "replicas": "two"})
    assert info.value.field == "InferenceService.replicas"


def test_json_schema_lists_every_field_and_forbids_others():
    schema = json_schema(serve.InferenceService)
    fields = {f.name for f in dataclasses.fields(serve.InferenceService)}
    assert set(schema["properties"]) == fields
    assert schema["required"] == ["name", "model"] and schema["additionalProperties"] is False
    resources = schema["$defs"]["Resources"]
    assert set(resources["properties"]) == {"cpus", "gpus", "memory"}
    assert resources["additionalProperties"] is False
