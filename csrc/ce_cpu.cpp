// crossent's compiled CPU kernel: categorical cross-entropy forward (+ gradient) in one call.
//
// Computes `crossent.numpy.categorical.ce_rows` (per-row loss and log-sum-exp) and, when a gradient
// buffer is given, `ce_rows_grad` (the formulas are in that module's docstring), for float32 and
// float64 logits, index or probability targets, class weights, ignore_index, label smoothing, z-loss
// and softcap. Exposed through a plain C ABI (no Python or PyTorch headers); the Python side loads it
// with ctypes and passes raw data pointers.
//
// Algorithm, per row of C logits (rows are split statically over OpenMP threads):
//   pass 1  m = max_c z_c                        -- the one read of the row from memory; with a
//           softcap z_c = s*tanh(x_c/s) (vectorised tanh) is formed in the same sweep and kept in a
//           per-thread scratch row for the later passes.
//   pass 2  S = sum_c e_c, e_c = exp(z_c - m)    -- one exp per element; e goes to a per-thread
//           scratch row (L1/L2-resident) when a gradient is wanted.
//   pass 2b (label smoothing / probability targets only) the extra row sums, from cache.
//   pass 3  (gradient only) grad_c = ((coef/S)*e_c - b_c)*g (*(1-(z_c/s)^2)), from the scratch row,
//           written with non-temporal stores: the gradient is written once and never read for
//           ownership.
// Rows of >= 1 KiB prefetch the next row into L2 during pass 2; rows of >= 16 KiB write their gradient
// with non-temporal stores, shorter rows with plain stores (a burst of streamed stores stalls). On request
// (CE_FLAG_PIPELINE) pass 3 of row r runs inside pass 2 of row r+1 (one vector of each per step, two
// scratch rows per thread); it was slower on the Zen 4 machines measured, so it is off by default.
// Bytes moved per element: one read of x (and of q for probability targets) + one write of the grad.
// Nothing is recomputed: exp is evaluated once per element.
//
// Stability: every exponent is z_c - m <= 0. The loss is formed from non-negative pieces,
//   lse - z_c = log S + (m - z_c),
// so a large common offset of the logits cancels nothing. A row whose maximum is not finite
// (+inf, all -inf, all NaN) gets NaN, as in crossent.numpy and torch.log_softmax; a NaN next to a
// finite maximum makes S, hence lse, the loss and the gradient row, NaN the same way.
//
// SIMD: csrc/ce_kernels.inc is written once with GCC vector extensions and compiled three times under
// `#pragma GCC target` (AVX-512 with 64-byte vectors, AVX2+FMA with 32-byte ones, baseline x86-64 with
// 16-byte ones: each copy at its own register width); the AVX-512 copy uses vrndscale/vscalef and
// masked loads in exp and at row edges, the AVX2 copy FMA and VMASKMOV. The best copy the CPU supports
// is picked at run time with __builtin_cpu_supports (a caller may ask for a lower one: `isa`); the
// shipped build uses no -march flag. Other compilers/CPUs get the baseline copy only. Built with
// -ffp-contract=off (FMAs are explicit), so results do not depend on how a loop was split by alignment
// (the tests check that threads, flags and buffer alignment change no bit).
//
// Layouts: the row kernel above takes rows of >= 16 classes; rows of fewer classes and spatial
// (N, C, S) inputs (class stride S, `spatial` in ce_args) run through the column kernels of
// csrc/ce_tiles.inc, vectorised across rows/positions (their header maps their passes and bytes).
//
// Element-wise losses: binary cross-entropy with logits and the KL divergence (per-element loss or
// its sum, and the input gradient, in one pass over contiguous x and target) are the separate entry
// points crossent_binary_f32/_f64 with their own argument block (bin_args); csrc/binary_kernels.inc
// maps their pass and their deterministic sum.
//
// Threads: the caller passes the count (torch.get_num_threads() / os.cpu_count()); calls under
// ~32k elements run on one thread.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#define CE_X86 1
#include <immintrin.h>
#else
#define CE_X86 0
#endif

#define CE_AI inline __attribute__((always_inline))
#define CE_EXPORT extern "C" __attribute__((visibility("default")))

