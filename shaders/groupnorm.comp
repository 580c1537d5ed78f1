#version 430
// groupnorm.comp: GroupNorm over x [N, C, S] (S = spatial size). One work
// group per (sample, group): the mean, then the variance around it (two
// passes, for precision), then y = (x - mean) / sqrt(var + eps) * gamma + beta.
// Defines: LX (a power of two), X_LOADER, HAS_G with G_LOADER
// and HAS_B with B_LOADER (gamma 1 and beta 0 without them), SILU to apply
// y * sigmoid(y) to the result. Long rows go to groupnorm_stats.comp,
// groupnorm_merge.comp and groupnorm_apply.comp instead (see gl.GroupNorm).
//
// LAYERNORM: LayerNorm over the last dim of x [rows, C], as one group a row
// with no spatial extent (S and G are the constant 1, which the compiler
// folds away, so the arithmetic is a LayerNorm's).
//
// RMSNORM: RMSNorm over the last dim of x [rows, C] (T5's T5LayerNorm,
// SD3.5's q/k norms), shaped as LAYERNORM with no mean subtracted and no
// bias: x * inversesqrt(mean(x^2) + eps) * gamma.
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

#if defined(LAYERNORM) || defined(RMSNORM)
uniform int C, rows;
const int S = 1, G = 1;
#else
uniform int C, S, G, rows;
#endif
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
float groupSum(float v) {
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
#define REDUCE(v) groupSum(v)
#endif

void main() {
	int row = ROW;
	if (row >= rows) {
		return; // uniform across the work group (unless SERIAL)
	}
	int l = FIRST;
	int cpg = C / G;
	int n = row / G;
	int g = row - n * G;
	int base = (n * C + g * cpg) * S;
	int count = cpg * S;
#ifdef RMSNORM
	const float mean = 0.0;
#else
	float s = 0.0;
	for (int i = l; i < count; i += STEP) {
		s += loadX(base + i);
	}
	float mean = REDUCE(s) / float(count);
#endif
	float v = 0.0;
	for (int i = l; i < count; i += STEP) {
		float d = loadX(base + i) - mean;
		v += d * d;
	}
	float inv = inversesqrt(REDUCE(v) / float(count) + eps);
	for (int i = l; i < count; i += STEP) {
		int c = g * cpg + i / S;
		float y = (loadX(base + i) - mean) * inv * loadG(c) + loadB(c);
#ifdef SILU
		y = y / (1.0 + exp(-y));
#endif
		put(base + i, y);
	}
}
