#!/usr/bin/env bash
# GPU measurement kit for crossent, for one CUDA machine: `bash benchmarks/gpu/run.sh` from anywhere.
#
# Steps, in priority order (each logged with its exit code and time; one failing never stops the rest):
#   env           facts: nvidia-smi, python/torch/triton/CUDA versions, SMs and L2, import checks of
#                 crossent (from src/, not installed), its optional native CPU kernel, liger_kernel and
#                 cut_cross_entropy
#   wheels        pip-installs benchmarks/gpu/wheels/*.whl (--no-index --no-deps) into a temporary
#                 folder put on PYTHONPATH (for machines without a package index); skipped without wheels
#   tests-gpu     pytest -m gpu (large vocabularies, > 2^31 elements, compile, CUDA graphs)
#   bench-ce      crossent bench --device cuda on the GPU logits cases (plain and
#                 all-options), every installed peer except torch.compile (compile time saved for later)
#   sweep         benchmarks/gpu/sweep.py: the Triton CE block/warp grid against the copy floor
#   tests-triton  pytest -m "triton and not gpu and not slow": the option grid on compiled kernels
#   bench-linear  crossent bench on the fused linear cases (torch.compile left out)
#   bench-compile crossent bench, torch.compile only, on the logits cases (compile time apart)
#   summary       SUMMARY.md (always runs)
#
# Everything lands in $OUT (default: benchmarks/gpu/gpu-out, ignored by git): SUMMARY.md, run.log
# (every step's output), steps/ (each step's log, bench/*.csv and sweep/), all.tar.gz (steps/ packed, to
# copy off a remote machine), and copies of sweep.md, sweep.csv, gpu-ce_<stamp>.csv. Files are
# re-packed after every step, so a run cut short still leaves what it did.
#
# Settings (environment variables): OUT; BUDGET_S (default 3600: the whole run stays under it, each step
# capped by what is left); STEPS (default: all above, in that order; e.g. STEPS="env sweep");
# PYTHON (default python3); SWEEP_ARGS (extra arguments for sweep.py); SWEEP_CAP (the sweep step's
# cap, default 600 s; the sweep's own budget is 40 s less); CAP_<STEP> (any step's cap in seconds,
# e.g. CAP_TESTS_TRITON=300); COMMIT (recorded in env.log; default `git rev-parse --short HEAD`).
# Without CUDA every GPU step reports "skipped: no CUDA" and the script exits 0.

set -u
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO" || exit 1
KIT="$REPO/benchmarks/gpu"
export OUT="${OUT:-$KIT/gpu-out}"
mkdir -p "$OUT"
export STAGE="$OUT/steps"
rm -rf "$STAGE" && mkdir -p "$STAGE"
export PEERS
PEERS="$(mktemp -d /tmp/crossent-gpu-peers.XXXXXX)"  # installed wheels: outside STAGE, not packed
export COMMIT="${COMMIT:-$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
export PY="${PYTHON:-python3}"
export STAMP
STAMP="$(date -u +%Y%m%dT%H%M)"
export PYTHONPATH="$REPO/src:$REPO/tests${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export KIT REPO
BUDGET_S="${BUDGET_S:-3600}"
RESERVE_S=20  # kept for the summary and the packing
STEPS="${STEPS:-env wheels tests-gpu bench-ce sweep bench-allopts tests-triton bench-linear bench-compile}"
SECONDS=0
: >"$OUT/run.log"
printf '' >"$STAGE/steps.tsv"

pack() {
  tar czf "$OUT/all.tar.gz.tmp" -C "$STAGE" . 2>/dev/null && mv "$OUT/all.tar.gz.tmp" "$OUT/all.tar.gz"
  [ -f "$STAGE/sweep/sweep.md" ] && cp "$STAGE/sweep/sweep.md" "$STAGE/sweep/sweep.csv" "$OUT/" 2>/dev/null
  for f in "$STAGE"/bench/gpu-ce*_"$STAMP".csv; do [ -f "$f" ] && cp "$f" "$OUT/"; done
  return 0
}