// The argument block shared with Python (src/crossent/_native/__init__.py mirrors it with ctypes).
struct ce_args {
    const void* x;           // (rows, classes) logits, row stride ldx elements, unit class stride
    const void* target;      // (rows,) int64 class indices, or (rows, classes) probabilities (stride ldt)
    const void* weight;      // (classes,) class weights or NULL
    const void* grad_scale;  // (rows,) per-row upstream factor or NULL (then grad_scale_value)
    void* loss;              // (rows,) out or NULL
    void* lse;               // (rows,) out or NULL
    void* grad;              // (rows, classes) out or NULL, row stride ldg; may equal x
    int64_t rows, classes, ldx, ldt, ldg;
    int64_t ignore_index;
    double label_smoothing, z_loss, softcap;  // softcap <= 0 means none
    double grad_scale_value;
    int32_t prob_target, num_threads, isa, flags;
    int64_t spatial;  // 0: rows as above. S > 0: x is (rows, classes, S) with class stride S and batch
                      // stride ldx (likewise a probability target with ldt and grad with ldg); target
                      // (index), grad_scale, loss and lse are (rows, S) contiguous
};

// Instruction sets (macros: the kernel file tests them with #if).
#define CE_ISA_AUTO 0
#define CE_ISA_GENERIC 1
#define CE_ISA_AVX2 2
#define CE_ISA_AVX512 3
// Benchmark switches (results are bitwise the same with any of the first six; NO_TILE / TILE pick the
// path of few-class rows, which rounds differently).
enum { CE_FLAG_NO_STREAM = 1, CE_FLAG_NO_PREFETCH = 2, CE_FLAG_NO_PIPELINE = 4, CE_FLAG_PREFETCH_SHORT = 8,
       CE_FLAG_PIPELINE = 16, CE_FLAG_STREAM_SHORT = 32, CE_FLAG_NO_TILE = 64, CE_FLAG_TILE = 128 };
static const int CE_ABI_VERSION = 3;
// Row-major inputs with at most this many classes run through the transposed tiles of ce_tiles.inc
// (measured, AVX2 and AVX-512, 2 threads: 262144x10 1.0-1.1x the copy floor in tiles, 1.7-4.3x one
// row at a time; at 16 classes, one or two full vectors per row, the row path is as fast or faster)
// (CE_FLAG_NO_TILE / CE_FLAG_TILE force either path, for tests and benchmarks).
static const int64_t CE_TILE_MAX_CLASSES = 15;

// The argument block of the element-wise losses (csrc/binary_kernels.inc; src/crossent/_native/_binary.py
// mirrors it with ctypes): n contiguous elements of x and target of one dtype.
struct bin_args {
    const void* x;           // (n,) input: logits (BCE) or log-probabilities (KL)
    const void* target;      // (n,) target
    const void* weight;      // element i uses weight[i % w_period], or NULL (BCE only)
    const void* pos_weight;  // element i uses pos_weight[i % pw_period], or NULL (BCE only)
    const void* grad_scale;  // (n,) per-element upstream factor or NULL (then grad_scale_value)
    void* loss;              // (n,) per-element loss out, or NULL
    void* grad;              // (n,) gradient out, or NULL
    double* sum;             // the sum of the per-element losses out (one double), or NULL
    int64_t n, w_period, pw_period;  // periods divide n (n itself: a full-size array)
    double grad_scale_value;
    int32_t kind, num_threads, isa, flags;
};
enum { BIN_BCE_LOGITS = 0, BIN_KL = 1, BIN_KL_LOG_TARGET = 2 };
// Elements per partial sum of the element-wise kernels (a multiple of every vector width; the sum's
// grouping, hence its bits, depends on it and on n only).
static const int64_t BIN_BLOCK = 4096;

