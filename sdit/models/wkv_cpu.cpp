// Compiled CPU kernel of the RWKV-4 WKV operator: forward and backward.
//
// The same numerically stable recurrence as `_wkv_forward` / `_wkv_backward` in
// sdit/models/wkv.py, compiled as one loop over tokens per (batch row, channel
// block) instead of ~15 tensor operations per token. Per channel c (index dropped):
//
//   wkv_t = (sum_{i<t} e^{-(t-1-i) w + k_i} v_i + e^{u + k_t} v_t)
//         / (sum_{i<t} e^{-(t-1-i) w + k_i}     + e^{u + k_t})
//
// Layout: w, u (D,); k, v, y (B, N, D), contiguous. A work unit is one batch row b
// and a block of up to kBlock neighbouring channels; the inner loop runs over the
// channels of the block (contiguous in memory, vectorised), the outer loop over
// tokens. Units are spread over threads with at::parallel_for.
//
// Every exponential goes through `exp_floor`, which clamps its argument from below
// at -60 like `_exp_` in wkv.py (no subnormals, which are ~100x slower on CPU). In
// float32 it is a branch-free polynomial the compiler can vectorise; in float64
// it calls std::exp (the float64 path is the accurate reference, not the fast one).
// Exponentials come in pairs e^{x-m}, e^{y-m} with m = max(x, y): one of them is
// e^0 = 1, so `exp_pair` evaluates only e^{-|x-y|} (the same values, since exp(0)
// is exactly 1).
//
// ISA: on x86 the float32 loops are compiled three times (baseline x86-64,
// AVX2+FMA, AVX-512) and one is picked at run time from the CPU's features, so a
// build is portable across machines that share the extension cache (elsewhere:
// the baseline only). Compile with
// -fno-trapping-math: with trapping math GCC keeps the branches of the selects
// below (a comparison may raise an FP exception) and vectorises nothing; the
// kernel never reads the FP exception flags.

#include <torch/extension.h>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

// Everything the per-ISA entry points call is forced inline, so that it is compiled
// (and vectorised) for the entry point's instruction set.
#define SDIT_INLINE inline __attribute__((always_inline))