record() {  # name, result, rc, seconds, cap
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$STAGE/steps.tsv"
  printf '[%4ss] %-13s %s (exit %s, %ss, cap %ss)\n' "$SECONDS" "$1" "$2" "$3" "$4" "$5" | tee -a "$OUT/run.log"
}

# run_step NAME CAP NEEDS_CUDA: runs the function step_NAME under `timeout`, output to STAGE/NAME.log
run_step() {
  local name=$1 cap=$2 needs_cuda=$3 left rc t0 result
  if [ "$needs_cuda" = 1 ] && [ "$HAVE_CUDA" != 1 ]; then
    record "$name" "skipped: no CUDA" - 0 "$cap"
    return
  fi
  left=$((BUDGET_S - RESERVE_S - SECONDS))
  if [ "$left" -lt 15 ]; then
    record "$name" "skipped: time budget used (BUDGET_S=$BUDGET_S)" - 0 "$cap"
    return
  fi
  [ "$cap" -gt "$left" ] && cap=$left
  export STEP_CAP=$cap
  t0=$SECONDS
  timeout -k 10 "$cap" bash -c "step_${name//-/_}" >"$STAGE/$name.log" 2>&1
  rc=$?
  case $rc in
    0) result=ok ;;
    124 | 137) result="timed out at ${cap}s" ;;
    *) result=failed ;;
  esac
  grep -q '^SKIPPED: ' "$STAGE/$name.log" && result="skipped: $(grep -m1 '^SKIPPED: ' "$STAGE/$name.log" | cut -c10-)"
  { echo "===== $name (exit $rc, $((SECONDS - t0))s) ====="; cat "$STAGE/$name.log"; } >>"$OUT/run.log"
  record "$name" "$result" "$rc" "$((SECONDS - t0))" "$cap"
  pack
}

step_env() {
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)   commit: $COMMIT"
  echo "host: $(uname -srm), $(nproc) CPUs"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,power.limit,temperature.gpu,persistence_mode --format=csv
    nvidia-smi
  else
    echo "nvidia-smi: not found"
  fi
  echo "python: $(command -v "$PY") ($($PY --version 2>&1))"
  $PY - <<'EOF'
import importlib, importlib.metadata as md, os
def v(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuda available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device: {p.name}, {p.multi_processor_count} SMs, {p.total_memory / 2**30:.1f} GiB, "
          f"L2 {getattr(p, 'L2_cache_size', 0) / 2**20:.0f} MB, capability {p.major}.{p.minor}")
for mod, dist in (("triton", "triton"), ("numpy", "numpy"), ("matplotlib", "matplotlib"),
                  ("tqdm", "tqdm"), ("pytest", "pytest"), ("hypothesis", "hypothesis"),
                  ("packaging", "packaging"), ("liger_kernel", "liger-kernel"),
                  ("cut_cross_entropy", "cut-cross-entropy")):
    try:
        importlib.import_module(mod)
        print(f"import {mod}: ok ({v(dist)})")
    except Exception as exc:
        print(f"import {mod}: FAILED ({type(exc).__name__}: {exc})")
import crossent
print(f"import crossent: ok, from {os.path.dirname(crossent.__file__)}")
from crossent import _native
print("crossent native CPU kernel:", "built" if _native.available() else
      f"not built (optional; CPU-only, the GPU steps never use it): {_native.unavailable_reason()}")
EOF
}

step_wheels() {
  shopt -s nullglob
  local wheels=("$KIT"/wheels/*.whl)
  if [ ${#wheels[@]} -eq 0 ]; then
    echo "SKIPPED: no wheels in benchmarks/gpu/wheels/"
    return 0
  fi
  printf 'installing %s\n' "${wheels[@]##*/}"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$PEERS" "${wheels[@]}" || return 1
  PYTHONPATH="$PYTHONPATH:$PEERS" $PY -c "
import liger_kernel, cut_cross_entropy, importlib.metadata as md
print('liger-kernel', md.version('liger-kernel'), '| cut-cross-entropy', md.version('cut-cross-entropy'))"
}

step_tests_gpu() {
  $PY -m pytest -q -p no:cacheprovider -m gpu --continue-on-collection-errors -x -rs tests/
}

