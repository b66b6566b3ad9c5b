#!/usr/bin/env bash
# The checks that need a GPU, as one script: the CUDA tests and the N = 50 000, P = 22 032 LM
# step's peak memory against the estimate (scripts/memory_estimate.py --big --device cuda).
# Run from the repository root on a machine with CUDA and torch; pinnkan is installed from this
# checkout without dependencies (hydra-core, omegaconf, h5py, safetensors, matplotlib, tqdm
# must be there already). Output: $OUT (default ./gpu_check) holds the logs.
set -uo pipefail
OUT=${OUT:-gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$OUT/install.log" 2>&1 \
  || { cat "$OUT/install.log"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  | tee -a "$OUT/gpu.txt"
# the files with the CUDA tests (the rest of each runs on the CPU, under the GPU's own torch)
python3 -m pytest -q -rs -p no:cacheprovider tests/test_lm_chunks.py tests/test_lmkan.py \
  tests/test_periodic.py 2>&1 | tee "$OUT/cuda_tests.log" | tail -8
timeout 400 python3 scripts/memory_estimate.py --big --device cuda --threads 8 2>&1 \
  | tee "$OUT/memory_big.log"
