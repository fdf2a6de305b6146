/* Small float32 CPU kernels of sdit (sdit/models/cpu_kernels.py loads them with ctypes).
 *
 * 1. Multi-step LIF neuron (hard reset, decay_input, ATan surrogate) over (T, n): sdit/models/lif.py.
 * The same arithmetic as spikingjelly's CPU reference, one pass over
 * the data instead of ~9 tensor passes per step: per element, for t = 0..T-1,
 *     h_t = v + (x_t - (v - v_reset)) / tau,   s_t = h_t >= v_th,   v = s_t ? v_reset : h_t.
 * Backward (detach_reset off): with sg_t = (1 / (1 + z^2)) * alpha / 2, z = (h_t - v_th) * pi / 2 * alpha,
 *     gh_t = gs_t sg_t + c_t ((1 - s_t) + (v_reset - h_t) sg_t),   gx_t = gh_t / tau,
 *     c_{t-1} = gh_t - gh_t / tau,   c_{T-1} = gv (the gradient of the final membrane).
 * Built with -ffp-contract=off so that no multiply-add is fused: forward results are bit-identical.
 * Plain C with no torch headers: it compiles in about a second and is called through ctypes.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 2048

/* v_in: the membrane before step 0, or NULL for v_init everywhere; v_out: the membrane after the last step. */
void sdit_lif_forward(const float *x, const float *v_in, float *v_out, float *s, float *h, int64_t steps, int64_t n,
                      float tau, float v_th, float v_reset, float v_init, int threads) {
    int64_t blocks = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
        int64_t lo = b * BLOCK, hi = lo + BLOCK < n ? lo + BLOCK : n;
        float *v = v_out;
        for (int64_t i = lo; i < hi; ++i) v[i] = v_in ? v_in[i] : v_init;
        for (int64_t t = 0; t < steps; ++t) {
            const float *xt = x + t * n;
            float *st = s + t * n;
            float *ht = h ? h + t * n : 0;
            for (int64_t i = lo; i < hi; ++i) {
                float vi = v[i];
                float hi_ = vi + (xt[i] - (vi - v_reset)) / tau;
                int fire = hi_ >= v_th;
                st[i] = fire ? 1.0f : 0.0f;
                v[i] = fire ? v_reset : hi_;
                if (ht) ht[i] = hi_;
            }
        }
    }
}

void sdit_lif_backward(const float *gs, const float *gv, const float *h, float *gx, float *gv0, int64_t steps,
                       int64_t n, float tau, float v_th, float v_reset, float alpha, int threads) {
    const float half_alpha = alpha / 2.0f;
    const float scale = (float)(3.14159265358979323846 / 2.0 * (double)alpha);
    int64_t blocks = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
        int64_t lo = b * BLOCK, hi = lo + BLOCK < n ? lo + BLOCK : n;
        for (int64_t i = lo; i < hi; ++i) gv0[i] = gv ? gv[i] : 0.0f;  /* the carry c_t */
        for (int64_t t = steps - 1; t >= 0; --t) {
            const float *gst = gs + t * n, *ht = h + t * n;
            float *gxt = gx + t * n;
            for (int64_t i = lo; i < hi; ++i) {
                float hv = ht[i];
                float z = (hv - v_th) * scale;
                float sg = (1.0f / (1.0f + z * z)) * half_alpha;
                float reset_grad = (1.0f - (hv >= v_th ? 1.0f : 0.0f)) + (v_reset - hv) * sg;
                float gh = gst[i] * sg + gv0[i] * reset_grad;
                gxt[i] = gh / tau;
                gv0[i] = gh - gh / tau;
            }
        }
    }
}

/* 2. Token-shift mixes (sdit/models/fused.py), without autograd: for each of `count` mixes j,
 *     out_j[b, m, :] = x[b, m-1, :] + mu_j * (x[b, m, :] - x[b, m-1, :])   (x[b, -1, :] = 0),
 * the operations torch.addcmul(shifted, x - shifted, mu) runs, in one pass over x (B', M, D): torch's
 * vectorised addcmul is one fused multiply-add, fma(delta, mu, shifted), and so is this (a clone for CPUs
 * with FMA; the default clone calls the C library's exact fmaf).
 * out: count tensors of (B', M, D) laid out one after the other; mus: (count, D).
 */
