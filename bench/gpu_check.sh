#!/usr/bin/env bash
# The checks a machine with an NVIDIA GPU runs in one go (under 10 minutes), each step logged and timed:
#
#   1. wkv       the WKV kernel the models run on the device (and the chunked form) equal to the float64 CPU
#                reference, forward and gradients
#   2. mfu       bf16 training and sampling MFU of sdit-mnist and dit-mnist (bench/mfu.py --dtype bf16)
#   3. energy    measured energy per image of sdit-small and dit-small beside the estimate
#                (sdit compare --measure: NVML on a GPU), the shipped checkpoints
#   4. evaluate  a sharded sdit evaluate under torchrun (one process per GPU), each process measuring its own
#                sampling window (--measure: NVML), then the same command in one process on the kept shards:
#                every batch reused, the same FID
#
# Usage:
#   bench/gpu_check.sh                       # CUDA, the sizes above; results in out/gpu-check
#   bench/gpu_check.sh --device cpu          # every step on the CPU at tiny sizes (what the tests run)
#   bench/gpu_check.sh --out DIR --python PATH
#
# Exit status 0 when every step passed; each step's output is in OUT/<step>.log, the table in OUT/summary.txt.
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEVICE=cuda
OUT=out/gpu-check
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
while [ $# -gt 0 ]; do
    case $1 in
        --device) DEVICE=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --python) PYTHON=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case $DEVICE in cuda|cpu) ;; *) echo "error: --device must be cuda or cpu, got $DEVICE" >&2; exit 2 ;; esac
[ -x "$PYTHON" ] || { echo "error: no python at $PYTHON (pass --python or set PYTHON)" >&2; exit 2; }
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
SDIT=("$PYTHON" -m cli.main)
TORCHRUN=("$PYTHON" -m torch.distributed.run --standalone)
cd "$ROOT"

if [ "$DEVICE" = cuda ]; then
    NPROC=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
    [ "$NPROC" -ge 1 ] || { echo "error: no CUDA device (run with --device cpu for the CPU form)" >&2; exit 2; }
    WKV_SHAPE="64 100 128"
    MFU=(--presets sdit-mnist dit-mnist --quick)
    ENERGY=(checkpoints/sdit-small-fmnist checkpoints/dit-small-fmnist --sample-steps 50 --batch-size 16
            --meter nvml --min-window-s 2 --idle-s 5)
    EVAL=(checkpoints/sdit-small-fmnist --num-images 2000 --sample-steps 50 --eta 1 --batch-size 250)
else  # tiny sizes: every step runs, in minutes on a laptop CPU
    NPROC=2
    WKV_SHAPE="4 12 16"
    MFU=(--presets sdit-tiny dit-tiny --modes eager --quick --no-gemm --min-seconds 0.1 --batch-scale 0.02)
    ENERGY=(sdit-tiny dit-tiny --sample-steps 2 --meter cpu --min-window-s 0.2 --idle-s 0.2)
    EVAL=(checkpoints/sdit-small-fmnist --num-images 8 --sample-steps 1 --batch-size 2 --ref-num 16
          --kid-subsets 2 --nearest-k 2)
fi

STATUS=0
: > "$OUT/summary.txt"
step() {  # step NAME TIMEOUT_S COMMAND...: run it, log it, time it, record pass / FAIL
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    echo "== $name: $*" > "$OUT/$name.log"
    if timeout "$limit" "$@" >>"$OUT/$name.log" 2>&1; then
        local result=pass
    else
        local result="FAIL (exit $?, see $OUT/$name.log)"
        STATUS=1
    fi
    tail -n 25 "$OUT/$name.log"
    printf '%-9s %4d s  %s\n' "$name" $((SECONDS - start)) "$result" | tee -a "$OUT/summary.txt"
}

step wkv 120 "$PYTHON" - "$DEVICE" $WKV_SHAPE <<'EOF'
import sys
import torch
from sdit.models.wkv import wkv, wkv_backend, wkv_chunked, wkv_reference
device, (b, n, d) = torch.device(sys.argv[1]), map(int, sys.argv[2:5])
g = torch.Generator().manual_seed(0)
args = [torch.randn(d, generator=g) - 1, torch.randn(d, generator=g), torch.randn(b, n, d, generator=g),
        torch.randn(b, n, d, generator=g)]
