#version 430
// matmul_q.comp: C[z] = alpha * A[z] . B^T + bias for a linear layer whose
// weight B [N, K] is in a block format (Q8_0, Q4_0, Q4_K, Q5_K: defines
// QUANT_*; K a multiple of 32). Register-tiled like matmul_nt4.comp (8 x 8
// outputs per invocation), walking K one 32-weight group at a time: each
// of the eight columns reads its group's scale pair once, then its quants
// four at a time, so the dequantization is one fused multiply-add per
// element. Defines: LX, LY, A_LOADER4, QUANT_*, HAS_BIAS with BIAS_LOADER.
#include "common.glsl"
#include "quant.glsl"

layout(local_size_x = LX, local_size_y = LY) in;

A_LOADER4(loadA4, tA, 0)
QUANT_B(tB, 1)
#ifdef HAS_BIAS
BIAS_LOADER(loadBias, tBias, 2)
#endif
DECLARE_OUTPUT

uniform int M, N, K;
uniform int aBatch; // element stride between batch matrices of A
uniform float alpha;

#define ROWIDX(i) int ai##i = (aBase + min(m0 + i, M - 1) * K) / 4;
#define COLIDX(j) int g##j = min(n0 + j, N - 1) * KG;
#define SCALE(j) vec2 s##j = qscale(g##j + g);
#define LOADB(j) vec4 b##j = qvals(g##j + g, t) * s##j.x + s##j.y;
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
	int KG = K / 32;
	ROWIDX(0) ROWIDX(1) ROWIDX(2) ROWIDX(3) ROWIDX(4) ROWIDX(5) ROWIDX(6) ROWIDX(7)
	COLIDX(0) COLIDX(1) COLIDX(2) COLIDX(3) COLIDX(4) COLIDX(5) COLIDX(6) COLIDX(7)
	ZERO(0) ZERO(1) ZERO(2) ZERO(3) ZERO(4) ZERO(5) ZERO(6) ZERO(7)
	for (int g = 0; g < KG; g++) {
		SCALE(0) SCALE(1) SCALE(2) SCALE(3) SCALE(4) SCALE(5) SCALE(6) SCALE(7)
		for (int t = 0; t < 8; t++) {
			int k4 = g * 8 + t;
			LOADB(0) LOADB(1) LOADB(2) LOADB(3) LOADB(4) LOADB(5) LOADB(6) LOADB(7)
			FMA(0) FMA(1) FMA(2) FMA(3) FMA(4) FMA(5) FMA(6) FMA(7)
		}
	}
	STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5) STORE(6) STORE(7)
}
