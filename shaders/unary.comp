#version 430
// unary.comp: element-wise functions of one input, one element per
// invocation. One define picks the function: OP_SILU, OP_GELU (erf form),
// OP_GELU_TANH, OP_QUICKGELU, OP_RELU, OP_SOFTCLAMP (s * tanh(x/s)),
// OP_SCALE (x*s + b), OP_GEGLU (a * GELU(g) with
// a, g the halves of the last dim). Defines: LX, X_LOADER.
#include "common.glsl"

layout(local_size_x = LX) in;

X_LOADER(loadX, tX, 0)
DECLARE_OUTPUT

uniform int n;
uniform float s, b;
uniform int halfC; // OP_GEGLU: half the input's last dim

// erf with |error| < 1.2e-7 (the Chebyshev-fitted erfc of Numerical Recipes,
// written afresh here).
float erfApprox(float x) {
	float z = abs(x);
	float t = 1.0 / (1.0 + 0.5 * z);
	float r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
		t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
		t * (-0.82215223 + t * 0.17087277)))))))));
	return x >= 0.0 ? 1.0 - r : r - 1.0;
}

float gelu(float x) {
	return 0.5 * x * (1.0 + erfApprox(x * 0.70710678118654752));
}

float sigmoid(float x) {
	return 1.0 / (1.0 + exp(-x));
}

void main() {
	int i = linearId();
	if (i >= n) {
		return;
	}
#if defined(OP_GEGLU)
	int r = i / halfC;
	int c = i - r * halfC;
	float a = loadX(r * 2 * halfC + c);
	float g = loadX(r * 2 * halfC + halfC + c);
	put(i, a * gelu(g));
#else
	float x = loadX(i);
#if defined(OP_SILU)
	put(i, x * sigmoid(x));
#elif defined(OP_GELU)
	put(i, gelu(x));
#elif defined(OP_GELU_TANH)
	float u = 0.79788456080286536 * (x + 0.044715 * x * x * x);
	put(i, 0.5 * x * (1.0 + tanh(clamp(u, -15.0, 15.0))));
#elif defined(OP_QUICKGELU)
	put(i, x * sigmoid(1.702 * x));
#elif defined(OP_RELU)
	put(i, max(x, 0.0));
#elif defined(OP_SOFTCLAMP)
	// tanh saturates to +-1 well inside +-15; clamping keeps exp() finite.
	put(i, s * tanh(clamp(x / s, -15.0, 15.0)));
#elif defined(OP_SCALE)
	put(i, x * s + b);
#else
#error unary.comp needs an OP_ define
#endif
#endif
}
