#version 430
// attention.comp: multi-head scaled-dot-product attention, flash style.
// q [B, Lq, H*D], k [B, Lk, H*D], v [B, Lk, H*DV] -> o [B, Lq, H*DV].
// Each invocation owns 4 query rows of one head, packed in the components of
// vec4s, and walks the keys in blocks of 8 with an online softmax (running
// max m, running sum l, rescaled accumulator), so the [Lq, Lk] score matrix
// is never stored. Each key and value element is fetched once per block and
// used for all 4 queries; the 8 keys of a block, and for head dims up to 160
// every loop over the head dim, are spelled out with macros so that scores, q
// and the accumulator stay in registers. Defines: D, DV (head dims), LX, UNROLL, VEC4, CAUSAL
// (key j visible to query i only when j <= i), Q_LOADER, K_LOADER, V_LOADER
// (K_LOADER4, V_LOADER4 with VEC4).
#include "common.glsl"

layout(local_size_x = LX) in;

Q_LOADER(loadQ, tQ, 0)
#ifdef VEC4
K_LOADER4(loadK4, tK, 1)
V_LOADER4(loadV4, tV, 2)
#else
K_LOADER(loadK, tK, 1)
V_LOADER(loadV, tV, 2)
#endif
DECLARE_OUTPUT

uniform int Lq, Lk, H;
uniform float scale;

#define KROW(j) int kr##j = (b * Lk + min(j0 + j, Lk - 1)) * qkStride + h * D;
#define VROW(j) int vr##j = (b * Lk + min(j0 + j, Lk - 1)) * vStride + h * DV;
#define MASK(j) s##j = pick(visibleV(j0 + j, qi), s##j); mx = max(mx, s##j);
#define PROB(j) s##j = exp(s##j - mx); sum += s##j;

// Per head-dim element d: load q, one score step, one P.V step, store.
#define QLOAD(d) q[d] = vec4(loadQ(qr.x + (d)), loadQ(qr.y + (d)), loadQ(qr.z + (d)), loadQ(qr.w + (d))) * scale;
#define SCORE(d) { vec4 qd = q[d]; \
	s0 += qd * loadK(kr0 + (d)); s1 += qd * loadK(kr1 + (d)); s2 += qd * loadK(kr2 + (d)); s3 += qd * loadK(kr3 + (d)); \
	s4 += qd * loadK(kr4 + (d)); s5 += qd * loadK(kr5 + (d)); s6 += qd * loadK(kr6 + (d)); s7 += qd * loadK(kr7 + (d)); }
#define PV(d) { vec4 a = acc[d] * corr; \
	a += s0 * loadV(vr0 + (d)); a += s1 * loadV(vr1 + (d)); a += s2 * loadV(vr2 + (d)); a += s3 * loadV(vr3 + (d)); \
	a += s4 * loadV(vr4 + (d)); a += s5 * loadV(vr5 + (d)); a += s6 * loadV(vr6 + (d)); a += s7 * loadV(vr7 + (d)); \
	acc[d] = a; }
// VEC4 (D and DV multiples of 4): keys and values come four elements a fetch;
// kr and vr then count texels, and step d4 covers elements 4*d4 .. 4*d4+3.
#define SC4(j, d4) { vec4 k = loadK4(kr##j + (d4)); \
	s##j += q[4 * (d4)] * k.x + q[4 * (d4) + 1] * k.y + q[4 * (d4) + 2] * k.z + q[4 * (d4) + 3] * k.w; }
#define SCORE4(d4) SC4(0, d4) SC4(1, d4) SC4(2, d4) SC4(3, d4) SC4(4, d4) SC4(5, d4) SC4(6, d4) SC4(7, d4)
#define PVC(j, d4) { vec4 v = loadV4(vr##j + (d4)); a0 += s##j * v.x; a1 += s##j * v.y; a2 += s##j * v.z; a3 += s##j * v.w; }
#define PV4(d4) { vec4 a0 = acc[4 * (d4)] * corr, a1 = acc[4 * (d4) + 1] * corr; \
	vec4 a2 = acc[4 * (d4) + 2] * corr, a3 = acc[4 * (d4) + 3] * corr; \
	PVC(0, d4) PVC(1, d4) PVC(2, d4) PVC(3, d4) PVC(4, d4) PVC(5, d4) PVC(6, d4) PVC(7, d4) \
	acc[4 * (d4)] = a0; acc[4 * (d4) + 1] = a1; acc[4 * (d4) + 2] = a2; acc[4 * (d4) + 3] = a3; }
#ifdef VEC4
#undef KROW
#undef VROW
#define KROW(j) int kr##j = ((b * Lk + min(j0 + j, Lk - 1)) * qkStride + h * D) / 4;
#define VROW(j) int vr##j = ((b * Lk + min(j0 + j, Lk - 1)) * vStride + h * DV) / 4;
#endif
#define ZERO(d) acc[d] = vec4(0.0);
#define STORE(d) put(ob + (d), acc[d][i] * inv[i]);

