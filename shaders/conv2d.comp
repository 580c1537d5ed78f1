#version 430
// conv2d.comp: direct 2-D convolution, NCHW, cross-correlation like PyTorch.
// Each invocation computes 8 output channels x PX (1, 2, 4 or 8; default 8)
// consecutive output pixels of one output row, held in registers (two vec4s,
// a vec4, a vec2 or a float per channel), reading through texture buffers.
// Invocations are numbered flat over (sample, channel block, pixel tile), so
// small outputs still fill whole SIMD vectors and every work group; the host
// picks a PX near the output width so narrow maps waste no lanes. For each (input channel, kernel row) it loads the input row segment
// the 8 pixels touch once and reuses it for every kernel column. The 8x8 block
// is spelled out with macros (and kernel columns with #if up to 7) so the
// compiler keeps it in registers. Defines: KH, KW, SW (kernel size and
// horizontal stride, compile-time), PX, LX, X_LOADER, W_LOADER, HAS_BIAS with
// BIAS_LOADER.
//
// C4 (the host sets it when C is a multiple of 4, KH, KW <= 4, SW <= 2; it
// keeps to KH*KW <= 9, as bigger kernels compile slowly):
// the input channels go four at a time, and each output channel's 4*KH*KW
// weights for them, contiguous in [O, C, KH, KW], come in KH*KW vec4 fetches
// (W_LOADER4) instead of 4*KH*KW scalar ones. Every loop of that step is
// spelled out with macros whose guards on constants fold away.
#include "common.glsl"

layout(local_size_x = LX) in;

X_LOADER(loadX, tX, 0)
#ifdef C4
W_LOADER4(loadW4, tW, 1)
#else
W_LOADER(loadW, tW, 1)
#endif
#ifdef HAS_BIAS
BIAS_LOADER(loadBias, tBias, 2)
#endif
DECLARE_OUTPUT

uniform int C, H, W, O, OH, OW, SH, PH, PW;
uniform int tilesW; // ceil(OW / PX)
uniform int NB;     // samples

#ifndef PX
#define PX 8
#endif

const int SEG = (PX - 1) * SW + KW; // input columns one tile touches

// XV(A, kw, p): the PX-wide (or, for PX 8, the 4-wide from pixel p) vector of
// row A's inputs that kernel column kw meets.
#define X4(A, kw, p) vec4(A[(p) * SW + kw], A[((p) + 1) * SW + kw], A[((p) + 2) * SW + kw], A[((p) + 3) * SW + kw])
#if PX == 8
#define ZERO(q) vec4 c##q##a = vec4(0.0); vec4 c##q##b = vec4(0.0);
#define ACC(q, w, A, kw) { c##q##a += (w) * X4(A, kw, 0); c##q##b += (w) * X4(A, kw, 4); }
#define STORE(q) store(oc0 + q, n, oh, ow0, c##q##a, c##q##b);
#elif PX == 4
#define ZERO(q) vec4 c##q##a = vec4(0.0);
#define ACC(q, w, A, kw) c##q##a += (w) * X4(A, kw, 0);
#define STORE(q) store(oc0 + q, n, oh, ow0, c##q##a, vec4(0.0));
#elif PX == 2
#define ZERO(q) vec2 c##q##a = vec2(0.0);
#define ACC(q, w, A, kw) c##q##a += (w) * vec2(A[kw], A[SW + kw]);
#define STORE(q) store(oc0 + q, n, oh, ow0, vec4(c##q##a, 0.0, 0.0), vec4(0.0));
#elif PX == 1
#define ZERO(q) float c##q##a = 0.0;
#define ACC(q, w, A, kw) c##q##a += (w) * A[kw];
#define STORE(q) store(oc0 + q, n, oh, ow0, vec4(c##q##a, 0.0, 0.0, 0.0), vec4(0.0));
#else
#error PX must be 1, 2, 4 or 8
#endif

#define WIDX(q) int wi##q = min(oc0 + q, O - 1) * C * KH * KW;
#define FMA(q, kw) { float w = loadW(wi##q + wk + kw); ACC(q, w, xs, kw) }
#define COLUMN(kw) { \
	FMA(0, kw) FMA(1, kw) FMA(2, kw) FMA(3, kw) FMA(4, kw) FMA(5, kw) FMA(6, kw) FMA(7, kw) }

