#!/usr/bin/env bash
# Server-side image decoding, every figure measured in the same run, over TF Serving gRPC Predict:
#  - tensorserve decoding `image_bytes` (JPEG 224x224, JPEG 1024x768 resized to 224x224, and eight
#    1024x768 JPEGs in one request) into a [N, 224, 224, 3] float input, ImageNet-normalised;
#  - the same model fed the pixels pre-decoded (by Pillow) as a float `tensor_content` (what decoding costs);
#  - a Python gRPC server decoding with Pillow + numpy and running the model in onnxruntime
#    (benches/image_peer.py: the alternative a user would write).
# The model is small on purpose (mean colour -> 10 scores), so decoding dominates.
# Needs h2load (nghttp2-client) and a Python with numpy, onnx, onnxruntime, pillow, grpcio and
# tensorflow-serving-api (BENCH_PYTHON; tests/conformance/requirements.txt has them all).
# Usage: benches/image_load.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-8}
PY=${BENCH_PYTHON:-python3}
PORT_TS=${PORT_TS:-18800}
PORT_PEER=${PORT_PEER:-18880}
command -v h2load >/dev/null || { echo "h2load not found (apt-get install nghttp2-client)" >&2; exit 1; }
cargo build --release --bin tensorserve >&2
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT

"$PY" - "$WORK" <<'PY'
import io, os, struct, sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2
work = sys.argv[1]
rng = np.random.default_rng(0)
w = numpy_helper.from_array(rng.standard_normal((3, 10)).astype(np.float32), "w")
nodes = [helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2], keepdims=0),
         helper.make_node("MatMul", ["mean", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
         helper.make_node("ArgMax", ["logits"], ["prediction"], axis=1, keepdims=0)]
g = helper.make_graph(nodes, "mean_colour", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 224, 224, 3])],
                      [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 10]),
                       helper.make_tensor_value_info("prediction", TensorProto.INT64, ["N"])], [w])
model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
for name in ("image_classifier", "pixels"):
    os.makedirs(f"{work}/{name}/1")
    onnx.save(model, f"{work}/{name}/1/model.onnx")
open(f"{work}/image_classifier/1/image_inputs.pbtxt", "w").write(
    'input { model_input: "image" alias: "image_bytes" color: RGB scale: 0.00392156862745098 '
    'mean: [0.485, 0.456, 0.406] std: [0.229, 0.224, 0.225] }\n')

def photo(w, h, seed):
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), ((xx // 7 + yy // 5) % 2) * 200], -1).astype(np.float32)
    img += r.normal(0, 12, img.shape)  # sensor noise: JPEG has real work to do
    return Image.fromarray(img.clip(0, 255).astype(np.uint8), "RGB")

def jpeg(img):
    b = io.BytesIO(); img.save(b, format="JPEG", quality=90); return b.getvalue()

def framed(req):
    msg = req.SerializeToString()
    return b"\x00" + struct.pack(">I", len(msg)) + msg

def request(model, images=None, pixels=None):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    if images is not None:
        t = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=images)
        t.tensor_shape.dim.add(size=len(images))
        req.inputs["image_bytes"].CopyFrom(t)
    else:
        t = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=pixels.tobytes())
        for d in pixels.shape:
            t.tensor_shape.dim.add(size=d)
        req.inputs["image"].CopyFrom(t)
    return req

small, large = jpeg(photo(224, 224, 1)), jpeg(photo(1024, 768, 2))
eight = [jpeg(photo(1024, 768, 10 + i)) for i in range(8)]
mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
decoded = (np.asarray(Image.open(io.BytesIO(small)).convert("RGB"), np.float32) / 255.0 - mean) / std
for name, req in [("ts_jpeg224", request("image_classifier", [small])),
                  ("ts_jpeg1024", request("image_classifier", [large])),
                  ("ts_jpeg1024x8", request("image_classifier", eight)),
                  ("ts_pixels", request("pixels", pixels=decoded[None])),
                  ("peer_jpeg224", request("image_classifier", [small])),
                  ("peer_jpeg1024", request("image_classifier", [large])),
                  ("peer_jpeg1024x8", request("image_classifier", eight))]:
    open(f"{work}/{name}.grpc", "wb").write(framed(req))
print("JPEG sizes: 224x224 %d bytes, 1024x768 %d bytes; pre-decoded 224x224x3 float %d bytes"
      % (len(small), len(large), decoded.nbytes))
PY

