#version 430
// conv2d.comp: direct 2-D convolution, NCHW, cross-correlation like PyTorch.
// Each invocation computes 8 output channels x 8 consecutive output pixels of
// one output row, held in 16 vec4 accumulators and read through texture
// buffers. For each (input channel, kernel row) it loads the input row segment
// the 8 pixels touch once and reuses it for every kernel column. The 8x8 block
// is spelled out with macros (and kernel columns with #if up to 7) so the
// compiler keeps it in registers. Defines: KH, KW, SW (kernel size and
// horizontal stride, compile-time), LX, X_LOADER, W_LOADER, HAS_BIAS with
// BIAS_LOADER.
#include "common.glsl"

layout(local_size_x = LX) in;

X_LOADER(loadX, tX, 0)
W_LOADER(loadW, tW, 1)
#ifdef HAS_BIAS
BIAS_LOADER(loadBias, tBias, 2)
#endif
DECLARE_OUTPUT

uniform int C, H, W, O, OH, OW, SH, PH, PW;
uniform int tilesW; // ceil(OW / 8)

const int SEG = 7 * SW + KW; // input columns one tile touches

#define WIDX(q) int wi##q = min(oc0 + q, O - 1) * C * KH * KW;
#define ZERO(q) vec4 c##q##a = vec4(0.0); vec4 c##q##b = vec4(0.0);
#define FMA(q, kw) { float w = loadW(wi##q + wk + kw); c##q##a += w * xa; c##q##b += w * xb; }
#define COLUMN(kw) { \
	vec4 xa = vec4(xs[kw], xs[SW + kw], xs[2 * SW + kw], xs[3 * SW + kw]); \
	vec4 xb = vec4(xs[4 * SW + kw], xs[5 * SW + kw], xs[6 * SW + kw], xs[7 * SW + kw]); \
	FMA(0, kw) FMA(1, kw) FMA(2, kw) FMA(3, kw) FMA(4, kw) FMA(5, kw) FMA(6, kw) FMA(7, kw) }
#define STORE(q) store(oc0 + q, oh, ow0, c##q##a, c##q##b);

void store(int oc, int oh, int ow0, vec4 lo, vec4 hi) {
	if (oc >= O) {
		return;
	}
	float bv = 0.0;
#ifdef HAS_BIAS
	bv = loadBias(oc);
#endif
	int row = ((int(gl_GlobalInvocationID.z) * O + oc) * OH + oh) * OW;
	float v[8] = float[8](lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
	for (int p = 0; p < 8; p++) {
		if (ow0 + p < OW) {
			o[row + ow0 + p] = v[p] + bv;
		}
	}
}

void main() {
	int t = int(gl_GlobalInvocationID.x);
	int oc0 = int(gl_GlobalInvocationID.y) * 8;
	int n = int(gl_GlobalInvocationID.z);
	int oh = t / tilesW;
	int ow0 = (t - oh * tilesW) * 8;
	if (oh >= OH || oc0 >= O) {
		return;
	}
	WIDX(0) WIDX(1) WIDX(2) WIDX(3) WIDX(4) WIDX(5) WIDX(6) WIDX(7)
	ZERO(0) ZERO(1) ZERO(2) ZERO(3) ZERO(4) ZERO(5) ZERO(6) ZERO(7)
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
#if KW > 7
			for (int kw = 0; kw < KW; kw++) COLUMN(kw)
#else
			COLUMN(0)
#if KW > 1
			COLUMN(1)
#endif
#if KW > 2
			COLUMN(2)
#endif
#if KW > 3
			COLUMN(3)
#endif
#if KW > 4
			COLUMN(4)
#endif
#if KW > 5
			COLUMN(5)
#endif
#if KW > 6
			COLUMN(6)
#endif
#endif
		}
	}
	STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5) STORE(6) STORE(7)
}
