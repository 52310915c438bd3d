/*
 * What bnnc's generated layers share (Apache-2.0): element access in stream beats, the
 * f32 view of 32 bits, and popcounts. Synthesizable; included by every generated design.
 */
#ifndef BNNC_HLS_H
#define BNNC_HLS_H

/* Beats and weight words are at most 2048 bits wide, converters twice that (the plan's
 * folding keeps them so); ap_int's default limit is 1024. */
#ifndef AP_INT_MAX_W
#define AP_INT_MAX_W 4096
#endif
#include <ap_int.h>
#include <hls_stream.h>
#include <math.h>
#include <stdint.h>

/* Element i of W bits of a beat, as bits. */
#define BNNC_ELEM(beat, i, W) ((beat).range((i) * (W) + (W) - 1, (i) * (W)))

/* ONNX Sign: -1, 0 or +1; NaN stays NaN. */
static inline float bnnc_sign(float y) {
  return y > 0.0f ? 1.0f : (y < 0.0f ? -1.0f : (y == 0.0f ? 0.0f : y));
}

/* ONNX Clip: min(max(x, lo), hi), NaN passing. */
static inline float bnnc_clip(float x, float lo, float hi) {
  float v = x < lo ? lo : x;
  return v > hi ? hi : v;
}

/* QONNX rounding modes (bnnc_ir::RoundingMode in order: half even, ceil, floor, up, down,
 * half up, half down), as qonnx's numpy code rounds. */
static inline float bnnc_round(unsigned mode, float y) {
  float s = bnnc_sign(y);
  switch (mode) {
  case 0: return nearbyintf(y);
  case 1: return ceilf(y);
  case 2: return floorf(y);
  case 3: return s * ceilf(fabsf(y));
  case 4: return truncf(y);
  case 5: return s * floorf(fabsf(y) + 0.5f);
  default: return s * ceilf(fabsf(y) - 0.5f);
  }
}

/* QONNX Quant on one value: y = x / s + z, the bipolar case or clamp and round, (q - z) * s. */
static inline float bnnc_quant(float x, float s, float z, float min, float max, bool bipolar,
                               unsigned mode) {
  float y = x / s + z, q;
  if (bipolar) {
    q = y >= 0.0f ? 1.0f : -1.0f;
  } else {
    y = y > max ? max : y;
    y = y < min ? min : y;
    q = bnnc_round(mode, y);
  }
  return (q - z) * s;
}

/* The f32 whose bits are b, and back. */
static inline float bnnc_f32(ap_uint<32> b) {
  union {
    uint32_t u;
    float f;
  } v;
  v.u = (uint32_t)b;
  return v.f;
}

static inline ap_uint<32> bnnc_f32_bits(float f) {
  union {
    uint32_t u;
    float f;
  } v;
  v.f = f;
  return ap_uint<32>(v.u);
}

/* A wide word from 64-bit words, word 0 lowest (weights wider than 64 bits). */
template <int W, int N> static inline ap_uint<W> bnnc_join(const uint64_t (&words)[N]) {
#pragma HLS INLINE
  ap_uint<N * 64> v = 0;
  for (int i = 0; i < N; i++) {
#pragma HLS UNROLL
    v.range(64 * i + 63, 64 * i) = words[i];
  }
  return ap_uint<W>(v.range(W - 1, 0));
}

/* The number of ones of a word. */
template <int W> static inline ap_uint<16> bnnc_popcount(ap_uint<W> x) {
#pragma HLS INLINE
  ap_uint<16> n = 0;
  for (int i = 0; i < W; i++) {
#pragma HLS UNROLL
    n += x[i];
  }
  return n;
}

#endif
