#version 430
// embedding.comp: gathers rows of table [V, C] by ids -> [len(ids), C].
// Defines: LX, X_LOADER (the table's storage type).
#include "common.glsl"

layout(local_size_x = LX) in;

X_LOADER(loadX, tX, 0)
layout(binding = 1) uniform isamplerBuffer tIds;
DECLARE_OUTPUT

uniform int n, C;

void main() {
	int i = linearId();
	if (i >= n) {
		return;
	}
	int r = i / C;
	int c = i - r * C;
	int id = texelFetch(tIds, r).r;
	put(i, loadX(id * C + c));
}
