/* The neurons' time loops for CPU tensors, in one pass over memory (spikeacc/kernels/cpu.py
 * builds this file on first use and calls it through ctypes).
 *
 * Every function exists for float (suffix _f32) and double (_f64). Each task owns a chunk
 * of CHUNK neurons and runs all steps over it: the chunk's state stays in cache while each
 * step streams one row of the chunk. The arithmetic is that of the PyTorch reference,
 * operation by operation (Python numbers rounded to the tensor's type first, no fused
 * multiply-add: built with -ffp-contract=off), so forward values are the same bit for bit;
 * the backward's sigmoid uses exp_f32/exp_f64 below, so gradients agree to rounding (the
 * sigmoid's derivative within 4 ulps of its largest value, measured against PyTorch's).
 * Settings are loop-invariant selects or constants of always-inlined loops, so that every
 * inner loop vectorises (check with -fopt-info-vec).
 *
 * LIF (spikeacc/neurons/lif.py, module docstring; the backward is _Window's):
 *     h[t] = lam V[t-1] + rest + g I[t] - V_th s[t-1] ["subtract_late"]
 *     s[t] = H(h[t] - V_th) (h > V_th with strict),   V[t] = reset(h[t], s[t])
 * SAF (spikeacc/methods/saf.py):
 *     U[t] = c[t] u,  s[t] = H(g U[t] - k A[t-1] - V_th),  A_j[t] = lam_j A_j[t-1] + s[t]
 * and spikes packed into bits and back (spikeacc/graph/spike_products.py).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK 1024               /* neurons per task */
#define SCRATCH_BYTES (1 << 18)  /* per-thread scratch of the LIF backward (h of a segment, checkpoints) */
#define MIN_CHUNK 256            /* fewer neurons per task than this: segments of ~sqrt(T) steps instead */
#define ALWAYS_INLINE static inline __attribute__((always_inline))

enum reset_kind { RESET_SUBTRACT = 0, RESET_SUBTRACT_LATE = 1, RESET_HARD = 2, RESET_NONE = 3 };
enum surrogate_kind { SG_SIGMOID = 0, SG_ATAN = 1, SG_FAST_SIGMOID = 2, SG_RECT = 3 };

/* H(h - V_th): h >= V_th, or h > V_th with strict (bitwise, so that loops vectorise). */
#define FIRES(h, v_th, strict) (((h) > (v_th)) | (!(strict) & ((h) == (v_th))))
/* reverse_step's cases: one loop per surrogate and reset term, each with constant settings. */
#define REVERSE_CASE(SUFFIX, SURROGATE, TERM)                                                      \
    case SURROGATE * 4 + TERM: reverse_loop_##SUFFIX(p, grad_spike, h, grad_next, n, SURROGATE, TERM); break;
#define REVERSE_CASES(SUFFIX, SURROGATE)                                                           \
    REVERSE_CASE(SUFFIX, SURROGATE, RESET_SUBTRACT) REVERSE_CASE(SUFFIX, SURROGATE, RESET_SUBTRACT_LATE) \
    REVERSE_CASE(SUFFIX, SURROGATE, RESET_HARD) REVERSE_CASE(SUFFIX, SURROGATE, RESET_NONE)

/* The constants of one LIF population as Python numbers (double); the flags say which
 * terms the reference skips (an exact no-op there, skipped here alike). */
typedef struct {
    double lam, gain, rest, v_th, v_reset, alpha;
    int32_t reset, surrogate, strict, detach_reset, lam_is_one, gain_is_one, rest_is_zero;
} lif_params;

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* a b + c, fused where the CPU has it: only exp uses it, whose rounding is its own anyway. */
#ifdef __FMA__
#define MADD_F32(a, b, c) __builtin_fmaf(a, b, c)
#define MADD_F64(a, b, c) __builtin_fma(a, b, c)
#else
#define MADD_F32(a, b, c) ((a) * (b) + (c))
#define MADD_F64(a, b, c) ((a) * (b) + (c))
#endif

/* exp(x) without libm, so that loops over it vectorise: x = k ln2 + r, |r| <= ln2/2
 * (Cody-Waite), exp(r) by its Taylor series (degree 7 for float, 13 for double), 2^k
 * written into the exponent bits (k read from the low bits of x/ln2 + 1.5 2^p). */
