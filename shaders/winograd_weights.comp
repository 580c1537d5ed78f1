#version 430
// winograd_weights.comp: the weight transform of a Winograd F(4x4, 3x3)
// convolution. Each invocation turns one 3x3 kernel w[o][c] into its 6x6
// transform u = G w G^T and writes u[p] to U[p][c][o - o0] (p = 6*row +
// column), the B operand of the 36 matrix products, for the Oc output
// channels from o0. Output channels are the fastest index, so a SIMD vector
// of invocations writes contiguous floats.
// G (interpolation points 0, 1, -1, 1/2, -1/2 and infinity, which keep the
// input and output transforms' coefficients at most 1.25 and 1 in magnitude:
// about half the rounding error of the usual 0, +-1, +-2):
//   [  4     0     0  ]
//   [ 2/3   2/3   2/3 ]
//   [ 2/3  -2/3   2/3 ]
//   [-8/3  -4/3  -2/3 ]
//   [-8/3   4/3  -2/3 ]
//   [  0     0     1  ]
// Defines: LX, W_LOADER.
#include "common.glsl"

layout(local_size_x = LX) in;

W_LOADER(loadW, tW, 0)
DECLARE_OUTPUT

uniform int C, o0, Oc;

float[6] g6(float a, float b, float c) {
	const float third = 1.0 / 3.0;
	return float[6](4.0 * a, 2.0 * third * (a + b + c), 2.0 * third * (a - b + c),
		-third * (8.0 * a + 4.0 * b + 2.0 * c), -third * (8.0 * a - 4.0 * b + 2.0 * c), c);
}

void main() {
	int id = linearId();
	if (id >= C * Oc) {
		return;
	}
	int oc = o0 + id % Oc;
	int c = id / Oc;
	int base = (oc * C + c) * 9;
	// t = G w: columns of w transformed, t[i][k] for k the kernel column.
	float[6] t0 = g6(loadW(base + 0), loadW(base + 3), loadW(base + 6));
	float[6] t1 = g6(loadW(base + 1), loadW(base + 4), loadW(base + 7));
	float[6] t2 = g6(loadW(base + 2), loadW(base + 5), loadW(base + 8));
	int plane = C * Oc;
	for (int i = 0; i < 6; i++) {
		float[6] u = g6(t0[i], t1[i], t2[i]);
		for (int j = 0; j < 6; j++) {
			put((6 * i + j) * plane + id, u[j]);
		}
	}
}
