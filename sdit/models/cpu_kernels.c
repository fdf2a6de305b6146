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
 * grads: `count` pointers to (B', M, D) gradients; dmus: (count, D). The dmu sums run in double, one partial per
 * thread over its rows, added in thread order afterwards (the same result on every run with the same threads).
 */
void sdit_shift_mixes_backward(const float *x, const float *mus, const float *const *grads, float *dx, float *dmus,
                               int64_t rows, int64_t tokens, int64_t dim, int64_t count, int threads) {
    if (threads < 1) threads = 1;
    double *partial = (double *)calloc((size_t)threads * (size_t)(count * dim), sizeof(double));
    int used = 1;
#pragma omp parallel num_threads(threads)
    {
        int id = omp_get_thread_num();
#pragma omp single
        used = omp_get_num_threads();
        double *acc = partial + (int64_t)id * count * dim;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            for (int64_t m = 0; m < tokens; ++m) {
                int64_t at = (r * tokens + m) * dim;
                const float *xm = x + at;
                float *o = dx + at;
                for (int64_t d = 0; d < dim; ++d) {
                    float delta = m ? xm[d] - xm[d - dim] : xm[d];
                    float h = 0.0f, hn = 0.0f, gn = 0.0f;
                    for (int64_t j = 0; j < count; ++j) {
                        float g = grads[j][at + d];
                        h += mus[j * dim + d] * g;
                        acc[j * dim + d] += (double)g * (double)delta;
                        if (m + 1 < tokens) {
                            float g1 = grads[j][at + dim + d];
                            gn += g1;
                            hn += mus[j * dim + d] * g1;
                        }
                    }
                    o[d] = h + (gn - hn);
                }
            }
        }
    }
    for (int64_t i = 0; i < count * dim; ++i) {
        double sum = 0.0;
        for (int t = 0; t < used; ++t) sum += partial[(int64_t)t * count * dim + i];
        dmus[i] = (float)sum;
    }
    free(partial);
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
