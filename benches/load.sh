#!/usr/bin/env bash
# gRPC load benchmark: Predict on half_plus_two vs a bare tonic echo server (the ceiling), one run.
#
# Needs h2load (Debian nghttp2-client). Usage: benches/load.sh [REQUESTS] [CONNECTIONS] [STREAMS_PER_CONNECTION]
# Prints req/s, p50/p99 latency, server CPU microseconds per request and the ratio tensorserve / echo.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}
C=${2:-4}
M=${3:-16}
PORT_TS=${PORT_TS:-18500}
PORT_ECHO=${PORT_ECHO:-18600}
command -v h2load >/dev/null || { echo "h2load not found: apt-get install nghttp2-client" >&2; exit 1; }

cargo build --release --bin tensorserve --example echo_server --example grpc_client >&2
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

# A gRPC-framed PredictRequest: half_plus_two, x = [[2.0]] (float_val), hand-encoded protobuf.
python3 - "$WORK/predict.grpc" <<'PY'
import struct, sys
def varint(n):
    out = b""
    while True:
        b = n & 0x7F; n >>= 7
        if n: out += bytes([b | 0x80])
        else: return out + bytes([b])
def field(num, wire, payload):
    key = varint((num << 3) | wire)
    return key + (varint(len(payload)) + payload if wire == 2 else payload)
dim = field(1, 0, varint(1))
shape = field(2, 2, dim) + field(2, 2, dim)
tensor = field(1, 0, varint(1)) + field(2, 2, shape) + field(5, 2, struct.pack("<f", 2.0))
entry = field(1, 2, b"x") + field(2, 2, tensor)
spec = field(1, 2, b"half_plus_two")
msg = field(1, 2, spec) + field(2, 2, entry)
open(sys.argv[1], "wb").write(b"\x00" + struct.pack(">I", len(msg)) + msg)
PY

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))

run() { # name port pid
  local name=$1 port=$2 pid=$3 log="$WORK/$1.log"
  # warm-up, then the measured run
  h2load -n 2000 -c "$C" -m "$M" --data="$WORK/predict.grpc" -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$port/tensorflow.serving.PredictionService/Predict" >/dev/null
  local before after
  before=$(cpu_ticks "$pid")
  h2load -n "$N" -c "$C" -m "$M" --data="$WORK/predict.grpc" -H 'content-type: application/grpc' -H 'te: trailers' \
    --log-file="$log" "http://127.0.0.1:$port/tensorflow.serving.PredictionService/Predict" > "$WORK/$name.out"
  after=$(cpu_ticks "$pid")
  local rps ok
  rps=$(awk '/^finished in/ {gsub(",","",$4); print $4}' "$WORK/$name.out")
  ok=$(awk '/^status codes:/ {print $3}' "$WORK/$name.out")
  local p50 p99
  p50=$(cut -f3 "$log" | sort -n | awk '{a[NR]=$1} END {print a[int(NR*0.50)]}')
  p99=$(cut -f3 "$log" | sort -n | awk '{a[NR]=$1} END {print a[int(NR*0.99)]}')
  local cpu_us
  cpu_us=$(awk -v t="$((after - before))" -v tick="$TICK_US" -v n="$N" 'BEGIN {printf "%.2f", t * tick / n}')
  printf '%-12s req/s=%-10s p50=%sus p99=%sus server_cpu_per_req=%sus 2xx=%s\n' "$name" "$rps" "$p50" "$p99" "$cpu_us" "$ok"
  echo "$rps" > "$WORK/$name.rps"
}

RUST_LOG=warn target/release/tensorserve --port "$PORT_TS" --grpc_bind_address 127.0.0.1 ${TENSORSERVE_FLAGS:-} &
TS_PID=$!
target/release/examples/echo_server "$PORT_ECHO" "${ECHO_THREADS:-0}" 2>/dev/null &
ECHO_PID=$!
for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$PORT_TS) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/$PORT_ECHO) 2>/dev/null && break
  sleep 0.1
done
# h2load counts HTTP 200 even when grpc-status != 0: check the real answer once.
target/release/examples/grpc_client "127.0.0.1:$PORT_TS" half_plus_two | grep -q 'float_val=\[3.0\]' \
  || { echo "tensorserve did not answer y=3.0" >&2; exit 1; }

echo "h2load -n $N -c $C -m $M ($((C * M)) concurrent streams), $(nproc) cores shared with the load generator"
run echo "$PORT_ECHO" "$ECHO_PID"
run tensorserve "$PORT_TS" "$TS_PID"
awk -v a="$(cat "$WORK/tensorserve.rps")" -v b="$(cat "$WORK/echo.rps")" 'BEGIN {printf "ratio tensorserve/echo = %.3f\n", a / b}'
