// Just enough of CUDA C to compile tinygen's .cu kernels for the CPU with a C++ compiler (fake_cupy.py).
//
// A kernel becomes a plain extern "C" function; threadIdx, blockIdx, blockDim and gridDim are
// globals that fake_cupy.RawKernel sets (tinygen_emu_set) before each call, running the blocks and
// threads of a small grid one after another. That is faithful for kernels whose threads never talk to
// each other (grid-stride loops, no shared memory, no __syncthreads): each call does one thread's
// share. The device math functions are the C library's (to double precision, rounded once), so they
// can differ from the GPU's by an ulp.
#include <math.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

struct tinygen_dim3 {
    unsigned int x, y, z;
};
static tinygen_dim3 threadIdx = {0u, 0u, 0u}, blockIdx = {0u, 0u, 0u}, blockDim = {1u, 1u, 1u}, gridDim = {1u, 1u, 1u};

extern "C" void tinygen_emu_set(unsigned int block, unsigned int thread, unsigned int grid_x, unsigned int block_x) {
    blockIdx.x = block;
    threadIdx.x = thread;
    gridDim.x = grid_x;
    blockDim.x = block_x;
}

static inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * (unsigned long long)b) >> 32);
}

static inline double __longlong_as_double(long long bits) {
    double value;
    __builtin_memcpy(&value, &bits, sizeof value);
    return value;
}

// Threads run one after another here, so an atomic addition is a plain one.
static inline double atomicAdd(double* address, double value) {
    double old = *address;
    *address = old + value;
    return old;
}

static inline void sincospif(float x, float* s, float* c) {
    double a = 3.14159265358979323846 * (double)x;
    *s = (float)sin(a);
    *c = (float)cos(a);
}

struct alignas(16) float4 {
    float x, y, z, w;
};