namespace {

// Channels per work unit (the vectorised inner loop). Measured on a single core,
// (B, N, D) = (256, 100, 128), AVX-512: 16 channels do not vectorise well; 128 ran
// the forward pass 1.7x and the backward 1.5x faster than 32.
constexpr int64_t kBlock = 128;
constexpr float kExpFloorF = -60.0f;
constexpr double kExpFloorD = -60.0;

// e^x for float32, clamped to x >= -60 (and <= 80, far above any argument the
// recurrences produce: those are <= 0 up to rounding; the bound only keeps 2^n a
// normal float). NaN stays NaN: comparisons with NaN are false, so it passes both
// clamps, and it poisons the polynomial.
//
// Range reduction: x = n ln2 + r with n = round(x / ln2), |r| <= ln2 / 2, so
// e^x = 2^n e^r. n is rounded by adding 1.5 * 2^23 (afterwards the float's low
// mantissa bits hold n as an integer; no float-to-int conversion); ln2 is split
// into a part with few mantissa bits (n * hi is exact) and a small correction.
// e^r is the Taylor polynomial of degree 7: its error r^8 / 8! <= 5.3e-9 is
// well below float32's half ulp (6e-8). 2^n is built in the exponent field.
SDIT_INLINE float exp_floor(float x) {
  x = x < kExpFloorF ? kExpFloorF : x;
  x = x > 80.0f ? 80.0f : x;
  constexpr float kShift = 12582912.0f;  // 1.5 * 2^23, bit pattern 0x4B400000
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;     // 355 / 512: n * kLn2Hi is exact
  constexpr float kLn2Lo = -2.12194440e-4f;  // ln2 - kLn2Hi
  const float shifted = x * kLog2e + kShift;  // low mantissa bits: n
  const float n = shifted - kShift;
  float r = x - n * kLn2Hi;
  r = r - n * kLn2Lo;
  // Horner form of sum_{j<=7} r^j / j!.
  float poly = 1.0f / 5040.0f;
  poly = poly * r + 1.0f / 720.0f;
  poly = poly * r + 1.0f / 120.0f;
  poly = poly * r + 1.0f / 24.0f;
  poly = poly * r + 1.0f / 6.0f;
  poly = poly * r + 0.5f;
  poly = poly * r + 1.0f;
  poly = poly * r + 1.0f;
  int32_t bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  bits = (bits - 0x4B400000 + 127) << 23;  // n + 127 in the exponent field: 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return poly * scale;
}

SDIT_INLINE double exp_floor(double x) { return std::exp(x < kExpFloorD ? kExpFloorD : x); }

template <typename T>
SDIT_INLINE T max_(T a, T b) {
  return a >= b ? a : b;
}

template <typename T>
SDIT_INLINE T min_(T a, T b) {
  return a <= b ? a : b;
}

// (e^{x-m}, e^{y-m}) with m = max(x, y), clamped like exp_floor: the larger of x, y
// gets e^0 = 1, the other e^{-|x-y|}. One exponential for two.
template <typename T>
SDIT_INLINE void exp_pair(T x, T y, T& ex, T& ey) {
  const T d = x - y;
  const bool x_wins = d >= T(0);
  const T e = exp_floor(x_wins ? -d : d);
  ex = x_wins ? T(1) : e;
  ey = x_wins ? e : T(1);
}

// Forward recurrence of one unit: a batch row of k, v, y (pointers offset to the
// block's first channel, row stride `dim`), channels [0, width) of the block.
//
// State before token t: A_{t-1} = a e^p, B_{t-1} = b e^p (numerator and denominator
// of the past, scaled by their running maximum exponent p). Before token 0 the sums
// are empty: a = b = 0, p = k_0 - 60 (any p <= k_0 works; this one as in wkv.py).
// Output, with q = max(p, u + k_t):
//   wkv_t = (e^{p-q} a + e^{u+k_t-q} v_t) / (e^{p-q} b + e^{u+k_t-q}).
// Update, with p' = max(p - w, k_t):
//   a' = e^{p-w-p'} a + e^{k_t-p'} v_t,  b' = e^{p-w-p'} b + e^{k_t-p'}.
// All exponent arguments are <= 0, so nothing overflows for large k.
//
// With kStates (the backward pass's recomputation), the state (a, b, p) before every
// token t = 0..tokens (index `tokens`: after the last) is written to
// states[(3 t + {0, 1, 2}) kBlock + j] and y is not written; otherwise only y is.
// The rows of `prefetch0`, `prefetch1` (same layout as k; kStates only: the y and
// dL/dy the backward pass reads next, in reverse) are prefetched token by token:
// the hardware prefetchers follow the forward sweep better than the reverse one
// (the backward pass ran 1.5x faster with it).
template <typename T, bool kFull, bool kStates>
SDIT_INLINE void forward_unit(const T* __restrict w, const T* __restrict u, const T* __restrict k,
                              const T* __restrict v, T* __restrict y, T* __restrict states, int64_t tokens,
                              int64_t dim, int64_t n, const T* prefetch0 = nullptr, const T* prefetch1 = nullptr) {
  const int64_t width = kFull ? kBlock : n;
  T a[kBlock], b[kBlock], p[kBlock];
  for (int64_t j = 0; j < width; ++j) {
    a[j] = T(0);
    b[j] = T(0);
    p[j] = k[j] + T(-60);
  }
  for (int64_t t = 0; t < tokens; ++t) {
    const T* __restrict kt = k + t * dim;
    const T* __restrict vt = v + t * dim;
    if (kStates) {
      T* __restrict st = states + 3 * t * kBlock;
      for (int64_t j = 0; j < width; ++j) {
        st[j] = a[j];
        st[kBlock + j] = b[j];
        st[2 * kBlock + j] = p[j];
      }
      for (int64_t j = 0; j < width; j += 64 / static_cast<int64_t>(sizeof(T))) {  // one per 64-byte line
        __builtin_prefetch(prefetch0 + t * dim + j);
        __builtin_prefetch(prefetch1 + t * dim + j);
      }
    }
    T* __restrict yt = kStates ? nullptr : y + t * dim;
#pragma omp simd
    for (int64_t j = 0; j < width; ++j) {
      const T kj = kt[j];
      const T vj = vt[j];
      const T pj = p[j];
      if (!kStates) {
        // Output: the past (weight e^p) against the current token (weight e^{u + k_t}).
        T e_past, e_now;
        exp_pair(pj, u[j] + kj, e_past, e_now);
        yt[j] = (e_past * a[j] + e_now * vj) / (e_past * b[j] + e_now);
      }
      // Update: decay the past by e^{-w}, add token t with weight e^{k_t}.
      const T p_decayed = pj - w[j];
      T decay, e_k;
      exp_pair(p_decayed, kj, decay, e_k);
      a[j] = decay * a[j] + e_k * vj;
      b[j] = decay * b[j] + e_k;
      p[j] = max_(p_decayed, kj);
    }
  }
  if (kStates) {
    T* __restrict st = states + 3 * tokens * kBlock;
    for (int64_t j = 0; j < width; ++j) {
      st[j] = a[j];
      st[kBlock + j] = b[j];
      st[2 * kBlock + j] = p[j];
    }
  }
}

// Backward of one unit, in reverse over tokens, from the states the forward
// recomputation left in `states`. Writes grad_k, grad_v of the unit and its
// contributions to dL/du and (minus) dL/dw, gu_out and gw_out, rows of (B, D) partial sums.
//
// With g_t = dL/dwkv_t, D_t the denominator of wkv_t and c_t = g_t / D_t, the
// gradients of the unscaled states obey
//   gA_{t-1} = e^{-w} gA_t + c_t,   gB_{t-1} = e^{-w} gB_t - c_t wkv_t,
// zero after the last token. They are carried as gA = ga e^{-r}, gB = gb e^{-r},
// with r a running minimum of exponents (the mirror of the forward scaling;
// r_t >= p_t keeps every exponent argument <= 0). Per token t:
//   dL/dv_t = c_t e^{u+k_t} + gA_t e^{k_t},
//   dL/dk_t = c_t e^{u+k_t} (v_t - wkv_t) + e^{k_t} (gA_t v_t + gB_t),
//   dL/du  += c_t e^{u+k_t} (v_t - wkv_t),
//   dL/dw  -= e^{-w} (gA_t A_{t-1} + gB_t B_{t-1}).
// In the scaled quantities (q = max(p, u + k_t) as in the forward pass, and
// C = c_t e^q = g_t / (e^{p-q} b + e^{u+k_t-q})):
//   c_t e^{u+k_t} = C e^{u+k_t-q},   gA_t e^{k_t} = ga e^{k_t-r},
//   e^{-w} gA_t A_{t-1} = ga a e^{p-w-r}   (and the same for gB, b),
// and the step to t - 1 rescales to r' = min(r + w, q):
//   ga' = e^{r'-r-w} ga + e^{r'-q} C,   gb' = e^{r'-r-w} gb - e^{r'-q} C wkv_t.
// Before the last token r = p_N (the forward state after it): any r >= p_{N-1}
// scales the zero gradient safely.
template <typename T, bool kFull>
SDIT_INLINE void backward_unit(const T* __restrict w, const T* __restrict u, const T* __restrict k,
                               const T* __restrict v, const T* __restrict y, const T* __restrict gy,
                               const T* __restrict states, T* __restrict gk, T* __restrict gv,
                               T* __restrict gu_out, T* __restrict gw_out, int64_t tokens, int64_t dim, int64_t n) {
  const int64_t width = kFull ? kBlock : n;
  T ga[kBlock], gb[kBlock], r[kBlock], gu[kBlock], gw[kBlock];
  const T* __restrict last = states + 3 * tokens * kBlock;
  for (int64_t j = 0; j < width; ++j) {
    ga[j] = T(0);
    gb[j] = T(0);
    r[j] = last[2 * kBlock + j];
    gu[j] = T(0);
    gw[j] = T(0);
  }
  for (int64_t t = tokens - 1; t >= 0; --t) {
    const T* __restrict st = states + 3 * t * kBlock;  // state before token t
    const int64_t off = t * dim;
#pragma omp simd
    for (int64_t j = 0; j < width; ++j) {
      const T a = st[j];
      const T b = st[kBlock + j];
      const T p = st[2 * kBlock + j];
      const T kj = k[off + j];
      const T vj = v[off + j];
      const T yj = y[off + j];
      const T rj = r[j];
      const T uk = u[j] + kj;
      const T q = max_(p, uk);
      T e_past, e_now;
      exp_pair(p, uk, e_past, e_now);
      const T e_k = exp_floor(kj - rj);
      const T e_w = exp_floor(p - w[j] - rj);
      const T c = gy[off + j] / (e_now + e_past * b);  // C = c_t e^q
      T direct = c * e_now;                            // c_t e^{u+k_t}
      gv[off + j] = direct + ga[j] * e_k;
      direct = direct * (vj - yj);
      gu[j] += direct;
      gk[off + j] = direct + e_k * (gb[j] + ga[j] * vj);
      gw[j] += e_w * (ga[j] * a) + e_w * (gb[j] * b);
      // Carry to token t - 1 (unused after t = 0): r' = min(r + w, q), and
      // (e^{r'-r-w}, e^{r'-q}) is exp_pair of the negated arguments.
      const T r_decayed = rj + w[j];
      T carry, fresh;
      exp_pair(-r_decayed, -q, carry, fresh);
      ga[j] = ga[j] * carry + fresh * c;
      gb[j] = gb[j] * carry - fresh * (c * yj);
      r[j] = min_(r_decayed, q);
    }
  }
  for (int64_t j = 0; j < width; ++j) {
    gu_out[j] = gu[j];
    gw_out[j] = gw[j];
  }
}

// Pointers and sizes of one call. Work units are (batch row, channel block) pairs,
// numbered batch-major.
template <typename T>
struct Problem {
  const T* w;
  const T* u;
  const T* k;
  const T* v;
  const T* y;   // backward: the forward output
  const T* gy;  // backward: dL/dy
  T* out;       // forward: y
  T* gk;
  T* gv;
  T* gu;  // (B, D) partial sums of dL/du
  T* gw;  // (B, D) partial sums of -dL/dw
  int64_t tokens;
  int64_t dim;
  int64_t blocks;  // channel blocks per batch row
};

template <typename T>
SDIT_INLINE void forward_range(const Problem<T>& pr, int64_t begin, int64_t end) {
  for (int64_t unit = begin; unit < end; ++unit) {
    const int64_t row = unit / pr.blocks;
    const int64_t d0 = (unit % pr.blocks) * kBlock;
    const int64_t n = std::min(kBlock, pr.dim - d0);
    const int64_t off = row * pr.tokens * pr.dim + d0;
    if (n == kBlock) {
      forward_unit<T, true, false>(pr.w + d0, pr.u + d0, pr.k + off, pr.v + off, pr.out + off, nullptr, pr.tokens,
                                   pr.dim, n);
    } else {
      forward_unit<T, false, false>(pr.w + d0, pr.u + d0, pr.k + off, pr.v + off, pr.out + off, nullptr, pr.tokens,
                                    pr.dim, n);
    }
  }
}

// `states`: scratch for one unit, 3 (tokens + 1) kBlock values.
template <typename T>
SDIT_INLINE void backward_range(const Problem<T>& pr, int64_t begin, int64_t end, T* states) {
  for (int64_t unit = begin; unit < end; ++unit) {
    const int64_t row = unit / pr.blocks;
    const int64_t d0 = (unit % pr.blocks) * kBlock;
    const int64_t n = std::min(kBlock, pr.dim - d0);
    const int64_t off = row * pr.tokens * pr.dim + d0;
    const int64_t part = row * pr.dim + d0;
    if (n == kBlock) {
      forward_unit<T, true, true>(pr.w + d0, pr.u + d0, pr.k + off, pr.v + off, nullptr, states, pr.tokens, pr.dim,
                                  n, pr.y + off, pr.gy + off);
      backward_unit<T, true>(pr.w + d0, pr.u + d0, pr.k + off, pr.v + off, pr.y + off, pr.gy + off, states,
                             pr.gk + off, pr.gv + off, pr.gu + part, pr.gw + part, pr.tokens, pr.dim, n);
    } else {
      forward_unit<T, false, true>(pr.w + d0, pr.u + d0, pr.k + off, pr.v + off, nullptr, states, pr.tokens, pr.dim,
                                   n, pr.y + off, pr.gy + off);
      backward_unit<T, false>(pr.w + d0, pr.u + d0, pr.k + off, pr.v + off, pr.y + off, pr.gy + off, states,
                              pr.gk + off, pr.gv + off, pr.gu + part, pr.gw + part, pr.tokens, pr.dim, n);
    }
  }
}

// Instruction sets of the float32 loops, best last.
enum Isa : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };
const char* const kIsaNames[] = {"baseline", "avx2", "avx512"};

