"""Encoded-image inputs: KServe's image-classifier contract on the bundled digits_image model,
decoded pixels against Pillow + numpy, and every bad-image case on every front end."""
import base64
import io
import json
import os
import struct
import zlib

import grpc
import numpy as np
import onnx
import pytest
import requests
from onnx import TensorProto, helper
from PIL import Image, ImageOps
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from conftest import ROOT, Server

SAMPLES = os.path.join(ROOT, "examples", "models", "digits_image", "samples")


def sample_files():
    return sorted(f for f in os.listdir(SAMPLES) if f.endswith((".png", ".jpg")))


def label_of(name):
    return int(name.split("_")[1])


def string_tensor(values):
    from tensorflow.core.framework import tensor_pb2, types_pb2
    t = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
    t.tensor_shape.dim.add(size=len(values))
    t.string_val.extend(values)
    return t


def grpc_predict(address, model, inputs, timeout=20.0):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    for name, tensor in inputs.items():
        req.inputs[name].CopyFrom(tensor)
    with grpc.insecure_channel(address) as ch:
        return prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(req, timeout)


@pytest.fixture(scope="module")
def bundled():
    s = Server(rest=True)
    yield s
    s.stop()


def test_kserve_sample_over_rest_unchanged(bundled):
    with open(os.path.join(SAMPLES, "input.json")) as f:
        body = f.read()
    r = requests.post(f"{bundled.rest_url}/v1/models/digits_image:predict", data=body, timeout=20)
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    sent = json.loads(body)["instances"]
    assert len(predictions) == len(sent)
    for p, instance, name in zip(predictions, sent, sample_files()):
        assert sorted(p) == ["key", "prediction", "scores"]
        assert p["key"] == instance["key"]
        assert len(p["scores"]) == 10 and abs(sum(p["scores"]) - 1) < 1e-4
        assert p["prediction"] == int(np.argmax(p["scores"])) == label_of(name)


def test_sample_over_grpc_with_official_stubs(bundled):
    files = sample_files()
    images = [open(os.path.join(SAMPLES, f), "rb").read() for f in files]
    keys = [str(i + 1).encode() for i in range(len(files))]
    resp = grpc_predict(bundled.address, "digits_image",
                        {"image_bytes": string_tensor(images), "key": string_tensor(keys)})
    assert sorted(resp.outputs) == ["key", "prediction", "scores"]
    assert [d.size for d in resp.outputs["scores"].tensor_shape.dim] == [len(files), 10]
    assert list(resp.outputs["prediction"].int64_val) == [label_of(f) for f in files]
    assert list(resp.outputs["key"].string_val) == keys
    # Metadata shows the encoded input as TF Serving's sample has it: DT_STRING [-1].
    from tensorflow_serving.apis import get_model_metadata_pb2
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "digits_image"
    with grpc.insecure_channel(bundled.address) as ch:
        meta = prediction_service_pb2_grpc.PredictionServiceStub(ch).GetModelMetadata(req, 10)
    from tensorflow_serving.apis import get_model_metadata_pb2 as m
    defs = m.SignatureDefMap()
    meta.metadata["signature_def"].Unpack(defs)
    image_in = defs.signature_def["serving_default"].inputs["image_bytes"]
    assert image_in.dtype == 7 and [d.size for d in image_in.tensor_shape.dim] == [-1]


def test_columnar_and_v2_front_ends(bundled):
    files = sample_files()
    images = [open(os.path.join(SAMPLES, f), "rb").read() for f in files]
    b64 = [{"b64": base64.b64encode(i).decode()} for i in images]
    r = requests.post(f"{bundled.rest_url}/v1/models/digits_image:predict",
                      json={"inputs": {"image_bytes": b64, "key": ["a", "b", "c", "d"][: len(files)]}}, timeout=20)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"]["prediction"] == [label_of(f) for f in files]
    import tritonclient.http as httpclient
    client = httpclient.InferenceServerClient(bundled.rest_url.replace("http://", ""))
    img = httpclient.InferInput("image_bytes", [len(images)], "BYTES")
    img.set_data_from_numpy(np.array(images, dtype=np.object_))
    key = httpclient.InferInput("key", [len(images)], "BYTES")
    key.set_data_from_numpy(np.array([b"k%d" % i for i in range(len(images))], dtype=np.object_))
    result = client.infer("digits_image", [img, key])
    assert result.as_numpy("prediction").tolist() == [label_of(f) for f in files]
    assert result.as_numpy("key").tolist() == [b"k%d" % i for i in range(len(images))]
    meta = client.get_model_metadata("digits_image")
    assert {"name": "image_bytes", "datatype": "BYTES", "shape": [-1]} in meta["inputs"]


