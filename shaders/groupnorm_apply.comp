#version 430
// groupnorm_apply.comp: last stage of GroupNorm for long rows: each
// invocation normalises four consecutive elements of x [N, C, S] (S % 4 == 0,
// so they share a channel) with their row's mean and 1/std from
// groupnorm_merge.comp, then applies gamma, beta and, with SILU, y*sigmoid(y).
// Defines: LX, X_LOADER4, R_LOADER, HAS_G with G_LOADER, HAS_B with B_LOADER,
// SILU.
#include "common.glsl"

layout(local_size_x = LX) in;

X_LOADER4(loadX4, tX, 0)
R_LOADER(loadR, tR, 1)
#ifdef HAS_G
G_LOADER(loadG, tG, 2)
#else
float loadG(int c) { return 1.0; }
#endif
#ifdef HAS_B
B_LOADER(loadB, tB, 3)
#else
float loadB(int c) { return 0.0; }
#endif
DECLARE_OUTPUT

uniform int C, S, cpg, n4;

void main() {
	int i4 = linearId();
	if (i4 >= n4) {
		return;
	}
	int e = 4 * i4;
	int plane = e / S; // n * C + c
	int c = plane % C;
	int row = plane / cpg; // n * G + g
	float mean = loadR(2 * row);
	float a = loadR(2 * row + 1) * loadG(c);
	vec4 y = (loadX4(i4) - mean) * a + loadB(c);
#ifdef SILU
	y = y / (1.0 + exp(-y));
#endif
	put(e, y.x);
	put(e + 1, y.y);
	put(e + 2, y.z);
	put(e + 3, y.w);
}
