// Launchers of the model's elementwise kernels (see engine/ops.h for the contracts).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "engine/ops.h"

namespace tierkv::cuda {

Status launch_rms_norm(const void* x, const void* w, void* y, int rows, int dim, float eps, DType t,
                       cudaStream_t s);
Status launch_add(void* x, const void* r, std::size_t n, DType t, cudaStream_t s);
Status launch_rope_store(const RopeStoreArgs& args, cudaStream_t s);
Status launch_silu_mul(const void* gate_up, void* out, int rows, int inter, DType t,
                       cudaStream_t s);
Status launch_embed(const std::int32_t* tokens, const void* table, void* out, int n, int hidden,
                    DType t, cudaStream_t s);
Status launch_argmax(const float* logits, int rows, int vocab, std::int32_t* out, cudaStream_t s);

}  // namespace tierkv::cuda
