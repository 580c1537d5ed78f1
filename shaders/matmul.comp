#version 430
// matmul.comp: C[z] = alpha * A[z] . B[z] + bias, register-tiled.
// Each invocation computes a TM x TN block of C, reading A and B through
// texture buffers with arbitrary strides (so transposes and batch broadcast
// are free). Defines: TM, TN (block), LX, LY (local size), A_LOADER, B_LOADER,
// and HAS_BIAS with BIAS_LOADER.
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

void main() {
	int n0 = int(gl_GlobalInvocationID.x) * TN;
	int m0 = int(gl_GlobalInvocationID.y) * TM;
	int z = int(gl_GlobalInvocationID.z);
	if (n0 >= N || m0 >= M) {
		return;
	}
	int ai[TM];
	int bi[TN];
	for (int i = 0; i < TM; i++) {
		ai[i] = z * aBatch + min(m0 + i, M - 1) * aRow;
	}
	for (int j = 0; j < TN; j++) {
		bi[j] = z * bBatch + min(n0 + j, N - 1) * bCol;
	}
	float acc[TM * TN];
	for (int t = 0; t < TM * TN; t++) {
		acc[t] = 0.0;
	}
	for (int k = 0; k < K; k++) {
		float a[TM];
		float b[TN];
		for (int i = 0; i < TM; i++) {
			a[i] = loadA(ai[i] + k * aCol);
		}
		for (int j = 0; j < TN; j++) {
			b[j] = loadB(bi[j] + k * bRow);
		}
		for (int i = 0; i < TM; i++) {
			for (int j = 0; j < TN; j++) {
				acc[i * TN + j] += a[i] * b[j];
			}
		}
	}
	int cBase = z * M * N;
	for (int i = 0; i < TM; i++) {
		int m = m0 + i;
		for (int j = 0; j < TN; j++) {
			int n = n0 + j;
			if (m < M && n < N) {
				float v = acc[i * TN + j] * alpha;
#ifdef HAS_BIAS
				v += loadBias(n);
#endif
				o[cBase + m * N + n] = v;
			}
		}
	}
}
