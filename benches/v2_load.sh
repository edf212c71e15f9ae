#!/usr/bin/env bash
# KServe V2 benchmark, every figure a ratio measured in the same run:
#  1. gRPC: V2 ModelInfer (raw_input_contents) vs TF Serving Predict, same server, same model (half_plus_two).
#  2. REST: V2 infer with the binary tensor extension vs JSON, a 1x224x224x3 FP32 input.
#  3. V2 REST and gRPC: tensorserve vs KServe's Python ModelServer on the same function (y = 0.5 x + 2).
#
# Needs h2load (nghttp2-client), wrk, curl and a Python with numpy, onnx, onnxruntime and kserve (BENCH_PYTHON,
# default python3; tests/conformance/requirements.txt has them all).
# Usage: benches/v2_load.sh [GRPC_REQUESTS] [REST_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
SECS=${2:-8}
PY=${BENCH_PYTHON:-python3}
PORT_TS=${PORT_TS:-18700}
PORT_REST=${PORT_REST:-18701}
PORT_KS=${PORT_KS:-18780}
for tool in h2load wrk curl; do command -v $tool >/dev/null || { echo "$tool not found" >&2; exit 1; }; done
cargo build --release --bin tensorserve >&2
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT

"$PY" - "$WORK" <<'PY'
import json, os, struct, sys
import numpy as np
import onnx
from onnx import TensorProto, helper
work = sys.argv[1]
def varint(n):
    out = b""
    while True:
        b = n & 0x7F; n >>= 7
        if n: out += bytes([b | 0x80])
        else: return out + bytes([b])
def field(num, wire, payload):
    key = varint((num << 3) | wire)
    return key + (varint(len(payload)) + payload if wire == 2 else payload)
def framed(msg):
    return b"\x00" + struct.pack(">I", len(msg)) + msg
# TF Serving PredictRequest: half_plus_two, x = [[2.0]] as float_val.
dim = field(1, 0, varint(1))
tensor = field(1, 0, varint(1)) + field(2, 2, field(2, 2, dim) + field(2, 2, dim)) + field(5, 2, struct.pack("<f", 2.0))
predict = field(1, 2, field(1, 2, b"half_plus_two")) + field(2, 2, field(1, 2, b"x") + field(2, 2, tensor))
open(f"{work}/predict.grpc", "wb").write(framed(predict))
# V2 ModelInferRequest: half_plus_two, x FP32 [1,1] = 2.0 in raw_input_contents.
infer_input = field(1, 2, b"x") + field(2, 2, b"FP32") + field(3, 2, varint(1) + varint(1))
infer = field(1, 2, b"half_plus_two") + field(5, 2, infer_input) + field(7, 2, struct.pack("<f", 2.0))
open(f"{work}/infer.grpc", "wb").write(framed(infer))
# V2 REST JSON for half_plus_two.
json.dump({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [2.0]}]}, open(f"{work}/small.json", "w"))
# The image model: mean over height and width of a 1x224x224x3 FP32 input.
g = helper.make_graph([helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2], keepdims=0)], "image_mean",
                      [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 224, 224, 3])],
                      [helper.make_tensor_value_info("mean", TensorProto.FLOAT, [1, 3])])
os.makedirs(f"{work}/image_mean/1")
onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), f"{work}/image_mean/1/model.onnx")
img = np.random.default_rng(0).random((1, 224, 224, 3)).astype(np.float32)
json.dump({"inputs": [{"name": "image", "shape": [1, 224, 224, 3], "datatype": "FP32",
                       "data": [round(float(v), 4) for v in img.ravel()]}]}, open(f"{work}/image.json", "w"))
header = json.dumps({"inputs": [{"name": "image", "shape": [1, 224, 224, 3], "datatype": "FP32",
                                 "parameters": {"binary_data_size": img.nbytes}}],
                     "outputs": [{"name": "mean", "parameters": {"binary_data": True}}]}).encode()
open(f"{work}/image.bin", "wb").write(header + img.tobytes())
open(f"{work}/image.hlen", "w").write(str(len(header)))
PY

