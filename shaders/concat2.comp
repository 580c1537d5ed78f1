#version 430
// concat2.comp: the concatenation of two tensors along one dim, in one pass.
// Seen as [outer, ca + cb] (ca, cb: each operand's size along the dim times
// the elements after it), output row o is row o of A followed by row o of
// B. Defines: LX, A_LOADER, B_LOADER.
#include "common.glsl"

layout(local_size_x = LX) in;

A_LOADER(loadA, tA, 0)
B_LOADER(loadB, tB, 1)
DECLARE_OUTPUT

uniform int n, ca, cb;

void main() {
	int i = linearId();
	if (i >= n) {
		return;
	}
	int row = ca + cb;
	int o = i / row;
	int j = i - o * row;
	put(i, j < ca ? loadA(o * ca + j) : loadB(o * cb + j - ca));
}