#define SDIT_FLOAT_ENTRY_POINTS(SUFFIX, ATTR)                                                     \
  ATTR void forward_float_##SUFFIX(const Problem<float>& pr, int64_t begin, int64_t end) {       \
    forward_range<float>(pr, begin, end);                                                         \
  }                                                                                               \
  ATTR void backward_float_##SUFFIX(const Problem<float>& pr, int64_t begin, int64_t end, float* st) { \
    backward_range<float>(pr, begin, end, st);                                                    \
  }

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define SDIT_X86_DISPATCH 1
#else
#define SDIT_X86_DISPATCH 0
#endif

SDIT_FLOAT_ENTRY_POINTS(baseline, )
#if SDIT_X86_DISPATCH
SDIT_FLOAT_ENTRY_POINTS(avx2, __attribute__((target("avx2,fma"))))
SDIT_FLOAT_ENTRY_POINTS(avx512, __attribute__((target("avx512f,avx2,fma"))))
#else
// Never selected (best_isa is the baseline); aliases keep the dispatch below uniform.
void forward_float_avx2(const Problem<float>& pr, int64_t b, int64_t e) { forward_float_baseline(pr, b, e); }
void forward_float_avx512(const Problem<float>& pr, int64_t b, int64_t e) { forward_float_baseline(pr, b, e); }
void backward_float_avx2(const Problem<float>& pr, int64_t b, int64_t e, float* st) {
  backward_float_baseline(pr, b, e, st);
}
void backward_float_avx512(const Problem<float>& pr, int64_t b, int64_t e, float* st) {
  backward_float_baseline(pr, b, e, st);
}
#endif

