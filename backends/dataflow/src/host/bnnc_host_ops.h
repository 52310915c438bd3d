/*
 * bnnc host operations: the float work around a dataflow design, computed exactly as bnnc's
 * reference interpreter computes it (the same f32 operations in the same order; sums of
 * float layers in onnxruntime's MLAS order, ReduceMean in Eigen's). Generated host code
 * calls these on one sample at a time. Compile without floating-point contraction
 * (-ffp-contract=off) so that no multiply and add fuse where the interpreter rounds twice.
 */
#ifndef BNNC_HOST_OPS_H
#define BNNC_HOST_OPS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

enum { BNNC_ADD, BNNC_SUB, BNNC_MUL, BNNC_DIV, BNNC_POW };

enum {
  BNNC_HALF_EVEN,
  BNNC_CEIL,
  BNNC_FLOOR,
  BNNC_UP,
  BNNC_DOWN,
  BNNC_HALF_UP,
  BNNC_HALF_DOWN
};

/* The row-major index into an operand broadcast against `shape` (strides 0 on broadcast
 * axes) of output element i. */
static inline size_t bnnc_index(size_t i, int rank, const size_t *shape, const size_t *strides) {
  size_t index = 0;
  for (int a = rank - 1; a >= 0; a--) {
    index += (i % shape[a]) * strides[a];
    i /= shape[a];
  }
  return index;
}

/* The float whose bits are h (an f32 element of a stream). */
static inline float bnnc_f32_of_bits(int32_t h) {
  float f;
  memcpy(&f, &h, sizeof f);
  return f;
}

/* numpy's sign: NaN stays NaN, both zeros give +0. */
static inline float bnnc_np_sign(float y) {
  if (y > 0.0f) return 1.0f;
  if (y < 0.0f) return -1.0f;
  if (y == 0.0f) return 0.0f;
  return y;
}

/* QONNX rounding modes, as qonnx's numpy code rounds. */
static inline float bnnc_round(int mode, float y) {
  switch (mode) {
  case BNNC_HALF_EVEN: return nearbyintf(y);
  case BNNC_CEIL: return ceilf(y);
  case BNNC_FLOOR: return floorf(y);
  case BNNC_UP: return bnnc_np_sign(y) * ceilf(fabsf(y));
  case BNNC_DOWN: return truncf(y);
  case BNNC_HALF_UP: return bnnc_np_sign(y) * floorf(fabsf(y) + 0.5f);
  default: return bnnc_np_sign(y) * ceilf(fabsf(y) - 0.5f);
  }
}

/* y = a op b with numpy broadcasting. */
static inline void bnnc_binary(int op, size_t n, int rank, const size_t *shape, const float *a,
                               const size_t *as, const float *b, const size_t *bs, float *y) {
  for (size_t i = 0; i < n; i++) {
    float p = a[bnnc_index(i, rank, shape, as)], q = b[bnnc_index(i, rank, shape, bs)];
    switch (op) {
    case BNNC_ADD: y[i] = p + q; break;
    case BNNC_SUB: y[i] = p - q; break;
    case BNNC_MUL: y[i] = p * q; break;
    case BNNC_DIV: y[i] = p / q; break;
    default: y[i] = powf(p, q); break;
    }
  }
}

/* onnxruntime squares and cubes for a scalar exponent of 2 or 3. */
static inline void bnnc_pow_small(size_t n, const float *a, int e, float *y) {
  for (size_t i = 0; i < n; i++) y[i] = e == 2 ? a[i] * a[i] : a[i] * a[i] * a[i];
}

