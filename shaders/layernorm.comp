#version 430
// layernorm.comp: LayerNorm over the last dim of x [rows, C]. One work group
// per row: mean, variance around it, then (x - mean) / sqrt(var + eps) *
// gamma + beta. Defines: LX (a power of two), X_LOADER, HAS_G with G_LOADER
// and HAS_B with B_LOADER (gamma 1 and beta 0 without them).
//
// SERIAL (the host sets it for short rows): one invocation per row, which
// loops over it alone (no shared memory or barriers, which are slow on
// llvmpipe), with invocations numbered flat (linearId).
#include "common.glsl"

layout(local_size_x = LX) in;

X_LOADER(loadX, tX, 0)
#ifdef HAS_G
G_LOADER(loadG, tG, 1)
#else
float loadG(int c) { return 1.0; }
#endif
#ifdef HAS_B
B_LOADER(loadB, tB, 2)
#else
float loadB(int c) { return 0.0; }
#endif
DECLARE_OUTPUT

uniform int C, rows;
uniform float eps;

#ifdef SERIAL
#define REDUCE(v) (v)
#define ROW linearId()
#define FIRST 0
#define STEP 1
#else
shared float red[LX];
#define ROW groupId()
#define FIRST int(gl_LocalInvocationID.x)
#define STEP LX
#endif

#ifndef SERIAL
float rowSum(float v) {
	int l = int(gl_LocalInvocationID.x);
	red[l] = v;
	memoryBarrierShared();
	barrier();
	for (int s = LX / 2; s > 0; s >>= 1) {
		if (l < s) {
			red[l] += red[l + s];
		}
		memoryBarrierShared();
		barrier();
	}
	float r = red[0];
	memoryBarrierShared();
	barrier();
	return r;
}
#define REDUCE(v) rowSum(v)
#endif

void main() {
	int row = ROW;
	if (row >= rows) {
		return; // uniform across the work group (unless SERIAL)
	}
	int l = FIRST;
	int base = row * C;
	float s = 0.0;
	for (int i = l; i < C; i += STEP) {
		s += loadX(base + i);
	}
	float mean = REDUCE(s) / float(C);
	float v = 0.0;
	for (int i = l; i < C; i += STEP) {
		float d = loadX(base + i) - mean;
		v += d * d;
	}
	float inv = inversesqrt(REDUCE(v) / float(C) + eps);
	for (int i = l; i < C; i += STEP) {
		put(base + i, (loadX(base + i) - mean) * inv * loadG(i) + loadB(i));
	}
}