__attribute__((target_clones("fma", "default")))
void sdit_shift_mixes(const float *x, const float *mus, float *out, int64_t rows, int64_t tokens, int64_t dim,
                      int64_t count, int threads) {
    int64_t plane = rows * tokens * dim;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t m = 0; m < tokens; ++m) {
            const float *xm = x + (r * tokens + m) * dim;
            const float *xp = m ? xm - dim : 0;
            for (int64_t j = 0; j < count; ++j) {
                const float *mu = mus + j * dim;
                float *o = out + j * plane + (r * tokens + m) * dim;
                if (xp) {
                    for (int64_t d = 0; d < dim; ++d) o[d] = __builtin_fmaf(xm[d] - xp[d], mu[d], xp[d]);
                } else {
                    for (int64_t d = 0; d < dim; ++d) o[d] = __builtin_fmaf(xm[d] - 0.0f, mu[d], 0.0f);
                }
            }
        }
    }
}

/* 3. Backward of the token-shift mixes (sdit/models/fused.py, _ShiftMixes), one pass over x and the gradients:
 * with delta_m = x_m - x_{m-1} (x_{-1} = 0), G_m = sum_j g_j[m], H_m = sum_j mu_j g_j[m],
 *     dx_m = H_m + (G_{m+1} - H_{m+1})   (the last token: H_m),   dmu_j = sum over rows and tokens of g_j delta.
 * grads: `count` pointers to (B', M, D) gradients; dmus: (count, D). Per token, G and H go into a D-long buffer
 * and every loop runs over d (contiguous, so it vectorises; AVX2 clone where the CPU has it); token m's dx is
 * written once token m + 1's G - H is known. The dmu sums run in double, one partial per thread over its rows,
 * added in thread order afterwards (the same result on every run with the same threads). Returns 0, or -1
 * when the partial sums cannot be allocated (nothing written).
 */
__attribute__((target_clones("avx2", "default")))
int sdit_shift_mixes_backward(const float *x, const float *mus, const float *const *grads, float *dx, float *dmus,
                              int64_t rows, int64_t tokens, int64_t dim, int64_t count, int threads) {
    if (threads < 1) threads = 1;
    double *partial = (double *)calloc((size_t)threads * (size_t)(count * dim), sizeof(double));
    if (!partial) return -1;
    int used = 1;
#pragma omp parallel num_threads(threads)
    {
        int id = omp_get_thread_num();
#pragma omp single
        used = omp_get_num_threads();
        double *acc = partial + (int64_t)id * count * dim;
        float buf[3 * dim];  /* on the thread's stack: 13.5 KiB at D = 1152 */
        float *delta = buf, *h = buf + dim, *hprev = buf + 2 * dim;  /* hprev: H of token m - 1 */
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            for (int64_t m = 0; m < tokens; ++m) {
                int64_t at = (r * tokens + m) * dim;
                const float *xm = x + at;
                if (m) {
                    for (int64_t d = 0; d < dim; ++d) delta[d] = xm[d] - xm[d - dim];
                } else {
                    for (int64_t d = 0; d < dim; ++d) delta[d] = xm[d];
                }
                float *gs = dx + at;  /* G_m, kept in dx_m's place until token m + 1 replaces it */
                for (int64_t d = 0; d < dim; ++d) h[d] = 0.0f, gs[d] = 0.0f;
                for (int64_t j = 0; j < count; ++j) {
                    const float *g = grads[j] + at, *mu = mus + j * dim;
                    double *a = acc + j * dim;
                    for (int64_t d = 0; d < dim; ++d) {
                        h[d] += mu[d] * g[d];
                        gs[d] += g[d];
                        a[d] += (double)g[d] * (double)delta[d];
                    }
                }
                if (m) {  /* dx_{m-1} = H_{m-1} + (G_m - H_m) */
                    float *o = dx + at - dim;
                    for (int64_t d = 0; d < dim; ++d) o[d] = hprev[d] + (gs[d] - h[d]);
                }
                float *swap = hprev; hprev = h; h = swap;
            }
            float *last = dx + (r * tokens + tokens - 1) * dim;  /* the last token: H */
            for (int64_t d = 0; d < dim; ++d) last[d] = hprev[d];
        }
    }
    for (int64_t i = 0; i < count * dim; ++i) {
        double sum = 0.0;
        for (int t = 0; t < used; ++t) sum += partial[(int64_t)t * count * dim + i];
        dmus[i] = (float)sum;
    }
    free(partial);
    return 0;
}

