#!/usr/bin/env bash
# The CUDA path end to end on one GPU: bf16 autocast training of the entropy model, the BLT (eager and
# torch.compile) and the BPE baseline, generation, and the CPU test suite under the GPU machine's torch.
# Usage: bash bench/cuda_check.sh OUT_DIR      (each step writes OUT_DIR/NAME.json; the log says what failed)
set -uo pipefail
OUT=${1:-cuda_check}
mkdir -p "$OUT" /tmp/cuda_check
export PYTHONUNBUFFERED=1
W=/tmp/cuda_check
status=0
step() { local name=$1; shift; echo "=== $name: $*"; local t0=$SECONDS
         if "$@" > "$W/$name.log" 2>&1; then echo "ok ($((SECONDS - t0))s)"; else echo "FAILED ($((SECONDS - t0))s)"; status=1; fi
         tr '\r' '\n' < "$W/$name.log" | grep -v "it/s" | tail -4; }
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"
step entropy python3 entropy_llm.py --device cuda --preset seed --max_steps 300 --max_bytes 10000000 \
     --eval_interval 0 --ckpt_interval 0 --out $W/entropy.pth --report "$OUT/entropy.json"
step blt python3 train_blt.py --device cuda --preset small --max_bytes 10000000 --max_steps 300 --batch_size 32 \
     --seq_len 2048 --eval_interval 0 --ckpt_interval 0 --entropy_model_path $W/entropy.pth --out $W/blt.pth \
     --report "$OUT/blt.json"
step blt_compile python3 train_blt.py --device cuda --compile --preset small --max_bytes 10000000 --max_steps 100 \
     --batch_size 32 --seq_len 2048 --eval_interval 0 --ckpt_interval 0 --entropy_model_path $W/entropy.pth \
     --out $W/blt_c.pth --report "$OUT/blt_compile.json"
step bpe python3 template_llm.py --device cuda --tokenizer bpe --max_steps 200 --out $W/bpe.pth --report "$OUT/bpe.json"
step generate python3 train_blt.py --generate --device cuda --checkpoint $W/blt.pth --prompt "def main(" \
     --max_new_bytes 200 --temperature 0 --show_patches --report "$OUT/generate.json"
step tests python3 -m pytest -x -q -p no:cacheprovider
exit $status
