#!/usr/bin/env bash
# The GPU benchmarks in one go, prepared for a machine lent for minutes: no network, no venv (torch
# installed system-wide), the sources run from this checkout with PYTHONPATH=src. Under 8 minutes
# on one H200; every stage has a timeout (its cap, or what is left of the whole budget), so one stuck
# stage costs only its own rows, and the next stage still runs.
#
# Stages: the GPUs and versions; peaks and FLOPs per image (bench_roofline.py); SimCLR ResNet-18
# pretraining at batch 512, bf16 (the seconds of each epoch: the first includes start-up) and the
# linear probe and kNN accuracy of that short run; every method's images/s on cnn-bn and resnet18
# (bench_throughput.py); torchrun scaling over the GPUs present (bench_scaling.py).
#
#   bash benchmarks/bench_gpu.sh --data-dir DIR                  # on the GPU machine; log in $OUT
#   PYTHON=.venv/bin/python bash benchmarks/bench_gpu.sh --device cpu --quick   # checks it here
#
# Options: --device cuda|cpu (default cuda; on cpu bf16 becomes `auto`), --quick (tiny subsets and
# epochs, a smaller encoder in place of resnet18), --data-dir DIR (the Fashion-MNIST IDX files,
# passed on as FASHIONSSL_DATA), --out DIR (default $OUT, else runs/gpu-bench): gets bench_gpu.log,
# the whole output, and the pretraining run's metrics.jsonl, results.json and versions.json.
set -euo pipefail

device=cuda quick=0 data_dir="" out="${OUT:-runs/gpu-bench}"
while (($#)); do
    case "$1" in
        --device) device="$2"; shift 2 ;;
        --quick) quick=1; shift ;;
        --data-dir) data_dir="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1  # unbuffered: a timed-out stage keeps its lines
if [[ -n "$data_dir" ]]; then
    export FASHIONSSL_DATA="$data_dir"
fi
mkdir -p "$out"
tmp="$(mktemp -d)"  # run directories (checkpoints are not small files): removed at exit
trap 'rm -rf "$tmp"' EXIT

precision=bf16 big=resnet18 budget=450 epochs=3 subset=() batch=512 steps=20 scaling_subset=51200
if [[ "$device" == cpu ]]; then
    precision=auto  # bf16 only where the CPU has it natively
fi
if ((quick)); then
    big=cnn budget=240 subset=(--train-subset 512) batch=64 steps=2 scaling_subset=1024
fi
methods="$("$PY" -c 'from fashionssl.methods import METHODS; print(",".join(METHODS))')"
failed=()

# stage NAME CAP_SECONDS COMMAND...: a header with the elapsed time, then COMMAND under a timeout of
# CAP_SECONDS or what is left of the budget; a failure is reported and the next stage runs.
stage() {
    local name="$1" cap="$2" left=$((budget - SECONDS))
    shift 2
    local limit=$((cap < left ? cap : left))
    echo
    echo "=== $name (at ${SECONDS}s, timeout ${limit}s) ==="
    if ((limit < 10)); then
        echo "skipped: the ${budget}s budget is spent"
        failed+=("$name")
        return
    fi
    local start=$SECONDS status=0
    timeout --kill-after=10 "$limit" "$@" || status=$?
    echo "--- $name: exit $status after $((SECONDS - start))s"
    if ((status)); then
        failed+=("$name")
    fi
}

# The seconds and images/s of each epoch of a run directory, as a Markdown table.
EPOCH_TABLE="$(cat <<'EOF'
import sys

from fashionssl.runlog import epoch_lines

print("| epoch | seconds | images/s |\n|---:|---:|---:|")
for line in epoch_lines(sys.argv[1]):
    print(f"| {line['epoch']} | {line['epoch_seconds']:.1f} | {line['epoch_images_per_s']:,.0f} |")
EOF
)"

main() {
    local run="$tmp/simclr-$big"
    echo "$(date), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), device $device, quick $quick"
    if [[ "$device" == cuda ]]; then
        stage "GPUs" 30 nvidia-smi -L
    fi
    stage "versions" 60 "$PY" -c \
        'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPUs", torch.cuda.device_count())'
    if ((quick)); then
        stage "roofline: peaks and FLOPs per image" 60 "$PY" benchmarks/bench_roofline.py --device "$device" --quick
    else
        stage "roofline: peaks and FLOPs per image" 90 "$PY" benchmarks/bench_roofline.py --device "$device" \
            --matmul-size 8192 --flop-batch "$batch"
    fi
    stage "SimCLR $big pretraining, batch $batch, $precision, $epochs epochs" 120 "$PY" -m fashionssl pretrain \
        --encoder "$big" --batch-size "$batch" --precision "$precision" --epochs "$epochs" "${subset[@]}" --knn-every 0 \
        --device "$device" --out "$run"
    if [[ -f "$run/metrics.jsonl" ]]; then
        stage "SimCLR $big epoch times" 30 "$PY" -c "$EPOCH_TABLE" "$run"
        stage "SimCLR $big linear probe and kNN after $epochs epochs" 90 \
            "$PY" -m fashionssl evaluate "$run" --device "$device"
        cp "$run"/{metrics.jsonl,versions.json} "$out"/
        cp "$run/results.json" "$out"/ 2>/dev/null || true  # absent if the evaluation failed
    fi
    for encoder in cnn-bn "$big"; do
        stage "every method's images/s on $encoder, batch $batch, $precision" 150 "$PY" benchmarks/bench_throughput.py \
            --device "$device" --encoder "$encoder" --batch-size "$batch" --variants "$precision+cl" \
            --methods "$methods" --seed-batches 0 --steps "$steps" --repeats 1
    done
    local processes=1
    if [[ "$device" == cuda ]]; then
        processes="$("$PY" -c 'import torch; n = torch.cuda.device_count(); print("1" if n == 1 else f"1,{n}")')"
    fi
    stage "torchrun scaling, processes $processes" 60 "$PY" benchmarks/bench_scaling.py --device "$device" \
        --processes "$processes" --train-subset "$scaling_subset" --batch-size "$batch"
    echo
    echo "=== done in ${SECONDS}s; failed or skipped stages: ${failed[*]:-none} ==="
    ((${#failed[@]} == 0))
}

main 2>&1 | tee "$out/bench_gpu.log"
