#!/bin/sh
# Trains the bundled model: data -> vae -> latents -> unet, resuming from the checkpoints
# in tools/train/runs/ (or, without them, from the exported model in models/bundled/).
# Kill it (kill PID: it checkpoints and stops; or kill -9: at most --ckpt-every, 3 min,
# is lost) and start it again at any time. Lowest priority and passive OpenMP threads:
# the machine is shared. Extra arguments go to train.py (e.g. --steps 80000).
#
#   (from the repository root) mkdir -p tools/train/runs && \
#     setsid nohup tools/train/train.sh >> tools/train/runs/train.log 2>&1 < /dev/null &
cd "$(dirname "$0")/../.." || exit 1
mkdir -p tools/train/runs
# Started with setsid, this is a session of its own, and with the kernel's autogroups
# (/proc/sys/kernel/sched_autogroup_enabled) a process's nice only ranks it within its
# session: against another session it got an equal share, a whole core of two, nice 19 or
# not. Lowering the session's own priority makes it yield to the rest of the machine.
[ -w /proc/self/autogroup ] && echo 19 > /proc/self/autogroup 2>/dev/null
OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=1 exec nice -n 19 /usr/bin/python3 tools/train/train.py all "$@"
