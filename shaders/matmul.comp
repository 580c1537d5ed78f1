#version 430
// matmul.comp: C[z] = alpha * A[z] . B[z] + bias, register-tiled.
// Each invocation computes an 8 x 8 block of C (rows m0.., columns n0..) held
// in 16 vec4 accumulators, reading A and B through texture buffers with
// arbitrary element strides (so transposes and batch broadcast are free).
// The block is written out by macros rather than loops so that the compiler
// keeps it in registers (Mesa does not unroll nested loops this large).
// Defines: LX, LY (local size), A_LOADER, B_LOADER, HAS_BIAS with BIAS_LOADER.
#include "common.glsl"

layout(local_size_x = LX, local_size_y = LY) in;

A_LOADER(loadA, tA, 0)
B_LOADER(loadB, tB, 1)
#ifdef HAS_BIAS
BIAS_LOADER(loadBias, tBias, 2)
#endif
DECLARE_OUTPUT

uniform int M, N, K;
uniform int aBatch, aRow, aCol; // element strides of A: batch, m, k
uniform int bBatch, bRow, bCol; // element strides of B: batch, k, n
uniform float alpha;

#define ROWIDX(i) int ai##i = aBase + min(m0 + i, M - 1) * aRow;
#define COLIDX(j) int bi##j = bBase + min(n0 + j, N - 1) * bCol;
#define ZERO(i) vec4 c##i##a = vec4(0.0); vec4 c##i##b = vec4(0.0);
#define FMA(i) { float a = loadA(ai##i + ka); c##i##a += a * b0; c##i##b += a * b1; }
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
	for (int k = 0; k < K; k++) {
		int ka = k * aCol;
		int kb = k * bRow;
		vec4 b0 = vec4(loadB(bi0 + kb), loadB(bi1 + kb), loadB(bi2 + kb), loadB(bi3 + kb));
		vec4 b1 = vec4(loadB(bi4 + kb), loadB(bi5 + kb), loadB(bi6 + kb), loadB(bi7 + kb));
		FMA(0) FMA(1) FMA(2) FMA(3) FMA(4) FMA(5) FMA(6) FMA(7)
	}
	STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5) STORE(6) STORE(7)
}
