#!/bin/sh
# The image's entrypoint, shaped like tensorflow/serving's: gRPC on 8500, REST on 8501, the model
# $MODEL_NAME at $MODEL_BASE_PATH/$MODEL_NAME, then the caller's flags (a repeated flag's last
# value wins, so `docker run IMAGE --port=9000` moves the port).
set -eu
MODEL_NAME=${MODEL_NAME:-model}
MODEL_BASE_PATH=${MODEL_BASE_PATH:-/models}
exec "${TENSORSERVE_BIN:-/usr/local/bin/tensorserve}" --port=8500 --rest_api_port=8501 \
  --model_name="$MODEL_NAME" --model_base_path="$MODEL_BASE_PATH/$MODEL_NAME" "$@"
