#version 430
// rmsnorm.comp: RMSNorm over the last dim of x [rows, C] (T5's
// T5LayerNorm, SD3.5's q/k norms): no mean is subtracted and there is no
// bias, x * inversesqrt(mean(x^2) + eps) * gamma. Defines: LX (a power of
// two), X_LOADER, HAS_G with G_LOADER (gamma 1 without it).
//
// SERIAL (the host sets it for short rows): one invocation per row, which
// loops over it alone, with invocations numbered flat (linearId).
#include "common.glsl"

layout(local_size_x = LX) in;

X_LOADER(loadX, tX, 0)
#ifdef HAS_G
G_LOADER(loadG, tG, 1)
#else
float loadG(int c) { return 1.0; }
#endif
DECLARE_OUTPUT

uniform int C, rows;
uniform float eps;

#ifdef SERIAL
#define ROW linearId()
#define FIRST 0
#define STEP 1
#else
shared float red[LX];
#define ROW groupId()
#define FIRST int(gl_LocalInvocationID.x)
#define STEP LX
#endif

#ifdef SERIAL
#define REDUCE(v) (v)
#else
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
		float v = loadX(base + i);
		s += v * v;
	}
	float inv = inversesqrt(REDUCE(s) / float(C) + eps);
	for (int i = l; i < C; i += STEP) {
		put(base + i, loadX(base + i) * inv * loadG(i));
	}
}
