// im2col and col2im on the GPU, for the convolutions of gpu_cupy.py (the products run in cuBLAS).
//
// Compiled at run time by cupy.RawModule. Read reference.py first: the im2col idea, the layouts
// and the adjoint identities are there. Shapes: x (N, C, H, W), windows of kh x kw taps with
// stride (sh, sw), zero padding (ph, pw) and dilation (dh, dw), Ho x Wo windows.
//
// Two layouts of the columns, chosen by `knp`:
//   knp = 0: (N, C, kh, kw, Ho, Wo), the public layout of reference.im2col;
//   knp = 1: (C, kh, kw, N, Ho, Wo), i.e. the matrix (K, N*Ho*Wo), K = C*kh*kw, that makes a whole
//            batch's convolution one GEMM: y_t (Cout, N*P) = w (Cout, K) @ cols (K, N*P).
//
// im2col: one element of cols per loop step (consecutive threads write consecutive ox: coalesced);
// taps outside the input read 0.
// col2im: the adjoint as a gather: one input pixel per loop step, adding the column entries of every
// tap that read it, in the reference's order (ky, then kx), so the sum is the reference's. No atomics,
// so the result is deterministic.
//
// Every kernel is a grid-stride loop: any grid covers all the work. Indices are 32-bit unsigned
// (`_i32` kernels, used when every index fits) or 64-bit (`_i64`): the divisions that split a
// flat index are several times cheaper in 32 bits. The loop's step never wraps (`next_index`).
// NOTE: only built-in types and functions: NVRTC compiles this without the C++ standard headers.

// The grid-stride step, t + stride, or `total` (the end) where that sum would reach it: in 32-bit
// indices t + stride can pass 2^32 although total < 2^32 (an H100's grid strides 1,081,344) and wrap
// to an index below total, so that a thread looped for ever (im2col of 64 x 64 taps, 1023 x 1025
// windows: total = 2^32 - 2^12).
template <typename I>
__device__ __forceinline__ I next_index(I t, I stride, I total) {
    return total - t > stride ? t + stride : total;
}

template <typename T, typename I>
__device__ __forceinline__ void im2col_body(const T* x, T* cols, I N, I C, I H, I W, I kh, I kw, I sh, I sw, I ph,
                                            I pw, I dh, I dw, I Ho, I Wo, int knp) {
    I total = N * C * kh * kw * Ho * Wo;
    I stride = (I)gridDim.x * (I)blockDim.x;
    for (I t = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; t < total; t = next_index(t, stride, total)) {
        I ox = t % Wo;
        I r = t / Wo;
        I oy = r % Ho;
        r /= Ho;
        I n, c, ky, kx;
        if (knp) {  // r = ((c kh + ky) kw + kx) N + n
            n = r % N;
            r /= N;
            kx = r % kw;
            r /= kw;
            ky = r % kh;
            c = r / kh;
        } else {  // r = ((n C + c) kh + ky) kw + kx
            kx = r % kw;
            r /= kw;
            ky = r % kh;
            r /= kh;
            c = r % C;
            n = r / C;
        }
        // input row oy*sh - ph + ky*dh, column ox*sw - pw + kx*dw, in unsigned arithmetic: a
        // "negative" index wraps to a huge one and fails the < H test like one past the end.
        I iy = oy * sh + ky * dh - ph;
        I ix = ox * sw + kx * dw - pw;
        bool inside = oy * sh + ky * dh >= ph && ox * sw + kx * dw >= pw && iy < H && ix < W;
        cols[t] = inside ? x[((n * C + c) * H + iy) * W + ix] : (T)0;
    }
}

template <typename T, typename I>
__device__ __forceinline__ void col2im_body(const T* cols, T* x, I N, I C, I H, I W, I kh, I kw, I sh, I sw, I ph,
                                            I pw, I dh, I dw, I Ho, I Wo, int knp) {
    I total = N * C * H * W;
    I stride = (I)gridDim.x * (I)blockDim.x;
    I P = Ho * Wo;
    for (I t = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; t < total; t = next_index(t, stride, total)) {
        I ix = t % W;
        I r = t / W;
        I iy = r % H;
        r /= H;
        I c = r % C;
        I n = r / C;
        T sum = (T)0;
        for (I ky = 0; ky < kh; ++ky) {
            // output row oy with oy*sh + ky*dh = iy + ph
            if (iy + ph < ky * dh) break;  // and every later ky
            I y = iy + ph - ky * dh;
            if (y % sh) continue;
            I oy = y / sh;
            if (oy >= Ho) continue;
            for (I kx = 0; kx < kw; ++kx) {
                if (ix + pw < kx * dw) break;
                I xx = ix + pw - kx * dw;
                if (xx % sw) continue;
                I ox = xx / sw;
                if (ox >= Wo) continue;
                I row = (c * kh + ky) * kw + kx;
                I at = knp ? (row * N + n) * P + oy * Wo + ox : ((n * C * kh * kw) + row) * P + oy * Wo + ox;
                sum += cols[at];
            }
        }
        x[t] = sum;
    }
}

#define TINYGEN_CONV_KERNELS(T, SUFFIX, I, ISUFFIX)                                                            \
    extern "C" __global__ void im2col_##SUFFIX##_##ISUFFIX(const T* x, T* cols, I N, I C, I H, I W, I kh, I kw, \
                                                           I sh, I sw, I ph, I pw, I dh, I dw, I Ho, I Wo,       \
                                                           int knp) {                                            \
        im2col_body<T, I>(x, cols, N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, knp);                    \
    }                                                                                                            \
    extern "C" __global__ void col2im_##SUFFIX##_##ISUFFIX(const T* cols, T* x, I N, I C, I H, I W, I kh, I kw, \
                                                           I sh, I sw, I ph, I pw, I dh, I dw, I Ho, I Wo,       \
                                                           int knp) {                                            \
        col2im_body<T, I>(cols, x, N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, Ho, Wo, knp);                    \
    }

TINYGEN_CONV_KERNELS(float, f32, unsigned int, i32)
TINYGEN_CONV_KERNELS(float, f32, unsigned long long, i64)
TINYGEN_CONV_KERNELS(double, f64, unsigned int, i32)
TINYGEN_CONV_KERNELS(double, f64, unsigned long long, i64)