/* 4. relu(x)^2 of RWKV's channel mixing (sdit/models/sdit.py, _ReluSquare): out = r * r with r = relu(x) (NaN
 * stays NaN, as torch's relu), and its backward gx = (r * g) * 2, the operations of torch's tensor code, each one
 * pass (torch: relu, then the product; the product, then the doubling).
 */
void sdit_relu_square(const float *x, float *out, int64_t n, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
        float r = x[i] < 0.0f ? 0.0f : x[i];
        out[i] = r * r;
    }
}

void sdit_relu_square_backward(const float *x, const float *g, float *gx, int64_t n, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
        float r = x[i] < 0.0f ? 0.0f : x[i];
        gx[i] = (r * g[i]) * 2.0f;
    }
}

/* 5. GELU(tanh) of DiT's MLP with the fc1 bias folded in (sdit/models/fused.py, bias_gelu): a = y + bias (per
 * column), out = 0.5 a (1 + tanh(u)), u = sqrt(2 / pi) (a + 0.044715 a^3), written as a / (1 + exp(-2u)) (the same
 * function: 1 + tanh(u) = 2 sigmoid(2u); no cancellation for negative a) with a branch-free exp (range reduction
 * by ln 2, degree-6 polynomial, ~2e-7 relative): values within a few float ulps of torch's gelu(approximate='tanh')
 * (which loses relative accuracy to 1 + tanh(u) for negative a); a = -inf gives NaN as torch's on the AVX2 path,
 * -inf on the scalar one.
 * Backward: with s = sigmoid(2u), 1 - s = e s (e = exp(-2u)), u' = sqrt(2 / pi) (1 + 3 * 0.044715 a^2),
 *     ga = g (s + 2 a s (1 - s) u'),   gbias = sum over rows of ga (double, one partial per thread).
 * y, out, g, ga: (rows, cols) row-major; bias: (cols,) or NULL (no bias); out may be y (in place).
 * On CPUs with AVX2 and FMA, 8 columns at a time with intrinsics (1 / d by rcp and one Newton step: the divide is
 * slow on AVX2 parts); the remaining columns and other CPUs run the scalar form.
 */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SDIT_X86 1
#endif

#define GELU_K 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_C 0.044715f
#define LOG2E 1.4426950408889634f
#define LN2_HI 0.693145751953125f
#define LN2_LO 1.4286068203094172e-6f
#define EXP_C2 0.5f
#define EXP_C3 1.6666667e-1f
#define EXP_C4 4.1666667e-2f
#define EXP_C5 8.3333333e-3f
#define EXP_C6 1.3888889e-3f

