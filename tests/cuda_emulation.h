// Just enough of CUDA C to compile tinygen's .cu kernels for the CPU with a C++ compiler (fake_cupy.py).
//
// A kernel becomes a plain extern "C" function; threadIdx, blockIdx, blockDim and gridDim are
// globals that fake_cupy.RawKernel sets (tinygen_emu_set) before each call, running the threads of
// a small grid one after another, each call one thread's whole share of the work. RawKernel gives
// every thread its own copy of the arrays passed to the kernel, as they were at the launch, and
// merges the copies when all threads have run: a thread never sees another's writes, as on a GPU
// nothing orders them within a launch. That is faithful for kernels whose threads never talk to
// each other (grid-stride loops, no shared memory, no __syncthreads), and it makes a
// read-modify-write that two threads race on (a plain `+=` where atomicAdd belongs) lose updates
// or fail to merge, where running the threads in turn on one memory would have added them up.
//
// atomicAdd adds to the thread's copy and logs (address, value) for tinygen_emu_atomics; the merge
// adds every thread's logged values to the launch-time value, so the atomic sums come out whole.
// What atomicAdd returns is the launch-time value plus this thread's own earlier additions there,
// never another thread's: a kernel that hands out slots with it is not emulated.
//
// The device math functions are the C library's (to double precision, rounded once), so they
// can differ from the GPU's by an ulp.
#include <math.h>
#include <stdlib.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

struct tinygen_dim3 {
    unsigned int x, y, z;
};
static tinygen_dim3 threadIdx = {0u, 0u, 0u}, blockIdx = {0u, 0u, 0u}, blockDim = {1u, 1u, 1u}, gridDim = {1u, 1u, 1u};

// The atomic additions of the thread running now: addresses (in its copies of the arrays) and values.
static unsigned long long* tinygen_emu_atomic_addresses = 0;
static double* tinygen_emu_atomic_values = 0;
static unsigned long long tinygen_emu_atomic_count = 0, tinygen_emu_atomic_capacity = 0;

// Which thread runs next; its atomic log starts empty.
extern "C" void tinygen_emu_set(unsigned int block, unsigned int thread, unsigned int grid_x, unsigned int block_x) {
    blockIdx.x = block;
    threadIdx.x = thread;
    gridDim.x = grid_x;
    blockDim.x = block_x;
    tinygen_emu_atomic_count = 0;
}

// The log of the thread that ran last: its length, and the two arrays through the pointers.
extern "C" unsigned long long tinygen_emu_atomics(unsigned long long** addresses, double** values) {
    *addresses = tinygen_emu_atomic_addresses;
    *values = tinygen_emu_atomic_values;
    return tinygen_emu_atomic_count;
}

static inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * (unsigned long long)b) >> 32);
}

static inline double __longlong_as_double(long long bits) {
    double value;
    __builtin_memcpy(&value, &bits, sizeof value);
    return value;
}

static inline double atomicAdd(double* address, double value) {
    if (tinygen_emu_atomic_count == tinygen_emu_atomic_capacity) {
        tinygen_emu_atomic_capacity = 2 * tinygen_emu_atomic_capacity + 1024;
        tinygen_emu_atomic_addresses = (unsigned long long*)realloc(
            tinygen_emu_atomic_addresses, tinygen_emu_atomic_capacity * sizeof(unsigned long long));
        tinygen_emu_atomic_values = (double*)realloc(tinygen_emu_atomic_values,
                                                     tinygen_emu_atomic_capacity * sizeof(double));
        if (!tinygen_emu_atomic_addresses || !tinygen_emu_atomic_values) abort();
    }
    tinygen_emu_atomic_addresses[tinygen_emu_atomic_count] = (unsigned long long)address;
    tinygen_emu_atomic_values[tinygen_emu_atomic_count++] = value;
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
