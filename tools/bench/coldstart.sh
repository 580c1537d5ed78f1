#!/usr/bin/env bash
# Cold start on the bundled model: seconds from launching `stepwise generate`
# to its first denoised step, with empty Mesa and Stepwise caches (fresh
# temporary folders through MESA_SHADER_CACHE_DIR and STEPWISE_GL_CACHE; the
# user's own caches are not touched), then once more with those caches warm.
# With a second binary (say one built from an older commit) both are run
# alternately, A B A B, to cancel the drift of a shared machine; the load
# average is printed beside every run.
# usage: tools/bench/coldstart.sh [RUNS] [OTHER_STEPWISE_BINARY]
set -euo pipefail
runs=${1:-2}; other=${2:-}
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
go build -o bin/stepwise ./cmd/stepwise
bins=(bin/stepwise)
[ -n "$other" ] && bins+=("$other")
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# first_step BIN CACHEDIR: prints the seconds to "step 1/" and to the end.
first_step() {
	local bin=$1 dir=$2 t0 first=""
	t0=$(date +%s.%N)
	while IFS= read -r line; do
		if [ -z "$first" ] && [[ $line == step\ 1/* ]]; then
			first=$(echo "$(date +%s.%N) - $t0" | bc)
		fi
	done < <(MESA_SHADER_CACHE_DIR="$dir/mesa" STEPWISE_GL_CACHE="$dir/stepwise" \
		"$bin" generate -p "red heart" --seed 1 --steps 4 -o "$dir/out.png" --force 2>&1)
	printf '%6.1f s to step 1, %6.1f s in all' "$first" "$(echo "$(date +%s.%N) - $t0" | bc)"
}

for ((r = 1; r <= runs; r++)); do
	for bin in "${bins[@]}"; do
		dir="$scratch/$r-$(basename "$bin")"
		mkdir -p "$dir"
		cold=$(first_step "$bin" "$dir")
		warm=$(first_step "$bin" "$dir")
		load=$(cut -d' ' -f1-3 /proc/loadavg)
		echo "$bin: cold $cold | warm $warm | load $load"
	done
done
