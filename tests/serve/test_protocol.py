"""Open Inference Protocol tensors: every datatype from JSON and from the binary tensor data
extension, checked against the model's metadata; no Ray needed."""

from __future__ import annotations

import numpy as np
import pytest

from raymlp.serve import _protocol as oip

VALUES = {
    "FP32": np.array([[1.5, -2.0], [0.25, 3.0]], dtype=np.float32),
    "FP64": np.array([[1e-300, 2.5]], dtype=np.float64),
    "INT32": np.array([[-7, 2**31 - 1]], dtype=np.int32),
    "INT64": np.array([[2**40, -3]], dtype=np.int64),
    "BOOL": np.array([[True, False, True]]),
    "BYTES": np.array([["héllo", ""], ["a b", "zz"]], dtype=object),
}


def _input(datatype, arr, **kw):
    return oip.RequestInput(name="x", shape=list(arr.shape), datatype=datatype, **kw)


@pytest.mark.parametrize("datatype", sorted(VALUES))
def test_each_datatype_decodes_from_json_and_from_binary(datatype):
    arr = VALUES[datatype]
    spec = oip.TensorMetadata(name="x", datatype=datatype, shape=[-1, arr.shape[1]])
    from_json = oip.decode(_input(datatype, arr, data=arr.tolist()), spec)  # nested lists
    blob = oip.to_binary(arr)
    from_binary = oip.decode(_input(datatype, arr, parameters={"binary_data_size": len(blob)}),
                             spec, blob)
    for got in (from_json, from_binary):
        assert got.shape == arr.shape and got.dtype == oip.DATATYPES[datatype]
        assert got.tolist() == arr.tolist()
    out, raw = oip.encode("y", arr, binary=True)
    assert (out.datatype, out.shape, out.parameters) == (datatype, list(arr.shape),
                                                         {"binary_data_size": len(raw)})
    assert raw == blob
    out, raw = oip.encode("y", arr)
    assert raw == b"" and out.data == arr.reshape(-1).tolist()


@pytest.mark.parametrize("datatype, data, fragment", [
    ("BOOL", [1, 0], "does not fit datatype BOOL"),
    ("INT32", [1.5, 2.0], "does not fit datatype INT32"),
    ("FP32", ["1", "2"], "does not fit datatype FP32"),
    ("BYTES", [1, 2], "BYTES data must be strings"),
])
def test_json_data_of_the_wrong_kind_is_a_400(datatype, data, fragment):
    with pytest.raises(oip.RequestError, match=fragment) as info:
        oip.decode(oip.RequestInput(name="x", shape=[2], datatype=datatype, data=data), None)
    assert info.value.status == 400


def test_shape_and_datatype_are_checked_against_the_model():
    spec = oip.TensorMetadata(name="x", datatype="FP32", shape=[-1, 4])
    with pytest.raises(oip.RequestError, match=r"shape \[2, 3\] does not match"):
        oip.decode(oip.RequestInput(name="x", shape=[2, 3], datatype="FP32", data=[0] * 6), spec)
    with pytest.raises(oip.RequestError, match="datatype FP64 does not match the model's FP32"):
        oip.decode(oip.RequestInput(name="x", shape=[1, 4], datatype="FP64", data=[0] * 4), spec)
    with pytest.raises(oip.RequestError, match="neither 'data' nor binary data"):
        oip.decode(oip.RequestInput(name="x", shape=[1, 4], datatype="FP32"), spec)


def test_binary_body_framing_errors_are_400s():
    a = oip.RequestInput(name="a", shape=[2], datatype="INT32",
                         parameters={"binary_data_size": 8})
    b = oip.RequestInput(name="b", shape=[1], datatype="FP64", data=[1.0])
    blob = np.array([1, 2], dtype="<i4").tobytes()
    assert oip.binary_parts([a, b], blob) == [blob, None]
    with pytest.raises(oip.RequestError, match="does not fit the 4 binary bytes"):
        oip.binary_parts([a], blob[:4])
    with pytest.raises(oip.RequestError, match="3 binary bytes after the last input"):
        oip.binary_parts([a], blob + b"xyz")
    assert oip.split_binary(b'{"a":1}tail', "7") == (b'{"a":1}', b"tail")
    for header in ("-1", "abc", "99"):
        with pytest.raises(oip.RequestError, match="Inference-Header-Content-Length"):
            oip.split_binary(b'{"a":1}', header)
    with pytest.raises(oip.RequestError, match="not a whole number of INT32"):
        oip.decode(oip.RequestInput(name="a", shape=[1], datatype="INT32"), None, b"abc")
    with pytest.raises(oip.RequestError, match="truncated BYTES element"):
        oip.decode(oip.RequestInput(name="a", shape=[1], datatype="BYTES"), None,
                   (10).to_bytes(4, "little") + b"short")


def test_v1_rows_become_checked_columns():
    from raymlp.serve._decode import _v1_columns

    specs = [oip.TensorMetadata(name="age", datatype="INT64", shape=[-1]),
             oip.TensorMetadata(name="score", datatype="FP64", shape=[-1])]
    for rows in ([{"age": 3, "score": 0.5}, {"score": 1.5, "age": 4}], [[3, 0.5], [4, 1.5]]):
        cols = _v1_columns(specs, rows, "the model")
        assert cols["age"].tolist() == [3, 4] and cols["age"].dtype == np.int64
        assert cols["score"].tolist() == [0.5, 1.5]
    with pytest.raises(oip.RequestError, match=r"miss column\(s\) \['score'\]; the model takes"):
        _v1_columns(specs, [{"age": 3}], "the model")
    for bad in ([[3, 0.5], [4]], [[3, 0.5], 7]):
        with pytest.raises(oip.RequestError, match="each instance must hold 2 values"):
            _v1_columns(specs, bad, "the model")
