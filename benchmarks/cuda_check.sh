#!/usr/bin/env bash
# The one-GPU check of issue 12, for a machine with one CUDA GPU, this repository and the package registries:
# sets up (make setup data), then runs benchmarks/cuda_check.py (the speed-run recipe in bf16 + channels_last +
# compile, the trainer-vs-plain benchmark on CUDA, data parallel on nccl) and prints one table. Under 5 minutes
# on a recent GPU.
# It fails loudly, never falling back to the CPU: no CUDA, or any CUDA path that breaks, is a non-zero exit.
#
#   bash benchmarks/cuda_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
make setup data
.venv/bin/python -c 'import sys, torch; torch.cuda.is_available() or sys.exit("cuda_check: CUDA is not available here (torch " + torch.__version__ + "); this check needs one CUDA GPU and does not fall back to the CPU")'
exec .venv/bin/python benchmarks/cuda_check.py "$@"
