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
// BIAS_LOADER, HAS_RES with RES_LOADER and the uniform resMode (1: a
// residual of the output's shape, added at the store; 2: one value a sample
// and channel, a ResNet block's time embedding; 0: none, so that one
// program serves convolutions with and without one).
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
#if defined(HAS_RES) && !defined(RES_LOADER)
#define RES_LOADER LOADER_F32
#endif
#ifdef HAS_RES
RES_LOADER(loadRes, tRes, 3)
uniform int resMode; // 0: none, 1: a residual of the output's shape, 2: one value a plane
#endif
DECLARE_OUTPUT

uniform int C, H, W, O, OH, OW, SH, PH, PW;
uniform int tilesW; // ceil(OW / PX)
uniform int tilesH; // ceil(OH / PY)
uniform int NB;     // samples

#ifndef PX
#define PX 8
#endif

const int SEG = (PX - 1) * SW + KW; // input columns one tile touches

#ifndef PY
#define PY 1
#endif
// Input rows one tile touches per input channel (PY > 1 only with stride 1).
const int RW = (PY - 1) + KH;

// Accumulators: c<q>_<py> holds output channel oc0+q, output row oh0+py, as
// a float, vec2 or vec4 over PX pixels; PX 8 (PY 1 only) keeps pixels 4..7 in
// c<q>_h. ACCROW(q, py, w, A, kw) adds weight w times row A's inputs at
// kernel column kw to row py; STOREROW writes one.
#define X4(A, kw, p) vec4(A[(p) * SW + kw], A[((p) + 1) * SW + kw], A[((p) + 2) * SW + kw], A[((p) + 3) * SW + kw])
#if PX == 8
#if PY != 1
#error PX 8 needs PY 1
#endif
#define ZROW(q, py) vec4 c##q##_##py = vec4(0.0); vec4 c##q##_h = vec4(0.0);
#define ACCROW(q, py, w, A, kw) { c##q##_##py += (w) * X4(A, kw, 0); c##q##_h += (w) * X4(A, kw, 4); }
#define STOREROW(q, py) store(oc0 + q, n, oh0 + py, ow0, c##q##_##py, c##q##_h);
#elif PX == 4
#define ZROW(q, py) vec4 c##q##_##py = vec4(0.0);
#define ACCROW(q, py, w, A, kw) c##q##_##py += (w) * X4(A, kw, 0);
#define STOREROW(q, py) store(oc0 + q, n, oh0 + py, ow0, c##q##_##py, vec4(0.0));
#define ZROW2(q, py) vec4 e##q##_##py = vec4(0.0);
#define ACCROW2(q, py, w, A, kw) e##q##_##py += (w) * X4(A, kw, 0);
#define STOREROW2(q, py) store(oc0 + q, n + 1, oh0 + py, ow0, e##q##_##py, vec4(0.0));
#elif PX == 2
#define ZROW(q, py) vec2 c##q##_##py = vec2(0.0);
#define ACCROW(q, py, w, A, kw) c##q##_##py += (w) * vec2(A[kw], A[SW + kw]);
#define STOREROW(q, py) store(oc0 + q, n, oh0 + py, ow0, vec4(c##q##_##py, 0.0, 0.0), vec4(0.0));
#define ZROW2(q, py) vec2 e##q##_##py = vec2(0.0);
#define ACCROW2(q, py, w, A, kw) e##q##_##py += (w) * vec2(A[kw], A[SW + kw]);
#define STOREROW2(q, py) store(oc0 + q, n + 1, oh0 + py, ow0, vec4(e##q##_##py, 0.0, 0.0), vec4(0.0));
#elif PX == 1
#define ZROW(q, py) float c##q##_##py = 0.0;
#define ACCROW(q, py, w, A, kw) c##q##_##py += (w) * A[kw];
#define STOREROW(q, py) store(oc0 + q, n, oh0 + py, ow0, vec4(c##q##_##py, 0.0, 0.0, 0.0), vec4(0.0));
#define ZROW2(q, py) float e##q##_##py = 0.0;
#define ACCROW2(q, py, w, A, kw) e##q##_##py += (w) * A[kw];
#define STOREROW2(q, py) store(oc0 + q, n + 1, oh0 + py, ow0, vec4(e##q##_##py, 0.0, 0.0, 0.0), vec4(0.0));
#else
#error PX must be 1, 2, 4 or 8
#endif
// ACCPY(q, w, r0, kw): weight w of input row r0 (for output row 0) to every
// output row of the tile; ZERO and STORE cover every row.
// (Rows are taken modulo 24, xs's size, so that the guarded-off weights of
// small kernels still index in range: GLSL rejects constant indices past the
// end even in code that never runs.)
#define XR(r) xs[(r) % 24]
// NT 2 (C4, PX*PY <= 4 only): the invocation also computes sample n+1, from
// its own input rows xs2, into accumulators e<q>_<py>, so each weight fetched
// serves twice the pixels.
#ifndef NT
#define NT 1
#endif
#if NT == 2
#if !defined(C4) || PX * PY > 4
#error NT 2 needs C4 and PX*PY <= 4
#endif
#define XR2(r) xs2[(r) % 24]
#define ZS(q, py) ZROW(q, py) ZROW2(q, py)
#define ACCS(q, py, w, r, kw) ACCROW(q, py, w, XR(r), kw) ACCROW2(q, py, w, XR2(r), kw)
#define SS(q, py) STOREROW(q, py) STOREROW2(q, py)
#elif NT == 1
#define ZS(q, py) ZROW(q, py)
#define ACCS(q, py, w, r, kw) ACCROW(q, py, w, XR(r), kw)
#define SS(q, py) STOREROW(q, py)
#else
#error NT must be 1 or 2
#endif
#if PY == 1
#define ZERO(q) ZS(q, 0)
#define ACCPY(q, w, r0, kw) ACCS(q, 0, w, r0, kw)
#define STORE(q) SS(q, 0)
#elif PY == 2
#define ZERO(q) ZS(q, 0) ZS(q, 1)
#define ACCPY(q, w, r0, kw) ACCS(q, 0, w, r0, kw) ACCS(q, 1, w, (r0) + 1, kw)
#define STORE(q) SS(q, 0) SS(q, 1)
#elif PY == 4
#define ZERO(q) ZS(q, 0) ZS(q, 1) ZS(q, 2) ZS(q, 3)
#define ACCPY(q, w, r0, kw) ACCS(q, 0, w, r0, kw) ACCS(q, 1, w, (r0) + 1, kw) \
	ACCS(q, 2, w, (r0) + 2, kw) ACCS(q, 3, w, (r0) + 3, kw)
