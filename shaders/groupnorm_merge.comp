#version 430
// groupnorm_merge.comp: second stage of GroupNorm for long rows. One
// invocation per row combines the row's chunk statistics from
// groupnorm_stats.comp (count, mean, sum of squared deviations; Chan et al.'s
// pairwise update, as precise as two passes over the whole row) and writes
// the row's mean and 1/sqrt(variance + eps) to R[2 * row].
// Defines: LX, P_LOADER.
#include "common.glsl"

layout(local_size_x = LX) in;

P_LOADER(loadP, tP, 0)
DECLARE_OUTPUT

uniform int chunks, rows;
uniform float eps;

void main() {
	int row = linearId();
	if (row >= rows) {
		return;
	}
	int p = 3 * row * chunks;
	float n = loadP(p), mean = loadP(p + 1), m2 = loadP(p + 2);
	for (int i = 1; i < chunks; i++) {
		float nb = loadP(p + 3 * i), mb = loadP(p + 3 * i + 1), qb = loadP(p + 3 * i + 2);
		float tot = n + nb;
		float delta = mb - mean;
		mean += delta * nb / tot;
		m2 += qb + delta * delta * n * nb / tot;
		n = tot;
	}
	put(2 * row, mean);
	put(2 * row + 1, inversesqrt(m2 / n + eps));
}