// The best instruction set this CPU (and OS: libgcc checks the saved vector state) runs.
Isa best_isa() {
#if SDIT_X86_DISPATCH
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return kAvx2;
#endif
  return kBaseline;
}

std::atomic<int>& current_isa() {
  static std::atomic<int> isa{best_isa()};
  return isa;
}

template <typename T>
void run_forward(const Problem<T>& pr, int64_t begin, int64_t end) {
  if constexpr (std::is_same_v<T, float>) {
    switch (current_isa().load()) {
      case kAvx512:
        return forward_float_avx512(pr, begin, end);
      case kAvx2:
        return forward_float_avx2(pr, begin, end);
      default:
        return forward_float_baseline(pr, begin, end);
    }
  } else {
    forward_range<T>(pr, begin, end);
  }
}

template <typename T>
void run_backward(const Problem<T>& pr, int64_t begin, int64_t end, T* states) {
  if constexpr (std::is_same_v<T, float>) {
    switch (current_isa().load()) {
      case kAvx512:
        return backward_float_avx512(pr, begin, end, states);
      case kAvx2:
        return backward_float_avx2(pr, begin, end, states);
      default:
        return backward_float_baseline(pr, begin, end, states);
    }
  } else {
    backward_range<T>(pr, begin, end, states);
  }
}

