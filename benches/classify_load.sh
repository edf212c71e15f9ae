#!/usr/bin/env bash
# gRPC load on the example-based RPCs vs Predict, one tensorserve, one run: what the tf.Example
# path (decode Examples, batch features, build results) costs over a plain tensor Predict.
#
# Needs h2load (Debian nghttp2-client) and curl. Usage: benches/classify_load.sh [REQUESTS] [CONNECTIONS] [STREAMS]
# Each case is half_plus_two with x = 2.0: Predict on serving_default, Classify on classify_x_to_y,
# Regress on regress_x_to_y; and Classify of 64 examples vs Predict of a [64, 1] tensor.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
C=${2:-4}
M=${3:-16}
PORT=${PORT_TS:-18700}
command -v h2load >/dev/null || { echo "h2load not found: apt-get install nghttp2-client" >&2; exit 1; }

cargo build --release --bin tensorserve >&2
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

# gRPC-framed requests, hand-encoded protobuf (field numbers from proto/tensorflow_serving/apis).
python3 - "$WORK" <<'PY'
import struct, sys
out = sys.argv[1]
def varint(n):
    b = b""
    while True:
        low = n & 0x7F; n >>= 7
        if n: b += bytes([low | 0x80])
        else: return b + bytes([low])
def ld(num, payload):  # length-delimited field
    return varint((num << 3) | 2) + varint(len(payload)) + payload
def spec(signature):
    return ld(1, b"half_plus_two") + ld(3, signature.encode())
def frame(name, msg):
    open(f"{out}/{name}.grpc", "wb").write(b"\x00" + struct.pack(">I", len(msg)) + msg)
def predict(batch):
    dims = ld(2, varint(1 << 3) + varint(batch)) + ld(2, varint(1 << 3) + varint(1))
    tensor = varint(1 << 3) + varint(1) + ld(2, dims) + ld(5, struct.pack(f"<{batch}f", *([2.0] * batch)))
    return ld(1, spec("serving_default")) + ld(2, ld(1, b"x") + ld(2, tensor))
def examples(batch):
    feature = ld(2, ld(1, struct.pack("<f", 2.0)))            # Feature.float_list.value = [2.0]
    example = ld(1, ld(1, ld(1, b"x") + ld(2, feature)))      # Example.features.feature["x"]
    return ld(1, ld(1, example) * batch)                      # Input.example_list.examples
frame("predict", predict(1))
frame("classify", ld(1, spec("classify_x_to_y")) + ld(2, examples(1)))
frame("regress", ld(1, spec("regress_x_to_y")) + ld(2, examples(1)))
frame("predict64", predict(64))
frame("classify64", ld(1, spec("classify_x_to_y")) + ld(2, examples(64)))
PY

RUST_LOG=warn target/release/tensorserve --port "$PORT" --grpc_bind_address 127.0.0.1 ${TENSORSERVE_FLAGS:-} &
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done

run() { # name rpc
  local url="http://127.0.0.1:$PORT/tensorflow.serving.PredictionService/$2" body="$WORK/$1.grpc"
  # h2load counts HTTP 200 even when grpc-status != 0: check the real answer once.
  curl -s --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @"$body" \
    -D "$WORK/$1.headers" -o /dev/null "$url"
  grep -qi '^grpc-status: 0' "$WORK/$1.headers" || { echo "$1 failed:" >&2; cat "$WORK/$1.headers" >&2; exit 1; }
  h2load -n 2000 -c "$C" -m "$M" --data="$body" -H 'content-type: application/grpc' -H 'te: trailers' "$url" >/dev/null
  h2load -n "$N" -c "$C" -m "$M" --data="$body" -H 'content-type: application/grpc' -H 'te: trailers' "$url" > "$WORK/$1.out"
  awk '/^finished in/ {gsub(",","",$4); print $4}' "$WORK/$1.out" > "$WORK/$1.rps"
  printf '%-11s %-14s req/s=%s\n' "$1" "$2" "$(cat "$WORK/$1.rps")"
}
ratio() { awk -v a="$(cat "$WORK/$1.rps")" -v b="$(cat "$WORK/$2.rps")" -v n="$1/$2" 'BEGIN {printf "ratio %-22s = %.3f\n", n, a / b}'; }

echo "h2load -n $N -c $C -m $M, $(nproc) cores shared with the load generator"
run predict Predict
run classify Classify
run regress Regress
run predict64 Predict
run classify64 Classify
ratio classify predict
ratio regress predict
ratio classify64 predict64