void store(int oc, int n, int oh, int ow0, vec4 lo, vec4 hi) {
	if (oc >= O) {
		return;
	}
	float bv = 0.0;
#ifdef HAS_BIAS
	bv = loadBias(oc);
#endif
	int row = ((n * O + oc) * OH + oh) * OW;
	float v[8] = float[8](lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
	for (int p = 0; p < PX; p++) {
		if (ow0 + p < OW) {
			o[row + ow0 + p] = v[p] + bv;
		}
	}
}

#ifdef C4
// Input rows of four channels: xs[r][s] with r = cc*KH + kh (up to 16 rows)
// and s < SEG (up to 7*2 + 4 = 18 columns).
#define XS(r, s) if ((r) < 4 * KH && (s) < SEG) { \
	int iw = iw0 + (s); int ih = oh * SH - PH + (r) % KH; \
	bool ok = ih >= 0 && ih < H && iw >= 0 && iw < W; \
	float v = loadX(plane + ((r) / KH) * H * W + clamp(ih, 0, H - 1) * W + clamp(iw, 0, W - 1)); \
	xs[r][s] = ok ? v : 0.0; }
#define XROW(r) if ((r) < 4 * KH) { XS(r, 0) XS(r, 1) XS(r, 2) XS(r, 3) XS(r, 4) XS(r, 5) XS(r, 6) XS(r, 7) XS(r, 8) \
	XS(r, 9) XS(r, 10) XS(r, 11) XS(r, 12) XS(r, 13) XS(r, 14) XS(r, 15) XS(r, 16) XS(r, 17) }
// Weight e of the four channels' block: channel e / (KH*KW), row (e / KW) % KH,
// column e % KW; it meets input row r = (e / KW) at columns p*SW + kw.
#define WE(q, e) if ((e) < 4 * KH * KW) { float w = wv[(e) / 4][(e) % 4]; int r = (e) / KW; int kw = (e) % KW; \
	ACC(q, w, xs[r], kw) }
#define WE8(q, e) WE(q, e) WE(q, e + 1) WE(q, e + 2) WE(q, e + 3) WE(q, e + 4) WE(q, e + 5) WE(q, e + 6) WE(q, e + 7)
#define WLOAD(t) if ((t) < KH * KW) { wv[t] = loadW4(wq + (t)); }
#define OCBLOCK(q) { int wq = (wi##q + c * KH * KW) / 4; vec4 wv[16]; \
	WLOAD(0) WLOAD(1) WLOAD(2) WLOAD(3) WLOAD(4) WLOAD(5) WLOAD(6) WLOAD(7) \
	WLOAD(8) WLOAD(9) WLOAD(10) WLOAD(11) WLOAD(12) WLOAD(13) WLOAD(14) WLOAD(15) \
	WE8(q, 0) WE8(q, 8) WE8(q, 16) WE8(q, 24) WE8(q, 32) WE8(q, 40) WE8(q, 48) WE8(q, 56) }
#endif

void main() {
	int id = linearId();
	int tiles = OH * tilesW;
	int blocks = (O + 7) / 8;
	int t = id % tiles;
	int rest = id / tiles;
	int oc0 = (rest % blocks) * 8;
	int n = rest / blocks;
	if (n >= NB) {
		return;
	}
	int oh = t / tilesW;
	int ow0 = (t - oh * tilesW) * PX;
	WIDX(0) WIDX(1) WIDX(2) WIDX(3) WIDX(4) WIDX(5) WIDX(6) WIDX(7)
	ZERO(0) ZERO(1) ZERO(2) ZERO(3) ZERO(4) ZERO(5) ZERO(6) ZERO(7)
	int iw0 = ow0 * SW - PW;
#ifdef C4
	for (int c = 0; c < C; c += 4) {
		int plane = (n * C + c) * H * W;
		float xs[16][18];
		XROW(0) XROW(1) XROW(2) XROW(3) XROW(4) XROW(5) XROW(6) XROW(7)
		XROW(8) XROW(9) XROW(10) XROW(11) XROW(12) XROW(13) XROW(14) XROW(15)
		OCBLOCK(0) OCBLOCK(1) OCBLOCK(2) OCBLOCK(3) OCBLOCK(4) OCBLOCK(5) OCBLOCK(6) OCBLOCK(7)
	}
#else
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
#endif
	STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5) STORE(6) STORE(7)
}
