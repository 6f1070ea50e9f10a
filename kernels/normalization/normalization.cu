// GroupNorm, SiLU, ReLU and LeakyReLU on the GPU: reference.py's functions as CUDA kernels.
//
// Compiled at run time by cupy.RawModule (gpu_cupy.py). Read reference.py first: the formulas
// are there; this file lays the same work out for the GPU. The point is the number of launches:
// the reference's array code makes a dozen CuPy kernels for a GroupNorm and four for a SiLU, and
// a UNet step on a GPU is bound by launches, not by memory.
//
// The activations are elementwise grid-stride loops, one element per thread and iteration, with
// the reference's formulas in the arrays' dtype.
//
// GroupNorm on x (N, C, S) (S: the spatial size), G groups of Cg = C / G channels, M = Cg * S
// values per group, in three launches forward and two backward (besides zeroing the sums):
// - gn_sums: thread (row, part), row = n * C + c, sums the elements s = part, part + P, ... of
//   row (P parts per row: neighbouring threads read neighbouring elements), in double, then adds
//   its partial sums to its group's (and, backward, its channel's) with atomicAdd. Forward: the
//   sums of d = x - K and d * d, with K the group's first element (a shift that keeps the
//   one-pass variance accurate when |mean| >> std). Backward: per channel sum dy and
//   sum dy * xhat, per group sum dy * w and sum dy * w * xhat.
// - gn_stats (forward): mean and rstd per group from the sums, in double, stored in the dtype.
// - gn_forward / gn_backward_input: elementwise, xhat recomputed from mean and rstd.
// The order of the atomic additions varies from run to run, so the sums can differ in their last
// double bits between runs; in float32 results that is below rounding.
//
// NOTE: only built-in types and functions: NVRTC compiles this without the C++ standard headers.

#define ACT_SILU 0
#define ACT_RELU 1
#define ACT_LEAKY_RELU 2

template <typename T>
__device__ __forceinline__ T sigmoid(T x) {  // reference._sigmoid: from e = exp(-|x|) <= 1, no overflow
    T e = exp(-fabs(x));
    T r = (T)1 / ((T)1 + e);
    return x >= (T)0 ? r : e * r;
}

template <typename T, int ACT>
__device__ __forceinline__ T act_forward(T x, T slope) {
    if (ACT == ACT_SILU) return x * sigmoid(x);
    if (ACT == ACT_RELU) return x > (T)0 ? x : (x != x ? x : (T)0);  // max(x, 0), NaN kept
    return x > (T)0 ? x : x * slope;
}

// The backward pass from the forward's input x (ReLU: from its output y, which has the same sign test).
template <typename T, int ACT>
__device__ __forceinline__ T act_backward(T g, T x, T slope) {
    if (ACT == ACT_SILU) {
        T s = sigmoid(x);
        return g * (s * ((T)1 + x * ((T)1 - s)));
    }
    if (ACT == ACT_RELU) return g * (T)(x > (T)0);  // times 0: a NaN gradient stays NaN
    return x > (T)0 ? g : (x < (T)0 ? g * slope : (T)0 * g);
}

#define GRID_STRIDE(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

#define TINYGEN_ACT_KERNELS(NAME, ACT, T, SUFFIX)                                                                \
    extern "C" __global__ void NAME##_forward_##SUFFIX(const T* x, T* y, long long n, T slope) {                \
        GRID_STRIDE(i, n) y[i] = act_forward<T, ACT>(x[i], slope);                                              \
    }                                                                                                         \
    extern "C" __global__ void NAME##_backward_##SUFFIX(const T* g, const T* x, T* dx, long long n, T slope) { \
        GRID_STRIDE(i, n) dx[i] = act_backward<T, ACT>(g[i], x[i], slope);                                      \
    }

// --- GroupNorm -------------------------------------------------------------------------------------------

// Forward sums: acc[2 * group] += sum (x - K), acc[2 * group + 1] += sum (x - K)^2.
template <typename T>
__device__ __forceinline__ void gn_sums_forward(const T* x, double* acc, long long rows, long long C, long long S,
                                                long long Cg, long long parts) {
    GRID_STRIDE(q, rows * parts) {
        long long row = q / parts, part = q % parts;
        long long n = row / C, c = row % C, group = row / Cg;  // rows of one group are consecutive
        double shift = (double)x[(n * C + (c / Cg) * Cg) * S];
        double s1 = 0.0, s2 = 0.0;
        for (long long s = part; s < S; s += parts) {
            double d = (double)x[row * S + s] - shift;
            s1 += d;
            s2 += d * d;
        }
        atomicAdd(&acc[2 * group], s1);
        atomicAdd(&acc[2 * group + 1], s2);
    }
}

// mean and rstd per group (N * G of them) from the shifted sums.
template <typename T>
__device__ __forceinline__ void gn_stats(const T* x, const double* acc, T* mean, T* rstd, long long groups,
                                         long long M, double eps) {
    GRID_STRIDE(grp, groups) {
        double shift = (double)x[grp * M];
        double m1 = acc[2 * grp] / (double)M, var = acc[2 * grp + 1] / (double)M - m1 * m1;
        mean[grp] = (T)(shift + m1);
        rstd[grp] = (T)(1.0 / sqrt((var > 0.0 ? var : 0.0) + eps));
    }
}

