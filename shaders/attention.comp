#version 430
// attention.comp: multi-head scaled-dot-product attention, flash style.
// q [B, Lq, H*D], k [B, Lk, H*D], v [B, Lk, H*DV] -> o [B, Lq, H*DV].
// Each invocation owns QT query rows of one head and walks the keys in blocks
// of KB with an online softmax (running max m, running sum l, rescaled
// accumulator), so the [Lq, Lk] score matrix is never stored. Each key and
// value element is fetched once per block and used for all QT queries.
// Defines: D, DV (head dims), QT, KB, LX, CAUSAL (key j visible to query i
// only when j <= i), Q_LOADER, K_LOADER, V_LOADER.
#include "common.glsl"

layout(local_size_x = LX) in;

Q_LOADER(loadQ, tQ, 0)
K_LOADER(loadK, tK, 1)
V_LOADER(loadV, tV, 2)
DECLARE_OUTPUT

uniform int Lq, Lk, H;
uniform float scale;

void main() {
	int q0 = int(gl_GlobalInvocationID.x) * QT;
	int h = int(gl_GlobalInvocationID.y);
	int b = int(gl_GlobalInvocationID.z);
	if (q0 >= Lq) {
		return;
	}
	int qkStride = H * D;
	int vStride = H * DV;
	float q[QT * D];
	for (int i = 0; i < QT; i++) {
		int qb = (b * Lq + min(q0 + i, Lq - 1)) * qkStride + h * D;
		for (int d = 0; d < D; d++) {
			q[i * D + d] = loadQ(qb + d) * scale;
		}
	}
	float m[QT];
	float l[QT];
	float acc[QT * DV];
	for (int i = 0; i < QT; i++) {
		m[i] = NEG_BIG;
		l[i] = 0.0;
	}
	for (int t = 0; t < QT * DV; t++) {
		acc[t] = 0.0;
	}
	int kEnd = Lk;
#ifdef CAUSAL
	kEnd = min(Lk, q0 + QT);
#endif
	for (int j0 = 0; j0 < kEnd; j0 += KB) {
		float s[QT * KB];
		for (int t = 0; t < QT * KB; t++) {
			s[t] = 0.0;
		}
		for (int kb = 0; kb < KB; kb++) {
			int kr = (b * Lk + min(j0 + kb, Lk - 1)) * qkStride + h * D;
			for (int d = 0; d < D; d++) {
				float kv = loadK(kr + d);
				for (int i = 0; i < QT; i++) {
					s[i * KB + kb] += q[i * D + d] * kv;
				}
			}
		}
		for (int i = 0; i < QT; i++) {
			float mx = m[i];
			for (int kb = 0; kb < KB; kb++) {
				int j = j0 + kb;
				bool ok = j < Lk;
#ifdef CAUSAL
				ok = ok && j <= q0 + i;
#endif
				s[i * KB + kb] = ok ? s[i * KB + kb] : NEG_BIG;
				mx = max(mx, s[i * KB + kb]);
			}
			float corr = exp(m[i] - mx);
			float sum = l[i] * corr;
			for (int kb = 0; kb < KB; kb++) {
				float p = exp(s[i * KB + kb] - mx);
				s[i * KB + kb] = p;
				sum += p;
			}
			l[i] = sum;
			m[i] = mx;
			for (int d = 0; d < DV; d++) {
				acc[i * DV + d] *= corr;
			}
		}
		for (int kb = 0; kb < KB; kb++) {
			int vr = (b * Lk + min(j0 + kb, Lk - 1)) * vStride + h * DV;
			for (int d = 0; d < DV; d++) {
				float vv = loadV(vr + d);
				for (int i = 0; i < QT; i++) {
					acc[i * DV + d] += s[i * KB + kb] * vv;
				}
			}
		}
	}
	for (int i = 0; i < QT; i++) {
		int qi = q0 + i;
		if (qi >= Lq) {
			break;
		}
		int ob = (b * Lq + qi) * vStride + h * DV;
		float inv = 1.0 / l[i];
		for (int d = 0; d < DV; d++) {
			o[ob + d] = acc[i * DV + d] * inv;
		}
	}
}
