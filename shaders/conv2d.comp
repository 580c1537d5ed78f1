#version 430
// conv2d.comp: direct 2-D convolution, NCHW, cross-correlation like PyTorch.
// Each invocation computes OC output channels x PX consecutive output pixels
// of one row, reading input and weights through texture buffers; for each
// (input channel, kernel row) it loads the input row segment once and reuses
// it for every kernel column. Defines: KH, KW, SW (kernel and horizontal
// stride, compile-time so the loops unroll), OC, PX, LX, X_LOADER, W_LOADER,
// HAS_BIAS with BIAS_LOADER.
#include "common.glsl"

layout(local_size_x = LX) in;

X_LOADER(loadX, tX, 0)
W_LOADER(loadW, tW, 1)
#ifdef HAS_BIAS
BIAS_LOADER(loadBias, tBias, 2)
#endif
DECLARE_OUTPUT

uniform int C, H, W, O, OH, OW, SH, PH, PW;
uniform int tilesW; // ceil(OW / PX)

const int SEG = (PX - 1) * SW + KW; // input columns one tile touches

void main() {
	int t = int(gl_GlobalInvocationID.x);
	int oc0 = int(gl_GlobalInvocationID.y) * OC;
	int n = int(gl_GlobalInvocationID.z);
	int oh = t / tilesW;
	int ow0 = (t - oh * tilesW) * PX;
	if (oh >= OH || oc0 >= O) {
		return;
	}
	int wi[OC];
	for (int q = 0; q < OC; q++) {
		wi[q] = min(oc0 + q, O - 1) * C * KH * KW;
	}
	float acc[OC * PX];
	for (int i = 0; i < OC * PX; i++) {
		acc[i] = 0.0;
	}
	int iw0 = ow0 * SW - PW;
	for (int c = 0; c < C; c++) {
		int plane = (n * C + c) * H * W;
		for (int kh = 0; kh < KH; kh++) {
			int ih = oh * SH - PH + kh;
			bool rowOk = ih >= 0 && ih < H;
			int rowBase = plane + clamp(ih, 0, H - 1) * W;
			float xs[SEG];
			for (int s = 0; s < SEG; s++) {
				int iw = iw0 + s;
				float v = loadX(rowBase + clamp(iw, 0, W - 1));
				xs[s] = (rowOk && iw >= 0 && iw < W) ? v : 0.0;
			}
			int wk = (c * KH + kh) * KW;
			for (int kw = 0; kw < KW; kw++) {
				float wv[OC];
				for (int q = 0; q < OC; q++) {
					wv[q] = loadW(wi[q] + wk + kw);
				}
				for (int q = 0; q < OC; q++) {
					for (int p = 0; p < PX; p++) {
						acc[q * PX + p] += wv[q] * xs[p * SW + kw];
					}
				}
			}
		}
	}
	for (int q = 0; q < OC; q++) {
		int oc = oc0 + q;
		if (oc >= O) {
			break;
		}
		float bv = 0.0;
#ifdef HAS_BIAS
		bv = loadBias(oc);
#endif
		int rowOut = ((n * O + oc) * OH + oh) * OW;
		for (int p = 0; p < PX; p++) {
			if (ow0 + p < OW) {
				o[rowOut + ow0 + p] = acc[q * PX + p] + bv;
			}
		}
	}
}