#define STORE(q) SS(q, 0) SS(q, 1) SS(q, 2) SS(q, 3)
#else
#error PY must be 1, 2 or 4
#endif
#if PY > 1 && !defined(C4)
#error PY > 1 needs C4
#endif

#define WIDX(q) int wi##q = min(oc0 + q, O - 1) * C * KH * KW;
#define FMA(q, kw) { float w = loadW(wi##q + wk + kw); ACCROW(q, 0, w, xs, kw) }
#define COLUMN(kw) { \
	FMA(0, kw) FMA(1, kw) FMA(2, kw) FMA(3, kw) FMA(4, kw) FMA(5, kw) FMA(6, kw) FMA(7, kw) }

void store(int oc, int n, int oh, int ow0, vec4 lo, vec4 hi) {
	if (oc >= O || oh >= OH || n >= NB) {
		return;
	}
	float bv = 0.0;
#ifdef HAS_BIAS
	bv = loadBias(oc);
#endif
	int row = ((n * O + oc) * OH + oh) * OW;
	float v[8] = float[8](lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
#ifdef HAS_RES
	float rv = 0.0;
	if (resMode == 2) {
		rv = loadRes(n * O + oc);
	}
#endif
	for (int p = 0; p < PX; p++) {
		if (ow0 + p < OW) {
#ifdef HAS_RES
			float r = rv;
			if (resMode == 1) {
				r = loadRes(row + ow0 + p);
			}
			put(row + ow0 + p, v[p] + bv + r);
#else
			put(row + ow0 + p, v[p] + bv);
#endif
		}
	}
}

#ifdef C4
// Input rows of four channels: xs[r][s] with r = cc*RW + rr (up to 24 rows)
// and s < SEG (up to 7*2 + 4 = 18 columns).
#define XS(r, s) if ((r) < 4 * RW && (s) < SEG) { \
	int iw = iw0 + (s); int ih = oh0 * SH - PH + (r) % RW; \
	bool ok = ih >= 0 && ih < H && iw >= 0 && iw < W; \
	int xi = plane + ((r) / RW) * H * W + clamp(ih, 0, H - 1) * W + clamp(iw, 0, W - 1); \
	float v = loadX(xi); \
	xs[r][s] = ok ? v : 0.0; XS2(r, s) }