cat > "$WORK/models.config" <<CFG
model_config_list {
  config { name: "half_plus_two" base_path: "$PWD/examples/models/half_plus_two" model_platform: "tract" }
  config { name: "image_mean" base_path: "$WORK/image_mean" model_platform: "${IMAGE_PLATFORM:-onnxruntime}" }
}
CFG
# half_plus_two on tract, as the bundled examples run; the image model on ONNX Runtime (from BENCH_PYTHON's
# environment), where a 600 KB input's reduction is not the bottleneck.
VIRTUAL_ENV=$("$PY" -c 'import sys; print(sys.prefix)') RUST_LOG=warn target/release/tensorserve --port "$PORT_TS" --rest_api_port "$PORT_REST" --grpc_bind_address 127.0.0.1 \
  --model_config_file "$WORK/models.config" ${TENSORSERVE_FLAGS:-} &
TS_PID=$!
"$PY" benches/kserve_peer.py "$PORT_KS" >/dev/null 2>&1 &
for _ in $(seq 1 150); do
  curl -sf -o /dev/null "http://127.0.0.1:$PORT_REST/v2/health/ready" \
    && curl -sf -o /dev/null "http://127.0.0.1:$PORT_KS/v2/health/ready" && break
  sleep 0.2
done

# Each server must give the right answer before it is timed (h2load counts HTTP 200 whatever grpc-status says).
for port in "$PORT_TS" "$((PORT_KS + 1))"; do
  curl -sf --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @"$WORK/infer.grpc" \
    -o "$WORK/answer" "http://127.0.0.1:$port/inference.GRPCInferenceService/ModelInfer"
  "$PY" -c "import sys; d=open('$WORK/answer','rb').read(); assert bytes.fromhex('00004040') in d or b'\x00\x00\x40\x40' in d, d; print('gRPC ModelInfer on $port: y = 3.0')"
done
for port in "$PORT_REST" "$PORT_KS"; do
  curl -sf -H 'Content-Type: application/json' -d @"$WORK/small.json" "http://127.0.0.1:$port/v2/models/half_plus_two/infer"; echo
done
# The image model answers the same means from JSON and from binary.
curl -sf -H 'Content-Type: application/json' -d @"$WORK/image.json" -o "$WORK/mean.json" \
  "http://127.0.0.1:$PORT_REST/v2/models/image_mean/infer"
curl -sf -H 'Content-Type: application/octet-stream' -H "Inference-Header-Content-Length: $(cat "$WORK/image.hlen")" \
  --data-binary @"$WORK/image.bin" -D "$WORK/mean.head" -o "$WORK/mean.bin" "http://127.0.0.1:$PORT_REST/v2/models/image_mean/infer"
"$PY" - "$WORK" <<'PY'
import json, sys
import numpy as np
w = sys.argv[1]
from_json = np.array(json.load(open(f"{w}/mean.json"))["outputs"][0]["data"], np.float32)
head = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in open(f"{w}/mean.head") if ":" in l)}
n = int(head["inference-header-content-length"])
from_binary = np.frombuffer(open(f"{w}/mean.bin", "rb").read()[n:], np.float32)
assert np.allclose(from_json, from_binary, atol=1e-4) and np.allclose(from_binary, 0.5, atol=0.01), (from_json, from_binary)
print("image_mean: JSON and binary agree:", from_binary)
PY

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))
declare -A RPS
grpc_run() { # label port path body pid streams
  local label=$1 port=$2 path=$3 body=$4 pid=$5 m=$6
  h2load -n 2000 -c 4 -m "$m" --data="$body" -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$port$path" >/dev/null
  local before after
  before=$(cpu_ticks "$pid")
  h2load -n "$N" -c 4 -m "$m" --data="$body" -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$port$path" > "$WORK/out"
  after=$(cpu_ticks "$pid")
  local rps
  rps=$(awk '/^finished in/ {gsub(",","",$4); print $4}' "$WORK/out")
  RPS[$label]=$rps
  printf '%-34s req/s=%-10s server_cpu_per_req=%sus\n' "$label" "$rps" \
    "$(awk -v t="$((after - before))" -v tick="$TICK_US" -v n="$N" 'BEGIN {printf "%.2f", t * tick / n}')"
}
wrk_run() { # label url lua
  local label=$1 url=$2 lua=$3 conns=${4:-16}
  local out
  out=$(wrk -t2 -c"$conns" -d"${SECS}s" --latency -s "$lua" "$url")
  local rps p50 non2xx
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $4}')
  RPS[$label]=$rps
  printf '%-34s req/s=%-10s p50=%-8s non-2xx=%s\n' "$label" "$rps" "$p50" "${non2xx:-0}"
}
lua() { # file content-type [header-length]
  local extra=""
  [ -n "${3:-}" ] && extra="wrk.headers[\"Inference-Header-Content-Length\"] = \"$3\""
  cat <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "$2"
$extra
local fh = io.open("$1", "rb")
wrk.body = fh:read("*a")
fh:close()
LUA
}
ratio() { awk -v a="${RPS[$2]}" -v b="${RPS[$3]}" -v l="$1" 'BEGIN {printf "%-34s %.2fx\n", l, a / b}'; }

