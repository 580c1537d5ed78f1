#version 430
// im2col.comp: a convolution's input as columns,
//   col[n][(c*KH + kh)*KW + kw][oh*OW + ow] = x[n][c][oh*SH - PH + kh][ow*SW - PW + kw]
// (0 outside the input), so that the convolution is the product of its
// [O, C*KH*KW] weights with each sample's [C*KH*KW, OH*OW] columns
// (matmul.comp's MM_NN4 with BIAS_ROWS). Every size is a uniform: one
// small program serves every such convolution (strided ones; see
// gl.useIm2col). One element an invocation. Defines: LX, X_LOADER.
#include "common.glsl"

layout(local_size_x = LX) in;

X_LOADER(loadX, tX, 0)
DECLARE_OUTPUT

uniform int n; // elements of col
uniform int C, H, W, KH, KW, SH, SW, PH, PW, OH, OW;

void main() {
	int i = linearId();
	if (i >= n) {
		return;
	}
	int pix = i % (OH * OW);
	int r = i / (OH * OW); // (sample*C + c)*KH*KW + kh*KW + kw
	int ow = pix % OW;
	int oh = pix / OW;
	int kw = r % KW;
	int kh = (r / KW) % KH;
	int plane = r / (KH * KW); // sample*C + c
	int ih = oh * SH - PH + kh;
	int iw = ow * SW - PW + kw;
	bool ok = ih >= 0 && ih < H && iw >= 0 && iw < W;
	float v = loadX(plane * H * W + clamp(ih, 0, H - 1) * W + clamp(iw, 0, W - 1));
	put(i, ok ? v : 0.0);
}
