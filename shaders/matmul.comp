#version 430
// matmul.comp: C[z] = alpha * A[z] . B[z] + bias (either operand possibly
// transposed), in five variants; exactly one of these defines picks it:
//   MM_NAIVE    one output per invocation, F32 operands read from storage
//               buffers: the plain kernel, the baseline the others are
//               benchmarked and tested against.
//   MM_STRIDED  tiled; A and B read one element a fetch with arbitrary
//               element strides (so transposes and batch broadcast are free).
//   MM_NN4      tiled, untransposed A [M, K] and B [K, N] with K and N
//               multiples of 4: A is read four K elements a fetch and B four
//               N elements a fetch, so a step of four K values costs 8 + 8
//               vec4 fetches for 64 vec4 FMAs.
//   MM_NT4      tiled, the layout of a linear layer: A [M, K] and B [N, K]
//               both contiguous along K (a multiple of 4), four K elements
//               per fetch of either, which cuts the fetches fourfold; B may
//               be float8 (quant.glsl's vector loaders).
//   MM_QBLOCK   tiled like MM_NT4 with B [N, K] in a block format (QUANT_Q8_0,
//               QUANT_Q4_0, QUANT_Q4_K, QUANT_Q5_K; K a multiple of 32),
//               walking K one 32-weight group at a time: each of the eight
//               columns reads its group's scale pair once, then its quants
//               four at a time, so the dequantization is one fused
//               multiply-add per element.
// A tiled invocation computes an 8 x 8 block of C (rows m0.., columns n0..)
// held in 16 vec4 accumulators, written out by macros rather than loops so
// that the compiler keeps it in registers (Mesa does not unroll nested loops
// this large). ROWS16 makes the block 16 rows high: each fetch of B then
// feeds twice the multiply-adds. On llvmpipe a texel fetch is a call that
// loads each lane's texel and transposes them (44% of matmul_nt4's time on
// a U-Net shape), so this pays for tall products although the 32
// accumulators no longer fit in registers (~+17% at 2048x320x2560 and
// 8192x320x2560); the host picks it for those (gl.tallTiles).
//
// Other defines: LX, LY (local size); A_LOADER and B_LOADER (MM_STRIDED),
// A_LOADER4 and B_LOADER4 (MM_NN4, MM_NT4), A_LOADER4 and QUANT_*
// (MM_QBLOCK); HAS_BIAS, with BIAS_LOADER except for MM_NAIVE, and BIAS_ROWS
// (all but MM_NAIVE) to add bias[m] to row m instead of bias[n] to column n
// (a 1x1 convolution's bias); HAS_RES with RES_LOADER (all but MM_NAIVE) and
// the uniform resMode to add, after the bias, a residual of the output's
// shape (1) or one value a row of each batch matrix (2: a 1x1 convolution's
// residual of one value a sample and channel), or nothing (0: one program
// serves products with and without one).
#include "common.glsl"
#if defined(MM_NT4) || defined(MM_QBLOCK)
#include "quant.glsl"
#endif
#if !defined(MM_NAIVE) && !defined(MM_STRIDED) && !defined(MM_NN4) && !defined(MM_NT4) && !defined(MM_QBLOCK)
#error matmul.comp needs one of MM_NAIVE, MM_STRIDED, MM_NN4, MM_NT4, MM_QBLOCK
#endif

layout(local_size_x = LX, local_size_y = LY) in;

#if defined(MM_NAIVE)
layout(std430, binding = 1) readonly buffer BufA { float a[]; };
layout(std430, binding = 2) readonly buffer BufB { float b[]; };
layout(std430, binding = 3) readonly buffer BufBias { float bias[]; };
#elif defined(MM_STRIDED)
A_LOADER(loadA, tA, 0)
B_LOADER(loadB, tB, 1)
#elif defined(MM_QBLOCK)
A_LOADER4(loadA4, tA, 0)
QUANT_B(tB, 1)
#else
A_LOADER4(loadA4, tA, 0)
B_LOADER4(loadB4, tB, 1)
#endif
#if defined(HAS_BIAS) && !defined(MM_NAIVE)
BIAS_LOADER(loadBias, tBias, 2)
#endif
#if defined(HAS_RES) && !defined(RES_LOADER)
#define RES_LOADER LOADER_F32
#endif
#ifdef HAS_RES
RES_LOADER(loadRes, tRes, 3)
uniform int resMode; // 0: none, 1: a residual of the output's shape, 2: one value a row
#endif
DECLARE_OUTPUT

uniform int M, N, K;
#if defined(MM_NAIVE) || defined(MM_STRIDED)
uniform int aBatch, aRow, aCol; // element strides of A: batch, m, k
uniform int bBatch, bRow, bCol; // element strides of B: batch, k, n
#elif defined(MM_QBLOCK)
uniform int aBatch; // element stride between batch matrices of A (B is one matrix)
#else
uniform int aBatch, bBatch; // element strides between batch matrices
#endif
uniform float alpha;

#ifdef MM_NAIVE
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
#else // the tiled variants