#ifdef UNROLL
// UNROLL (the host sets it for small head dims, at most 160): every loop
// over a head dim is spelled out (constant indices keep
// q and acc in registers); guards on constants fold away at compile time.
// Arrays get the full 160 entries since constant indices must be in range
// even in folded-away code; the unused ones are dead and removed. (Not for
// large head dims: compile time grows with the unrolled fetches.)
#ifdef VEC4
#define DQ 640 // 4 * 160: EACH(..., D / 4) reaches element 4 * 159 + 3
#define DA 640
#else
#define DQ 160
#define DA 160
#endif
#define ONE(M, N, d) if ((d) < N) { M(d) }
#define FOR8(M, N, b) if ((b) < N) { ONE(M, N, b) ONE(M, N, b + 1) ONE(M, N, b + 2) ONE(M, N, b + 3) \
	ONE(M, N, b + 4) ONE(M, N, b + 5) ONE(M, N, b + 6) ONE(M, N, b + 7) }
#define EACH(M, N) FOR8(M, N, 0) FOR8(M, N, 8) FOR8(M, N, 16) FOR8(M, N, 24) FOR8(M, N, 32) \
	FOR8(M, N, 40) FOR8(M, N, 48) FOR8(M, N, 56) FOR8(M, N, 64) FOR8(M, N, 72) FOR8(M, N, 80) \
	FOR8(M, N, 88) FOR8(M, N, 96) FOR8(M, N, 104) FOR8(M, N, 112) FOR8(M, N, 120) FOR8(M, N, 128) \
	FOR8(M, N, 136) FOR8(M, N, 144) FOR8(M, N, 152)
#else
#define DQ D
#define DA DV
#define EACH(M, N) for (int e = 0; e < N; e++) { M(e) }
#endif

bvec4 visibleV(int j, ivec4 qi) {
#ifdef CAUSAL
	return bvec4(j < Lk && j <= qi.x, j < Lk && j <= qi.y, j < Lk && j <= qi.z, j < Lk && j <= qi.w);
#else
	return bvec4(j < Lk);
#endif
}

vec4 pick(bvec4 ok, vec4 s) {
	return vec4(ok.x ? s.x : NEG_BIG, ok.y ? s.y : NEG_BIG, ok.z ? s.z : NEG_BIG, ok.w ? s.w : NEG_BIG);
}

#define MASK(j) s##j = pick(visibleV(j0 + j, qi), s##j); mx = max(mx, s##j);

void main() {
	int q0 = int(gl_GlobalInvocationID.x) * 4;
	int h = int(gl_GlobalInvocationID.y);
	int b = int(gl_GlobalInvocationID.z);
	if (q0 >= Lq) {
		return;
	}
	int qkStride = H * D;
	int vStride = H * DV;
	ivec4 qi = ivec4(q0, q0 + 1, q0 + 2, q0 + 3);
	ivec4 qr = (b * Lq + min(qi, ivec4(Lq - 1))) * qkStride + h * D;
	vec4 q[DQ];
	EACH(QLOAD, D)
	vec4 m = vec4(NEG_BIG);
	vec4 l = vec4(0.0);
	vec4 acc[DA];
	EACH(ZERO, DV)
	int kEnd = Lk;
#ifdef CAUSAL
	kEnd = min(Lk, q0 + 4);
#endif
	for (int j0 = 0; j0 < kEnd; j0 += 8) {
		KROW(0) KROW(1) KROW(2) KROW(3) KROW(4) KROW(5) KROW(6) KROW(7)
		vec4 s0 = vec4(0.0), s1 = vec4(0.0), s2 = vec4(0.0), s3 = vec4(0.0);
		vec4 s4 = vec4(0.0), s5 = vec4(0.0), s6 = vec4(0.0), s7 = vec4(0.0);
#ifdef VEC4
		EACH(SCORE4, D / 4)
#else
		EACH(SCORE, D)
#endif
		vec4 mx = m;
		MASK(0) MASK(1) MASK(2) MASK(3) MASK(4) MASK(5) MASK(6) MASK(7)
		vec4 corr = exp(m - mx);
		vec4 sum = vec4(0.0);
		PROB(0) PROB(1) PROB(2) PROB(3) PROB(4) PROB(5) PROB(6) PROB(7)
		l = l * corr + sum;
		m = mx;
		VROW(0) VROW(1) VROW(2) VROW(3) VROW(4) VROW(5) VROW(6) VROW(7)
#ifdef VEC4
		EACH(PV4, DV / 4)
#else
		EACH(PV, DV)
#endif
	}
	vec4 inv = 1.0 / l;
	for (int i = 0; i < 4; i++) {
		if (qi[i] >= Lq) {
			break;
		}
		int ob = (b * Lq + qi[i]) * vStride + h * DV;
		EACH(STORE, DV)
	}
}
