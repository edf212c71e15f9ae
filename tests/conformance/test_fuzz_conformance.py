"""Mutated requests: every answer is a clean status, none hangs, and the server keeps serving.

Valid requests for each RPC are serialized with the official stubs, then bytes are flipped,
inserted, cut and lengths inflated, and the raw bytes sent as the method's request. A seeded
random generator makes a failure reproducible (TENSORSERVE_FUZZ_SEED, TENSORSERVE_FUZZ_CASES).
"""
import collections
import json
import os
import random

import grpc
import requests
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, inference_pb2, predict_pb2,
                                     regression_pb2)

SEED = int(os.environ.get("TENSORSERVE_FUZZ_SEED", "20261125"))
CASES = int(os.environ.get("TENSORSERVE_FUZZ_CASES", "3000"))

# Codes a bad request may get; INTERNAL only for bytes that are not the message at all.
CLEAN = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
         grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.OUT_OF_RANGE}


def _examples(input_, feature, values):
    for v in values:
        input_.example_list.examples.add().features.feature[feature].float_list.value.extend([v])


def seeds():
    """(method, serialized request) pairs that succeed unmutated."""
    out = []
    p = predict_pb2.PredictRequest()
    p.model_spec.name = "half_plus_two"
    x = p.inputs["x"]
    x.dtype = 1
    x.tensor_shape.dim.add().size = 2
    x.tensor_shape.dim.add().size = 1
    x.float_val.extend([1.0, 2.0])
    out.append(("Predict", p.SerializeToString()))

    p = predict_pb2.PredictRequest()
    p.model_spec.name = "digits_mlp"
    x = p.inputs["x"]
    x.dtype = 1
    x.tensor_shape.dim.add().size = 1
    x.tensor_shape.dim.add().size = 64
    x.tensor_content = bytes(4 * 64)
    out.append(("Predict", p.SerializeToString()))

    c = classification_pb2.ClassificationRequest()
    c.model_spec.name = "half_plus_two"
    c.model_spec.signature_name = "classify_x_to_y"
    _examples(c.input, "x", [2.0, 4.0])
    out.append(("Classify", c.SerializeToString()))

    c = classification_pb2.ClassificationRequest()
    c.model_spec.name = "iris"
    e = c.input.example_list_with_context.examples.add()
    for name in ("sepal_length", "sepal_width", "petal_length"):
        e.features.feature[name].float_list.value.append(0.1)
    c.input.example_list_with_context.context.features.feature["petal_width"].float_list.value.append(0.2)
    out.append(("Classify", c.SerializeToString()))

    r = regression_pb2.RegressionRequest()
    r.model_spec.name = "half_plus_two"
    r.model_spec.signature_name = "regress_x2_to_y3"
    _examples(r.input, "x2", [1.0])
    out.append(("Regress", r.SerializeToString()))

    m = inference_pb2.MultiInferenceRequest()
    for sig, method in (("regress_x_to_y", "tensorflow/serving/regress"),
                        ("classify_x_to_y", "tensorflow/serving/classify")):
        t = m.tasks.add()
        t.model_spec.name = "half_plus_two"
        t.model_spec.signature_name = sig
        t.method_name = method
    _examples(m.input, "x", [2.0])
    out.append(("MultiInference", m.SerializeToString()))

    g = get_model_metadata_pb2.GetModelMetadataRequest()
    g.model_spec.name = "iris"
    g.metadata_field.append("signature_def")
    out.append(("GetModelMetadata", g.SerializeToString()))
    return out