ALWAYS_INLINE float exp_f32(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    const float magic = 12582912.0f;  /* 1.5 * 2^23 */
    float shifted = x * 1.44269504088896341f + magic;
    float k = shifted - magic;
    float r = (x - k * 0.693359375f) - k * -2.12194440e-4f;
    float p = 1.0f / 5040.0f;
    p = MADD_F32(p, r, 1.0f / 720.0f); p = MADD_F32(p, r, 1.0f / 120.0f); p = MADD_F32(p, r, 1.0f / 24.0f);
    p = MADD_F32(p, r, 1.0f / 6.0f); p = MADD_F32(p, r, 0.5f); p = MADD_F32(p, r, 1.0f); p = MADD_F32(p, r, 1.0f);
    int32_t bits;
    memcpy(&bits, &shifted, sizeof bits);
    bits = (int32_t)((uint32_t)(bits + 127) << 23);
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

ALWAYS_INLINE double exp_f64(double x) {
    x = x < -708.0 ? -708.0 : x;
    x = x > 709.0 ? 709.0 : x;
    const double magic = 6755399441055744.0;  /* 1.5 * 2^52 */
    double shifted = x * 1.4426950408889634074 + magic;
    double k = shifted - magic;
    double r = (x - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10;
    double p = 1.0 / 6227020800.0;
    p = MADD_F64(p, r, 1.0 / 479001600.0); p = MADD_F64(p, r, 1.0 / 39916800.0); p = MADD_F64(p, r, 1.0 / 3628800.0);
    p = MADD_F64(p, r, 1.0 / 362880.0); p = MADD_F64(p, r, 1.0 / 40320.0); p = MADD_F64(p, r, 1.0 / 5040.0);
    p = MADD_F64(p, r, 1.0 / 720.0); p = MADD_F64(p, r, 1.0 / 120.0); p = MADD_F64(p, r, 1.0 / 24.0);
    p = MADD_F64(p, r, 1.0 / 6.0); p = MADD_F64(p, r, 0.5); p = MADD_F64(p, r, 1.0); p = MADD_F64(p, r, 1.0);
    int64_t bits;
    memcpy(&bits, &shifted, sizeof bits);
    bits = (int64_t)((uint64_t)(bits + 1023) << 52);
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* One source, two types: REAL is float or double, SUFFIX names the functions. */
#define DEFINE_KERNELS(REAL, SUFFIX, EXP)                                                          \
                                                                                                   \
/* sigma'(x), x = h - V_th: surrogate.py's closed forms (alpha a Python number); `kind` is a    \
 * constant wherever this is inlined. */                                                           \
ALWAYS_INLINE REAL derivative_##SUFFIX(REAL x, const int kind, const double alpha) {               \
    const REAL magnitude = x < 0 ? -x : x;                                                         \
    if (kind == SG_SIGMOID) {                                                                      \
        const REAL sig = (REAL)1 / ((REAL)1 + EXP(-(x * (REAL)alpha)));                            \
        return sig * ((REAL)1 - sig) * (REAL)alpha;                                                \
    }                                                                                              \
    if (kind == SG_ATAN) {                                                                         \
        const REAL scaled = x * (REAL)(0.5 * 3.14159265358979323846 * alpha);                      \
        return (REAL)1 / (scaled * scaled + (REAL)1) * (REAL)(0.5 * alpha);                        \
    }                                                                                              \
    if (kind == SG_FAST_SIGMOID) {                                                                 \
        const REAL denominator = magnitude * (REAL)alpha + (REAL)1;                                \
        return (REAL)1 / (denominator * denominator);                                              \
    }                                                                                              \
    return (REAL)(magnitude < (REAL)(0.5 / alpha)) * (REAL)alpha;                                  \
}                                                                                                  \
                                                                                                   \
/* h[t] of n neurons from V[t-1] (v), s[t-1] (spike) and I[t]: the reference's operations. */      \
static void charge_##SUFFIX(const lif_params *p, REAL *restrict h, const REAL *restrict v,          \
                            const REAL *restrict spike, const REAL *restrict current, int64_t n) { \
    const REAL lam = (REAL)p->lam, rest = (REAL)p->rest, gain = (REAL)p->gain, v_th = (REAL)p->v_th; \
    const int leak = !p->lam_is_one, add_rest = !p->rest_is_zero, scale = !p->gain_is_one;         \
    const int late = p->reset == RESET_SUBTRACT_LATE;                                              \
    for (int64_t i = 0; i < n; i++) {                                                              \
        REAL value = leak ? v[i] * lam : v[i];                                                     \
        value = add_rest ? value + rest : value;                                                   \
        value = value + (scale ? current[i] * gain : current[i]);                                  \
        h[i] = late ? value - spike[i] * v_th : value;                                             \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
/* s[t] = H(h - V_th) and V[t] = reset(h, s) of n neurons. */                                      \
static void fire_and_reset_##SUFFIX(const lif_params *p, const REAL *restrict h,                   \
                                    REAL *restrict spike, REAL *restrict v, int64_t n) {           \
    const REAL v_th = (REAL)p->v_th, v_reset = (REAL)p->v_reset;                                   \
    const int strict = p->strict, reset = p->reset;                                                \
    for (int64_t i = 0; i < n; i++) {                                                              \
        const REAL s = FIRES(h[i], v_th, strict) ? (REAL)1 : (REAL)0;                              \
        spike[i] = s;                                                                              \
        v[i] = reset == RESET_SUBTRACT ? h[i] - s * v_th                                           \
             : (reset == RESET_HARD && s > 0 ? v_reset : h[i]);                                    \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
/* V and s of n neurons at rest. */                                                                \
static void rest_##SUFFIX(const lif_params *p, REAL *v, REAL *spike, int64_t n) {                  \
    const REAL v_init = p->reset == RESET_HARD ? (REAL)p->v_reset : (REAL)0;                       \
    for (int64_t i = 0; i < n; i++) { v[i] = v_init; spike[i] = 0; }                               \
}                                                                                                  \
                                                                                                   \
/* The LIF window forward: current [S, N] (S = 1: the same current at every step) -> spikes      \
 * [T, N], and every membrane h into h_out [T, N] (NULL: none kept). */                            \
void lif_forward_##SUFFIX(const lif_params *p, const REAL *current, int64_t current_steps,        \
                          REAL *spikes, REAL *h_out, int64_t T, int64_t N, int threads) {          \
    const int64_t stride = current_steps == 1 ? 0 : N;                                             \
    _Pragma("omp parallel for num_threads(threads) schedule(static)")                              \
    for (int64_t first = 0; first < N; first += CHUNK) {                                           \
        const int64_t n = min64(CHUNK, N - first);                                                 \
        REAL v[CHUNK], h_local[CHUNK], silent[CHUNK];                                              \
        REAL *spike = spikes + first;                                                              \
        rest_##SUFFIX(p, v, silent, n);                                                            \
        for (int64_t t = 0; t < T; t++, spike += N) {  /* s[t-1] is the row above */               \
            REAL *h = h_out ? h_out + t * N + first : h_local;                                     \
            charge_##SUFFIX(p, h, v, t ? spike - N : silent, current + t * stride + first, n);     \
            fire_and_reset_##SUFFIX(p, h, spike, v, n);                                            \
        }                                                                                          \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
/* gh[t] into grad_next from g_s[t], h[t] and gh[t+1] (0 at t = T - 1) of n neurons (lif.py       \
 * reverse_step): `surrogate` and `term` (the reset's gradient path: RESET_NONE when detached)   \
 * are constants wherever this is inlined. */                                                      \
ALWAYS_INLINE void reverse_loop_##SUFFIX(const lif_params *p, const REAL *restrict grad_spike,     \
                                         const REAL *restrict h, REAL *restrict grad_next,         \
                                         int64_t n, const int surrogate, const int term) {         \
    const REAL lam = (REAL)p->lam, v_th = (REAL)p->v_th, v_reset = (REAL)p->v_reset;               \
    const REAL subtract = (REAL)(-p->lam * p->v_th), late = (REAL)(-p->v_th);                      \
    const int hard = p->reset == RESET_HARD, strict = p->strict;                                   \
    const double alpha = p->alpha;                                                                 \
    for (int64_t i = 0; i < n; i++) {                                                              \
        const REAL g_next = grad_next[i], h_i = h[i];                                              \
        REAL g_s = grad_spike[i];                                                                  \
        if (term == RESET_SUBTRACT) g_s = g_next * subtract + g_s;                                 \
        if (term == RESET_HARD) g_s = (v_reset - h_i) * g_next * lam + g_s;                        \
        if (term == RESET_SUBTRACT_LATE) g_s = g_next * late + g_s;                                \
        const REAL g_h = derivative_##SUFFIX(h_i - v_th, surrogate, alpha) * g_s;                  \
        const int silenced = hard & FIRES(h_i, v_th, strict);  /* dV/dh = 1 - s for a hard reset */ \
        grad_next[i] = g_h + lam * (silenced ? (REAL)0 : g_next);                                  \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
static void reverse_step_##SUFFIX(const lif_params *p, const REAL *restrict grad_spike,            \
                                  const REAL *restrict h, REAL *restrict grad_next, int64_t n) {   \
    const int term = p->detach_reset ? RESET_NONE : p->reset;                                      \
    switch (p->surrogate * 4 + term) {                                                             \
        REVERSE_CASES(SUFFIX, SG_SIGMOID) REVERSE_CASES(SUFFIX, SG_ATAN)                           \
        REVERSE_CASES(SUFFIX, SG_FAST_SIGMOID) REVERSE_CASES(SUFFIX, SG_RECT)                      \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
/* The backward of neurons [first, first + n) for a current [1, N] shared by all steps, the     \
 * membranes recomputed from it: a first pass keeps V and s at the start of every segment of     \
 * `segment` steps but the first (none when one segment holds all T steps); then, from the last  \
 * segment back, each segment's h is recomputed into scratch and walked in reverse, dL/dI summed \
 * over t into grad_current [1, N]. dL/ds rows are grad_stride apart (0: one row for every t). */ \
static void lif_chunk_backward_##SUFFIX(const lif_params *p, const REAL *current,                  \
                                        const REAL *grad_spikes, int64_t grad_stride,              \
                                        REAL *grad_current, int64_t T, int64_t first, int64_t n,   \
                                        REAL *scratch, int64_t segment) {                          \
    REAL grad_next[CHUNK], total[CHUNK], v[CHUNK], spike[CHUNK];                                   \
    REAL *checkpoints = scratch + segment * n;  /* V, s at each segment's start */                 \
    const int64_t last_start = ((T - 1) / segment) * segment;                                      \
    for (int64_t i = 0; i < n; i++) { grad_next[i] = 0; total[i] = 0; }                            \
    rest_##SUFFIX(p, v, spike, n);                                                                 \
    for (int64_t t = 0; ; t++) {                                                                   \
        if (t % segment == 0) {                                                                    \
            memcpy(checkpoints + (t / segment) * 2 * n, v, (size_t)n * sizeof(REAL));              \
            memcpy(checkpoints + (t / segment) * 2 * n + n, spike, (size_t)n * sizeof(REAL));      \
        }                                                                                          \
        if (t == last_start) break;                                                                \
        charge_##SUFFIX(p, scratch, v, spike, current + first, n);                                 \
        fire_and_reset_##SUFFIX(p, scratch, spike, v, n);                                          \
    }                                                                                              \
    for (int64_t start = last_start; start >= 0; start -= segment) {                               \
        const int64_t stop = min64(start + segment, T);                                            \
        memcpy(v, checkpoints + (start / segment) * 2 * n, (size_t)n * sizeof(REAL));              \
        memcpy(spike, checkpoints + (start / segment) * 2 * n + n, (size_t)n * sizeof(REAL));      \
        for (int64_t t = start; t < stop; t++) {                                                   \
            REAL *h_t = scratch + (t - start) * n;                                                 \
            charge_##SUFFIX(p, h_t, v, spike, current + first, n);                                 \
            fire_and_reset_##SUFFIX(p, h_t, spike, v, n);                                          \
        }                                                                                          \
        for (int64_t t = stop - 1; t >= start; t--) {                                              \
            reverse_step_##SUFFIX(p, grad_spikes + t * grad_stride + first, scratch + (t - start) * n, grad_next, n); \
            for (int64_t i = 0; i < n; i++) total[i] = total[i] + grad_next[i];                    \
        }                                                                                          \
    }                                                                                              \
    memcpy(grad_current + first, total, (size_t)n * sizeof(REAL));                                 \
}                                                                                                  \
                                                                                                   \
/* The LIF window backward for a current [1, N] shared by all T steps, from dL/ds [G, N] (G = 1: \
 * the same at every step): dL/dI summed over t, [1, N], the membranes recomputed; the gain g is  \
 * applied by the caller. Returns nonzero if the scratch memory could not be allocated. */        \
int lif_backward_##SUFFIX(const lif_params *p, const REAL *current, const REAL *grad_spikes,      \
                          int64_t grad_steps, REAL *grad_current, int64_t T, int64_t N,            \
                          int threads) {                                                           \
    const int64_t grad_stride = grad_steps == 1 ? 0 : N;                                           \
    int64_t segment = T, chunk = CHUNK;  /* one segment (no checkpoint pass) while it fits */      \
    while (chunk > MIN_CHUNK && (T + 2) * chunk * (int64_t)sizeof(REAL) > SCRATCH_BYTES) chunk /= 2; \
    if ((T + 2) * chunk * (int64_t)sizeof(REAL) > SCRATCH_BYTES) {  /* ~sqrt(T) steps a segment */  \
        segment = 1;                                                                               \
        while (segment * segment < T) segment++;                                                   \
        chunk = CHUNK;                                                                             \
    }                                                                                              \
    const int64_t rows = segment + 2 * ((T + segment - 1) / segment);  /* h of a segment, V and s */ \
    while (chunk > 64 && rows * chunk * (int64_t)sizeof(REAL) > SCRATCH_BYTES) chunk /= 2;         \
    int failed = 0;                                                                                \
    _Pragma("omp parallel num_threads(threads)")                                                   \
    {                                                                                              \
        REAL *scratch = malloc((size_t)(rows * chunk) * sizeof(REAL));                             \
        if (!scratch) {                                                                            \
            _Pragma("omp atomic write")                                                            \
            failed = 1;                                                                            \
        }                                                                                          \
        _Pragma("omp for schedule(static)")                                                        \
        for (int64_t first = 0; first < N; first += chunk)                                         \
            if (scratch)                                                                           \
                lif_chunk_backward_##SUFFIX(p, current, grad_spikes, grad_stride, grad_current, T, first, \
                                            min64(chunk, N - first), scratch, segment);            \
        free(scratch);                                                                             \
    }                                                                                              \
    return failed;                                                                                 \
}                                                                                                  \
                                                                                                   \
/* The LIF window backward from the membranes h [T, N] its forward kept (a current per step):   \
 * dL/dI [T, N] from dL/ds [G, N] (G = 1: the same at every step); the gain g is applied by the  \
 * caller. */                                                                                      \
void lif_backward_saved_##SUFFIX(const lif_params *p, const REAL *h, const REAL *grad_spikes,     \
                                 int64_t grad_steps, REAL *grad_current, int64_t T, int64_t N,     \
                                 int threads) {                                                    \
    const int64_t grad_stride = grad_steps == 1 ? 0 : N;                                           \
    _Pragma("omp parallel for num_threads(threads) schedule(static)")                              \
    for (int64_t first = 0; first < N; first += CHUNK) {                                           \
        const int64_t n = min64(CHUNK, N - first);                                                 \
        REAL grad_next[CHUNK];                                                                     \
        for (int64_t i = 0; i < n; i++) grad_next[i] = 0;                                          \
        for (int64_t t = T - 1; t >= 0; t--) {                                                     \
            reverse_step_##SUFFIX(p, grad_spikes + t * grad_stride + first, h + t * N + first, grad_next, n); \
            memcpy(grad_current + t * N + first, grad_next, (size_t)n * sizeof(REAL));            \
        }                                                                                          \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
/* One SAF step of n neurons: s = H(g U - k A_own - V_th) with U = scale u, then A_own =        \
 * lam A_own + s from own_in into own_out (which may be own_in), or A_own = s at the `first`      \
 * step (no own_in: the reference fires on g U alone); s into spike; `keep`: g U - k A_own into    \
 * value_out too. Constants wherever this is inlined. */                                           \
ALWAYS_INLINE void saf_step_##SUFFIX(const REAL *restrict u, REAL scale, const REAL *own_in,       \
                                     REAL *own_out, REAL lam, REAL *restrict spike,                \
                                     REAL *restrict value_out, REAL g, int gain_is_one, REAL k,    \
                                     REAL v_th, int strict, int64_t n, const int first,            \
                                     const int keep) {                                             \
    for (int64_t i = 0; i < n; i++) {                                                              \
        REAL value = scale * u[i];                                                                 \
        value = gain_is_one ? value : g * value;                                                   \
        if (!first) value = value - k * own_in[i];                                                 \
        if (keep) value_out[i] = value;                                                            \
        const REAL s = FIRES(value, v_th, strict) ? (REAL)1 : (REAL)0;                             \
        spike[i] = s;                                                                              \
        own_out[i] = first ? s : lam * own_in[i] + s;                                              \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
/* SAF steps of N neurons, the sums A_j (one array of N per leak j) from acc_in (NULL: no spike \
 * yet) into acc_out (an array may be its acc_in one): for each of `steps` steps, U = scales[t] \
 * u (the unit value of a static input's current, or one step's U_hat with scale 1), s = H(g U  \
 * - k A_own - V_th), A_j = lam_j A_j + s (A_j = s without acc_in); counts (NULL: none) gains s; \
 * last (NULL: none) gets the last step's g U - k A_own, spikes (NULL: none) its s. */            \
void saf_steps_##SUFFIX(const REAL *u, const double *scales, int64_t steps, const double *leak,   \
                        int64_t leaks, int64_t own, const REAL **acc_in, REAL **acc_out,           \
                        double gain, int gain_is_one, double k, double v_th, int strict,           \
                        REAL *counts, REAL *last, REAL *spikes, int64_t N, int threads) {          \
    const REAL g = (REAL)gain, reset = (REAL)k, threshold = (REAL)v_th, lam = (REAL)leak[own];     \
    _Pragma("omp parallel for num_threads(threads) schedule(static)")                              \
    for (int64_t first = 0; first < N; first += CHUNK) {                                           \
        const int64_t n = min64(CHUNK, N - first);                                                 \
        REAL spike_buffer[CHUNK];                                                                  \
        REAL *spike = spikes && steps == 1 ? spikes + first : spike_buffer;                        \
        REAL *own_out = acc_out[own] + first;                                                      \
        for (int64_t t = 0; t < steps; t++) {                                                      \
            const REAL scale = (REAL)scales[t];                                                    \
            const int fresh = t == 0 && !acc_in;  /* no sums yet */                                \
            const REAL *own_in = t ? own_out : (acc_in ? acc_in[own] + first : NULL);              \
            REAL *value_out = last && t == steps - 1 ? last + first : NULL;                        \
            if (fresh && value_out)                                                                \
                saf_step_##SUFFIX(u + first, scale, own_in, own_out, lam, spike, value_out, g,     \
                                  gain_is_one, reset, threshold, strict, n, 1, 1);                 \
            else if (fresh)                                                                        \
                saf_step_##SUFFIX(u + first, scale, own_in, own_out, lam, spike, NULL, g,          \
                                  gain_is_one, reset, threshold, strict, n, 1, 0);                 \
            else if (value_out)                                                                    \
                saf_step_##SUFFIX(u + first, scale, own_in, own_out, lam, spike, value_out, g,     \
                                  gain_is_one, reset, threshold, strict, n, 0, 1);                 \
            else                                                                                   \
                saf_step_##SUFFIX(u + first, scale, own_in, own_out, lam, spike, NULL, g,          \
                                  gain_is_one, reset, threshold, strict, n, 0, 0);                 \
            for (int64_t j = 0; j < leaks; j++) {  /* the sums with other leaks */                 \
                if (j == own) continue;                                                            \
                REAL *row = acc_out[j] + first;                                                    \
                const REAL *in = t ? row : (acc_in ? acc_in[j] + first : NULL);                    \
                const REAL other = (REAL)leak[j];                                                  \
                if (!in) memcpy(row, spike, (size_t)n * sizeof(REAL));                             \
                else for (int64_t i = 0; i < n; i++) row[i] = other * in[i] + spike[i];            \
            }                                                                                      \
            if (counts) for (int64_t i = 0; i < n; i++) counts[first + i] = counts[first + i] + spike[i]; \
        }                                                                                          \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
/* The gradient of the last SAF step into its unit value: out = (sigma'(x - V_th) grad) g c    \
 * (x: the step's fire value), in the reference's order; `surrogate` a constant when inlined. */   \
ALWAYS_INLINE void saf_last_loop_##SUFFIX(const REAL *restrict x, const REAL *restrict grad,       \
                                          REAL *restrict out, REAL v_th, double alpha, REAL g,     \
                                          int gain_is_one, REAL c, int64_t n, const int surrogate) { \
    for (int64_t i = 0; i < n; i++) {                                                              \
        const REAL value = derivative_##SUFFIX(x[i] - v_th, surrogate, alpha) * grad[i];           \
        out[i] = (gain_is_one ? value : value * g) * c;                                            \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
void saf_last_backward_##SUFFIX(const REAL *x, const REAL *grad, REAL *out, double v_th, int surrogate, \
                                double alpha, double gain, int gain_is_one, double scale, int64_t N, \
                                int threads) {                                                     \
    const REAL threshold = (REAL)v_th, g = (REAL)gain, c = (REAL)scale;                            \
    _Pragma("omp parallel for num_threads(threads) schedule(static)")                              \
    for (int64_t first = 0; first < N; first += CHUNK) {                                           \
        const int64_t n = min64(CHUNK, N - first);                                                 \
        const REAL *x_part = x + first, *grad_part = grad + first;                                 \
        REAL *out_part = out + first;                                                              \
        if (surrogate == SG_SIGMOID)                                                               \
            saf_last_loop_##SUFFIX(x_part, grad_part, out_part, threshold, alpha, g, gain_is_one, c, n, SG_SIGMOID); \
        else if (surrogate == SG_ATAN)                                                             \
            saf_last_loop_##SUFFIX(x_part, grad_part, out_part, threshold, alpha, g, gain_is_one, c, n, SG_ATAN); \
        else if (surrogate == SG_FAST_SIGMOID)                                                     \
            saf_last_loop_##SUFFIX(x_part, grad_part, out_part, threshold, alpha, g, gain_is_one, c, n, SG_FAST_SIGMOID); \
        else                                                                                       \
            saf_last_loop_##SUFFIX(x_part, grad_part, out_part, threshold, alpha, g, gain_is_one, c, n, SG_RECT); \
    }                                                                                              \
} \
                                                                                                   \
/* Spikes as bits: bit k of byte j is x[8 j + k] != 0 (numpy's packbits, bitorder "little"),   \
 * and back to 0/1 values; n elements, the last byte padded with zeros. */                         \
void pack_bits_##SUFFIX(const REAL *x, uint8_t *bits, int64_t n, int threads) {                   \
    _Pragma("omp parallel for num_threads(threads) schedule(static)")                              \
    for (int64_t j = 0; j < n / 8; j++) {                                                          \
        const REAL *eight = x + 8 * j;                                                             \
        uint8_t byte = 0;                                                                          \
        for (int k = 0; k < 8; k++) byte |= (uint8_t)((eight[k] != 0) << k);                       \
        bits[j] = byte;                                                                            \
    }                                                                                              \
    if (n % 8) {                                                                                   \
        uint8_t byte = 0;                                                                          \
        for (int64_t i = n - n % 8; i < n; i++) byte |= (uint8_t)((x[i] != 0) << (i % 8));         \
        bits[n / 8] = byte;                                                                        \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
void unpack_bits_##SUFFIX(const uint8_t *bits, REAL *x, int64_t n, int threads) {                 \
    _Pragma("omp parallel for num_threads(threads) schedule(static)")                              \
    for (int64_t j = 0; j < n / 8; j++) {                                                          \
        REAL *eight = x + 8 * j;                                                                   \
        const unsigned byte = bits[j];                                                             \
        for (int k = 0; k < 8; k++) eight[k] = (REAL)((byte >> k) & 1u);                           \
    }                                                                                              \
    for (int64_t i = n - n % 8; i < n; i++) x[i] = (REAL)((bits[i / 8] >> (i % 8)) & 1u);          \
}

DEFINE_KERNELS(float, f32, exp_f32)
DEFINE_KERNELS(double, f64, exp_f64)
