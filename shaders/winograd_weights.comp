#version 430
// winograd_weights.comp: the weight transform of a Winograd F(4x4, 3x3)
// convolution. Each invocation turns one 3x3 kernel w[o][c] into its 6x6
// transform u = G w G^T and writes u[p] to U[p][c][o - o0] (p = 6*row +
// column), the B operand of the 36 matrix products, for the Oc output
// channels from o0. Output channels are the fastest index, so a SIMD vector
// of invocations writes contiguous floats.
// G (points 0, 1, -1, 2, -2 and infinity):
//   [ 1/4     0     0  ]
//   [-1/6  -1/6  -1/6  ]
//   [-1/6   1/6  -1/6  ]
//   [1/24  1/12   1/6  ]
//   [1/24 -1/12   1/6  ]
//   [  0     0     1   ]
// Defines: LX, W_LOADER.
#include "common.glsl"

layout(local_size_x = LX) in;

W_LOADER(loadW, tW, 0)
DECLARE_OUTPUT

uniform int C, o0, Oc;

float[6] g6(float a, float b, float c) {
	return float[6](0.25 * a, -(a + b + c) / 6.0, -(a - b + c) / 6.0,
		a / 24.0 + b / 12.0 + c / 6.0, a / 24.0 - b / 12.0 + c / 6.0, c);
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
			o[(6 * i + j) * plane + id] = u[j];
		}
	}
}