def mutate(rng, data):
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:  # flip a byte
            b[min(i, len(b) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:  # insert noise
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2:  # cut
            del b[i:i + rng.randint(1, 16)]
        elif op == 3 and b:  # a huge varint where a byte was (lengths, dims, counts)
            b[min(i, len(b) - 1):min(i, len(b) - 1) + 1] = b"\xff\xff\xff\xff\xff\xff\xff\xff\x7f"
        elif op == 4:  # duplicate a run (repeated fields, repeated keys)
            j = rng.randrange(len(b) + 1)
            lo, hi = min(i, j), max(i, j)
            b[hi:hi] = b[lo:hi][:64]
        elif op == 5 and b:  # set a byte to a boundary value
            b[min(i, len(b) - 1)] = rng.choice([0x00, 0x01, 0x7f, 0x80, 0xff])
    return bytes(b)


def boundary(rng, field):
    """A value at an edge of a scalar field's type."""
    F = field.type
    d = field.__class__
    if F in (d.TYPE_FLOAT, d.TYPE_DOUBLE):
        return rng.choice([0.0, -0.0, 1.0, -1.0, 1e30, -1e30, float("inf"), float("nan"), 3.0])
    if F in (d.TYPE_INT64, d.TYPE_SINT64, d.TYPE_SFIXED64):
        return rng.choice([0, 1, -1, 2, 64, 2 ** 31, 2 ** 62, -(2 ** 63), 2 ** 63 - 1])
    if F in (d.TYPE_INT32, d.TYPE_SINT32, d.TYPE_SFIXED32):
        return rng.choice([0, 1, -1, 2, 7, 2 ** 31 - 1, -(2 ** 31)])
    if F in (d.TYPE_UINT64, d.TYPE_FIXED64):
        return rng.choice([0, 1, 2 ** 64 - 1])
    if F in (d.TYPE_UINT32, d.TYPE_FIXED32):
        return rng.choice([0, 1, 2 ** 32 - 1])
    if F == d.TYPE_BOOL:
        return rng.choice([True, False])
    if F == d.TYPE_ENUM:
        return rng.choice([v.number for v in field.enum_type.values] + [-1, 99])
    if F == d.TYPE_STRING:
        return rng.choice(["", "x", "x2", "y", "serving_default", "half_plus_two", "iris", "../..", "\u00e9" * 3, "a" * 2000])
    if F == d.TYPE_BYTES:
        return rng.choice([b"", b"\x00", bytes(3), bytes(4 * 64), b"\xff" * 9])
    raise AssertionError(F)


def mutate_message(rng, msg, depth=0):
    """Changes one thing somewhere inside `msg`: a value, an element, a key, a oneof arm."""
    fields = list(msg.DESCRIPTOR.fields)
    set_fields = [f for f, _ in msg.ListFields()]
    field = rng.choice(set_fields) if set_fields and rng.random() < 0.7 else rng.choice(fields)
    d = field.__class__
    is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
    value = getattr(msg, field.name)
    if is_map:
        value_field = field.message_type.fields_by_name["value"]
        keys = list(value.keys())
        op = rng.randrange(3)
        if op == 0 and keys:
            del value[rng.choice(keys)]
        elif value_field.message_type is not None:
            key = rng.choice(keys) if keys and op == 1 else rng.choice(["x", "x2", "a", "", "unknown", "sepal_length"])
            if depth < 6:
                mutate_message(rng, value[key], depth + 1)
            else:
                value[key].Clear()
        else:
            value[rng.choice(["x", "", "k"])] = boundary(rng, value_field)
    elif field.is_repeated:
        op = rng.randrange(3)
        if op == 0 and len(value):
            del value[rng.randrange(len(value))]
        elif field.message_type is not None:
            if op == 1 and len(value) and depth < 6:
                mutate_message(rng, value[rng.randrange(len(value))], depth + 1)
            else:
                new = value.add()
                if depth < 6 and rng.random() < 0.5:
                    mutate_message(rng, new, depth + 1)
        else:
            for _ in range(rng.choice([1, 1, 2, 63, 65])):
                value.append(boundary(rng, field))
    elif field.message_type is not None:
        if rng.random() < 0.2:
            msg.ClearField(field.name)
        elif depth < 6:
            mutate_message(rng, value, depth + 1)
        else:
            value.SetInParent()
    else:
        setattr(msg, field.name, boundary(rng, field))


REQUEST_TYPES = {
    "Predict": predict_pb2.PredictRequest,
    "Classify": classification_pb2.ClassificationRequest,
    "Regress": regression_pb2.RegressionRequest,
    "MultiInference": inference_pb2.MultiInferenceRequest,
    "GetModelMetadata": get_model_metadata_pb2.GetModelMetadataRequest,
}


def fuzz_case(rng, method, data):
    """Bytes for one call: most mutate the message's fields, the rest its raw bytes."""
    if rng.random() < 0.3:
        return mutate(rng, data)
    msg = REQUEST_TYPES[method].FromString(data)
    for _ in range(rng.randint(1, 3)):
        mutate_message(rng, msg)
    return msg.SerializeToString()


def test_mutated_grpc_requests_get_clean_statuses(server, stub):
    rng = random.Random(SEED)
    base = seeds()
    with grpc.insecure_channel(server.address) as ch:
        calls = {m: ch.unary_unary(f"/tensorflow.serving.PredictionService/{m}") for m, _ in base}
        for method, data in base:  # the seeds themselves must work
            calls[method](data, timeout=10.0)
        seen = collections.Counter()
        bad = []
        for n in range(CASES):
            method, data = base[n % len(base)]
            body = fuzz_case(rng, method, data)
            try:
                calls[method](body, timeout=10.0)
                seen["OK"] += 1
            except grpc.RpcError as e:
                code, details = e.code(), e.details() or ""
                seen[code.name] += 1
                decode_error = code == grpc.StatusCode.INTERNAL and "decode" in details.lower()
                if code not in CLEAN and not decode_error:
                    bad.append((method, body.hex(), code.name, details[:200]))
        assert not bad, f"{len(bad)} unclean answers (seed {SEED}), first: {bad[:3]}; all codes: {dict(seen)}"
        print("grpc answers:", dict(seen))
        assert seen["OK"] > 0 and seen["INVALID_ARGUMENT"] > 0, dict(seen)

    # Still serving, with the right answer.
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "regress_x_to_y"
    _examples(request.input, "x", [2.0])
    assert stub.Regress(request, 10.0).result.regressions[0].value == 3.0
    assert server.proc.poll() is None


def mutate_json(rng, value):
    """Replaces one node of a JSON document with something of another kind."""
    odd = [None, True, -1, 0, 1e308, -1e308, 2 ** 63, "", "x" * 300, [], {}, [[]], {"b64": "!!"},
           {"b64": "AAAA"}, [1, [2]], "NaN", 1.5, -7]
    if isinstance(value, dict) and value and rng.random() < 0.8:
        k = rng.choice(sorted(value))
        out = dict(value)
        out[k] = mutate_json(rng, value[k])
        return out
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = rng.randrange(len(value))
        out = list(value)
        out[i] = mutate_json(rng, value[i])
        return out
    return rng.choice(odd)


def test_mutated_rest_bodies_get_4xx(server):
    rng = random.Random(SEED)
    base = [
        ("/v1/models/half_plus_two:predict", {"instances": [[1.0], [2.0]]}),
        ("/v1/models/half_plus_two:predict", {"inputs": {"x": [[1.0]]}}),
        ("/v1/models/half_plus_two:classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}),
        ("/v1/models/iris:classify", {"context": {"petal_width": 0.2},
                                      "examples": [{"sepal_length": 0.1, "sepal_width": 0.1, "petal_length": 0.1}]}),
        ("/v1/models/half_plus_two:regress", {"signature_name": "regress_x2_to_y3", "examples": [{"x2": 1.0}]}),
    ]
    statuses = collections.Counter()
    bad = []
    with requests.Session() as s:
        for path, body in base:
            assert s.post(server.rest_url + path, data=json.dumps(body), timeout=10).status_code == 200, path
        for n in range(CASES // 3):
            path, body = base[n % len(base)]
            text = json.dumps(mutate_json(rng, body))
            if rng.random() < 0.2:  # and some that are not JSON at all
                cut = rng.randrange(len(text))
                text = text[:cut] + rng.choice(["", "}", "\x00", "\"", "[" * 200])
            r = s.post(server.rest_url + path, data=text.encode(), timeout=10)
            statuses[r.status_code] += 1
            if r.status_code >= 500 or (r.status_code != 200 and "error" not in r.json()):
                bad.append((path, text[:300], r.status_code, r.text[:200]))
    assert not bad, f"{len(bad)} bad answers (seed {SEED}), first: {bad[:3]}; statuses: {dict(statuses)}"
    print("rest answers:", dict(statuses))
    assert statuses[400] > 0, dict(statuses)
    assert requests.post(server.rest_url + "/v1/models/half_plus_two:regress",
                         json={"examples": [{"x": 2.0}], "signature_name": "regress_x_to_y"},
                         timeout=10).json() == {"results": [3.0]}
