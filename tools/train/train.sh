#!/bin/sh
# Reproduces the bundled model from a fixed seed (resumes from tools/train/runs/ checkpoints).
# Low priority and passive OpenMP threads: the machine is shared.
cd "$(dirname "$0")/../.." || exit 1
mkdir -p tools/train/runs
OMP_WAIT_POLICY=PASSIVE exec nice -n 10 /usr/bin/python3 tools/train/train.py all --vae-steps 1500 "$@"
