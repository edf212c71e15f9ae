#!/usr/bin/env bash
# Dynamic batching benchmark: a compute-bound MLP (256 -> 1024 -> 1024 -> 10) and a small CNN
# under CLIENTS concurrent gRPC clients (one stream each), batching off then on, same binary,
# one run. Prints req/s, p50/p99 latency, the mean batch (requests per model run) and the
# throughput ratio on/off per model.
#
# Needs h2load (Debian nghttp2-client) and a Python with onnx and numpy ($PYTHON, default the
# venv of $VIRTUAL_ENV). Usage: benches/batching.sh [SECONDS_PER_RUN] [CLIENTS]
# Environment: ENGINE (--onnx_engine, default auto), BATCHING (the parameters file's text),
# TENSORSERVE_FLAGS (more flags for both runs).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-15}
C=${2:-64}
PORT=${PORT:-18700}
PYTHON=${PYTHON:-${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/}python3}
ENGINE=${ENGINE:-auto}
BATCHING=${BATCHING:-"max_batch_size { value: 64 } batch_timeout_micros { value: 1000 } max_enqueued_batches { value: 64 } num_batch_threads { value: 1 }"}
command -v h2load >/dev/null || { echo "h2load not found: apt-get install nghttp2-client" >&2; exit 1; }

cargo build --release --bin tensorserve >&2
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$PYTHON" benches/batching_models.py "$WORK"
echo "$BATCHING" > "$WORK/batching.pbtxt"

serve() { # extra flags...
  RUST_LOG=warn,tensorserve::core::batching=trace target/release/tensorserve --port "$PORT" --grpc_bind_address 127.0.0.1 \
    --model_config_file "$WORK/models.config" --onnx_engine "$ENGINE" ${TENSORSERVE_FLAGS:-} "$@" 2>"$WORK/server.log" &
  SERVER=$!
  for _ in $(seq 1 300); do
    (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && return
    sleep 0.1
  done
  echo "the server did not start" >&2
  cat "$WORK/server.log" >&2
  exit 1
}

load() { # model seconds clients log
  h2load -D "$2" -c "$3" -m 1 --data="$WORK/$1.grpc" -H 'content-type: application/grpc' -H 'te: trailers' \
    ${4:+--log-file="$4"} "http://127.0.0.1:$PORT/tensorflow.serving.PredictionService/Predict"
}

check_answer() { # model: one real Predict through the official client, y must be [1, 10] floats
  TF_CPP_MIN_LOG_LEVEL=3 "$PYTHON" - "$PORT" "$1" 2>/dev/null <<'PY'
import sys, grpc, numpy as np
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
port, model = sys.argv[1], sys.argv[2]
shape = [1, 256] if model == "mlp" else [1, 3, 32, 32]
req = predict_pb2.PredictRequest()
req.model_spec.name = model
x = req.inputs["x"]
x.dtype = 1
x.tensor_shape.dim.extend([x.tensor_shape.Dim(size=d) for d in shape])
x.tensor_content = np.ones(shape, np.float32).tobytes()
y = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}")).Predict(req, 30).outputs["y"]
assert [d.size for d in y.tensor_shape.dim] == [1, 10], y
PY
}

run() { # mode model
  local mode=$1 model=$2 log="$WORK/$1-$2.log"
  load "$model" 3 8 "" >/dev/null
  local before
  before=$(wc -l <"$WORK/server.log")
  load "$model" "$SECONDS_EACH" "$C" "$log" >"$WORK/$mode-$model.out"
  local rps p50 p99 ok batch
  rps=$(awk '/^finished in/ {gsub(",","",$4); print $4}' "$WORK/$mode-$model.out")
  ok=$(awk '/^status codes:/ {print $3}' "$WORK/$mode-$model.out")
  p50=$(cut -f3 "$log" | sort -n | awk '{a[NR]=$1} END {print a[int(NR*0.50)]}')
  p99=$(cut -f3 "$log" | sort -n | awk '{a[NR]=$1} END {print a[int(NR*0.99)]}')
  batch=$(tail -n +"$((before + 1))" "$WORK/server.log" | { grep -o 'requests=[0-9]*' || true; } | cut -d= -f2 \
    | awk '{s+=$1; n++} END {if (n) printf "%.1f", s/n; else print "1.0"}')
  printf '%-4s %-4s req/s=%-9s p50=%-7sus p99=%-7sus mean_batch=%-5s 2xx=%s\n' "$mode" "$model" "$rps" "$p50" "$p99" "$batch" "$ok"
  echo "$rps" >"$WORK/$mode-$model.rps"
}

echo "h2load -D $SECONDS_EACH -c $C -m 1, engine $ENGINE, $(nproc) cores shared with the load generator"
echo "batching on: $BATCHING"
for mode in off on; do
  if [ "$mode" = on ]; then
    serve --enable_batching --batching_parameters_file "$WORK/batching.pbtxt"
  else
    serve
  fi
  for model in mlp cnn; do
    check_answer "$model"
    run "$mode" "$model"
  done
  kill "$SERVER"
  wait "$SERVER" 2>/dev/null || true
done
for model in mlp cnn; do
  awk -v a="$(cat "$WORK/on-$model.rps")" -v b="$(cat "$WORK/off-$model.rps")" -v m="$model" \
    'BEGIN {printf "%s: throughput batching on / off = %.2f\n", m, a / b}'
done
