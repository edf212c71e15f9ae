#!/usr/bin/env bash
# Instructions per gRPC Predict (half_plus_two, x = [[2.0]]) under valgrind's callgrind: the
# server runs two h2load passes, 500 and 3,000 requests, and the difference over 2,500 is the
# per-request count, free of start-up. Repeatable whatever else the machine does, so two builds
# or two flag sets compare exactly. Usage: benches/callgrind_predict.sh BIN [SERVER FLAGS...]
set -euo pipefail
BIN=${1:?usage: callgrind_predict.sh BIN [flags...]}; shift
FLAGS=("$@")
command -v valgrind >/dev/null && command -v h2load >/dev/null || { echo "needs valgrind and h2load" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
echo 000000002a0a0f0a0d68616c665f706c75735f74776f12170a017812120801120812020801120208012a0400000040 | xxd -r -p > "$WORK/predict.grpc"
PORT=${PORT:-18950}
count() { # requests -> total instructions of a server that answered them
  local n=$1 out="$WORK/cg.$1"
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" --port "$PORT" --rest_api_port 0 \
    --grpc_bind_address 127.0.0.1 --grpc_runtime_threads 1 --drain_seconds 0 "${FLAGS[@]}" >/dev/null 2>"$WORK/server.$1.log" &
  local pid=$!
  local url="${SCHEME:-http}://127.0.0.1:$PORT/tensorflow.serving.PredictionService/Predict" probe
  for _ in $(seq 1 600); do
    probe=$(h2load -n 1 -c 1 --data="$WORK/predict.grpc" -H 'content-type: application/grpc' -H 'te: trailers' "$url" 2>/dev/null || true)
    [[ $probe == *" 1 succeeded"* ]] && break
    sleep 0.2
  done
  # Captured, not piped into grep -q: an early exit would SIGPIPE h2load and fail the pipeline.
  probe=$(h2load -n "$n" -c 1 -m 1 --data="$WORK/predict.grpc" -H 'content-type: application/grpc' -H 'te: trailers' "$url")
  [[ $probe == *" $n succeeded"* ]] || { echo "h2load failed: $probe" >&2; grep -v "^==" "$WORK/server.$1.log" | tail -5 >&2; exit 1; }
  kill -TERM "$pid"; wait "$pid" || true
  awk '/^summary:|^totals:/ {print $2; exit}' "$out"
}
a=$(count 500); b=$(count 3000)
echo "instructions per Predict: $(( (b - a) / 2500 )) ($a for 500, $b for 3000)"