static float exp_approx(float a) {
    a = a < -87.0f ? -87.0f : a;
    a = a > 88.0f ? 88.0f : a; /* NaN passes through both selects */
    float n = nearbyintf(a * LOG2E);
    float r = (a - n * LN2_HI) - n * LN2_LO;
    float p = 1.0f + r * (1.0f + r * (EXP_C2 + r * (EXP_C3 + r * (EXP_C4 + r * (EXP_C5 + r * EXP_C6)))));
    int32_t bits = ((int32_t)n + 127) * (1 << 23); /* 2^n, n in [-126, 127] */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static float gelu_tanh(float a) {
    float u = GELU_K * (a + GELU_C * (a * a * a));
    return a / (1.0f + exp_approx(-2.0f * u));
}

static float gelu_tanh_grad(float a) {
    float u = GELU_K * (a + GELU_C * (a * a * a));
    float e = exp_approx(-2.0f * u);
    float s = 1.0f / (1.0f + e);
    float du = GELU_K * (1.0f + (3.0f * GELU_C) * (a * a));
    return s + 2.0f * a * s * (e * s) * du;
}

#ifdef SDIT_X86
static int have_avx2_fma(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* exp(-2u) for 8 lanes of a (NaN stays NaN). */
__attribute__((target("avx2,fma"))) static inline __m256 exp_neg2u8(__m256 a, __m256 *pa) {
    __m256 a3 = _mm256_mul_ps(_mm256_mul_ps(a, a), a);
    __m256 z = _mm256_mul_ps(_mm256_set1_ps(-2.0f * GELU_K), _mm256_fmadd_ps(_mm256_set1_ps(GELU_C), a3, a));
    z = _mm256_min_ps(_mm256_set1_ps(88.0f), _mm256_max_ps(_mm256_set1_ps(-87.0f), z)); /* NaN: z */
    __m256 n = _mm256_round_ps(_mm256_mul_ps(z, _mm256_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), z);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(EXP_C6), r, _mm256_set1_ps(EXP_C5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_C4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_C3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_C2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    *pa = a;
    return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

/* 1 / d for d >= 1: rcp (12 bits) and one Newton step. */
__attribute__((target("avx2,fma"))) static inline __m256 recip8(__m256 d) {
    __m256 r = _mm256_rcp_ps(d);
    return _mm256_mul_ps(r, _mm256_fnmadd_ps(d, r, _mm256_set1_ps(2.0f)));
}

__attribute__((target("avx2,fma"))) static void bias_gelu_rows_avx2(const float *y, const float *bias, float *out,
                                                                     int64_t lo, int64_t hi, int64_t cols) {
    int64_t vec = cols - cols % 8;
    for (int64_t r = lo; r < hi; ++r) {
        const float *yr = y + r * cols;
        float *o = out + r * cols;
        for (int64_t c = 0; c < vec; c += 8) {
            __m256 a = _mm256_loadu_ps(yr + c);
            if (bias) a = _mm256_add_ps(a, _mm256_loadu_ps(bias + c));
            __m256 e = exp_neg2u8(a, &a);
            _mm256_storeu_ps(o + c, _mm256_mul_ps(a, recip8(_mm256_add_ps(_mm256_set1_ps(1.0f), e))));
        }
        for (int64_t c = vec; c < cols; ++c) o[c] = gelu_tanh(yr[c] + (bias ? bias[c] : 0.0f));
    }
}

__attribute__((target("avx2,fma"))) static void bias_gelu_backward_rows_avx2(
    const float *y, const float *bias, const float *g, float *ga, double *acc, int64_t lo, int64_t hi, int64_t cols) {
    int64_t vec = cols - cols % 8;
    const __m256 two = _mm256_set1_ps(2.0f), one = _mm256_set1_ps(1.0f);
    for (int64_t r = lo; r < hi; ++r) {
        const float *yr = y + r * cols, *gr = g + r * cols;
        float *o = ga + r * cols;
        for (int64_t c = 0; c < vec; c += 8) {
            __m256 a = _mm256_loadu_ps(yr + c);
            if (bias) a = _mm256_add_ps(a, _mm256_loadu_ps(bias + c));
            __m256 e = exp_neg2u8(a, &a);
            __m256 s = recip8(_mm256_add_ps(one, e));
            __m256 du = _mm256_mul_ps(_mm256_set1_ps(GELU_K),
                                      _mm256_fmadd_ps(_mm256_set1_ps(3.0f * GELU_C), _mm256_mul_ps(a, a), one));
            __m256 tail = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(two, a), s), _mm256_mul_ps(_mm256_mul_ps(e, s), du));
            _mm256_storeu_ps(o + c, _mm256_mul_ps(_mm256_loadu_ps(gr + c), _mm256_add_ps(s, tail)));
        }
        for (int64_t c = vec; c < cols; ++c) o[c] = gr[c] * gelu_tanh_grad(yr[c] + (bias ? bias[c] : 0.0f));
        if (acc) {
            for (int64_t c = 0; c < cols; ++c) acc[c] += (double)o[c];
        }
    }
}
#endif

static void bias_gelu_rows(const float *y, const float *bias, float *out, int64_t lo, int64_t hi, int64_t cols) {
#ifdef SDIT_X86
    if (have_avx2_fma()) {
        bias_gelu_rows_avx2(y, bias, out, lo, hi, cols);
        return;
    }
#endif
    for (int64_t r = lo; r < hi; ++r) {
        for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = gelu_tanh(y[r * cols + c] + (bias ? bias[c] : 0.0f));
    }
}

static void bias_gelu_backward_rows(const float *y, const float *bias, const float *g, float *ga, double *acc,
                                    int64_t lo, int64_t hi, int64_t cols) {
#ifdef SDIT_X86
    if (have_avx2_fma()) {
        bias_gelu_backward_rows_avx2(y, bias, g, ga, acc, lo, hi, cols);
        return;
    }
#endif
    for (int64_t r = lo; r < hi; ++r) {
        const float *yr = y + r * cols, *gr = g + r * cols;
        float *o = ga + r * cols;
        for (int64_t c = 0; c < cols; ++c) o[c] = gr[c] * gelu_tanh_grad(yr[c] + (bias ? bias[c] : 0.0f));
        if (acc) {
            for (int64_t c = 0; c < cols; ++c) acc[c] += (double)o[c];
        }
    }
}

static void row_range(int64_t rows, int id, int used, int64_t *lo, int64_t *hi) {
    int64_t per = rows / used, extra = rows % used;
    *lo = id * per + (id < extra ? id : extra);
    *hi = *lo + per + (id < extra ? 1 : 0);
}

void sdit_bias_gelu(const float *y, const float *bias, float *out, int64_t rows, int64_t cols, int threads) {
    if (threads < 1) threads = 1;
#pragma omp parallel num_threads(threads)
    {
        int64_t lo, hi;
        row_range(rows, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
        bias_gelu_rows(y, bias, out, lo, hi, cols);
    }
}

/* Returns 0, or -1 when the partial sums cannot be allocated (nothing written). */
int sdit_bias_gelu_backward(const float *y, const float *bias, const float *g, float *ga, float *gbias,
                            int64_t rows, int64_t cols, int threads) {
    if (threads < 1) threads = 1;
    double *partial = gbias ? (double *)calloc((size_t)threads * (size_t)cols, sizeof(double)) : 0;
    if (gbias && !partial) return -1;
    int used = 1;
#pragma omp parallel num_threads(threads)
    {
        int id = omp_get_thread_num(), count = omp_get_num_threads();
#pragma omp single
        used = count;
        int64_t lo, hi;
        row_range(rows, id, count, &lo, &hi);
        bias_gelu_backward_rows(y, bias, g, ga, partial ? partial + (int64_t)id * cols : 0, lo, hi, cols);
    }
    if (gbias) {
        for (int64_t c = 0; c < cols; ++c) {
            double sum = 0.0;
            for (int t = 0; t < used; ++t) sum += partial[(int64_t)t * cols + c];
            gbias[c] = (float)sum;
        }
        free(partial);
    }
    return 0;
}

/* sum over d of x_d (squared: of (x_d - center)^2), in double with 8 independent partial sums (a vector's
 * worth, so the adds do not wait on each other), added pairwise at the end. */
static inline double row_sum(const float *x, int64_t dim, double center, int squared) {
    double part[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    int64_t d = 0;
    for (; d + 8 <= dim; d += 8) {
        for (int k = 0; k < 8; ++k) {
            double c = (double)x[d + k] - center;
            part[k] += squared ? c * c : c;
        }
    }
    for (; d < dim; ++d) {
        double c = (double)x[d] - center;
        part[d & 7] += squared ? c * c : c;
    }
    return ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7])) +
           (squared ? 0.0 : (double)dim * center);
}

/* 6. DiT's adaLN on a LayerNorm without affine parameters (sdit/models/fused.py, norm_modulate), sampling only:
 * per token row x (D,) of image b, mean and variance over D (in double), then
 *     out = shift_b + ((x - mean) * rstd) * (1 + scale_b),   rstd = 1 / sqrt(var + eps),
 * one pass where torch spends two (layer_norm, then addcmul). x, out: (B, L, D); shift, scale: (B, D) contiguous.
 */
__attribute__((target_clones("avx2", "default")))
void sdit_norm_modulate(const float *x, const float *shift, const float *scale, float *out, int64_t batch,
                        int64_t tokens, int64_t dim, float eps, int threads) {
    int64_t rows = batch * tokens;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
        const float *xr = x + r * dim, *sh = shift + (r / tokens) * dim, *sc = scale + (r / tokens) * dim;
        float *o = out + r * dim;
        double mean = row_sum(xr, dim, 0.0, 0) / (double)dim;
        double var = row_sum(xr, dim, mean, 1) / (double)dim;
        float m = (float)mean, rstd = (float)(1.0 / sqrt(var + (double)eps));
        for (int64_t d = 0; d < dim; ++d) o[d] = sh[d] + ((xr[d] - m) * rstd) * (1.0f + sc[d]);
    }
}
