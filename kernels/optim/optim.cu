// The optimizers' per-parameter work on the GPU, each one CUDA kernel: Adam's update (one pass over
// p, g, m and v), the EMA's update, and the partial sums of squares behind clip_grad_norm_.
//
// Compiled at run time by cupy.RawModule (gpu_cupy.py) with --fmad=false, so that no product is
// contracted into a fused multiply-add: each element goes through the reference's operations in
// its order and in the arrays' dtype, and the results are the reference's to the last bit (the
// per-call numbers, e.g. lr / (1 - beta1^t), are computed once in Python, in double precision as
// the reference does, and cast to the dtype as NumPy casts a Python float).
//
// Per element, with g the gradient (kernels/optim/reference.py states the same in NumPy):
//     p = p * decay                       (AdamW: decay = 1 - lr * weight_decay)
//     g = g + weight_decay * p            (Adam with an L2 term)
//     m = m * beta1 + (1 - beta1) * g
//     v = v * beta2 + (1 - beta2) * (g * g)
//     p = p - step_size * m / (sqrt(v) / bias2 + eps)
// where step_size = lr / (1 - beta1^t) and bias2 = sqrt(1 - beta2^t).
//
// A grid-stride loop: any grid covers the n elements. Each element is read and written by one
// thread, so p, m and v are updated in place.
//
// NOTE: only built-in types and functions: NVRTC compiles this without the C++ standard headers.

#define WEIGHT_DECAY_NONE 0
#define WEIGHT_DECAY_L2 1
#define WEIGHT_DECAY_DECOUPLED 2

template <typename T>
__device__ __forceinline__ void adam(T* p, const T* g, T* m, T* v, long long n, int decay_kind, T decay,
                                     T weight_decay, T beta1, T one_minus_beta1, T beta2, T one_minus_beta2,
                                     T step_size, T bias2, T eps) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        T pi = p[i], gi = g[i];
        if (decay_kind == WEIGHT_DECAY_DECOUPLED) pi = pi * decay;
        if (decay_kind == WEIGHT_DECAY_L2) gi = gi + weight_decay * pi;
        T mi = m[i] * beta1 + one_minus_beta1 * gi;
        T vi = v[i] * beta2 + one_minus_beta2 * (gi * gi);
        T denom = sqrt(vi) / bias2 + eps;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step_size * mi / denom;
    }
}

#define TINYGEN_ADAM_KERNEL(T, SUFFIX)                                                                         \
    extern "C" __global__ void adam_##SUFFIX(T* p, const T* g, T* m, T* v, long long n, int decay_kind,     \
                                             T decay, T weight_decay, T beta1, T one_minus_beta1, T beta2,   \
                                             T one_minus_beta2, T step_size, T bias2, T eps) {               \
        adam<T>(p, g, m, v, n, decay_kind, decay, weight_decay, beta1, one_minus_beta1, beta2, one_minus_beta2, \
                step_size, bias2, eps);                                                                      \
    }

// The EMA (reference.ema_update): shadow = shadow + (1 - decay) * (p - shadow), in place.
template <typename T>
__device__ __forceinline__ void ema(T* shadow, const T* p, long long n, T one_minus_decay) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        T si = shadow[i];
        shadow[i] = si + one_minus_decay * (p[i] - si);
    }
}

// partials[j] = the sum, in double, of a[i]^2 over i = j, j + slots, j + 2 slots, ... for each of
// the `slots` partial sums (a grid-stride loop over them: the launch gives one thread each); the
// caller adds the partials of every array up with one reduction (no atomics, so the total is the
// same from run to run).
template <typename T>
__device__ __forceinline__ void sum_squares(const T* a, long long n, double* partials, long long slots) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < slots; j += stride) {
        double sum = 0.0;
        for (long long i = j; i < n; i += slots) sum += (double)a[i] * (double)a[i];
        partials[j] = sum;
    }
}

#define TINYGEN_EMA_KERNELS(T, SUFFIX)                                                                         \
    extern "C" __global__ void ema_##SUFFIX(T* shadow, const T* p, long long n, T one_minus_decay) {        \
        ema<T>(shadow, p, n, one_minus_decay);                                                               \
    }                                                                                                      \
    extern "C" __global__ void sum_squares_##SUFFIX(const T* a, long long n, double* partials,               \
                                                    long long slots) {                                       \
        sum_squares<T>(a, n, partials, slots);                                                               \
    }

TINYGEN_ADAM_KERNEL(float, f32)
TINYGEN_ADAM_KERNEL(double, f64)
TINYGEN_EMA_KERNELS(float, f32)
TINYGEN_EMA_KERNELS(double, f64)