step_tests_triton() {
  # the shared option grid on compiled kernels; ~1000 tests, many of them a new kernel to compile:
  # --maxfail keeps a broken build from eating the budget
  $PY -m pytest -q -p no:cacheprovider -m "triton and not gpu and not slow" \
    --continue-on-collection-errors --maxfail=5 tests/
}

bench() {  # name, extra crossent bench arguments...
  local name=$1
  shift
  $PY -m crossent.cli bench --device cuda --no-progress --out "$STAGE/bench" --name "${name}_$STAMP" "$@"
}

CE_PROVIDERS='crossent*,torch-eager,liger'
step_bench_ce() {
  bench gpu-ce --cases 'ce-*-bf16,ce-*-fp32' --providers "$CE_PROVIDERS"
}

step_bench_allopts() {
  bench gpu-ce-allopts --cases 'ce-*-allopts' --providers "$CE_PROVIDERS"
}

step_bench_linear() {
  bench gpu-linear --cases linear- --providers 'crossent*,torch-eager,torch-lce*,liger,cce*' --max-seconds 3
}

step_bench_compile() {
  bench gpu-compile --cases ce- --providers torch-compile
}

step_sweep() {
  # leave the sweep room to finish its last config and write its files inside the step's cap
  # shellcheck disable=SC2086
  local budget=$((STEP_CAP - 40))
  [ "$budget" -lt 20 ] && budget=20 # the current config of each shape still runs
  $PY "$KIT/sweep.py" --device cuda --out "$STAGE/sweep" --budget-s "$budget" ${SWEEP_ARGS:-}
}

export CE_PROVIDERS
export -f step_env step_wheels step_tests_gpu step_tests_triton bench step_bench_ce step_bench_allopts \
  step_bench_linear step_bench_compile step_sweep

# CUDA at all? (without it the GPU steps are skipped at once)
HAVE_CUDA=0
if timeout 120 "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  HAVE_CUDA=1
  unset TRITON_INTERPRET # compiled kernels, never the interpreter, on the GPU
fi
echo "crossent GPU kit: OUT=$OUT, CUDA=$HAVE_CUDA, budget ${BUDGET_S}s, steps: $STEPS" | tee -a "$OUT/run.log"

declare -A CAP=([env]=60 [wheels]=60 [tests-gpu]=600 [bench-ce]=300 [sweep]=${SWEEP_CAP:-600}
  [bench-allopts]=300 [tests-triton]=1800 [bench-linear]=600 [bench-compile]=600)
for step in "${!CAP[@]}"; do # CAP_TESTS_TRITON=300 etc. override a step's cap
  var="CAP_$(echo "$step" | tr 'a-z-' 'A-Z_')"
  [ -n "${!var:-}" ] && CAP[$step]=${!var}
done
declare -A GPU=([env]=0 [wheels]=0 [tests-gpu]=1 [bench-ce]=1 [sweep]=1 [bench-allopts]=1
  [tests-triton]=1 [bench-linear]=1 [bench-compile]=1)
for step in $STEPS; do
  if [ -z "${CAP[$step]:-}" ]; then
    record "$step" "unknown step (known: ${!CAP[*]})" - 0 0
    continue
  fi
  run_step "$step" "${CAP[$step]}" "${GPU[$step]}"
  if [ "$step" = wheels ] && [ -n "$(ls -A "$PEERS" 2>/dev/null)" ]; then
    export PYTHONPATH="$PYTHONPATH:$PEERS"
  fi
done

summarize() { python3 "$KIT/summary.py" "$STAGE" "$OUT/SUMMARY.md" || "$PY" "$KIT/summary.py" "$STAGE" "$OUT/SUMMARY.md"; }
t0=$SECONDS
summarize >>"$OUT/run.log" 2>&1
rc=$?
record summary "$([ "$rc" = 0 ] && echo ok || echo failed)" "$rc" "$((SECONDS - t0))" "$RESERVE_S"
summarize >/dev/null 2>&1 # again, with its own row in the table
pack
rm -rf "$PEERS"
echo
cat "$OUT/SUMMARY.md" 2>/dev/null
echo "files in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
exit 0
