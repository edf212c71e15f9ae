#!/usr/bin/env bash
# Builds the fuzz targets and runs each for a fixed time on the committed corpus; exits non-zero
# on the first crash, panic, hang (-timeout), leak or OOM (-rss_limit_mb), with the input saved
# under fuzz/artifacts/<target>/.
#
#   fuzz/run.sh all 20                     # CI: every target, 20 s each
#   fuzz/run.sh rest predict 240           # two targets, 4 minutes each
#   fuzz/run.sh --regressions all          # replay fuzz/regressions/<target>/* once (no fuzzing)
#   fuzz/run.sh --cmin all                 # minimize fuzz/corpus/<target> together with what
#                                          # earlier runs found (fuzz/artifacts/corpus/<target>)
#
# Inputs a run finds go to fuzz/artifacts/corpus/<target> (ignored by git); the committed corpus
# is only read. Environment: FUZZ_TOOLCHAIN (nightly), FUZZ_SANITIZER (none: tensorserve has no
# unsafe code, so the bugs to find are panics, overflows, hangs and OOMs, and no sanitizer is
# ~2x faster; `address` or `leak` also work), FUZZ_NICE (19), FUZZ_TARGET_DIR (fuzz/target),
# FUZZ_RUNS (stop each target after this many executions, SECONDS still caps it).
set -euo pipefail

FUZZ_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$FUZZ_DIR")
ALL=(tensor_proto predict decode_cost grpc_stack rest tf_example model_config signature_defs warmup_records onnx_graph image_decode)
TOOLCHAIN=${FUZZ_TOOLCHAIN:-nightly}
SANITIZER=${FUZZ_SANITIZER:-none}
NICE=${FUZZ_NICE:-19}
TARGET_DIR=${FUZZ_TARGET_DIR:-$FUZZ_DIR/target}
TRIPLE=$(rustc +"$TOOLCHAIN" -vV | sed -n 's/^host: //p')

max_len() {
  case $1 in
    model_config | signature_defs) echo 4096 ;;
    tensor_proto | tf_example) echo 8192 ;;
    *) echo 16384 ;;
  esac
}

dict() {
  case $1 in
    rest | tf_example) echo "$FUZZ_DIR/dicts/json.dict" ;;
    model_config | signature_defs) echo "$FUZZ_DIR/dicts/textproto.dict" ;;
  esac
}

mode=run
case ${1:-} in
  --regressions) mode=regressions; shift ;;
  --cmin) mode=cmin; shift ;;
  --build-only) mode=build; shift ;;
esac
if [ "$mode" = run ]; then
  [ $# -ge 2 ] || { echo "usage: $0 TARGET...|all SECONDS" >&2; exit 2; }
  SECONDS_EACH=${*: -1}
  set -- "${@:1:$#-1}"
fi
[ $# -ge 1 ] || { echo "usage: $0 [--regressions|--cmin|--build-only] TARGET...|all [SECONDS]" >&2; exit 2; }
targets=()
for t in "$@"; do
  if [ "$t" = all ]; then targets+=("${ALL[@]}"); else targets+=("$t"); fi
done

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2
fi

echo "== build (sanitizer: $SANITIZER)"
build_start=$(date +%s)
cd "$ROOT"
if [ ${#targets[@]} -eq ${#ALL[@]} ]; then
  nice -n "$NICE" cargo +"$TOOLCHAIN" fuzz build -s "$SANITIZER" --target-dir "$TARGET_DIR"
else
  for t in "${targets[@]}"; do
    nice -n "$NICE" cargo +"$TOOLCHAIN" fuzz build -s "$SANITIZER" --target-dir "$TARGET_DIR" "$t"
  done
fi
echo "build took $(($(date +%s) - build_start)) s"
[ "$mode" = build ] && exit 0

BIN_DIR=$TARGET_DIR/$TRIPLE/release
summary=()
status=0
for t in "${targets[@]}"; do
  bin=$BIN_DIR/$t
  mkdir -p "$FUZZ_DIR/artifacts/$t" "$FUZZ_DIR/artifacts/corpus/$t" "$FUZZ_DIR/corpus/$t"
  case $mode in
    regressions)
      shopt -s nullglob
      inputs=("$FUZZ_DIR/regressions/$t"/*)
      shopt -u nullglob
      [ ${#inputs[@]} -gt 0 ] || continue
      echo "== $t: replaying ${#inputs[@]} regression input(s)"
      for input in "${inputs[@]}"; do
        rlog=$FUZZ_DIR/artifacts/$t.$(basename "$input").log
        if FUZZ_STRICT=1 nice -n "$NICE" "$bin" -rss_limit_mb=2048 -timeout=10 "$input" >"$rlog" 2>&1; then
          summary+=("$t: ok   $(basename "$input")")
        else
          summary+=("$t: FAIL $(basename "$input") (log: fuzz/artifacts/$t.$(basename "$input").log)")
          status=1
        fi
      done
      ;;
    cmin)
      echo "== $t: minimizing the corpus"
      merged=$(mktemp -d)
      nice -n "$NICE" "$bin" -merge=1 -max_len="$(max_len "$t")" -rss_limit_mb=2048 -timeout=10 \
        "$merged" "$FUZZ_DIR/corpus/$t" "$FUZZ_DIR/artifacts/corpus/$t" >"$FUZZ_DIR/artifacts/$t.cmin.log" 2>&1
      rm -rf "$FUZZ_DIR/corpus/$t"
      mv "$merged" "$FUZZ_DIR/corpus/$t"
      chmod 755 "$FUZZ_DIR/corpus/$t"
      summary+=("$t: $(find "$FUZZ_DIR/corpus/$t" -type f | wc -l) inputs, $(du -sb --apparent-size "$FUZZ_DIR/corpus/$t" | cut -f1) bytes")
      ;;
    run)
      log=$FUZZ_DIR/artifacts/$t.log
      d=$(dict "$t")
      echo "== $t: ${SECONDS_EACH}s"
      set +e
      nice -n "$NICE" "$bin" "$FUZZ_DIR/artifacts/corpus/$t" "$FUZZ_DIR/corpus/$t" \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 -max_len="$(max_len "$t")" \
        ${d:+-dict="$d"} ${FUZZ_RUNS:+-runs="$FUZZ_RUNS"} -print_final_stats=1 -artifact_prefix="$FUZZ_DIR/artifacts/$t/" >"$log" 2>&1
      rc=$?
      set -e
      done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
      execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
      rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
      cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
      ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done_line")
      corp=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$done_line")
      if [ $rc -eq 0 ]; then
        summary+=("$t: ok   execs=${execs:-?} exec/s=${rate:-?} cov=${cov:-?} ft=${ft:-?} corpus=${corp:-?}")
      else
        summary+=("$t: FAIL (exit $rc), input in fuzz/artifacts/$t/, log fuzz/artifacts/$t.log")
        grep -E 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" | head -5 | sed 's/^/    /' >&2 || true
        status=1
      fi
      ;;
  esac
done
# warmup_records writes the file it replays to /dev/shm (or the temp dir), one per process.
rm -f /dev/shm/tensorserve-fuzz-warmup-* "${TMPDIR:-/tmp}"/tensorserve-fuzz-warmup-*
echo "== summary"
printf '%s\n' "${summary[@]}"
exit $status
