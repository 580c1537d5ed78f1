#version 430
// matmul_naive.comp: the plain kernel, one output per invocation, F32 inputs
// read from storage buffers. Kept as the baseline the tiled matmul.comp is
// benchmarked and tested against. Defines: LX, LY, HAS_BIAS.
#include "common.glsl"

layout(local_size_x = LX, local_size_y = LY) in;

layout(std430, binding = 1) readonly buffer BufA { float a[]; };
layout(std430, binding = 2) readonly buffer BufB { float b[]; };
layout(std430, binding = 3) readonly buffer BufBias { float bias[]; };
DECLARE_OUTPUT

uniform int M, N, K;
uniform int aBatch, aRow, aCol;
uniform int bBatch, bRow, bCol;
uniform float alpha;

void main() {
	int n = int(gl_GlobalInvocationID.x);
	int m = int(gl_GlobalInvocationID.y);
	int z = int(gl_GlobalInvocationID.z);
	if (n >= N || m >= M) {
		return;
	}
	int ai = z * aBatch + m * aRow;
	int bi = z * bBatch + n * bCol;
	float acc = 0.0;
	for (int k = 0; k < K; k++) {
		acc += a[ai + k * aCol] * b[bi + k * bRow];
	}
	acc *= alpha;
#ifdef HAS_BIAS
	acc += bias[n];
#endif
	put(z * M * N + m * N + n, acc);
}
