#version 430
// matmul_nt4.comp: C[z] = alpha * A[z] . B[z]^T + bias for the layout of a
// linear layer (A [M, K] and B [N, K] both contiguous along K, K a multiple
// of 4), register-tiled like matmul.comp (8 x 8 outputs per invocation in 16
// vec4 accumulators) but reading four K elements per texel fetch, which cuts
// the fetches fourfold. Defines: LX, LY, A_LOADER4, B_LOADER4, HAS_BIAS with
// BIAS_LOADER.
#include "common.glsl"
#include "quant.glsl"

layout(local_size_x = LX, local_size_y = LY) in;

A_LOADER4(loadA4, tA, 0)
B_LOADER4(loadB4, tB, 1)
#ifdef HAS_BIAS
BIAS_LOADER(loadBias, tBias, 2)
#endif
DECLARE_OUTPUT

uniform int M, N, K;
uniform int aBatch, bBatch; // element strides between batch matrices
uniform float alpha;

#define ROWIDX(i) int ai##i = (aBase + min(m0 + i, M - 1) * K) / 4;
#define COLIDX(j) int bi##j = (bBase + min(n0 + j, N - 1) * K) / 4;
#define ZERO(i) vec4 c##i##a = vec4(0.0); vec4 c##i##b = vec4(0.0);
#define FMA(i) { vec4 a = loadA4(ai##i + k4); \
	c##i##a += vec4(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3)); \
	c##i##b += vec4(dot(a, b4), dot(a, b5), dot(a, b6), dot(a, b7)); }
#define STORE(i) store(m0 + i, c##i##a, c##i##b);

void store(int m, vec4 lo, vec4 hi) {
	if (m >= M) {
		return;
	}
	int base = int(gl_GlobalInvocationID.z) * M * N + m * N;
	int n0 = int(gl_GlobalInvocationID.x) * 8;
	float v[8] = float[8](lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
	for (int j = 0; j < 8; j++) {
		int n = n0 + j;
		if (n < N) {
			float r = v[j] * alpha;
#ifdef HAS_BIAS
			r += loadBias(n);
#endif
			put(base + n, r);
		}
	}
}

void main() {
	int n0 = int(gl_GlobalInvocationID.x) * 8;
	int m0 = int(gl_GlobalInvocationID.y) * 8;
	int z = int(gl_GlobalInvocationID.z);
	if (n0 >= N || m0 >= M) {
		return;
	}
	int aBase = z * aBatch;
	int bBase = z * bBatch;
	ROWIDX(0) ROWIDX(1) ROWIDX(2) ROWIDX(3) ROWIDX(4) ROWIDX(5) ROWIDX(6) ROWIDX(7)
	COLIDX(0) COLIDX(1) COLIDX(2) COLIDX(3) COLIDX(4) COLIDX(5) COLIDX(6) COLIDX(7)
	ZERO(0) ZERO(1) ZERO(2) ZERO(3) ZERO(4) ZERO(5) ZERO(6) ZERO(7)
	int K4 = K / 4;
	for (int k4 = 0; k4 < K4; k4++) {
		vec4 b0 = loadB4(bi0 + k4), b1 = loadB4(bi1 + k4), b2 = loadB4(bi2 + k4), b3 = loadB4(bi3 + k4);
		vec4 b4 = loadB4(bi4 + k4), b5 = loadB4(bi5 + k4), b6 = loadB4(bi6 + k4), b7 = loadB4(bi7 + k4);
		FMA(0) FMA(1) FMA(2) FMA(3) FMA(4) FMA(5) FMA(6) FMA(7)
	}
	STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5) STORE(6) STORE(7)
}
