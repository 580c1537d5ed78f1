// quant.glsl: vector loaders for quantized weights (ggml's block formats and
// float8), for the B operand of matmul_nt4.comp. The host binds the packed
// bytes through an R32UI texel view (one little-endian word a texel, the
// buffer padded to whole words) and sets e.g. `B_LOADER4=LOADER4_Q8_0`.
// `vec4 fn(int i)` returns elements 4i..4i+3 of the row-major [N, K] weight
// (K a multiple of the block, so the four never straddle a block).
// The block layouts are documented in gpu/ref/quant.go, the reference.

// qword reads the 32 bits that start at byte off (any alignment; a texel
// past the end reads as 0). qhalf reads the fp16 at an even byte off.
#define QUANT_BYTES(fn, tex, unit) \
	layout(binding = unit) uniform usamplerBuffer tex; \
	uint fn##_word(int off) { \
		int s = (off & 3) * 8; \
		uint lo = texelFetch(tex, off >> 2).r; \
		if (s == 0) { return lo; } \
		return (lo >> s) | (texelFetch(tex, (off >> 2) + 1).r << (32 - s)); } \
	float fn##_half(int off) { \
		uint w = texelFetch(tex, off >> 2).r; \
		return unpackHalf2x16((off & 2) != 0 ? (w >> 16) : w).x; }

// Q8_0: 34-byte blocks of 32: fp16 d, 32 int8; w = d*q.
#define LOADER4_Q8_0(fn, tex, unit) \
	QUANT_BYTES(fn, tex, unit) \
	vec4 fn(int i) { \
		int e = i * 4; \
		int base = (e >> 5) * 34; \
		int q = int(fn##_word(base + 2 + (e & 31))); \
		ivec4 v = ivec4(bitfieldExtract(q, 0, 8), bitfieldExtract(q, 8, 8), bitfieldExtract(q, 16, 8), bitfieldExtract(q, 24, 8)); \
		return vec4(v) * fn##_half(base); }

// Q4_0: 18-byte blocks of 32: fp16 d, 16 bytes; byte j holds weight j in
// its low nibble and weight j+16 in its high one; w = d*(q-8).
#define LOADER4_Q4_0(fn, tex, unit) \
	QUANT_BYTES(fn, tex, unit) \
	vec4 fn(int i) { \
		int e = i * 4; \
		int j = e & 31; \
		int base = (e >> 5) * 18; \
		uint q = fn##_word(base + 2 + (j & 15)) >> ((j >> 4) * 4); \
		uvec4 v = uvec4(q, q >> 8, q >> 16, q >> 24) & 15u; \
		return (vec4(v) - 8.0) * fn##_half(base); }

// kscale returns the 6-bit (scale, min) of sub-block s (0..7) from the 12
// packed bytes held in the three words w of a Q4_K/Q5_K super-block.
uint kbyte(uvec3 w, int k) { return (w[k >> 2] >> ((k & 3) * 8)) & 255u; }
uvec2 kscale(uvec3 w, int s) {
	if (s < 4) {
		return uvec2(kbyte(w, s) & 63u, kbyte(w, s + 4) & 63u);
	}
	uint lo = kbyte(w, s + 4);
	return uvec2((lo & 15u) | ((kbyte(w, s - 4) >> 6) << 4), (lo >> 4) | ((kbyte(w, s) >> 6) << 4));
}

// Q4_K (144 bytes) and Q5_K (176 bytes) super-blocks of 256: fp16 d, fp16
// dmin, 12 bytes of scales, [Q5_K: 32 bytes of fifth bits,] 128 bytes of
// nibbles. Weight 64c + 32h + l is nibble h of byte 32c + l, in sub-block
// s = 2c + h; its fifth bit is bit s of qh[l]. w = d*sc[s]*q - dmin*m[s].
// The block size is a multiple of 16, so every word read here is aligned.
#define LOADER4_QK(fn, tex, unit, BYTES, FIVE) \
	QUANT_BYTES(fn, tex, unit) \
	vec4 fn(int i) { \
		int e = i * 4; \
		int j = e & 255; \
		int base = (e >> 8) * BYTES; \
		int c = j >> 6, h = (j >> 5) & 1, l = j & 31, s = 2 * c + h; \
		int w0 = (base >> 2) + 1; \
		uvec2 sm = kscale(uvec3(texelFetch(tex, w0).r, texelFetch(tex, w0 + 1).r, texelFetch(tex, w0 + 2).r), s); \
		uint q = fn##_word(base + 16 + 32 * FIVE + 32 * c + l) >> (4 * h); \
		uvec4 v = uvec4(q, q >> 8, q >> 16, q >> 24) & 15u; \
		if (FIVE == 1) { \
			uint hb = fn##_word(base + 16 + l) >> s; \
			v += (uvec4(hb, hb >> 8, hb >> 16, hb >> 24) & 1u) << 4; \
		} \
		return fn##_half(base) * float(sm.x) * vec4(v) - fn##_half(base + 2) * float(sm.y); }
#define LOADER4_Q4_K(fn, tex, unit) LOADER4_QK(fn, tex, unit, 144, 0)
#define LOADER4_Q5_K(fn, tex, unit) LOADER4_QK(fn, tex, unit, 176, 1)

// float8 e4m3fn: a normal value moves its exponent by 127 - 7 in the F32
// bits; a subnormal is its mantissa times 2^-9. (S.1111.111, NaN, is read
// as -/+480: checkpoints with NaN weights are refused at load.)
#define LOADER4_F8E4M3(fn, tex, unit) \
	layout(binding = unit) uniform usamplerBuffer tex; \
	vec4 fn(int i) { \
		uint w = texelFetch(tex, i).r; \
		uvec4 b = uvec4(w, w >> 8, w >> 16, w >> 24) & 255u; \
		uvec4 sign = (b & 128u) << 24; \
		vec4 normal = uintBitsToFloat(sign | (((b & 127u) << 20) + (120u << 23))); \
		vec4 sub = uintBitsToFloat(sign | floatBitsToUint(vec4(b & 7u) * 0.001953125)); \
		return mix(sub, normal, notEqual(b & 120u, uvec4(0u))); }

// float8 e5m2 is the top byte of a half.
#define LOADER4_F8E5M2(fn, tex, unit) \
	layout(binding = unit) uniform usamplerBuffer tex; \
	vec4 fn(int i) { \
		uint w = texelFetch(tex, i).r; \
		return halves4(uvec2(((w & 255u) << 8) | ((w & 65280u) << 16), ((w >> 8) & 65280u) | (w & 4278190080u))); }
