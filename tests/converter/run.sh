#!/usr/bin/env bash
# CI step, the converter's end-to-end proof: a TF Serving model tree is converted by
# tools/tfserving_to_onnx.py, served by tensorserve from TF Serving's own config file, and must
# answer the official client as TensorFlow answers.
#   usage: tests/converter/run.sh [CONFORMANCE_VENV]    (else $VENV, else .ci/venv as .ci/run makes it)
# Env: TENSORSERVE_CONVERT_VENV (default .ci/venv-convert), TENSORSERVE_BIN (default target/release/tensorserve).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
VENV=${1:-${VENV:-$ROOT/.ci/venv}}
CONVERT_VENV=${TENSORSERVE_CONVERT_VENV:-$ROOT/.ci/venv-convert}
export TENSORSERVE_BIN=${TENSORSERVE_BIN:-$ROOT/target/release/tensorserve}

# The server is built by CI's cargo step; this step only tests it.
if [ ! -x "$TENSORSERVE_BIN" ]; then
  echo "no $TENSORSERVE_BIN: run cargo build --release first (or set TENSORSERVE_BIN)" >&2
  exit 2
fi

# Two venvs because they cannot be one: the converter pins protobuf 7 (TF 2.21), the conformance
# clients protobuf <7 (tritonclient). Both are made on first use so a fresh clone needs only python3.
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r tests/conformance/requirements.txt
fi
if [ ! -x "$CONVERT_VENV/bin/python" ]; then
  python3 -m venv "$CONVERT_VENV"
  echo '*' >"$CONVERT_VENV/.gitignore"  # .gitignore only knows .ci/venv
fi
# Every run, so a reused venv is brought to the pinned set (a no-op when it already is).
"$CONVERT_VENV/bin/pip" install -q --disable-pip-version-check -r tools/requirements-convert.txt

WORK=$(mktemp -d)
# Kept on failure, for the SavedModels, the converted tree and the report.
trap 'status=$?; if [ $status = 0 ]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi' EXIT

echo "== build the TF Serving model tree and TensorFlow's answers =="
"$CONVERT_VENV/bin/python" tests/converter/build_models.py "$WORK"

echo "== convert the whole tree with one command, from its models.config =="
rc=0
"$CONVERT_VENV/bin/python" tools/tfserving_to_onnx.py --model_config_file "$WORK/models.config" \
  --output_base "$WORK/converted" | tee "$WORK/report.txt" || rc=$?
# Exit code and report must agree: every version OK, no signature failed, no warmup warning.
versions=$(find "$WORK/saved_models" -name saved_model.pb | wc -l)
ok=$(grep -c ': OK -> ' "$WORK/report.txt" || true)
if [ "$rc" != 0 ] || [ "$ok" != "$versions" ] || grep -qE '^ +(failed|warning) ' "$WORK/report.txt" ||
  [ "$(tail -n 1 "$WORK/report.txt")" != "all versions converted" ]; then
  echo "converter: exit $rc, $ok of $versions versions OK; report above" >&2
  exit 1
fi

# The converter folds computed Reshape shapes (Keras' Flatten) to constants, so both engines plan them.
for engine in onnxruntime tract; do
  echo "== serve the converted tree on $engine; official client against TensorFlow's answers =="
  VIRTUAL_ENV="$VENV" TENSORSERVE_ONNX_ENGINE=$engine TENSORSERVE_REQUIRE_CONVERTER=1 \
    TENSORSERVE_CONVERTED_TREE="$WORK" \
    "$VENV/bin/python" -m pytest tests/converter/test_converted_models.py -q -p no:cacheprovider
done