namespace {

// Threads for a call: the caller's count (<= 0: OpenMP's default), at most one per work item, and one
// below ~32k elements, where a thread team costs more than it saves.
int team_size(int requested, int64_t items, int64_t elements) {
#ifdef _OPENMP
    int nt = requested > 0 ? requested : omp_get_max_threads();
#else
    int nt = 1;
    (void)requested;
#endif
    if (nt > items) nt = (int)items;
    if (elements < (1 << 15)) nt = 1;
    return nt < 1 ? 1 : nt;
}

// work(tid, team) on a team of nt threads. One thread: no OpenMP region at all (entering one, even
// with if(0), and then alternating with PyTorch's own OpenMP runtime made both stall: see run).
template <class F> void run_team(int nt, F& work) {
    if (nt > 1) {
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
        work(omp_get_thread_num(), omp_get_num_threads());
#endif
    } else {
        work(0, 1);
    }
}

// The per-row constants of pass 3.
template <class T> struct GradRow {
    T k;       // coef / S: p_c * coef = k * e_c
    T g;       // upstream factor of the row (0 for an ignored row)
    T beta;    // eps / C (index targets with smoothing)
    T keep;    // 1 - eps (probability targets)
    T spread;  // eps / C (probability targets)
    T cap;     // softcap s
    bool smooth, prob, has_cap;
};

// Options of one call, converted once.
struct Opts {
    int64_t C, ignore;
    int64_t C_pad;  // stride of a thread's two scratch rows: C rounded up to 64 bytes, + 4 KiB of room
                    // to place each row at a chosen address mod 4096
    double eps, zl, cap, wsum;
    bool prob, has_cap;
    int flags;
};

// A row whose maximum is not finite (it holds +inf, or only -inf, or only NaN): as in the reference
// (and torch.log_softmax) z - m is NaN somewhere, so lse is NaN, the loss is NaN (0 for an ignored
// row) and the whole gradient row is NaN (0 * NaN for an ignored row).
template <class T>
__attribute__((noinline)) void nonfinite_row(const Opts& o, bool valid, T* loss, T* lse, T* dst) {
    const T nan = std::numeric_limits<T>::quiet_NaN();
    if (loss) *loss = (o.prob || valid) ? nan : T(0);
    if (lse) *lse = nan;
    if (dst)
        for (int64_t c = 0; c < o.C; ++c) dst[c] = nan;
}

// A weight read with a period: element i uses base[j], j = i mod period, advanced one vector at a
// time through `span` (a multiple of the period). A full-size array is its own period (span > n: j
// never wraps); a shorter one is a copy tiled to span >= 64 elements plus one vector of the widest ISA,
// so a vector of it is one plain load at any j in [0, span).
template <class T> struct Periodic {
    const T* base;
    int64_t span;
};
template <class T>
using bin_fn = void (*)(const bin_args&, const Periodic<T>&, const Periodic<T>&, int64_t, int64_t, double*);

}  // namespace

// The kernels, compiled once per instruction set: the whole call chain of a kernel carries the same
// target, so the AVX-512 build may use intrinsics (GCC only inlines a function into one whose target
// includes the callee's).
#if CE_X86 && defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,bmi,bmi2,f16c")
#define CE_NS ce_avx512
#define CE_ISA CE_ISA_AVX512
#include "ce_kernels.inc"
#undef CE_NS
#undef CE_ISA
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma,bmi,bmi2,f16c")
#define CE_NS ce_avx2
#define CE_ISA CE_ISA_AVX2
#include "ce_kernels.inc"
#undef CE_NS
#undef CE_ISA
#pragma GCC pop_options
#define CE_MULTI_ISA 1
#else
#define CE_MULTI_ISA 0
#endif
#define CE_NS ce_generic
#define CE_ISA CE_ISA_GENERIC
#include "ce_kernels.inc"
#undef CE_NS
#undef CE_ISA

namespace {

int best_isa() {
#if CE_MULTI_ISA
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("fma"))
        return CE_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CE_ISA_AVX2;
#endif
    return CE_ISA_GENERIC;
}

// The ISA actually used for a request: the request if the CPU has it, else the best one below it.
int pick_isa(int requested) {
    const int best = best_isa();
    if (requested <= CE_ISA_AUTO || requested > best) return best;
    return requested;
}

typedef int64_t (*block_fn)(const ce_args&, const Opts&, int64_t, int64_t, void*, void*);
typedef int64_t (*tiles_fn)(const ce_args&, const Opts&, int64_t, int64_t, void*, void*, void*);

template <class T> block_fn block_for(int isa) {
#if CE_MULTI_ISA
    if (isa == CE_ISA_AVX512) return &ce_avx512::block<T>;
    if (isa == CE_ISA_AVX2) return &ce_avx2::block<T>;
#endif
    (void)isa;
    return &ce_generic::block<T>;
}
template <class T> block_fn spatial_for(int isa) {
#if CE_MULTI_ISA
    if (isa == CE_ISA_AVX512) return &ce_avx512::spatial<T>;
    if (isa == CE_ISA_AVX2) return &ce_avx2::spatial<T>;
#endif
    (void)isa;
    return &ce_generic::spatial<T>;
}
template <class T> tiles_fn tiles_for(int isa) {
#if CE_MULTI_ISA
    if (isa == CE_ISA_AVX512) return &ce_avx512::tiles<T>;
    if (isa == CE_ISA_AVX2) return &ce_avx2::tiles<T>;
#endif
    (void)isa;
    return &ce_generic::tiles<T>;
}