static inline void bnnc_relu(size_t n, const float *x, float *y) {
  for (size_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

static inline void bnnc_sign(size_t n, const float *x, float *y) {
  for (size_t i = 0; i < n; i++) y[i] = bnnc_np_sign(x[i]);
}

static inline void bnnc_clip(size_t n, const float *x, float lo, float hi, float *y) {
  for (size_t i = 0; i < n; i++) {
    float v = x[i] < lo ? lo : x[i];
    y[i] = v > hi ? hi : v;
  }
}

/* QONNX Quant: y = x / s + z, then the bipolar case or clamp and round, then (q - z) * s. */
static inline void bnnc_quant(size_t n, int rank, const size_t *shape, const float *x,
                              const float *s, const size_t *ss, const float *z, const size_t *zs,
                              int bipolar, float min, float max, int mode, float *y) {
  for (size_t i = 0; i < n; i++) {
    float sc = s[bnnc_index(i, rank, shape, ss)], zp = z[bnnc_index(i, rank, shape, zs)];
    float v = x[i] / sc + zp, q;
    if (bipolar) {
      q = v >= 0.0f ? 1.0f : -1.0f;
    } else {
      v = v > max ? max : v;
      v = v < min ? min : v;
      q = bnnc_round(mode, v);
    }
    y[i] = (q - zp) * sc;
  }
}

/* QONNX BipolarQuant: (x >= 0 ? 1 : -1) * s. */
static inline void bnnc_bipolar_quant(size_t n, int rank, const size_t *shape, const float *x,
                                      const float *s, const size_t *ss, float *y) {
  for (size_t i = 0; i < n; i++)
    y[i] = (x[i] >= 0.0f ? 1.0f : -1.0f) * s[bnnc_index(i, rank, shape, ss)];
}

/* FINN MultiThreshold: out_scale * #{t : x >= t} + out_bias per element (x <= t where a
 * channel descends); `inner` elements per channel index, `rows` rows of `levels`. */
static inline void bnnc_multithreshold(size_t n, size_t inner, size_t channels, const float *x,
                                       const float *t, size_t rows, size_t levels,
                                       const float *directions, float out_scale, float out_bias,
                                       float *y) {
  for (size_t i = 0; i < n; i++) {
    size_t c = (i / inner) % channels;
    const float *row = t + (rows == 1 ? 0 : c) * levels;
    int descending = directions && directions[c] < 0.0f;
    size_t count = 0;
    for (size_t k = 0; k < levels; k++)
      count += descending ? (x[i] <= row[k]) : (x[i] >= row[k]);
    y[i] = out_scale * (float)count + out_bias;
  }
}

/* ONNX QuantizeLinear: clamp(round_half_even(x / s) + zp); NaN saturates to the minimum. */
static inline void bnnc_quantize_linear(size_t n, size_t inner, size_t len, const float *x,
                                        const float *s, const float *zp, float min, float max,
                                        float *y) {
  for (size_t i = 0; i < n; i++) {
    size_t j = len == 1 ? 0 : (i / inner) % len;
    float q = nearbyintf(x[i] / s[j]) + (zp ? zp[j] : 0.0f);
    y[i] = isnan(q) ? min : (q < min ? min : (q > max ? max : q));
  }
}

/* ONNX DequantizeLinear: (q - zp) * s. */
static inline void bnnc_dequantize_linear(size_t n, size_t inner, size_t len, const float *x,
                                          const float *s, const float *zp, float *y) {
  for (size_t i = 0; i < n; i++) {
    size_t j = len == 1 ? 0 : (i / inner) % len;
    y[i] = (x[i] - (zp ? zp[j] : 0.0f)) * s[j];
  }
}

/* ONNX Softmax over `outer` groups of `len` elements `inner` apart: exp(x - max) / sum. */
static inline void bnnc_softmax(size_t outer, size_t len, size_t inner, const float *x, float *y) {
  for (size_t o = 0; o < outer; o++) {
    for (size_t i = 0; i < inner; i++) {
      const float *xs = x + o * len * inner + i;
      float *ys = y + o * len * inner + i;
      float max = -INFINITY, sum = 0.0f;
      for (size_t j = 0; j < len; j++) max = fmaxf(max, xs[j * inner]);
      for (size_t j = 0; j < len; j++) {
        ys[j * inner] = expf(xs[j * inner] - max);
        sum += ys[j * inner];
      }
      for (size_t j = 0; j < len; j++) ys[j * inner] = ys[j * inner] / sum;
    }
  }
}

/* a before b in TopK's order: larger (NaN above all), equal values by lower index. */
static inline int bnnc_topk_before(float a, float b, int largest) {
  if (isnan(a) || isnan(b)) return largest ? (isnan(a) && !isnan(b)) : (!isnan(a) && isnan(b));
  return largest ? a > b : a < b;
}

/* ONNX TopK along an axis of `len` elements `inner` apart: values and indices (as floats). */
static inline void bnnc_topk(size_t outer, size_t len, size_t inner, size_t k, int largest,
                             const float *x, float *values, float *indices) {
  for (size_t o = 0; o < outer; o++) {
    for (size_t i = 0; i < inner; i++) {
      const float *xs = x + o * len * inner + i;
      for (size_t r = 0; r < k; r++) {
        size_t best = len;
        for (size_t j = 0; j < len; j++) {
          int taken = 0;
          for (size_t q = 0; q < r; q++)
            taken |= (size_t)indices[(o * k + q) * inner + i] == j;
          if (!taken && (best == len || bnnc_topk_before(xs[j * inner], xs[best * inner], largest)))
            best = j;
        }
        values[(o * k + r) * inner + i] = xs[best * inner];
        indices[(o * k + r) * inner + i] = (float)best;
      }
    }
  }
}

/* Eigen's vectorized sum (4 lanes) of a run starting `offset` elements into an aligned
 * buffer, as onnxruntime's ReduceMean computes it. */
static inline float bnnc_eigen_sum(const float *x, size_t n, size_t offset) {
  size_t start = (4 - offset % 4) % 4;
  if (start > n) start = n;
  size_t body = n - start, aligned = body / 4 * 4, aligned2 = body / 8 * 8;
  if (aligned == 0) {
    float s = n ? x[0] : 0.0f;
    for (size_t i = 1; i < n; i++) s += x[i];
    return s;
  }
  float p0[4], p1[4];
  for (int l = 0; l < 4; l++) p0[l] = x[start + l];
  if (aligned > 4) {
    for (int l = 0; l < 4; l++) p1[l] = x[start + 4 + l];
    for (size_t i = start + 8; i < start + aligned2; i += 8)
      for (int l = 0; l < 4; l++) {
        p0[l] = p0[l] + x[i + l];
        p1[l] = p1[l] + x[i + 4 + l];
      }
    for (int l = 0; l < 4; l++) p0[l] = p0[l] + p1[l];
    if (aligned > aligned2)
      for (int l = 0; l < 4; l++) p0[l] = p0[l] + x[start + aligned2 + l];
  }
  float sum = (p0[0] + p0[2]) + (p0[1] + p0[3]);
  for (size_t i = 0; i < start; i++) sum += x[i];
  for (size_t i = start + aligned; i < n; i++) sum += x[i];
  return sum;
}

/* ReduceMean over trailing axes: `outer` runs of `count` elements. */
static inline void bnnc_reduce_mean_trailing(size_t outer, size_t count, const float *x, float *y) {
  for (size_t o = 0; o < outer; o++) y[o] = bnnc_eigen_sum(x + o * count, count, o * count) / (float)count;
}

/* ReduceMean over other axes: sums in row-major order of the input, `index` mapping each
 * input element to its output. */
static inline void bnnc_reduce_mean_general(size_t n, size_t m, size_t count, int rank,
                                            const size_t *shape, const size_t *strides,
                                            const float *x, float *y) {
  for (size_t o = 0; o < m; o++) y[o] = 0.0f;
  for (size_t i = 0; i < n; i++) y[bnnc_index(i, rank, shape, strides)] += x[i];
  for (size_t o = 0; o < m; o++) y[o] = y[o] / (float)count;
}

/* MLAS's global average pool kernel: four lane sums, (l0 + l2) + (l1 + l3), the tail. */
static inline void bnnc_global_average_pool(size_t planes, size_t plane, const float *x, float *y) {
  for (size_t p = 0; p < planes; p++) {
    const float *v = x + p * plane;
    float l[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    size_t whole = plane / 4 * 4;
    for (size_t i = 0; i < whole; i += 4)
      for (int k = 0; k < 4; k++) l[k] += v[i + k];
    float s = (l[0] + l[2]) + (l[1] + l[3]);
    for (size_t i = whole; i < plane; i++) s += v[i];
    y[p] = s / (float)plane;
  }
}

/* MLAS's M = 1 kernel: rows of b (k x n) four at a time, ((p0 + p1) + p2) + p3, then two and
 * one, each group added to the output so far (to c, or 0 for the first without c). */
static inline void bnnc_m1_rows(const float *a, const float *b, size_t k, size_t n,
                                const float *c, float *y) {
  int first = c == NULL;
  for (size_t j = 0; j < n; j++) y[j] = c ? c[j] : 0.0f;
  size_t kk = 0;
  while (k - kk > 0) {
    size_t rows = k - kk >= 4 ? 4 : ((k - kk) & 2 ? 2 : 1);
    for (size_t j = 0; j < n; j++) {
      float sum = a[kk] * b[kk * n + j];
      for (size_t r = 1; r < rows; r++) sum += a[kk + r] * b[(kk + r) * n + j];
      y[j] = sum + (first ? 0.0f : y[j]);
    }
    first = 0;
    kk += rows;
  }
}

/* MLAS's M = 1 kernel with B transposed (bt: n x k): 8 lanes of plain products, reduced in
 * an order that depends on whether the output falls in a group of four, two or one. */
static inline void bnnc_m1_transposed(const float *a, const float *bt, size_t k, size_t n,
                                      const float *c, float *y) {
  size_t four = n - n % 4;
  for (size_t j = 0; j < n; j++) {
    const float *row = bt + j * k;
    float l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (size_t i = 0; i < k; i++) l[i % 8] += a[i] * row[i];
    if (k % 8)
      for (size_t i = k % 8; i < 8; i++) l[i] += 0.0f;
    float v;
    if (j < four)
      v = (((l[0] + l[1]) + l[2]) + l[3]) + (((l[4] + l[5]) + l[6]) + l[7]);
    else if (n % 4 >= 2 && j < four + 2)
      v = ((l[0] + l[2]) + (l[4] + l[6])) + ((l[1] + l[3]) + (l[5] + l[7]));
    else
      v = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
    y[j] = v + (c ? c[j] : 0.0f);
  }
}

/* MLAS's general product y = alpha * a (m x k) @ b (k x n) + y by column segments
 * [start, end) with K stride: per slice an fma chain from 0, joined as fma(acc, alpha, y);
 * without a start (y not given) the first slice is stored as alpha * acc. `acc` holds m * n. */
static inline void bnnc_matmul_2d(const float *a, const float *b, size_t m, size_t k, size_t n,
                                  size_t segments, const size_t *seg, float alpha, int has_start,
                                  float *acc, float *y) {
  if (!has_start)
    for (size_t i = 0; i < m * n; i++) y[i] = 0.0f;
  for (size_t s = 0; s < segments; s++) {
    size_t c0 = seg[3 * s], c1 = seg[3 * s + 1], stride = seg[3 * s + 2] ? seg[3 * s + 2] : 1;
    int first = !has_start;
    size_t k0 = 0;
    while (k0 < k || first) {
      size_t k1 = k0 + stride < k ? k0 + stride : k;
      for (size_t i = 0; i < m; i++) {
        for (size_t j = c0; j < c1; j++) acc[i * n + j] = 0.0f;
        for (size_t kk = k0; kk < k1; kk++)
          for (size_t j = c0; j < c1; j++) acc[i * n + j] = fmaf(a[i * k + kk], b[kk * n + j], acc[i * n + j]);
      }
      for (size_t i = 0; i < m; i++)
        for (size_t j = c0; j < c1; j++) {
          float av = acc[i * n + j];
          y[i * n + j] = first ? (alpha == 1.0f ? av : av * alpha) : fmaf(av, alpha, y[i * n + j]);
        }
      first = 0;
      k0 = k1 > k0 + 1 ? k1 : k0 + 1;
    }
  }
}

/* A convolution group's patches: output position p's receptive field, channels then taps in
 * order (0 at a padded tap, whose offset is `plane`), as row p of an n x k matrix, or as
 * column p of a k x n one when `columns`. */
static inline void bnnc_patches(const float *x, size_t cg, size_t plane, size_t taps, size_t n,
                                const size_t *offsets, int columns, float *out) {
  size_t k = cg * taps;
  for (size_t p = 0; p < n; p++)
    for (size_t c = 0; c < cg; c++)
      for (size_t t = 0; t < taps; t++) {
        size_t o = offsets[p * taps + t], r = c * taps + t;
        out[columns ? r * n + p : p * k + r] = o < plane ? x[c * plane + o] : 0.0f;
      }
}

/* y = x with axes permuted: output element i takes input element index(i). */
static inline void bnnc_permute(size_t n, int rank, const size_t *shape, const size_t *strides,
                                const float *x, float *y) {
  for (size_t i = 0; i < n; i++) y[i] = x[bnnc_index(i, rank, shape, strides)];
}

/* Little-endian bit packing of stream beats: `lanes` elements of `bits` each per beat, element
 * 0 in the lowest bits, each beat padded to whole bytes; a bipolar element is 1 for +1. */
static inline void bnnc_pack_beats(const int32_t *v, size_t n, unsigned bits, size_t lanes,
                                   int bipolar, uint8_t *out) {
  size_t beat_bytes = (bits * lanes + 7) / 8;
  memset(out, 0, (n / lanes) * beat_bytes);
  for (size_t i = 0; i < n; i++) {
    uint64_t code = bipolar ? (uint64_t)(v[i] > 0) : (uint64_t)(uint32_t)v[i];
    size_t bit = (i % lanes) * bits;
    uint8_t *beat = out + (i / lanes) * beat_bytes;
    for (unsigned b = 0; b < bits; b++, bit++)
      if ((code >> b) & 1u) beat[bit / 8] |= (uint8_t)(1u << (bit % 8));
  }
}

/* The inverse of bnnc_pack_beats; `sign` extends signed elements (bipolar: 0 becomes -1). */
static inline void bnnc_unpack_beats(const uint8_t *in, size_t n, unsigned bits, size_t lanes,
                                     int sign, int bipolar, int32_t *v) {
  size_t beat_bytes = (bits * lanes + 7) / 8;
  for (size_t i = 0; i < n; i++) {
    const uint8_t *beat = in + (i / lanes) * beat_bytes;
    size_t bit = (i % lanes) * bits;
    uint32_t code = 0;
    for (unsigned b = 0; b < bits; b++, bit++) code |= (uint32_t)((beat[bit / 8] >> (bit % 8)) & 1u) << b;
    if (bipolar)
      v[i] = code ? 1 : -1;
    else if (sign && bits < 32 && (code >> (bits - 1)) & 1u)
      v[i] = (int32_t)(code | ~((1u << bits) - 1u));
    else
      v[i] = (int32_t)code;
  }
}

/* The first index of a row's largest value. */
static inline size_t bnnc_argmax(const float *v, size_t n) {
  size_t best = 0;
  for (size_t i = 1; i < n; i++)
    if (v[i] > v[best]) best = i;
  return best;
}

/* A testbench's verdict on one output row against the expected one: integers exactly, floats
 * within 1e-4 of the row's largest magnitude, the same argmax. Reports the first difference
 * on stderr; raises *worst to the largest difference relative to the row's magnitude. */
static inline int bnnc_check_row(const float *y, const float *want, size_t n, int integer,
                                 size_t sample, double *worst) {
  double magnitude = 0.0;
  for (size_t k = 0; k < n; k++) magnitude = fmax(magnitude, fabs((double)want[k]));
  int ok = 1;
  for (size_t k = 0; k < n; k++) {
    double diff = fabs((double)y[k] - (double)want[k]);
    double relative = magnitude > 0 ? diff / magnitude : diff;
    if (relative > *worst) *worst = relative;
    int good = integer ? y[k] == want[k] : diff <= 1e-4 * magnitude;
    if (!good && ok)
      fprintf(stderr, "sample %zu: output %zu is %.9g, expected %.9g\n", sample, k, (double)y[k],
              (double)want[k]);
    ok = ok && good;
  }
  if (n > 1 && bnnc_argmax(y, n) != bnnc_argmax(want, n)) {
    fprintf(stderr, "sample %zu: argmax %zu, expected %zu\n", sample, bnnc_argmax(y, n),
            bnnc_argmax(want, n));
    ok = 0;
  }
  return ok;
}

#endif
