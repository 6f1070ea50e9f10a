// The diffusion noise steps on the GPU: reference.py's functions as CUDA kernels, each one pass over
// memory, the Gaussian noise made inside from the same counter-based stream as reference.normal.
//
// Compiled at run time by cupy.RawModule (gpu_cupy.py) with --fmad=false, so that no a*x + b*z is
// contracted into a fused multiply-add and, for a given z, a step gives the reference's float32
// numbers bit for bit. Read reference.py first: the formulas, the per-sample coefficients and the
// definition of the stream are there; this file only lays the same work out for the GPU.
//
// The stream: normal number j of stream `seed` is lane j % 4 of Philox4x32-10 applied to the
// counter c = j / 4, i.e. the words (c mod 2^32, c div 2^32, 0, 0), under the key
// (seed mod 2^32, seed div 2^32); Box-Muller turns the output words (w0, w1) into lanes 0 and 1 and
// (w2, w3) into lanes 2 and 3: u1 = (w0 >> 8 + 1) / 2^24, u2 = (w1 >> 8) / 2^24,
// r = sqrt(-2 ln u1), (r cos 2 pi u2, r sin 2 pi u2). Here in float32 with the accurate logf,
// sqrtf and sincospif (2 pi u2 = pi * k / 2^23, exact), within a few float32 ulps of the
// reference (which is the exact value rounded once).
//
// Layout: one thread handles one Philox counter, i.e. the 4 consecutive elements whose noise
// it makes; element i of a call with offset o uses normal number o + i, so with lane = o % 4 the
// thread of counter q (counted from first = o / 4) owns elements 4q - lane .. 4q - lane + 3.
// The steps without noise use the same layout (4 elements per thread, z read from memory).
// Every kernel is a grid-stride loop: any grid covers all the work (the launch sizes it to the GPU).
// Each thread finds its sample s = i / per_sample with one division for its 4 elements (32-bit when
// n < 2^32).
// When the arrays are float32, 16-byte aligned, lane == 0 and per_sample % 4 == 0 (`vec`), a
// thread's 4 elements sit in one sample and load and store as one float4.
//
// Coefficients: `coef` is a (K, B) array of the images' dtype, row k holding coefficient k of
// every sample (gpu_cupy.py builds it, cast to the images' dtype as reference.per_sample does).
//
// NOTE: only built-in types and functions: NVRTC compiles this without the C++ standard headers.

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

// What a kernel computes on each element (c_k: coefficient k of the element's sample).
#define K_NORMAL 0      // out = z
#define K_Q_SAMPLE 1    // out = c0 x + c1 z                       (z is eps)
#define K_Q_SAMPLE_Z 2  // out = c0 x + c1 z, out2 = z             (q_sample_noise also returns eps)
#define K_P_MEAN 3      // out = c1 (x - c0 e)
#define K_P_SAMPLE 4    // out = c1 (x - c0 e) + c2 z
#define K_DDIM_MEAN 5   // out = c2 ((x - c0 e) / c1) + c3 e
#define K_DDIM 6        // out = c2 ((x - c0 e) / c1) + c3 e + c4 z

struct PhiloxWords {
    unsigned int w0, w1, w2, w3;
};

// Philox4x32-10 (Salmon et al. 2011) of the counter (c mod 2^32, c div 2^32, 0, 0) with key (k0, k1):
// reference.philox4x32, round for round.
__device__ __forceinline__ PhiloxWords philox4x32_10(unsigned long long c, unsigned int k0, unsigned int k1) {
    unsigned int c0 = (unsigned int)c, c1 = (unsigned int)(c >> 32), c2 = 0u, c3 = 0u;
#pragma unroll
    for (int r = 0; r < 10; ++r) {
        if (r > 0) {
            k0 += PHILOX_W0;  // wraps mod 2^32, as the reference's & 0xFFFFFFFF
            k1 += PHILOX_W1;
        }
        unsigned int hi0 = __umulhi(PHILOX_M0, c0), lo0 = PHILOX_M0 * c0;  // p0 = M0 c0, 64 bits
        unsigned int hi1 = __umulhi(PHILOX_M1, c2), lo1 = PHILOX_M1 * c2;  // p1 = M1 c2
        unsigned int n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
    }
    PhiloxWords w = {c0, c1, c2, c3};
    return w;
}

