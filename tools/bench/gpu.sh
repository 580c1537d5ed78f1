#!/usr/bin/env bash
# The prepared GPU check (issue 8), for a session lent an NVIDIA machine by
# the `device` tool. It runs there, in the repo root, with what this machine
# built carried along, and records:
#   - the GL kernels against gpu/ref on the real NVIDIA driver (go test binary),
#   - `stepwise bench --random sd15` at 512x512 (GL through EGL on the GPU),
#   - the same U-Net/VAE in PyTorch fp32 and fp16 on the same GPU.
#
# Before the call, on this machine (the GPU machine has no Go and no network):
#   echo /.gl/ >>.git/info/exclude; mkdir -p .gl /tmp/amd64/partial
#   o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
#   apt-get $o update; (cd .gl && apt-get $o download libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
#   go build -o bin/stepwise ./cmd/stepwise
#   go test -c -o bin/gl.test ./gpu/gl && go test -c -o bin/nets.test ./models/nets
# Then: run(command="bash tools/bench/gpu.sh", carry=[".gl", "bin"], timeout_s=540)
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out"
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
# Correctness on the real driver first: every GL op against gpu/ref.
(cd gpu/gl && STEPWISE_REQUIRE_GL=1 timeout 120 ../../bin/gl.test -test.count=1 2>&1 | tail -20) | tee "$out/gl_test.txt"
(cd gpu/gl && timeout 120 ../../bin/gl.test -test.run xxx -test.bench . -test.benchtime 5x 2>&1) | tee "$out/gl_bench.txt"
# The whole pipeline at SD 1.5's shapes.
timeout 240 bin/stepwise bench --random sd15 --size 512 --steps 5 --device gl --json 2>&1 | tee "$out/stepwise_sd15_512.json"
for dt in "" "--half"; do
  timeout 120 python3 tools/bench/torch_bench.py --random sd15 --size 512 --steps 5 --cuda $dt 2>&1 | tee -a "$out/torch_sd15_512.json"
done
