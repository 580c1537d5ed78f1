#version 430
// softmax.comp: softmax over the last dim of x [rows, C]. One work group per
// row: the maximum, the sum of exp(x - max), then the quotient.
// Defines: LX (a power of two), X_LOADER.
#include "common.glsl"

layout(local_size_x = LX) in;

X_LOADER(loadX, tX, 0)
DECLARE_OUTPUT

uniform int C, rows;

shared float red[LX];

void main() {
	int row = groupId();
	if (row >= rows) {
		return; // uniform across the work group
	}
	int l = int(gl_LocalInvocationID.x);
	int base = row * C;
	float m = NEG_BIG;
	for (int i = l; i < C; i += LX) {
		m = max(m, loadX(base + i));
	}
	red[l] = m;
	memoryBarrierShared();
	barrier();
	for (int s = LX / 2; s > 0; s >>= 1) {
		if (l < s) {
			red[l] = max(red[l], red[l + s]);
		}
		memoryBarrierShared();
		barrier();
	}
	m = red[0];
	memoryBarrierShared();
	barrier();
	float sum = 0.0;
	for (int i = l; i < C; i += LX) {
		sum += exp(loadX(base + i) - m);
	}
	red[l] = sum;
	memoryBarrierShared();
	barrier();
	for (int s = LX / 2; s > 0; s >>= 1) {
		if (l < s) {
			red[l] += red[l + s];
		}
		memoryBarrierShared();
		barrier();
	}
	float inv = 1.0 / red[0];
	for (int i = l; i < C; i += LX) {
		put(base + i, exp(loadX(base + i) - m) * inv);
	}
}