// y = (x - mean) * rstd * w[c] + b[c], as reference.group_norm_forward rounds it.
template <typename T>
__device__ __forceinline__ void gn_forward(const T* x, const T* w, const T* b, const T* mean, const T* rstd, T* y,
                                           long long total, long long C, long long S, long long M) {
    GRID_STRIDE(i, total) {
        long long grp = i / M, c = (i / S) % C;
        T xhat = (x[i] - mean[grp]) * rstd[grp];
        y[i] = xhat * w[c] + b[c];
    }
}

// Backward sums: per channel (chan[2c], chan[2c + 1]) += (sum dy, sum dy xhat), per group
// (acc[2 grp], acc[2 grp + 1]) += (sum dy w, sum dy w xhat).
template <typename T>
__device__ __forceinline__ void gn_sums_backward(const T* g, const T* x, const T* w, const T* mean, const T* rstd,
                                                 double* acc, double* chan, long long rows, long long C, long long S,
                                                 long long Cg, long long parts) {
    GRID_STRIDE(q, rows * parts) {
        long long row = q / parts, part = q % parts;
        long long c = row % C, grp = row / Cg;
        T mu = mean[grp], r = rstd[grp];
        double s1 = 0.0, s2 = 0.0;
        for (long long s = part; s < S; s += parts) {
            T xhat = (x[row * S + s] - mu) * r;
            double dy = (double)g[row * S + s];
            s1 += dy;
            s2 += dy * (double)xhat;
        }
        double wc = (double)w[c];
        atomicAdd(&chan[2 * c], s1);
        atomicAdd(&chan[2 * c + 1], s2);
        atomicAdd(&acc[2 * grp], s1 * wc);
        atomicAdd(&acc[2 * grp + 1], s2 * wc);
    }
}

// grad_x = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dy * w[c].
template <typename T>
__device__ __forceinline__ void gn_backward_input(const T* g, const T* x, const T* w, const T* mean, const T* rstd,
                                                  const double* acc, T* dx, long long total, long long C, long long S,
                                                  long long M) {
    GRID_STRIDE(i, total) {
        long long grp = i / M, c = (i / S) % C;
        T r = rstd[grp];
        T xhat = (x[i] - mean[grp]) * r;
        T mean_dxhat = (T)(acc[2 * grp] / (double)M), mean_dxhat_xhat = (T)(acc[2 * grp + 1] / (double)M);
        dx[i] = r * (g[i] * w[c] - mean_dxhat - xhat * mean_dxhat_xhat);
    }
}

// grad_weight[c] = sum dy xhat, grad_bias[c] = sum dy, from the channel sums.
template <typename T>
__device__ __forceinline__ void gn_backward_params(const double* chan, T* gw, T* gb, long long C) {
    GRID_STRIDE(c, C) {
        gb[c] = (T)chan[2 * c];
        gw[c] = (T)chan[2 * c + 1];
    }
}

#define TINYGEN_GN_KERNELS(T, SUFFIX)                                                                            \
    extern "C" __global__ void gn_sums_forward_##SUFFIX(const T* x, double* acc, long long rows, long long C,   \
                                                         long long S, long long Cg, long long parts) {          \
        gn_sums_forward<T>(x, acc, rows, C, S, Cg, parts);                                                     \
    }                                                                                                         \
    extern "C" __global__ void gn_stats_##SUFFIX(const T* x, const double* acc, T* mean, T* rstd,              \
                                                  long long groups, long long M, double eps) {                  \
        gn_stats<T>(x, acc, mean, rstd, groups, M, eps);                                                       \
    }                                                                                                         \
    extern "C" __global__ void gn_forward_##SUFFIX(const T* x, const T* w, const T* b, const T* mean,           \
                                                    const T* rstd, T* y, long long total, long long C,          \
                                                    long long S, long long M) {                                 \
        gn_forward<T>(x, w, b, mean, rstd, y, total, C, S, M);                                                 \
    }                                                                                                         \
    extern "C" __global__ void gn_sums_backward_##SUFFIX(const T* g, const T* x, const T* w, const T* mean,     \
                                                          const T* rstd, double* acc, double* chan,             \
                                                          long long rows, long long C, long long S,             \
                                                          long long Cg, long long parts) {                      \
        gn_sums_backward<T>(g, x, w, mean, rstd, acc, chan, rows, C, S, Cg, parts);                            \
    }                                                                                                         \
    extern "C" __global__ void gn_backward_input_##SUFFIX(const T* g, const T* x, const T* w, const T* mean,    \
                                                           const T* rstd, const double* acc, T* dx,             \
                                                           long long total, long long C, long long S,           \
                                                           long long M) {                                       \
        gn_backward_input<T>(g, x, w, mean, rstd, acc, dx, total, C, S, M);                                    \
    }                                                                                                         \
    extern "C" __global__ void gn_backward_params_##SUFFIX(const double* chan, T* gw, T* gb, long long C) {    \
        gn_backward_params<T>(chan, gw, gb, C);                                                                \
    }

TINYGEN_ACT_KERNELS(silu, ACT_SILU, float, f32)
TINYGEN_ACT_KERNELS(silu, ACT_SILU, double, f64)
TINYGEN_ACT_KERNELS(relu, ACT_RELU, float, f32)
TINYGEN_ACT_KERNELS(relu, ACT_RELU, double, f64)
TINYGEN_ACT_KERNELS(leaky_relu, ACT_LEAKY_RELU, float, f32)
TINYGEN_ACT_KERNELS(leaky_relu, ACT_LEAKY_RELU, double, f64)
TINYGEN_GN_KERNELS(float, f32)
TINYGEN_GN_KERNELS(double, f64)