// Two float32 normals from two 32-bit words (reference.box_muller).
__device__ __forceinline__ void box_muller(unsigned int w0, unsigned int w1, float* z0, float* z1) {
    float u1 = (float)((w0 >> 8) + 1u) * 5.9604644775390625e-8f;  // (1..2^24) / 2^24, exact
    float r = sqrtf(-2.0f * logf(u1));
    float s, c;
    sincospif((float)(w1 >> 8) * 1.1920928955078125e-7f, &s, &c);  // 2 pi u2 = pi (k / 2^23), exact
    *z0 = r * c;
    *z1 = r * s;
}

template <typename T, int KIND>
__device__ __forceinline__ T step_value(const T* coef, long long B, long long s, T x, T e, T z) {
    if (KIND == K_NORMAL) return z;
    if (KIND == K_Q_SAMPLE || KIND == K_Q_SAMPLE_Z) return coef[s] * x + coef[B + s] * z;
    if (KIND == K_P_MEAN) return coef[B + s] * (x - coef[s] * e);
    if (KIND == K_P_SAMPLE) return coef[B + s] * (x - coef[s] * e) + coef[2 * B + s] * z;
    if (KIND == K_DDIM_MEAN) return coef[2 * B + s] * ((x - coef[s] * e) / coef[B + s]) + coef[3 * B + s] * e;
    return coef[2 * B + s] * ((x - coef[s] * e) / coef[B + s]) + coef[3 * B + s] * e + coef[4 * B + s] * z;
}

// KIND uses x (everything but NORMAL), e (the p and ddim steps), out2 (Q_SAMPLE_Z).
template <int KIND>
struct Uses {
    static const bool x = KIND != K_NORMAL;
    static const bool e = KIND >= K_P_MEAN;
    static const bool z = KIND == K_NORMAL || KIND == K_Q_SAMPLE || KIND == K_Q_SAMPLE_Z || KIND == K_P_SAMPLE ||
                          KIND == K_DDIM;
};

// The step KIND on n elements; NOISE: z made here from the stream (k0, k1) starting at counter
// `first` with `lane`; else z read from zin (and lane = 0).
template <typename T, int KIND, bool NOISE>
__device__ __forceinline__ void run(const T* x, const T* e, const T* zin, T* out, T* out2, const T* coef,
                                    long long n, long long per_sample, long long B, unsigned int k0, unsigned int k1,
                                    unsigned long long first, int lane, int vec) {
    long long groups = (lane + n + 3) / 4;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long q = (long long)blockIdx.x * blockDim.x + threadIdx.x; q < groups; q += stride) {
        long long i0 = 4 * q - lane;  // this thread's first element (-3..0 for the first thread)
        T z[4] = {(T)0, (T)0, (T)0, (T)0};
        if (NOISE) {
            PhiloxWords w = philox4x32_10(first + (unsigned long long)q, k0, k1);
            float f[4];
            box_muller(w.w0, w.w1, &f[0], &f[1]);
            box_muller(w.w2, w.w3, &f[2], &f[3]);
#pragma unroll
            for (int l = 0; l < 4; ++l) z[l] = (T)f[l];
        }
        long long first_i = i0 < 0 ? 0 : i0;
        // the sample of the first element; a 32-bit division when the indices fit (several times cheaper)
        long long s = n <= 0xFFFFFFFFLL ? (long long)((unsigned int)first_i / (unsigned int)per_sample)
                                        : first_i / per_sample;
        if (vec && i0 + 3 < n) {  // float32, aligned, one sample: one float4 per array
            float4 xv = {0.f, 0.f, 0.f, 0.f}, ev = {0.f, 0.f, 0.f, 0.f};
            if (Uses<KIND>::x) xv = reinterpret_cast<const float4*>(x)[q];
            if (Uses<KIND>::e) ev = reinterpret_cast<const float4*>(e)[q];
            if (!NOISE && Uses<KIND>::z) {
                const float4 zv = reinterpret_cast<const float4*>(zin)[q];
                z[0] = zv.x; z[1] = zv.y; z[2] = zv.z; z[3] = zv.w;
            }
            float4 o;
            o.x = (float)step_value<T, KIND>(coef, B, s, (T)xv.x, (T)ev.x, z[0]);
            o.y = (float)step_value<T, KIND>(coef, B, s, (T)xv.y, (T)ev.y, z[1]);
            o.z = (float)step_value<T, KIND>(coef, B, s, (T)xv.z, (T)ev.z, z[2]);
            o.w = (float)step_value<T, KIND>(coef, B, s, (T)xv.w, (T)ev.w, z[3]);
            reinterpret_cast<float4*>(out)[q] = o;
            if (KIND == K_Q_SAMPLE_Z) {
                float4 zo;
                zo.x = (float)z[0]; zo.y = (float)z[1]; zo.z = (float)z[2]; zo.w = (float)z[3];
                reinterpret_cast<float4*>(out2)[q] = zo;
            }
            continue;
        }
        long long next = (s + 1) * per_sample;  // the first element of the next sample
#pragma unroll
        for (int l = 0; l < 4; ++l) {
            long long i = i0 + l;
            if (i < 0 || i >= n) continue;
            while (i >= next) {  // per_sample < 4 can cross several samples
                ++s;
                next += per_sample;
            }
            T zi = NOISE ? z[l] : (Uses<KIND>::z ? zin[i] : (T)0);
            T xi = Uses<KIND>::x ? x[i] : (T)0;
            T ei = Uses<KIND>::e ? e[i] : (T)0;
            out[i] = step_value<T, KIND>(coef, B, s, xi, ei, zi);
            if (KIND == K_Q_SAMPLE_Z) out2[i] = zi;
        }
    }
}