#if NT == 2
#define XS2(r, s) { float v2 = loadX(xi + off2); xs2[r][s] = ok ? v2 : 0.0; }
#else
#define XS2(r, s)
#endif
#define XROW(r) if ((r) < 4 * RW) { XS(r, 0) XS(r, 1) XS(r, 2) XS(r, 3) XS(r, 4) XS(r, 5) XS(r, 6) XS(r, 7) XS(r, 8) \
	XS(r, 9) XS(r, 10) XS(r, 11) XS(r, 12) XS(r, 13) XS(r, 14) XS(r, 15) XS(r, 16) XS(r, 17) }
// Weight e of the four channels' block: channel e / (KH*KW), row (e / KW) % KH,
// column e % KW; for output row py it meets input row
// r = (e / (KH*KW))*RW + (e / KW) % KH + py at columns p*SW + kw.
#define WE(q, e) if ((e) < 4 * KH * KW) { float w = wv[(e) / 4][(e) % 4]; \
	ACCPY(q, w, ((e) / (KH * KW)) * RW + ((e) / KW) % KH, (e) % KW) }
#define WE8(q, e) WE(q, e) WE(q, e + 1) WE(q, e + 2) WE(q, e + 3) WE(q, e + 4) WE(q, e + 5) WE(q, e + 6) WE(q, e + 7)
#define WLOAD(t) if ((t) < KH * KW) { wv[t] = loadW4(wq + (t)); }
#define OCBLOCK(q) { int wq = (wi##q + c * KH * KW) / 4; vec4 wv[16]; \
	WLOAD(0) WLOAD(1) WLOAD(2) WLOAD(3) WLOAD(4) WLOAD(5) WLOAD(6) WLOAD(7) \
	WLOAD(8) WLOAD(9) WLOAD(10) WLOAD(11) WLOAD(12) WLOAD(13) WLOAD(14) WLOAD(15) \
	WE8(q, 0) WE8(q, 8) WE8(q, 16) WE8(q, 24) WE8(q, 32) WE8(q, 40) WE8(q, 48) WE8(q, 56) }
#endif

void main() {
	int id = linearId();
	int tiles = tilesH * tilesW;
	int blocks = (O + 7) / 8;
	int t = id % tiles;
	int rest = id / tiles;
	int oc0 = (rest % blocks) * 8;
	int n = (rest / blocks) * NT;
	if (n >= NB) {
		return;
	}
	int th = t / tilesW;
	int oh0 = th * PY;
	int ow0 = (t - th * tilesW) * PX;
	WIDX(0) WIDX(1) WIDX(2) WIDX(3) WIDX(4) WIDX(5) WIDX(6) WIDX(7)
	ZERO(0) ZERO(1) ZERO(2) ZERO(3) ZERO(4) ZERO(5) ZERO(6) ZERO(7)
	int iw0 = ow0 * SW - PW;
#ifdef C4
	// Sample n+1's inputs are off2 further (0 past the last sample: read, unused).
	int off2 = n + 1 < NB ? C * H * W : 0;
	for (int c = 0; c < C; c += 4) {
		int plane = (n * C + c) * H * W;
		float xs[24][18];
#if NT == 2
		float xs2[24][18];
#endif
		XROW(0) XROW(1) XROW(2) XROW(3) XROW(4) XROW(5) XROW(6) XROW(7)
		XROW(8) XROW(9) XROW(10) XROW(11) XROW(12) XROW(13) XROW(14) XROW(15)
		XROW(16) XROW(17) XROW(18) XROW(19) XROW(20) XROW(21) XROW(22) XROW(23)
		OCBLOCK(0) OCBLOCK(1) OCBLOCK(2) OCBLOCK(3) OCBLOCK(4) OCBLOCK(5) OCBLOCK(6) OCBLOCK(7)
	}
#else
	for (int c = 0; c < C; c++) {
		int plane = (n * C + c) * H * W;
		for (int kh = 0; kh < KH; kh++) {
			int ih = oh0 * SH - PH + kh;
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