void* scratch(int64_t count, size_t item) {
    size_t bytes = ((size_t)count * item + 63) / 64 * 64;
    return std::aligned_alloc(64, bytes ? bytes : 64);
}

// Paths of one call: rows (ce_block), transposed tiles of short rows, or the spatial layout.
enum Path { PATH_ROWS, PATH_TILES, PATH_SPATIAL };

template <class T> int64_t run(const ce_args* a) {
    if (!a || !a->x || !a->target || a->rows < 0 || a->classes < 1 || a->spatial < 0) return -1;
    const int64_t M = a->rows, C = a->classes, S = a->spatial;
    const int64_t span = S > 0 ? C * S : C;  // elements of one row / batch item
    if (a->ldx < span || (a->grad && a->ldg < span) || (a->prob_target && a->ldt < span)) return -1;
    if (M == 0) return 0;
    Opts o;
    o.C = C;
    o.C_pad = ((C * (int64_t)sizeof(T) + 63) / 64 * 64 + 4096) / (int64_t)sizeof(T);
    o.ignore = a->ignore_index;
    o.eps = a->label_smoothing;
    o.zl = a->z_loss;
    o.cap = a->softcap;
    o.has_cap = a->softcap > 0;
    o.prob = a->prob_target != 0;
    o.flags = a->flags;
    o.wsum = (double)C;  // sum of the class weights, in T like the reference's xp.sum(w)
    if (a->weight) {
        const T* w = static_cast<const T*>(a->weight);
        double s = 0.0;
        for (int64_t c = 0; c < C; ++c) s += (double)w[c];
        o.wsum = (double)(T)s;
    }
    const int isa = pick_isa(a->isa);
    Path path = PATH_ROWS;
    if (S > 0) path = PATH_SPATIAL;
    else if ((a->flags & CE_FLAG_TILE) || (C <= CE_TILE_MAX_CLASSES && !(a->flags & CE_FLAG_NO_TILE)))
        path = PATH_TILES;
    const block_fn fn = path == PATH_ROWS ? block_for<T>(isa) : path == PATH_SPATIAL ? spatial_for<T>(isa) : nullptr;
    const tiles_fn tfn = tiles_for<T>(isa);
    // work items: rows, or positions of the flattened (rows, S) grid for the spatial layout
    const int64_t items = path == PATH_SPATIAL ? M * S : M;
    const int64_t vec = 64 / (int64_t)sizeof(T);  // the widest vector: thread boundaries fall on it

    const int nt = team_size(a->num_threads, items, M * C * (S > 0 ? S : 1));

    int64_t bad = std::numeric_limits<int64_t>::max();
    int oom = 0;
    // One thread: no OpenMP region at all. (Entering one, even with if(0), and then alternating with
    // PyTorch's own OpenMP runtime made both stall: a (32, 100) torch cross-entropy took ~70 ms instead
    // of ~60 us when interleaved with kernel calls on a loaded 2-core machine.)
    auto work = [&](int tid, int team) {
        int64_t r0 = items * tid / team, r1 = items * (tid + 1) / team;
        // column paths: boundaries where a single thread's vectors of positions also start (multiples of
        // the widest vector, within a batch item for the spatial layout), so that the grouping of
        // positions into vectors, hence every bit of the result, does not depend on the thread count
        if (path == PATH_TILES) {
            r0 = r0 / vec * vec;
            r1 = tid == team - 1 ? items : r1 / vec * vec;
        } else if (path == PATH_SPATIAL) {
            r0 = r0 / S * S + (r0 % S) / vec * vec;
            r1 = tid == team - 1 ? items : r1 / S * S + (r1 % S) / vec * vec;
        }
        void* e = nullptr;
        void* z = nullptr;
        void* t = nullptr;
        bool ok = true;
        if (path == PATH_ROWS) {
            e = a->grad ? scratch(2 * o.C_pad, sizeof(T)) : nullptr;
            z = o.has_cap ? scratch(2 * o.C_pad, sizeof(T)) : nullptr;
            ok = (!a->grad || e) && (!o.has_cap || z);
        } else {
            e = scratch(C * vec, sizeof(T));
            z = o.has_cap ? scratch(C * vec, sizeof(T)) : nullptr;
            t = path == PATH_TILES ? scratch(3 * C * 4 * vec, sizeof(T)) : nullptr;
            ok = e && (!o.has_cap || z) && (path != PATH_TILES || t);
        }
        if (!ok) {
#pragma omp atomic write
            oom = 1;
        } else if (r1 > r0) {
            const int64_t b = path == PATH_TILES ? tfn(*a, o, r0, r1, e, z, t) : fn(*a, o, r0, r1, e, z);
            if (b >= 0) {
#pragma omp critical(crossent_bad_row)
                if (b < bad) bad = b;
            }
        }
        std::free(e);
        std::free(z);
        std::free(t);
    };
    run_team(nt, work);
    if (oom) return -2;
    return bad == std::numeric_limits<int64_t>::max() ? 0 : bad + 1;
}