// The kernels: step_<name>_<dtype> read z from memory (or use none), noise_<name>_<dtype> make it.
#define TINYGEN_STEP_KERNELS(NAME, KIND, T, SUFFIX)                                                              \
    extern "C" __global__ void step_##NAME##_##SUFFIX(const T* x, const T* e, const T* z, T* out, const T* coef, \
                                                      long long n, long long per_sample, long long B, int vec) {  \
        run<T, KIND, false>(x, e, z, out, out, coef, n, per_sample, B, 0u, 0u, 0ull, 0, vec);                   \
    }

#define TINYGEN_NOISE_KERNELS(NAME, KIND, T, SUFFIX)                                                           \
    extern "C" __global__ void noise_##NAME##_##SUFFIX(const T* x, const T* e, T* out, T* out2, const T* coef, \
                                                       long long n, long long per_sample, long long B,         \
                                                       unsigned int k0, unsigned int k1,                       \
                                                       unsigned long long first, int lane, int vec) {          \
        run<T, KIND, true>(x, e, (const T*)0, out, out2, coef, n, per_sample, B, k0, k1, first, lane, vec);   \
    }

TINYGEN_STEP_KERNELS(q_sample, K_Q_SAMPLE, float, f32)
TINYGEN_STEP_KERNELS(q_sample, K_Q_SAMPLE, double, f64)
TINYGEN_STEP_KERNELS(p_mean, K_P_MEAN, float, f32)
TINYGEN_STEP_KERNELS(p_mean, K_P_MEAN, double, f64)
TINYGEN_STEP_KERNELS(p_sample, K_P_SAMPLE, float, f32)
TINYGEN_STEP_KERNELS(p_sample, K_P_SAMPLE, double, f64)
TINYGEN_STEP_KERNELS(ddim_mean, K_DDIM_MEAN, float, f32)
TINYGEN_STEP_KERNELS(ddim_mean, K_DDIM_MEAN, double, f64)
TINYGEN_STEP_KERNELS(ddim, K_DDIM, float, f32)
TINYGEN_STEP_KERNELS(ddim, K_DDIM, double, f64)

TINYGEN_NOISE_KERNELS(normal, K_NORMAL, float, f32)
TINYGEN_NOISE_KERNELS(normal, K_NORMAL, double, f64)
TINYGEN_NOISE_KERNELS(q_sample, K_Q_SAMPLE_Z, float, f32)
TINYGEN_NOISE_KERNELS(q_sample, K_Q_SAMPLE_Z, double, f64)
TINYGEN_NOISE_KERNELS(p_sample, K_P_SAMPLE, float, f32)
TINYGEN_NOISE_KERNELS(p_sample, K_P_SAMPLE, double, f64)
TINYGEN_NOISE_KERNELS(ddim, K_DDIM, float, f32)
TINYGEN_NOISE_KERNELS(ddim, K_DDIM, double, f64)
