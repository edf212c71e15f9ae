#!/usr/bin/env bash
# Mixed soak: gRPC and REST predict load, ~10 % malformed or hostile requests on both protocols,
# and a version swap every second, for a fixed time (examples/soak.rs --mixed --duration-secs).
#
# Usage: benches/mixed_soak.sh [SECONDS] [GRPC_CLIENTS] [REST_CLIENTS] [extra soak flags...]
# (defaults 600 4 2). Builds first, runs under `nice -n 10`, and exits with the soak's status:
# 1 on any failed valid request, any bad request answered unexpectedly, a server that died, or
# RSS growth over 10 %. The soak prints the path of the server's log (its stderr).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-600}
GRPC=${2:-4}
REST=${3:-2}
shift $(( $# < 3 ? $# : 3 ))
nice -n 10 cargo build --release --bins --examples >&2
exec nice -n 10 target/release/examples/soak --bin target/release/tensorserve \
  --mixed --duration-secs "$SECS" --clients "$GRPC" --rest-clients "$REST" "$@"