template <class T> bin_fn<T> bin_for(int isa, int kind, bool pw, bool loss, bool grad) {
#if CE_MULTI_ISA
    if (isa == CE_ISA_AVX512) return ce_avx512::bin_pick<T>(kind, pw, loss, grad);
    if (isa == CE_ISA_AVX2) return ce_avx2::bin_pick<T>(kind, pw, loss, grad);
#endif
    (void)isa;
    return ce_generic::bin_pick<T>(kind, pw, loss, grad);
}

// A weight of period p (see Periodic): the array itself when p = n, else a tiled copy in `*own`
// (NULL weight: a tiled 1). Returns false when the copy cannot be allocated.
template <class T> bool periodic(const void* w, int64_t period, int64_t n, Periodic<T>* out, T** own) {
    *own = nullptr;
    if (w && period == n) {
        *out = Periodic<T>{static_cast<const T*>(w), n + 64};
        return true;
    }
    const int64_t p = w ? period : 1;
    const int64_t span = (64 + p - 1) / p * p;
    T* buf = static_cast<T*>(scratch(span + 64, sizeof(T)));
    if (!buf) return false;
    const T* src = static_cast<const T*>(w);
    for (int64_t m = 0; m < span + 64; ++m) buf[m] = src ? src[m % p] : T(1);
    *own = buf;
    *out = Periodic<T>{buf, span};
    return true;
}

