#version 430
// matmul_nn4.comp: C[z] = alpha * A[z] . B[z] + bias for untransposed
// operands with K and N multiples of 4: A [M, K] is read four K elements a
// fetch and B [K, N] four N elements a fetch, so a step of four K values costs
// 8 + 8 vec4 fetches for 64 vec4 FMAs. Register-tiled like matmul.comp (8 x 8
// outputs per invocation). Defines: LX, LY, A_LOADER4, B_LOADER4, HAS_BIAS with
// BIAS_LOADER, and BIAS_ROWS to add bias[m] to row m instead of bias[n] to
// column n (a 1x1 convolution's bias), HAS_RES with RES_LOADER to add a
// residual of the output's shape.
#include "common.glsl"

layout(local_size_x = LX, local_size_y = LY) in;

A_LOADER4(loadA4, tA, 0)
B_LOADER4(loadB4, tB, 1)
#ifdef HAS_BIAS
BIAS_LOADER(loadBias, tBias, 2)
#endif
#ifdef HAS_RES
RES_LOADER(loadRes, tRes, 3)
#endif
DECLARE_OUTPUT

uniform int M, N, K;
uniform int aBatch, bBatch; // element strides between batch matrices
uniform float alpha;

#define ROWIDX(i) int ai##i = (aBase + min(m0 + i, M - 1) * K) / 4;
#define ZERO(i) vec4 c##i##a = vec4(0.0); vec4 c##i##b = vec4(0.0);
#define FMA(i) { vec4 a = loadA4(ai##i + k4); \
	c##i##a += a.x * b0a + a.y * b1a + a.z * b2a + a.w * b3a; \
	c##i##b += a.x * b0b + a.y * b1b + a.z * b2b + a.w * b3b; }
#define BROW(r) vec4 b##r##a = loadB4(bi + (4 * k4 + r) * N4); vec4 b##r##b = loadB4(bi + (4 * k4 + r) * N4 + next);
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
#if defined(HAS_BIAS) && defined(BIAS_ROWS)
			r += loadBias(m);
#elif defined(HAS_BIAS)
			r += loadBias(n);
#endif
#ifdef HAS_RES
			r += loadRes(base + n);
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
	int N4 = N / 4;
	ROWIDX(0) ROWIDX(1) ROWIDX(2) ROWIDX(3) ROWIDX(4) ROWIDX(5) ROWIDX(6) ROWIDX(7)
	ZERO(0) ZERO(1) ZERO(2) ZERO(3) ZERO(4) ZERO(5) ZERO(6) ZERO(7)
	// Columns n0..n0+7 are texels n0/4 and n0/4 + 1 of a row; when only four
	// columns are left the second fetch repeats the first (not stored).
	int bi = (z * bBatch) / 4 + n0 / 4;
	int next = n0 / 4 + 1 < N4 ? 1 : 0;
	int K4 = K / 4;
	for (int k4 = 0; k4 < K4; k4++) {
		BROW(0) BROW(1) BROW(2) BROW(3)
		FMA(0) FMA(1) FMA(2) FMA(3) FMA(4) FMA(5) FMA(6) FMA(7)
	}
	STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5) STORE(6) STORE(7)
}
