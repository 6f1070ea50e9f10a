// The optimizers' work on the GPU, each a single CUDA kernel over ALL of a model's tensors at once:
// Adam's update (one pass over p, g, m and v), the EMA's update, the partial sums of squares
// behind clip_grad_norm_, and the scaling of the gradients that follows it.
//
// Compiled at run time by cupy.RawModule (gpu_cupy.py) with --fmad=false, so that no product is
// contracted into a fused multiply-add: each element goes through the reference's operations in
// its order and in the arrays' dtype, and the results are the reference's to the last bit (the
// per-call numbers, e.g. lr / (1 - beta1^t), are computed in Python, in double precision as the
// reference does, and cast to the dtype as NumPy casts a Python float).
//
// Many tensors, one launch: a DDPM UNet has about a hundred parameter tensors, mostly small, and
// a launch per tensor costs more than the arithmetic. The tensors are laid end to end in one index
// space 0 .. total-1 and described by a table (int64, one row per tensor): column 0 the tensor's
// first index in that space, column 1 its size, then its pointers (and, for Adam, two per-tensor
// numbers stored as the bits of doubles). A thread finds the row of index i by binary search over
// column 0 (rows in order, no empty tensor), then works on element i - start of that row.
//
// Adam, per element, with g the gradient (kernels/optim/reference.py states the same in NumPy):
//     p = p * decay                       (AdamW: decay = 1 - lr * weight_decay)
//     g = g + weight_decay * p            (Adam with an L2 term)
//     m = m * beta1 + (1 - beta1) * g
//     v = v * beta2 + (1 - beta2) * (g * g)
//     p = p - step_size * m / (sqrt(v) / bias2 + eps)
// where step_size = lr / (1 - beta1^t) and bias2 = sqrt(1 - beta2^t), t the tensor's own step.
//
// Every kernel is a grid-stride loop: any grid covers all the work. Each element is read and
// written by one thread, so the updates are in place.
//
// NOTE: only built-in types and functions: NVRTC compiles this without the C++ standard headers.

#define WEIGHT_DECAY_NONE 0
#define WEIGHT_DECAY_L2 1
#define WEIGHT_DECAY_DECOUPLED 2

#define ADAM_WIDTH 8  // start, n, p, g, m, v, step_size (double bits), bias2 (double bits)
#define EMA_WIDTH 4   // start, n, shadow, p
#define ONE_WIDTH 3   // start, n, a

#define GRID_STRIDE(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

// The table row of the tensor holding index i: the last row whose start is <= i.
__device__ __forceinline__ const long long* row_of(const long long* table, int width, int count, long long i) {
    int lo = 0, hi = count - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (table[(long long)mid * width] <= i) lo = mid;
        else hi = mid - 1;
    }
    return table + (long long)lo * width;
}

template <typename T>
__device__ __forceinline__ T* column(const long long* row, int k) {
    return (T*)(unsigned long long)row[k];
}

template <typename T>
__device__ __forceinline__ void adam(const long long* table, int count, long long total, int decay_kind, T decay,
                                     T weight_decay, T beta1, T one_minus_beta1, T beta2, T one_minus_beta2, T eps) {
    GRID_STRIDE(i, total) {
        const long long* row = row_of(table, ADAM_WIDTH, count, i);
        long long j = i - row[0];
        T *p = column<T>(row, 2), *g = column<T>(row, 3), *m = column<T>(row, 4), *v = column<T>(row, 5);
        T step_size = (T)__longlong_as_double(row[6]), bias2 = (T)__longlong_as_double(row[7]);
        T pi = p[j], gi = g[j];
        if (decay_kind == WEIGHT_DECAY_DECOUPLED) pi = pi * decay;
        if (decay_kind == WEIGHT_DECAY_L2) gi = gi + weight_decay * pi;
        T mi = m[j] * beta1 + one_minus_beta1 * gi;
        T vi = v[j] * beta2 + one_minus_beta2 * (gi * gi);
        T denom = sqrt(vi) / bias2 + eps;
        m[j] = mi;
        v[j] = vi;
        p[j] = pi - step_size * mi / denom;
    }
}

// The EMA (reference.ema_update): shadow = shadow + (1 - decay) * (p - shadow).
template <typename T>
__device__ __forceinline__ void ema(const long long* table, int count, long long total, T one_minus_decay) {
    GRID_STRIDE(i, total) {
        const long long* row = row_of(table, EMA_WIDTH, count, i);
        long long j = i - row[0];
        T *shadow = column<T>(row, 2), *p = column<T>(row, 3);
        T si = shadow[j];
        shadow[j] = si + one_minus_decay * (p[j] - si);
    }
}

// partials[s] = the sum, in double, of a^2 over the indices s, s + slots, s + 2 slots, ... of the
// whole index space, for each of the `slots` partial sums (a grid-stride loop over them: the
// launch gives one thread each); the caller adds the partials up with one reduction (no atomics,
// so the total is the same from run to run).
template <typename T>
__device__ __forceinline__ void sum_squares(const long long* table, int count, long long total, double* partials,
                                            long long slots) {
    GRID_STRIDE(s, slots) {
        double sum = 0.0;
        for (long long i = s; i < total; i += slots) {
            const long long* row = row_of(table, ONE_WIDTH, count, i);
            double a = (double)column<T>(row, 2)[i - row[0]];
            sum += a * a;
        }
        partials[s] = sum;
    }
}

// a = a * factor (clip_grad_norm_'s scaling of every gradient).
template <typename T>
__device__ __forceinline__ void scale(const long long* table, int count, long long total, T factor) {
    GRID_STRIDE(i, total) {
        const long long* row = row_of(table, ONE_WIDTH, count, i);
        T* a = column<T>(row, 2);
        a[i - row[0]] *= factor;
    }
}

#define TINYGEN_OPTIM_KERNELS(T, SUFFIX)                                                                          \
    extern "C" __global__ void adam_##SUFFIX(const long long* table, int count, long long total, int decay_kind, \
                                             T decay, T weight_decay, T beta1, T one_minus_beta1, T beta2,      \
                                             T one_minus_beta2, T eps) {                                        \
        adam<T>(table, count, total, decay_kind, decay, weight_decay, beta1, one_minus_beta1, beta2,            \
                one_minus_beta2, eps);                                                                          \
    }                                                                                                         \
    extern "C" __global__ void ema_##SUFFIX(const long long* table, int count, long long total,                \
                                            T one_minus_decay) {                                               \
        ema<T>(table, count, total, one_minus_decay);                                                          \
    }                                                                                                         \
    extern "C" __global__ void sum_squares_##SUFFIX(const long long* table, int count, long long total,        \
                                                    double* partials, long long slots) {                       \
        sum_squares<T>(table, count, total, partials, slots);                                                  \
    }                                                                                                         \
    extern "C" __global__ void scale_##SUFFIX(const long long* table, int count, long long total, T factor) {   \
        scale<T>(table, count, total, factor);                                                                 \
    }

TINYGEN_OPTIM_KERNELS(float, f32)
TINYGEN_OPTIM_KERNELS(double, f64)
