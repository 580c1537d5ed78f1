#version 430
// upsample.comp: nearest-neighbour 2x upsampling of x [NC, H, W] to
// [NC, 2H, 2W]. One invocation per output element, numbered flat, so
// neighbouring invocations write neighbouring floats. Defines: LX, X_LOADER.
#include "common.glsl"

layout(local_size_x = LX) in;

X_LOADER(loadX, tX, 0)
DECLARE_OUTPUT

uniform int H, W, n; // input height and width; output elements

void main() {
	int i = linearId();
	if (i >= n) {
		return;
	}
	int ow = i % (2 * W);
	int r = i / (2 * W); // plane * 2H + output row
	int oh = r % (2 * H);
	int plane = r / (2 * H);
	put(i, loadX((plane * H + oh / 2) * W + ow / 2));
}