echo "== 1. gRPC on one server: V2 ModelInfer (raw) vs TF Serving Predict, h2load -n $N -c 4 -m 16, $(nproc) cores =="
for round in 1 2; do
  grpc_run "tfs-predict-$round" "$PORT_TS" /tensorflow.serving.PredictionService/Predict "$WORK/predict.grpc" "$TS_PID" 16
  grpc_run "v2-infer-$round" "$PORT_TS" /inference.GRPCInferenceService/ModelInfer "$WORK/infer.grpc" "$TS_PID" 16
done
RPS[tfs]=$(awk -v a="${RPS[tfs-predict-1]}" -v b="${RPS[tfs-predict-2]}" 'BEGIN {print (a + b) / 2}')
RPS[v2]=$(awk -v a="${RPS[v2-infer-1]}" -v b="${RPS[v2-infer-2]}" 'BEGIN {print (a + b) / 2}')
ratio "V2 ModelInfer / TFS Predict" v2 tfs

echo "== 2. REST: 1x224x224x3 FP32, binary tensor extension vs JSON, wrk -t2 -c4 ${SECS}s =="
lua "$WORK/image.json" application/json > "$WORK/image_json.lua"
lua "$WORK/image.bin" application/octet-stream "$(cat "$WORK/image.hlen")" > "$WORK/image_bin.lua"
wrk_run image-json "http://127.0.0.1:$PORT_REST/v2/models/image_mean/infer" "$WORK/image_json.lua" 4
wrk_run image-binary "http://127.0.0.1:$PORT_REST/v2/models/image_mean/infer" "$WORK/image_bin.lua" 4
ratio "binary / JSON" image-binary image-json

echo "== 3. tensorserve vs KServe's Python ModelServer, V2, same function =="
lua "$WORK/small.json" application/json > "$WORK/small.lua"
wrk_run ts-v2-rest "http://127.0.0.1:$PORT_REST/v2/models/half_plus_two/infer" "$WORK/small.lua" 32
wrk_run kserve-v2-rest "http://127.0.0.1:$PORT_KS/v2/models/half_plus_two/infer" "$WORK/small.lua" 32
ratio "V2 REST tensorserve / kserve" ts-v2-rest kserve-v2-rest
KS_PID=$(pgrep -f "kserve_peer.py $PORT_KS" | head -1)
N_KS=$((N / 10))
N_SAVED=$N; N=$N_KS
grpc_run ts-v2-grpc "$PORT_TS" /inference.GRPCInferenceService/ModelInfer "$WORK/infer.grpc" "$TS_PID" 8
grpc_run kserve-v2-grpc "$((PORT_KS + 1))" /inference.GRPCInferenceService/ModelInfer "$WORK/infer.grpc" "$KS_PID" 8
N=$N_SAVED
ratio "V2 gRPC tensorserve / kserve" ts-v2-grpc kserve-v2-grpc