# --- decoded pixels against Pillow + numpy --------------------------------------------------

def identity_model(path, dtype, shape):
    os.makedirs(os.path.join(path, "1"), exist_ok=True)
    x = helper.make_tensor_value_info("image", dtype, shape)
    y = helper.make_tensor_value_info("pixels", dtype, shape)
    g = helper.make_graph([helper.make_node("Identity", ["image"], ["pixels"])], "id", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, os.path.join(path, "1", "model.onnx"))


@pytest.fixture(scope="module")
def pixels_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("image_models")
    models = {
        "rgb": (TensorProto.UINT8, ["N", 32, 48, 3], 'color: RGB'),
        "bgr_crop": (TensorProto.UINT8, ["N", 32, 32, 3], 'color: BGR resize: CENTER_CROP'),
        "grey_nchw": (TensorProto.FLOAT, ["N", 1, 20, 20],
                      'layout: NCHW color: GRAYSCALE scale: 0.00392156862745098 mean: 0.5 std: 0.25'),
        "rgb_norm": (TensorProto.FLOAT, ["N", 3, 24, 24],
                     'layout: NCHW scale: 0.00392156862745098 mean: [0.485, 0.456, 0.406] std: [0.229, 0.224, 0.225]'),
        "free_size": (TensorProto.UINT8, ["N", "H", "W", 3], 'height: 10 width: 30'),
    }
    config = []
    for name, (dtype, shape, decl) in models.items():
        path = str(base / name)
        identity_model(path, dtype, shape)
        with open(os.path.join(path, "1", "image_inputs.pbtxt"), "w") as f:
            f.write('input { model_input: "image" alias: "image_bytes" %s }\n' % decl)
        config.append('config { name: "%s" base_path: "%s" model_platform: "onnx" }' % (name, path))
    cfg = base / "models.config"
    cfg.write_text("model_config_list { %s }" % " ".join(config))
    s = Server(f"--model_config_file={cfg}", "--request_memory_budget_bytes=64000000", rest=True)
    yield s
    s.stop()


