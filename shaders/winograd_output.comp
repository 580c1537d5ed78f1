#version 430
// winograd_output.comp: the output transform of a Winograd F(4x4, 3x3)
// convolution. Each invocation reads the 36 products m[p] = M[p][tc][oc] of
// one tile (tile0 + tc) and output channel (o0 + oc; M holds Oc channels), and
// writes y = A^T m A, a 4x4 block of out[n][o0 + oc] (cut at the image's
// edge), plus the bias.
// A^T (points 0, 1, -1, 1/2, -1/2 and infinity):
//   [1  1   1   1     1    0]
//   [0  1  -1  1/2  -1/2   0]
//   [0  1   1  1/4   1/4   0]
//   [0  1  -1  1/8  -1/8   1]
// Defines: LX, M_LOADER, HAS_BIAS with BIAS_LOADER, HAS_RES with RES_LOADER
// and the uniform resMode (as conv2d.comp's: 1 a residual of the output's
// shape, added at the store, 2 one value a plane, 0 none).
#include "common.glsl"

layout(local_size_x = LX) in;

M_LOADER(loadM, tM, 0)
#ifdef HAS_BIAS
BIAS_LOADER(loadBias, tBias, 1)
#endif
#if defined(HAS_RES) && !defined(RES_LOADER)
#define RES_LOADER LOADER_F32
#endif
#ifdef HAS_RES
RES_LOADER(loadRes, tRes, 2)
uniform int resMode; // 0: none, 1: a residual of the output's shape, 2: one value a plane
#endif
DECLARE_OUTPUT

uniform int O, o0, Oc, OH, OW;
uniform int tilesH, tilesW;
uniform int tile0, Tc;

float[4] at(float[6] m) {
	float a = m[1] + m[2], b = m[1] - m[2], c = m[3] + m[4], d = m[3] - m[4];
	return float[4](m[0] + a + c, b + 0.5 * d, a + 0.25 * c, b + 0.125 * d + m[5]);
}

void main() {
	int id = linearId();
	if (id >= Tc * Oc) {
		return;
	}
	int oc = o0 + id % Oc;
	int tc = id / Oc;
	int t = tile0 + tc;
	int per = tilesH * tilesW;
	int n = t / per;
	int r = t - n * per;
	int ty = r / tilesW;
	int oh0 = ty * 4;
	int ow0 = (r - ty * tilesW) * 4;
	int stride = Tc * Oc;
	// s = A^T m, one column of m at a time: s[j][i] is row i, column j.
	float s[6][4];
	for (int j = 0; j < 6; j++) {
		float[6] m;
		for (int i = 0; i < 6; i++) {
			m[i] = loadM((6 * i + j) * stride + id);
		}
		s[j] = at(m);
	}
	float bv = 0.0;
#ifdef HAS_BIAS
	bv = loadBias(oc);
#endif
	int base = (n * O + oc) * OH * OW;
#ifdef HAS_RES
	float rv = 0.0;
	if (resMode == 2) {
		rv = loadRes(n * O + oc);
	}
#endif
	for (int i = 0; i < 4; i++) {
		float[4] y = at(float[6](s[0][i], s[1][i], s[2][i], s[3][i], s[4][i], s[5][i]));
		int oh = oh0 + i;
		if (oh < OH) {
			for (int j = 0; j < 4; j++) {
				if (ow0 + j < OW) {
					int i = base + oh * OW + ow0 + j;
#ifdef HAS_RES
					float r = rv;
					if (resMode == 1) {
						r = loadRes(i);
					}
					put(i, y[j] + bv + r);
#else
					put(i, y[j] + bv);
#endif
				}
			}
		}
	}
}