// One call of the element-wise kernels: whole blocks of BIN_BLOCK elements per thread (static), the
// blocks' partial sums added in block order at the end.
template <class T> int64_t run_binary(const bin_args* a) {
    if (!a || !a->x || !a->target || a->n < 0 || a->kind < BIN_BCE_LOGITS || a->kind > BIN_KL_LOG_TARGET)
        return -1;
    if (!a->loss && !a->sum && !a->grad) return -1;
    const int64_t n = a->n;
    if ((a->weight && (a->w_period < 1 || n % a->w_period)) ||
        (a->pos_weight && (a->pw_period < 1 || n % a->pw_period)))
        return -1;
    if (a->kind != BIN_BCE_LOGITS && (a->weight || a->pos_weight)) return -1;
    if (a->sum) *a->sum = 0.0;
    if (n == 0) return 0;
    const int64_t nb = (n + BIN_BLOCK - 1) / BIN_BLOCK;
    Periodic<T> W, P;
    T* own_w = nullptr;
    T* own_p = nullptr;
    double* partial = a->sum ? static_cast<double*>(scratch(nb, sizeof(double))) : nullptr;
    const bool ok = periodic<T>(a->weight, a->w_period, n, &W, &own_w) &&
                    (!a->pos_weight || periodic<T>(a->pos_weight, a->pw_period, n, &P, &own_p)) &&
                    (!a->sum || partial);
    if (!a->pos_weight) P = Periodic<T>{nullptr, 1};
    if (!ok) {
        std::free(own_w);
        std::free(own_p);
        std::free(partial);
        return -2;
    }
    const bin_fn<T> fn = bin_for<T>(pick_isa(a->isa), a->kind, a->pos_weight != nullptr,
                                    a->loss != nullptr || a->sum != nullptr, a->grad != nullptr);
    const int nt = team_size(a->num_threads, nb, n);
    auto work = [&](int tid, int team) {
        const int64_t b0 = nb * tid / team, b1 = nb * (tid + 1) / team;
        const int64_t i1 = b1 * BIN_BLOCK < n ? b1 * BIN_BLOCK : n;
        if (b1 > b0) fn(*a, W, P, b0 * BIN_BLOCK, i1, partial);
    };
    run_team(nt, work);
    if (a->sum) {
        double s = 0.0;
        for (int64_t b = 0; b < nb; ++b) s += partial[b];
        *a->sum = s;
    }
    std::free(own_w);
    std::free(own_p);
    std::free(partial);
    return 0;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// The C ABI.
// ------------------------------------------------------------------------------------------------

CE_EXPORT int crossent_abi_version(void) { return CE_ABI_VERSION; }
CE_EXPORT int crossent_best_isa(void) { return best_isa(); }
CE_EXPORT int crossent_pick_isa(int requested) { return pick_isa(requested); }
CE_EXPORT int crossent_args_size(void) { return (int)sizeof(ce_args); }

// Returns 0 on success, 1 + the first row (with `spatial`: the first position of the flattened
// (rows, spatial) grid) whose class index is out of range (its loss, lse and gradient are NaN), -1 for
// malformed arguments, -2 when a scratch row could not be allocated.
CE_EXPORT int64_t crossent_ce_f32(const ce_args* a) { return run<float>(a); }
CE_EXPORT int64_t crossent_ce_f64(const ce_args* a) { return run<double>(a); }

CE_EXPORT int crossent_binary_args_size(void) { return (int)sizeof(bin_args); }
// The element-wise losses (binary_kernels.inc). Returns 0 on success, -1 for malformed arguments, -2
// when a scratch buffer could not be allocated.
CE_EXPORT int64_t crossent_binary_f32(const bin_args* a) { return run_binary<float>(a); }
CE_EXPORT int64_t crossent_binary_f64(const bin_args* a) { return run_binary<double>(a); }

CE_EXPORT void crossent_vexp_f32(const float* x, float* y, int64_t n, int isa) {
    isa = pick_isa(isa);
#if CE_MULTI_ISA
    if (isa == CE_ISA_AVX512) return ce_avx512::vexp_array<float>(x, y, n);
    if (isa == CE_ISA_AVX2) return ce_avx2::vexp_array<float>(x, y, n);
#endif
    ce_generic::vexp_array<float>(x, y, n);
}
CE_EXPORT void crossent_vexp_f64(const double* x, double* y, int64_t n, int isa) {
    isa = pick_isa(isa);
#if CE_MULTI_ISA
    if (isa == CE_ISA_AVX512) return ce_avx512::vexp_array<double>(x, y, n);
    if (isa == CE_ISA_AVX2) return ce_avx2::vexp_array<double>(x, y, n);
#endif
    ce_generic::vexp_array<double>(x, y, n);
}
CE_EXPORT void crossent_vlog_f32(const float* x, float* y, int64_t n, int isa) {
    isa = pick_isa(isa);
#if CE_MULTI_ISA
    if (isa == CE_ISA_AVX512) return ce_avx512::vlog_array(x, y, n);
    if (isa == CE_ISA_AVX2) return ce_avx2::vlog_array(x, y, n);
#endif
    ce_generic::vlog_array(x, y, n);
}
CE_EXPORT void crossent_vtanh_f32(const float* x, float* y, int64_t n, int isa) {
    isa = pick_isa(isa);
#if CE_MULTI_ISA
    if (isa == CE_ISA_AVX512) return ce_avx512::vtanh_array<float>(x, y, n);
    if (isa == CE_ISA_AVX2) return ce_avx2::vtanh_array<float>(x, y, n);
#endif
    ce_generic::vtanh_array<float>(x, y, n);
}
CE_EXPORT void crossent_vtanh_f64(const double* x, double* y, int64_t n, int isa) {
    isa = pick_isa(isa);
#if CE_MULTI_ISA
    if (isa == CE_ISA_AVX512) return ce_avx512::vtanh_array<double>(x, y, n);
    if (isa == CE_ISA_AVX2) return ce_avx2::vtanh_array<double>(x, y, n);
#endif
    ce_generic::vtanh_array<double>(x, y, n);
}