void check_inputs(const at::Tensor& w, const at::Tensor& u, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(k.dim() == 3, "wkv: k must be (B, N, D), got ", k.sizes());
  TORCH_CHECK(v.sizes() == k.sizes(), "wkv: v ", v.sizes(), " must match k ", k.sizes());
  TORCH_CHECK(w.dim() == 1 && w.size(0) == k.size(2), "wkv: w must be (D,), got ", w.sizes());
  TORCH_CHECK(u.dim() == 1 && u.size(0) == k.size(2), "wkv: u must be (D,), got ", u.sizes());
  for (const at::Tensor* t : {&w, &u, &k, &v}) {
    TORCH_CHECK(t->device().is_cpu(), "wkv_cpu: tensors must be on the CPU, got ", t->device());
    TORCH_CHECK(t->scalar_type() == k.scalar_type(), "wkv_cpu: dtypes differ: ", t->scalar_type(), " vs ",
                k.scalar_type());
  }
}

// Units per parallel_for chunk at least: a unit is already tokens x kBlock steps.
constexpr int64_t kGrain = 1;

at::Tensor wkv_forward(const at::Tensor& w_in, const at::Tensor& u_in, const at::Tensor& k_in,
                       const at::Tensor& v_in) {
  check_inputs(w_in, u_in, k_in, v_in);
  const at::Tensor w = w_in.contiguous(), u = u_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  at::Tensor y = at::empty_like(k, at::MemoryFormat::Contiguous);
  if (y.numel() == 0) return y;
  const int64_t batch = k.size(0), tokens = k.size(1), dim = k.size(2);
  const int64_t blocks = (dim + kBlock - 1) / kBlock;
  AT_DISPATCH_FLOATING_TYPES(k.scalar_type(), "wkv_forward", [&] {
    Problem<scalar_t> pr{};
    pr.w = w.data_ptr<scalar_t>();
    pr.u = u.data_ptr<scalar_t>();
    pr.k = k.data_ptr<scalar_t>();
    pr.v = v.data_ptr<scalar_t>();
    pr.out = y.data_ptr<scalar_t>();
    pr.tokens = tokens;
    pr.dim = dim;
    pr.blocks = blocks;
    at::parallel_for(0, batch * blocks, kGrain,
                     [&](int64_t begin, int64_t end) { run_forward<scalar_t>(pr, begin, end); });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> wkv_backward(const at::Tensor& w_in,
                                                                        const at::Tensor& u_in,
                                                                        const at::Tensor& k_in,
                                                                        const at::Tensor& v_in,
                                                                        const at::Tensor& y_in,
                                                                        const at::Tensor& gy_in) {
  check_inputs(w_in, u_in, k_in, v_in);
  TORCH_CHECK(y_in.sizes() == k_in.sizes() && gy_in.sizes() == k_in.sizes(),
              "wkv_backward: y and grad_y must match k ", k_in.sizes());
  TORCH_CHECK(y_in.scalar_type() == k_in.scalar_type() && gy_in.scalar_type() == k_in.scalar_type(),
              "wkv_backward: y and grad_y must have k's dtype");
  TORCH_CHECK(y_in.device().is_cpu() && gy_in.device().is_cpu(), "wkv_cpu: tensors must be on the CPU");
  const at::Tensor w = w_in.contiguous(), u = u_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const at::Tensor y = y_in.contiguous(), gy = gy_in.contiguous();
  const int64_t batch = k.size(0), tokens = k.size(1), dim = k.size(2);
  const int64_t blocks = (dim + kBlock - 1) / kBlock;
  at::Tensor gk = at::empty_like(k, at::MemoryFormat::Contiguous);
  at::Tensor gv = at::empty_like(v, at::MemoryFormat::Contiguous);
  at::Tensor gu_part = at::zeros({batch, dim}, k.options());  // (B, D), summed over B below
  at::Tensor gw_part = at::zeros({batch, dim}, k.options());
  if (k.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(k.scalar_type(), "wkv_backward", [&] {
      Problem<scalar_t> pr{};
      pr.w = w.data_ptr<scalar_t>();
      pr.u = u.data_ptr<scalar_t>();
      pr.k = k.data_ptr<scalar_t>();
      pr.v = v.data_ptr<scalar_t>();
      pr.y = y.data_ptr<scalar_t>();
      pr.gy = gy.data_ptr<scalar_t>();
      pr.gk = gk.data_ptr<scalar_t>();
      pr.gv = gv.data_ptr<scalar_t>();
      pr.gu = gu_part.data_ptr<scalar_t>();
      pr.gw = gw_part.data_ptr<scalar_t>();
      pr.tokens = tokens;
      pr.dim = dim;
      pr.blocks = blocks;
      at::parallel_for(0, batch * blocks, kGrain, [&](int64_t begin, int64_t end) {
        std::vector<scalar_t> states(static_cast<size_t>(3 * (tokens + 1) * kBlock));
        run_backward<scalar_t>(pr, begin, end, states.data());
      });
    });
  }
  // The units accumulated -dL/dw (see backward_unit); the batch sums are taken here.
  return {gw_part.sum(0).neg_(), gu_part.sum(0), gk, gv};
}

std::string isa_name() { return kIsaNames[current_isa().load()]; }

// Selects the float32 loops (for tests and benchmarks): "baseline", "avx2", "avx512"
// or "best"; one the CPU lacks is refused.
std::string set_isa(const std::string& name) {
  const Isa best = best_isa();
  int chosen = -1;
  if (name == "best") chosen = best;
  for (int i = 0; i <= kAvx512; ++i) {
    if (name == kIsaNames[i]) chosen = i;
  }
  TORCH_CHECK(chosen >= 0, "wkv_cpu.set_isa: unknown instruction set '", name, "'");
  TORCH_CHECK(chosen <= best, "wkv_cpu.set_isa: this CPU lacks ", name, " (best: ", kIsaNames[best], ")");
  current_isa().store(chosen);
  return isa_name();
}

std::vector<std::string> supported_isas() {
  std::vector<std::string> out;
  for (int i = 0; i <= best_isa(); ++i) out.emplace_back(kIsaNames[i]);
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "RWKV-4 WKV operator on CPU (sdit)";
  m.def("forward", &wkv_forward, "WKV forward: (w, u, k, v) -> y", pybind11::arg("w"), pybind11::arg("u"),
        pybind11::arg("k"), pybind11::arg("v"));
  m.def("backward", &wkv_backward, "WKV backward: (w, u, k, v, y, grad_y) -> (grad_w, grad_u, grad_k, grad_v)",
        pybind11::arg("w"), pybind11::arg("u"), pybind11::arg("k"), pybind11::arg("v"), pybind11::arg("y"),
        pybind11::arg("grad_y"));
  m.def("isa", &isa_name, "Instruction set of the float32 loops in use");
  m.def("set_isa", &set_isa, "Select the float32 loops: baseline, avx2, avx512 or best", pybind11::arg("name"));
  m.def("supported_isas", &supported_isas, "Instruction sets this CPU runs, best last");
}
