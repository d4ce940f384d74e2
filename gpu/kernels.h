// Launchers of tether's own CUDA kernels (gpu/kernels.cu). Every launcher
// issues its work on `stream`, returns without waiting, does nothing for an
// empty input and throws (TETHER_CUDA_CHECK) when the launch fails. Pointers
// are device memory unless a comment says otherwise. Element math comes from
// models/kernel_math.h so the CPU backend computes the same values.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "models/backend.h"

namespace tether::gpu {

// ---- element-wise (x, y: count) -------------------------------------------
void launch_fill(cudaStream_t stream, size_t count, float value, float* x);
void launch_axpy(cudaStream_t stream, size_t count, float alpha, const float* x, float* y);
void launch_scale(cudaStream_t stream, size_t count, float alpha, float* x);
void launch_add(cudaStream_t stream, size_t count, const float* a, const float* b, float* y);
void launch_sub(cudaStream_t stream, size_t count, const float* a, const float* b, float* y);
// dst[i] = kmath::normalize_byte(src[i], mean, inv_std)
void launch_normalize_bytes(cudaStream_t stream, size_t count, const uint8_t* src, float mean,
                            float inv_std, float* dst);
// mask[i] = kmath::dropout_mask(seed, i, p); y[i] = x[i] * mask[i]
void launch_dropout(cudaStream_t stream, size_t count, float p, uint64_t seed, const float* x,
                    float* mask, float* y);
// kmath::sgd_element on every element.
void launch_sgd(cudaStream_t stream, size_t count, float lr, float momentum, float weight_decay,
                bool nesterov, const float* g, float* m, float* w);

// ---- rows and columns -----------------------------------------------------
// y(rows, cols) += b(cols) broadcast over rows.
void launch_add_row_bias(cudaStream_t stream, int rows, int cols, const float* b, float* y);
// out(cols) = Σ_rows x(rows, cols), summed in a fixed order (deterministic).
void launch_col_sum(cudaStream_t stream, int rows, int cols, const float* x, float* out);

// ---- pooling (argmax: flat index into the whole input tensor) --------------
void launch_pool_forward(cudaStream_t stream, PoolKind kind, const PoolShape& sh, const float* x,
                         float* y, int32_t* argmax);
// Gather form (each input element sums the windows that chose it): no atomics,
// deterministic, dx fully overwritten.
void launch_pool_backward(cudaStream_t stream, PoolKind kind, const PoolShape& sh,
                          const float* dy, const int32_t* argmax, float* dx);

// ---- classification ---------------------------------------------------------
// Scratch needed by launch_softmax_xent, in floats.
size_t softmax_xent_scratch_count(int n);
// Per-row loss and correctness go to `scratch`; a second single-block kernel
// sums them in row order and adds to stats[0], stats[1] (deterministic).
// A label outside [0, classes) gives its row a NaN loss and, when
// bad_label[0] is still 0, sets bad_label = {row + 1, label}.
void launch_softmax_xent(cudaStream_t stream, int n, int classes, const float* logits,
                         const int32_t* labels, float* dlogits, float* stats, float* scratch,
                         int* bad_label);
// pred[i] = first index of the largest logit of row i.
void launch_argmax_rows(cudaStream_t stream, int n, int classes, const float* logits,
                        int32_t* pred);

// ---- reductions ---------------------------------------------------------------
// Scratch needed by launch_dot, in doubles (per-block partials + result).
size_t dot_scratch_count();
// scratch[0] = Σ a_i b_i in double, fixed grid and fixed reduction order, so
// the same inputs give the same bits on every run.
void launch_dot(cudaStream_t stream, size_t count, const float* a, const float* b,
                double* scratch);
// *bad = 0, then 1 when some x_i is not finite (inf or NaN).
void launch_all_finite(cudaStream_t stream, size_t count, const float* x, int* bad);
// out[b] = Σ_{h(i)=b} sign(i)·x_i, accumulated in double (`acc`: buckets
// doubles of scratch) then rounded to float; out overwritten.
void launch_count_sketch(cudaStream_t stream, size_t count, const float* x, uint64_t seed,
                         int buckets, double* acc, float* out);

}  // namespace tether::gpu
