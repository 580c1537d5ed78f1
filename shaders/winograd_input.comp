#version 430
// winograd_input.comp: the input transform of a Winograd F(4x4, 3x3)
// convolution. Output tiles are 4x4 pixels; tile t reads the 6x6 input patch
// at (4*ty - PH, 4*tx - PW) (zero outside the image) and writes its transform
// v = B^T d B to V[p][t - tile0][c] (p = 6*row + column): the A operand of the
// 36 matrix products, for the chunk of Tc tiles starting at tile0. Channels are
// the fastest index so that a SIMD vector of invocations writes contiguously.
// B^T (points 0, 1, -1, 1/2, -1/2 and infinity; see winograd_weights.comp):
//   [1/4    0   -5/4    0    1  0]
//   [ 0   -1/4  -1/4    1    1  0]
//   [ 0    1/4  -1/4   -1    1  0]
//   [ 0   -1/2   -1    1/2   1  0]
//   [ 0    1/2   -1   -1/2   1  0]
//   [ 0    1/4    0   -5/4   0  1]
// Defines: LX, X_LOADER.
#include "common.glsl"

layout(local_size_x = LX) in;

X_LOADER(loadX, tX, 0)
DECLARE_OUTPUT

uniform int C, H, W, PH, PW;
uniform int tilesH, tilesW; // tiles per sample
uniform int tile0, Tc;      // this chunk's first tile and tile count

float[6] bt(float[6] d) {
	return float[6](0.25 * d[0] - 1.25 * d[2] + d[4],
		-0.25 * (d[1] + d[2]) + d[3] + d[4],
		0.25 * (d[1] - d[2]) - d[3] + d[4],
		0.5 * (d[3] - d[1]) - d[2] + d[4],
		0.5 * (d[1] - d[3]) - d[2] + d[4],
		0.25 * d[1] - 1.25 * d[3] + d[5]);
}

void main() {
	int id = linearId();
	if (id >= Tc * C) {
		return;
	}
	int c = id % C;
	int tc = id / C;
	int t = tile0 + tc;
	int per = tilesH * tilesW;
	int n = t / per;
	int r = t - n * per;
	int ty = r / tilesW;
	int ih0 = ty * 4 - PH;
	int iw0 = (r - ty * tilesW) * 4 - PW;
	int plane = (n * C + c) * H * W;
	// s = B^T d, one input column at a time: s[j][i] is row i, column j.
	float s[6][6];
	for (int j = 0; j < 6; j++) {
		int iw = iw0 + j;
		bool colOk = iw >= 0 && iw < W;
		float[6] d;
		for (int i = 0; i < 6; i++) {
			int ih = ih0 + i;
			float v = loadX(plane + clamp(ih, 0, H - 1) * W + clamp(iw, 0, W - 1));
			d[i] = (colOk && ih >= 0 && ih < H) ? v : 0.0;
		}
		s[j] = bt(d);
	}
	int stride = Tc * C;
	for (int i = 0; i < 6; i++) {
		float[6] v = bt(float[6](s[0][i], s[1][i], s[2][i], s[3][i], s[4][i], s[5][i]));
		for (int j = 0; j < 6; j++) {
			put((6 * i + j) * stride + id, v[j]);
		}
	}
}
