// quant.glsl: reading quantized weights (ggml's block formats and float8)
// as the B operand of a linear layer's matmul. The host binds the packed
// bytes through an R32UI texel view (one little-endian word a texel, the
// buffer padded to whole words). float8 has vector loaders for
// matmul.comp's MM_NT4 (`B_LOADER4=LOADER4_F8E4M3`: `vec4 fn(int i)` returns
// elements 4i..4i+3); the block formats have group readers for
// matmul.comp's MM_QBLOCK (QUANT_B below), which fetches each scale once per 32
// weights. The block layouts are documented in gpu/ref/quant.go, the
// reference.

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

// Block formats, for matmul.comp's MM_QBLOCK: the weight is read in groups of 32
// consecutive elements of a row that share one scale (a Q8_0/Q4_0 block, a
// Q4_K/Q5_K sub-block). With QUANT_Q8_0 (etc.) defined, QUANT_B(tex, unit)
// declares, for the group G (counted from the start of the weight):
//   vec2 qscale(int G): (a, b) such that weight = a * q + b
//   vec4 qvals(int G, int t): the quants q of elements 4t..4t+3 (t < 8)
#define QUANT_B(tex, unit) \
	QUANT_BYTES(qb, tex, unit) \
	QUANT_FUNCS(tex)

#if defined(QUANT_Q8_0)
// Q8_0: 34-byte blocks of 32: fp16 d, 32 int8; w = d*q.
#define QUANT_FUNCS(tex) \
	vec2 qscale(int G) { return vec2(qb_half(G * 34), 0.0); } \
	vec4 qvals(int G, int t) { \
		int q = int(qb_word(G * 34 + 2 + 4 * t)); \
		return vec4(ivec4(bitfieldExtract(q, 0, 8), bitfieldExtract(q, 8, 8), bitfieldExtract(q, 16, 8), bitfieldExtract(q, 24, 8))); }
#elif defined(QUANT_Q4_0)
// Q4_0: 18-byte blocks of 32: fp16 d, 16 bytes; byte j holds weight j in
// its low nibble and weight j+16 in its high one; w = d*q - 8d.
#define QUANT_FUNCS(tex) \
	vec2 qscale(int G) { float d = qb_half(G * 18); return vec2(d, -8.0 * d); } \
	vec4 qvals(int G, int t) { \
		uint q = qb_word(G * 18 + 2 + 4 * (t & 3)) >> ((t >> 2) * 4); \
		return vec4(uvec4(q, q >> 8, q >> 16, q >> 24) & 15u); }
#elif defined(QUANT_Q4_K) || defined(QUANT_Q5_K)
// Q4_K (144 bytes) and Q5_K (176 bytes) super-blocks of 256: fp16 d, fp16
// dmin, 12 bytes of scales, [Q5_K: 32 bytes of fifth bits,] 128 bytes of
// nibbles. Weight 64c + 32h + l is nibble h of byte 32c + l, in sub-block
// s = 2c + h; its fifth bit is bit s of qh[l]. w = d*sc[s]*q - dmin*m[s].
// The block size is a multiple of 16, so every word read here is aligned.
#if defined(QUANT_Q5_K)
#define QK_BYTES 176
#define QK_FIVE 1
#else
#define QK_BYTES 144
#define QK_FIVE 0
#endif
#define QUANT_FUNCS(tex) \
	vec2 qscale(int G) { \
		int base = (G >> 3) * QK_BYTES; \
		int w0 = (base >> 2) + 1; \
		uvec2 sm = kscale(uvec3(texelFetch(tex, w0).r, texelFetch(tex, w0 + 1).r, texelFetch(tex, w0 + 2).r), G & 7); \
		uint dd = texelFetch(tex, base >> 2).r; \
		vec2 d = unpackHalf2x16(dd); \
		return vec2(d.x * float(sm.x), -d.y * float(sm.y)); } \
	vec4 qvals(int G, int t) { \
		int base = (G >> 3) * QK_BYTES; \
		int s = G & 7; \
		uint q = texelFetch(tex, (base + 16 + 32 * QK_FIVE + 32 * (s >> 1) + 4 * t) >> 2).r >> (4 * (s & 1)); \
		uvec4 v = uvec4(q, q >> 8, q >> 16, q >> 24) & 15u; \
		if (QK_FIVE == 1) { \
			uint hb = texelFetch(tex, (base + 16 + 4 * t) >> 2).r >> s; \
			v += (uvec4(hb, hb >> 8, hb >> 16, hb >> 24) & 1u) << 4; \
		} \
		return vec4(v); }
#endif

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