cat > "$WORK/models.config" <<CFG
model_config_list {
  config { name: "image_classifier" base_path: "$WORK/image_classifier" model_platform: "${PLATFORM:-onnxruntime}" }
  config { name: "pixels" base_path: "$WORK/pixels" model_platform: "${PLATFORM:-onnxruntime}" }
}
CFG
VIRTUAL_ENV=$("$PY" -c 'import sys; print(sys.prefix)') RUST_LOG=warn target/release/tensorserve --port "$PORT_TS" \
  --grpc_bind_address 127.0.0.1 --model_config_file "$WORK/models.config" ${TENSORSERVE_FLAGS:-} &
TS_PID=$!
"$PY" benches/image_peer.py "$PORT_PEER" "$WORK/image_classifier/1" &
PEER_PID=$!

# Both servers must answer each request, and agree, before anything is timed.
"$PY" - "$WORK" "$PORT_TS" "$PORT_PEER" <<'PY'
import sys, time
import grpc
import numpy as np
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
work, ts, peer = sys.argv[1], sys.argv[2], sys.argv[3]
def call(port, name):
    req = predict_pb2.PredictRequest.FromString(open(f"{work}/{name}.grpc", "rb").read()[5:])
    for _ in range(150):
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                r = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(req, 30)
            return np.frombuffer(r.outputs["scores"].tensor_content, np.float32) if r.outputs["scores"].tensor_content \
                else np.array(r.outputs["scores"].float_val, np.float32)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            time.sleep(0.2)
    raise SystemExit(f"no answer from {port}")
for case in ("jpeg224", "jpeg1024", "jpeg1024x8"):
    a, b = call(ts, "ts_" + case), call(peer, "peer_" + case)
    assert np.allclose(a, b, atol=2e-3), (case, a, b)
    print(f"{case}: tensorserve and the Pillow server agree (max diff {np.abs(a - b).max():.2e})")
a, b = call(ts, "ts_jpeg224"), call(ts, "ts_pixels")
assert np.allclose(a, b, atol=2e-3), (a, b)
print(f"tensorserve decoding agrees with pre-decoded pixels (max diff {np.abs(a - b).max():.2e})")
PY

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))
run() { # label port body pid images-per-request
  local label=$1 port=$2 body=$3 pid=$4 per=$5
  local before after out url="http://127.0.0.1:$port/tensorflow.serving.PredictionService/Predict"
  h2load -D 1 -c 4 -m 2 --data="$body" -H 'content-type: application/grpc' -H 'te: trailers' "$url" >/dev/null
  before=$(cpu_ticks "$pid")
  out=$(h2load -D "$SECS" -c 4 -m 2 --data="$body" -H 'content-type: application/grpc' -H 'te: trailers' "$url")
  after=$(cpu_ticks "$pid")
  local done_n rps
  done_n=$(echo "$out" | awk '/^requests:/ {print $8}')
  rps=$(awk -v n="$done_n" -v s="$SECS" 'BEGIN {printf "%.1f", n / s}')
  printf '%-22s req/s=%-9s images/s=%-9s server_cpu_per_image=%s ms\n' "$label" "$rps" \
    "$(awk -v r="$rps" -v p="$per" 'BEGIN {printf "%.1f", r * p}')" \
    "$(awk -v t="$((after - before))" -v tick="$TICK_US" -v n="$done_n" -v p="$per" -v s="$SECS" \
      'BEGIN {printf "%.3f", t * tick / 1000 / (n * p)}')"
}
echo "== gRPC Predict, h2load -c 4 -m 2, ${SECS}s each, $(nproc) cores shared with the load generator =="
run "tensorserve pixels" "$PORT_TS" "$WORK/ts_pixels.grpc" "$TS_PID" 1
run "tensorserve jpeg224" "$PORT_TS" "$WORK/ts_jpeg224.grpc" "$TS_PID" 1
run "pillow-peer jpeg224" "$PORT_PEER" "$WORK/peer_jpeg224.grpc" "$PEER_PID" 1
run "tensorserve jpeg1024" "$PORT_TS" "$WORK/ts_jpeg1024.grpc" "$TS_PID" 1
run "pillow-peer jpeg1024" "$PORT_PEER" "$WORK/peer_jpeg1024.grpc" "$PEER_PID" 1
run "tensorserve jpeg1024x8" "$PORT_TS" "$WORK/ts_jpeg1024x8.grpc" "$TS_PID" 8
run "pillow-peer jpeg1024x8" "$PORT_PEER" "$WORK/peer_jpeg1024x8.grpc" "$PEER_PID" 8