grad_y = torch.randn(b, n, d, generator=g)
ref_args = [a.double().requires_grad_() for a in args]
ref = wkv_reference(*ref_args)
ref_grads = torch.autograd.grad(ref, ref_args, grad_y.double())
for name, fn in ((f"wkv ({wkv_backend(device)})", wkv), ("wkv_chunked", wkv_chunked)):
    leaves = [a.to(device).requires_grad_() for a in args]
    y = fn(*leaves)
    grads = torch.autograd.grad(y, leaves, grad_y.to(device))
    for what, got, want in (("y", y, ref), *zip(("d time_decay", "d time_first", "d k", "d v"), grads, ref_grads)):
        err = (got.double().cpu() - want.detach()).abs().max().item()
        scale = want.detach().abs().max().item()
        print(f"{name:<28} {what:<13} max |error| {err:.3e} (max |value| {scale:.3e}) on {device}, float32")
        torch.testing.assert_close(got.double().cpu(), want.detach(), rtol=1e-4, atol=1e-4 * max(scale, 1.0))
print(f"(B, N, D) = {(b, n, d)}: equal to the float64 CPU reference within rtol 1e-4")
EOF

step mfu 420 "$PYTHON" bench/mfu.py --device "$DEVICE" --dtype bf16 "${MFU[@]}"

step energy 240 "${SDIT[@]}" compare "${ENERGY[@]}" --measure --device "$DEVICE" --samples 0 --costs 45nm-fp32 \
    --no-shipped-quality --out "$OUT/energy" --overwrite
step energy-table 30 "$PYTHON" - "$OUT/energy/tables/measured.csv" "$DEVICE" <<'EOF'
import sys
import pandas as pd
table = pd.read_csv(sys.argv[1])
columns = [c for c in table.columns if c.startswith("estimated_uJ")] + [
    "measured_uJ_per_image", "above_idle_uJ_per_image", "method", "device", "reason_unmeasured"]
print(table[["model", *columns]].to_string(index=False))
if sys.argv[2] == "cuda" and table["measured_uJ_per_image"].isna().any():
    sys.exit("a model was not measured on the GPU: see reason_unmeasured")
EOF

rm -rf "$OUT/shards"
step evaluate 300 "${TORCHRUN[@]}" --nproc_per_node "$NPROC" -m cli.main evaluate "${EVAL[@]}" --device "$DEVICE" \
    --shards "$OUT/shards" --measure --idle-s 1 --json "$OUT/evaluate.json" --overwrite
# One thread, as torchrun gives each process: CPU kernels round by thread count.
OMP_NUM_THREADS=1 step resume 120 "${SDIT[@]}" evaluate "${EVAL[@]}" --device "$DEVICE" --shards "$OUT/shards" \
    --json "$OUT/evaluate-resumed.json" --overwrite
step same-fid 30 "$PYTHON" - "$OUT/evaluate.json" "$OUT/evaluate-resumed.json" "$DEVICE" <<'EOF'
import json
import sys
first, again = (json.load(open(p)) for p in sys.argv[1:3])
measured = first["measured"]
if measured["available"]:
    print(f"measured over {measured['processes']} processes: {measured['energy_j_per_image']:.4g} J per image "
          f"({measured['energy_j']:.4g} J for {measured['images_sampled']} images; {', '.join(measured['meters'])})")
else:
    print(f"measured energy unavailable: {measured['reason']}")
    if sys.argv[3] == "cuda":
        sys.exit("the sharded run was not measured on the GPU")
a, b = first["results"]["domain"], again["results"]["domain"]
print(f"{first['processes']} processes: FID {a['fid']!r}, {first['sampling_seconds'] / first['num_samples'] * 1e3:.2f} "
      f"ms per image; one process on the kept shards: FID {b['fid']!r}, {again['reused_batches']} batches reused")
assert again["reused_batches"] * first["sampler"]["batch_size"] >= first["num_samples"], "batches were drawn again"
same = a["sample_features_sha256"] == b["sample_features_sha256"]
print("features bit for bit equal" if same else "features differ in rounding (another kernel or thread count)")
assert abs(a["fid"] - b["fid"]) <= 1e-6 * abs(a["fid"]), "another FID"
EOF

echo
echo "device $DEVICE, $("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA")')"
cat "$OUT/summary.txt"
exit $STATUS