def photo(w, h, seed=0):
    """A colourful picture with edges and gradients (what a resize and a JPEG decoder must get right)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), ((xx + yy) % 64) * 4], -1)
    img = img.astype(np.int32)
    for _ in range(6):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        img[y0:y0 + h // 5, x0:x0 + w // 5] = rng.integers(0, 256, 3)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8), "RGB")


def encoded(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def served_pixels(server, model, data):
    resp = grpc_predict(server.address, model, {"image_bytes": string_tensor([data])})
    t = resp.outputs["pixels"]
    shape = [d.size for d in t.tensor_shape.dim]
    if t.dtype == 4:  # DT_UINT8
        raw = t.tensor_content or bytes(t.int_val)
        return np.frombuffer(raw, np.uint8).reshape(shape) if t.tensor_content else np.array(t.int_val, np.uint8).reshape(shape)
    return np.array(t.float_val, np.float32).reshape(shape)


def reference(data, size, mode="RGB", crop=False):
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert(mode)
    if crop:
        return np.asarray(ImageOps.fit(img, size, method=Image.BILINEAR), np.int32)
    return np.asarray(img.resize(size, Image.BILINEAR), np.int32)


@pytest.mark.parametrize("size", [(64, 48), (400, 300), (17, 23), (48, 32), (1024, 768)])
def test_png_pixels_equal_pillow(pixels_server, size):
    data = encoded(photo(*size), "PNG")
    got = served_pixels(pixels_server, "rgb", data)[0].astype(np.int32)
    # Bilinear resampling (down, up, or none at 48x32): within one grey level of Pillow's.
    assert np.abs(got - reference(data, (48, 32))).max() <= 1


@pytest.mark.parametrize("subsampling", [0, 2])
@pytest.mark.parametrize("size", [(400, 300), (1024, 768), (64, 48), (17, 23), (48, 32)])
def test_jpeg_pixels_against_pillow(pixels_server, size, subsampling):
    data = encoded(photo(*size), "JPEG", quality=90, subsampling=subsampling)
    got = served_pixels(pixels_server, "rgb", data)[0].astype(np.int32)
    diff = np.abs(got - reference(data, (48, 32)))
    if size[0] >= 400:
        # Photos larger than the model's input (the usual case): within one grey level.
        assert diff.max() <= 1, (diff.max(), diff.mean())
    else:
        # Near the stored size the decoders' own rounding shows: the JPEG standard leaves the IDCT's
        # precision and chroma upsampling (4:2:0) to the decoder, and libjpeg-turbo's differs from ours.
        assert diff.max() <= (2 if subsampling == 0 else 4) and diff.mean() < 0.5, (diff.max(), diff.mean())


def test_bgr_center_crop(pixels_server):
    data = encoded(photo(96, 48), "PNG")
    got = served_pixels(pixels_server, "bgr_crop", data)[0].astype(np.int32)
    want = reference(data, (32, 32), crop=True)[..., ::-1]
    assert np.abs(got - want).max() <= 1


def test_grey_nchw_normalised(pixels_server):
    data = encoded(photo(50, 70), "PNG")
    got = served_pixels(pixels_server, "grey_nchw", data)
    assert got.shape == (1, 1, 20, 20)
    want = (reference(data, (20, 20), "L") / 255.0 - 0.5) / 0.25
    assert np.abs(got[0, 0] - want).max() <= (1 / 255.0) / 0.25 + 1e-5


def test_imagenet_normalisation(pixels_server):
    data = encoded(photo(60, 40), "PNG")
    got = served_pixels(pixels_server, "rgb_norm", data)[0]
    ref = reference(data, (24, 24)) / 255.0
    want = ((ref - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).transpose(2, 0, 1)
    assert np.abs(got - want).max() <= (1 / 255.0) / 0.224 + 1e-5


def test_declared_size_for_a_free_model_input(pixels_server):
    data = encoded(photo(90, 30), "PNG")
    assert served_pixels(pixels_server, "free_size", data).shape == (1, 10, 30, 3)


def test_exif_orientation(pixels_server):
    img = photo(64, 48)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encoded(img, "JPEG", quality=95, exif=exif.tobytes())
    got = served_pixels(pixels_server, "rgb", data)[0].astype(np.int32)
    want = reference(data, (48, 32))
    assert np.abs(got - want).max() <= 2
    unrotated = np.asarray(img.resize((48, 32), Image.BILINEAR), np.int32)
    assert np.abs(got - unrotated).mean() > 10, "the orientation tag was ignored"


# --- bad images ------------------------------------------------------------------------------

def png_chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(w, h):
    """A few hundred bytes declaring w x h RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4096, 9)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def jpeg_bomb(w, h):
    """A real small JPEG whose frame header is rewritten to declare w x h pixels."""
    data = bytearray(encoded(photo(16, 16), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def bad_cases():
    good_png = encoded(photo(40, 30), "PNG")
    good_jpeg = encoded(photo(40, 30), "JPEG")
    gif = encoded(photo(8, 8), "GIF")
    return {
        "not_an_image": (b"hello, this is text", "not a JPEG or PNG image"),
        "empty": (b"", "not a JPEG or PNG image"),
        "truncated_png": (good_png[: len(good_png) // 2], "PNG image"),
        "truncated_jpeg": (good_jpeg[: len(good_jpeg) // 2], "JPEG image"),
        "gif": (gif, "GIF images are not supported"),
        "zero_width_png": (png_bomb(0, 10), "PNG image"),
        "png_bomb": (png_bomb(100_000, 100_000), "100000x100000"),
        "jpeg_bomb": (jpeg_bomb(65_000, 65_000), "65000x65000"),
    }


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


@pytest.mark.parametrize("case", list(bad_cases()))
def test_bad_image_is_invalid_argument_everywhere(bundled, case):
    data, reason = bad_cases()[case]
    good = open(os.path.join(SAMPLES, sample_files()[0]), "rb").read()
    before = rss_kib(bundled.proc.pid)
    # gRPC: the bad image is instance 1.
    with pytest.raises(grpc.RpcError) as e:
        grpc_predict(bundled.address, "digits_image",
                     {"image_bytes": string_tensor([good, data]), "key": string_tensor([b"a", b"b"])})
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
    assert "image_bytes[1]" in e.value.details() and reason in e.value.details(), e.value.details()
    # REST row format, KServe's sample shape.
    body = {"instances": [{"image_bytes": {"b64": base64.b64encode(x).decode()}, "key": k}
                          for x, k in [(good, "a"), (data, "b")]]}
    r = requests.post(f"{bundled.rest_url}/v1/models/digits_image:predict", json=body, timeout=20)
    assert r.status_code == 400 and "image_bytes[1]" in r.json()["error"] and reason in r.json()["error"], r.text
    # V2 JSON.
    v2 = {"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1], "data": [data.decode("latin-1")]},
                     {"name": "key", "datatype": "BYTES", "shape": [1], "data": ["z"]}]}
    if case in ("not_an_image", "empty"):
        r = requests.post(f"{bundled.rest_url}/v2/models/digits_image/infer", json=v2, timeout=20)
        assert r.status_code == 400 and "image_bytes[0]" in r.json()["error"], r.text
    # Nothing was allocated for the pixels a bomb declares, and the server still answers.
    assert rss_kib(bundled.proc.pid) - before < 64 * 1024
    test_sample_over_grpc_with_official_stubs(bundled)


def test_image_over_the_memory_budget(pixels_server):
    # 4000 x 3000 RGB is 36 MB decoded, twice that with the colour conversion: over the 64 MB budget.
    data = encoded(Image.new("RGB", (4000, 3000), (10, 20, 30)), "PNG")
    with pytest.raises(grpc.RpcError) as e:
        grpc_predict(pixels_server.address, "rgb", {"image_bytes": string_tensor([data])})
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value.details()
    assert "budget" in e.value.details()
    assert served_pixels(pixels_server, "rgb", encoded(photo(48, 32), "PNG")).shape == (1, 32, 48, 3)


def test_pixel_limit_flag(tmp_path):
    s = Server("--max_image_pixels=1000", rest=True)
    try:
        data = encoded(photo(40, 30), "PNG")  # 1,200 pixels
        with pytest.raises(grpc.RpcError) as e:
            grpc_predict(s.address, "digits_image", {"image_bytes": string_tensor([data]), "key": string_tensor([b"k"])})
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "more than the limit of 1000" in e.value.details()
    finally:
        s.stop()


def test_batched_image_requests(tmp_path):
    params = tmp_path / "batching.pbtxt"
    params.write_text("max_batch_size { value: 16 } batch_timeout_micros { value: 20000 } "
                      "max_enqueued_batches { value: 64 } num_batch_threads { value: 1 }")
    s = Server("--enable_batching", f"--batching_parameters_file={params}", rest=True)
    try:
        from concurrent.futures import ThreadPoolExecutor
        files = sample_files()
        images = {f: open(os.path.join(SAMPLES, f), "rb").read() for f in files}

        def one(i):
            f = files[i % len(files)]
            resp = grpc_predict(s.address, "digits_image",
                                {"image_bytes": string_tensor([images[f]]), "key": string_tensor([b"%d" % i])})
            return f, i, list(resp.outputs["prediction"].int64_val), list(resp.outputs["key"].string_val)

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(one, range(64)))
        for f, i, prediction, key in answers:
            assert prediction == [label_of(f)] and key == [b"%d" % i]
    finally:
        s.stop()
