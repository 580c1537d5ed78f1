#version 430
// binary.comp: element-wise a (op) b with NumPy broadcasting. The host
// collapses the shapes to at most MAXR dims and passes each operand's element
// strides (0 along a broadcast dim); with SAME both operands have the
// output's shape and are read at the output index. Defines: OP_ADD or OP_MUL,
// SAME, LX, A_LOADER, B_LOADER.
#include "common.glsl"

#define MAXR 6

layout(local_size_x = LX) in;

A_LOADER(loadA, tA, 0)
B_LOADER(loadB, tB, 1)
DECLARE_OUTPUT

uniform int n, rank;
uniform int shape[MAXR];
uniform int sa[MAXR];
uniform int sb[MAXR];

void main() {
	int i = linearId();
	if (i >= n) {
		return;
	}
#ifdef SAME
	int ia = i;
	int ib = i;
#else
	int ia = 0;
	int ib = 0;
	int rest = i;
	for (int d = rank - 1; d >= 0; d--) {
		int c = rest % shape[d];
		rest /= shape[d];
		ia += c * sa[d];
		ib += c * sb[d];
	}
#endif
	float x = loadA(ia);
	float y = loadB(ib);
#if defined(OP_ADD)
	put(i, x + y);
#elif defined(OP_MUL)
	put(i, x * y);
#else
#error binary.comp needs OP_ADD or OP_MUL
#endif
}