// ai<i>: where row m0+i of A starts (in fetches); bi<j>, g<j>: column n0+j of B.
#if defined(MM_STRIDED)
#define ROWIDX(i) int ai##i = aBase + min(m0 + i, M - 1) * aRow;
#define COLIDX(j) int bi##j = bBase + min(n0 + j, N - 1) * bCol;
#else
#define ROWIDX(i) int ai##i = (aBase + min(m0 + i, M - 1) * K) / 4;
#endif
#if defined(MM_NT4)
#define COLIDX(j) int bi##j = (bBase + min(n0 + j, N - 1) * K) / 4;
#elif defined(MM_QBLOCK)
#define COLIDX(j) int g##j = min(n0 + j, N - 1) * KG;
#define SCALE(j) vec2 s##j = qscale(g##j + g);
#define LOADB(j) vec4 b##j = qvals(g##j + g, t) * s##j.x + s##j.y;
#elif defined(MM_NN4)
#define BROW(r) vec4 b##r##a = loadB4(bi + (4 * k4 + r) * N4); vec4 b##r##b = loadB4(bi + (4 * k4 + r) * N4 + next);
#endif
#define ZERO(i) vec4 c##i##a = vec4(0.0); vec4 c##i##b = vec4(0.0);
// FMA(i) adds one step of K (MM_STRIDED) or four (the others) to row i.
#if defined(MM_STRIDED)
#define FMA(i) { float a = loadA(ai##i + ka); c##i##a += a * b0; c##i##b += a * b1; }
#elif defined(MM_NN4)
#define FMA(i) { vec4 a = loadA4(ai##i + k4); \
	c##i##a += a.x * b0a + a.y * b1a + a.z * b2a + a.w * b3a; \
	c##i##b += a.x * b0b + a.y * b1b + a.z * b2b + a.w * b3b; }
#else
#define FMA(i) { vec4 a = loadA4(ai##i + k4); \
	c##i##a += vec4(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3)); \
	c##i##b += vec4(dot(a, b4), dot(a, b5), dot(a, b6), dot(a, b7)); }
#endif
#define STORE(i) store(m0 + i, c##i##a, c##i##b);
// ROWS(F) applies the row macro F to every row of the block.
#ifdef ROWS16
#define TILE_M 16
#define ROWS(F) F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7) F(8) F(9) F(10) F(11) F(12) F(13) F(14) F(15)
#else
#define TILE_M 8
#define ROWS(F) F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7)
#endif

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
			float rr = 0.0;
			if (resMode == 1) {
				rr = loadRes(base + n);
			} else if (resMode == 2) {
				rr = loadRes(int(gl_GlobalInvocationID.z) * M + m);
			}
			r += rr;
#endif
			put(base + n, r);
		}
	}
}

void main() {
	int n0 = int(gl_GlobalInvocationID.x) * 8;
	int m0 = int(gl_GlobalInvocationID.y) * TILE_M;
	int z = int(gl_GlobalInvocationID.z);
	if (n0 >= N || m0 >= M) {
		return;
	}
	int aBase = z * aBatch;
#if defined(MM_STRIDED) || defined(MM_NT4)
	int bBase = z * bBatch;
#elif defined(MM_NN4)
	int N4 = N / 4;
#else
	int KG = K / 32;
#endif
	ROWS(ROWIDX)
#ifndef MM_NN4
	COLIDX(0) COLIDX(1) COLIDX(2) COLIDX(3) COLIDX(4) COLIDX(5) COLIDX(6) COLIDX(7)
#endif
	ROWS(ZERO)
#if defined(MM_STRIDED)
	for (int k = 0; k < K; k++) {
		int ka = k * aCol;
		int kb = k * bRow;
		vec4 b0 = vec4(loadB(bi0 + kb), loadB(bi1 + kb), loadB(bi2 + kb), loadB(bi3 + kb));
		vec4 b1 = vec4(loadB(bi4 + kb), loadB(bi5 + kb), loadB(bi6 + kb), loadB(bi7 + kb));
		ROWS(FMA)
	}
#elif defined(MM_NN4)
	// Columns n0..n0+7 are texels n0/4 and n0/4 + 1 of a row; when only four
	// columns are left the second fetch repeats the first (not stored).
	int bi = (z * bBatch) / 4 + n0 / 4;
	int next = n0 / 4 + 1 < N4 ? 1 : 0;
	int K4 = K / 4;
	for (int k4 = 0; k4 < K4; k4++) {
		BROW(0) BROW(1) BROW(2) BROW(3)
		ROWS(FMA)
	}
#elif defined(MM_NT4)
	int K4 = K / 4;
	for (int k4 = 0; k4 < K4; k4++) {
		vec4 b0 = loadB4(bi0 + k4), b1 = loadB4(bi1 + k4), b2 = loadB4(bi2 + k4), b3 = loadB4(bi3 + k4);
		vec4 b4 = loadB4(bi4 + k4), b5 = loadB4(bi5 + k4), b6 = loadB4(bi6 + k4), b7 = loadB4(bi7 + k4);
		ROWS(FMA)
	}
#else
	for (int g = 0; g < KG; g++) {
		SCALE(0) SCALE(1) SCALE(2) SCALE(3) SCALE(4) SCALE(5) SCALE(6) SCALE(7)
		for (int t = 0; t < 8; t++) {
			int k4 = g * 8 + t;
			LOADB(0) LOADB(1) LOADB(2) LOADB(3) LOADB(4) LOADB(5) LOADB(6) LOADB(7)
			ROWS(FMA)
		}
	}
#endif
	ROWS(STORE)
}
#endif
