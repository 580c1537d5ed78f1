#version 430
// groupnorm_stats.comp: first stage of GroupNorm for long rows (a row is one
// (sample, group): cpg channels of S positions, contiguous). Each invocation
// takes a chunk of CH elements of one row, four a fetch, and writes its
// count, mean and sum of squared deviations (two passes over the chunk, which
// stays in cache) to P[3 * (row * chunks + chunk)]. groupnorm_merge.comp
// combines a row's chunks. The host guarantees S % 4 == 0, so rows and chunks
// start on whole texels. Defines: LX, CH (a multiple of 4), X_LOADER4.
#include "common.glsl"

layout(local_size_x = LX) in;

X_LOADER4(loadX4, tX, 0)
DECLARE_OUTPUT

uniform int count;  // elements in a row (cpg * S)
uniform int chunks; // ceil(count / CH)
uniform int rows;

void main() {
	int id = linearId();
	if (id >= rows * chunks) {
		return;
	}
	int row = id / chunks;
	int lo = (id - row * chunks) * CH;
	int hi = min(lo + CH, count);
	int base = (row * count + lo) / 4;
	int n4 = (hi - lo) / 4;
	vec4 s = vec4(0.0);
	for (int i = 0; i < n4; i++) {
		s += loadX4(base + i);
	}
	float n = float(hi - lo);
	float mean = (s.x + s.y + s.z + s.w) / n;
	vec4 q = vec4(0.0);
	for (int i = 0; i < n4; i++) {
		vec4 d = loadX4(base + i) - mean;
		q += d * d;
	}
	put(3 * id, n);
	put(3 * id + 1, mean);
	put(3 * id + 2, q.x + q.y + q.z + q.w);
}
