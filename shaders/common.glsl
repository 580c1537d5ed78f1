// common.glsl: pieces shared by every Stepwise compute shader; shaders.Source
// splices it in where a shader says #include "common.glsl".
//
// Inputs are read through texture buffer objects made over the tensor's buffer
// (texelFetch is vectorised on llvmpipe, SSBO reads are not). A loader macro
// declares the sampler on a texture unit and a function `float fn(int i)` that
// returns element i widened to F32:
//   F32  storage: samplerBuffer (R32F), one float a texel.
//   F16  storage: usamplerBuffer (R32UI), two halves a texel, low half first;
//                 unpackHalf2x16 is exact (subnormals, inf included). The
//                 vector loader widens with halves4 (below).
//   BF16 storage: usamplerBuffer (R32UI); a bf16 is the top 16 bits of an F32.
// A shader picks the loader for each input with a define set by the host,
// e.g. `#define B_LOADER LOADER_F16` then `B_LOADER(loadB, tB, 1)`.

#define LOADER_F32(fn, tex, unit) \
	layout(binding = unit) uniform samplerBuffer tex; \
	float fn(int i) { return texelFetch(tex, i).r; }

#define LOADER_F16(fn, tex, unit) \
	layout(binding = unit) uniform usamplerBuffer tex; \
	float fn(int i) { uint w = texelFetch(tex, i >> 1).r; return unpackHalf2x16((i & 1) != 0 ? (w >> 16) : w).x; }

#define LOADER_BF16(fn, tex, unit) \
	layout(binding = unit) uniform usamplerBuffer tex; \
	float fn(int i) { uint w = texelFetch(tex, i >> 1).r; return uintBitsToFloat((i & 1) != 0 ? (w & 0xffff0000u) : (w << 16)); }

// halves4 widens four packed halves (low half of w.x first). Bit
// arithmetic instead of unpackHalf2x16, which llvmpipe runs about a third
// slower in the matmul kernels: a normal half moves its exponent up by
// 127 - 15 in the F32 bits; a subnormal (or zero) is its mantissa times
// 2^-24, exact; the exponent 31 (Inf, NaN) reads as a large finite value
// (weights that hold one are refused when a checkpoint is loaded).
vec4 halves4(uvec2 w) {
	uvec4 h = uvec4(w.x & 0xffffu, w.x >> 16, w.y & 0xffffu, w.y >> 16);
	uvec4 sign = (h & 0x8000u) << 16;
	vec4 normal = uintBitsToFloat(sign | (((h & 0x7fffu) << 13) + 0x38000000u));
	vec4 sub = uintBitsToFloat(sign | floatBitsToUint(vec4(h & 0x3ffu) * 5.9604644775390625e-8));
	return mix(sub, normal, notEqual(h & 0x7c00u, uvec4(0u)));
}

// Vector loaders: `vec4 fn(int i)` returns elements 4i..4i+3 (i counts
// texels of four elements; views RGBA32F for F32, RG32UI for F16/BF16).
#define LOADER4_F32(fn, tex, unit) \
	layout(binding = unit) uniform samplerBuffer tex; \
	vec4 fn(int i) { return texelFetch(tex, i); }

#define LOADER4_F16(fn, tex, unit) \
	layout(binding = unit) uniform usamplerBuffer tex; \
	vec4 fn(int i) { uvec2 w = texelFetch(tex, i).xy; return halves4(w); }

#define LOADER4_BF16(fn, tex, unit) \
	layout(binding = unit) uniform usamplerBuffer tex; \
	vec4 fn(int i) { uvec2 w = texelFetch(tex, i).xy; \
		return vec4(uintBitsToFloat(w.x << 16), uintBitsToFloat(w.x & 0xffff0000u), \
			uintBitsToFloat(w.y << 16), uintBitsToFloat(w.y & 0xffff0000u)); }

// The output of every kernel: an F32 storage buffer, written with put(i, v).
// One binding (0) holds at most the driver's largest storage block
// (llvmpipe: 128 MiB, a VAE activation of 256 channels at 512x512 is twice
// that); with OUT_WINDOWS the host binds the buffer as consecutive windows of
// outWindow floats on bindings 0, 4, 5, 6 and 7, and put picks the window.
#ifndef OUT_WINDOWS
#define DECLARE_OUTPUT layout(std430, binding = 0) writeonly buffer Out { float o[]; }; \
	void put(int i, float v) { o[i] = v; }
#else
#define DECLARE_OUTPUT layout(std430, binding = 0) writeonly buffer Out { float o[]; }; \
	layout(std430, binding = 4) writeonly buffer Out1 { float o1[]; }; \
	layout(std430, binding = 5) writeonly buffer Out2 { float o2[]; }; \
	layout(std430, binding = 6) writeonly buffer Out3 { float o3[]; }; \
	layout(std430, binding = 7) writeonly buffer Out4 { float o4[]; }; \
	uniform int outWindow; \
	void put(int i, float v) { \
		int w = i / outWindow; \
		int j = i - w * outWindow; \
		if (w == 0) { o[j] = v; } else if (w == 1) { o1[j] = v; } else if (w == 2) { o2[j] = v; } \
		else if (w == 3) { o3[j] = v; } else { o4[j] = v; } }
#endif

// linearId flattens a 2-D dispatch (x, then rows of y) for element-wise
// kernels with more work groups than one dimension allows (LX: local size x).
int linearId() {
	return int(gl_GlobalInvocationID.y * gl_NumWorkGroups.x * uint(LX) + gl_GlobalInvocationID.x);
}

// groupId flattens a 2-D grid of work groups (one group a row).
int groupId() {
	return int(gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x);
}

const float NEG_BIG = -1.0e30;
