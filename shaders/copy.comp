#version 430
// copy.comp: general strided copy, the one kernel behind Concat, Slice,
// Permute, Upsample2x (a zero source stride repeats an element) and Cast (the
// loader widens F16/BF16). It walks a region of up to MAXR dims; element c of
// the region is read at sOff + sum(c[d]*ss[d]) and written at
// dOff + sum(c[d]*ds[d]). Defines: LX, X_LOADER.
#include "common.glsl"

#define MAXR 8

layout(local_size_x = LX) in;

X_LOADER(loadX, tX, 0)
DECLARE_OUTPUT

uniform int n, rank, sOff, dOff;
uniform int shape[MAXR];
uniform int ss[MAXR];
uniform int ds[MAXR];

void main() {
	int i = linearId();
	if (i >= n) {
		return;
	}
	int si = sOff;
	int di = dOff;
	int rest = i;
	for (int d = rank - 1; d >= 0; d--) {
		int c = rest % shape[d];
		rest /= shape[d];
		si += c * ss[d];
		di += c * ds[d];
	}
	put(di, loadX(si));
}
