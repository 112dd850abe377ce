// The CUDA implementation of the model's operations: cuBLASLt for the GEMMs (bf16/fp16 in, fp32
// accumulation), the project's kernels for the rest.
#include <cublasLt.h>

#include <map>
#include <string>
#include <tuple>

#include "backend/cuda/cublas_check.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/model_kernels.h"
#include "engine/ops.h"

namespace tierkv::cuda {
namespace {

constexpr std::size_t kWorkspaceBytes = std::size_t{32} << 20;

Result<cudaDataType_t> cuda_type(DType t) {
  switch (t) {
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF16:
      return CUDA_R_16F;
    case DType::kF32:
      return CUDA_R_32F;
  }
  return invalid_argument("linear: unknown dtype");
}

// Looks through decorating streams (the fault-injecting backend's) to the CUDA stream.
cudaStream_t native(Stream& s) {
  return static_cast<cudaStream_t>(s.base().native_handle());
}

// One GEMM shape: descriptors and the algorithm cuBLASLt's heuristic chose, made once.
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

class CudaOps final : public Ops {
 public:
  CudaOps(Backend& backend, cublasLtHandle_t handle, Buffer workspace)
      : backend_(backend), handle_(handle), workspace_(std::move(workspace)) {}
  ~CudaOps() override {
    for (auto& [key, p] : plans_) {
      cublasLtMatrixLayoutDestroy(p.a);
      cublasLtMatrixLayoutDestroy(p.b);
      cublasLtMatrixLayoutDestroy(p.c);
      cublasLtMatmulDescDestroy(p.op);
    }
    cublasLtDestroy(handle_);
  }

  // Row-major y[m][n] = x[m][k] w[n][k]^T is column-major y^T = w . x^T: A = w with op T
  // (k x n, ld k), B = x (k x m, ld k), C = y (n x m, ld n).
  Status linear(const void* x, const void* w, void* y, std::int32_t m, std::int32_t n,
                std::int32_t k, DType in, DType out, Stream& stream) override {
    if (m == 0) return Status::Ok();
    if (m < 0 || n <= 0 || k <= 0) return invalid_argument("linear: bad shape");
    TIERKV_ASSIGN_OR_RETURN(const Plan* p, plan(m, n, k, in, out));
    const float alpha = 1.0f, beta = 0.0f;
    TIERKV_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(handle_, p->op, &alpha, w, p->a, x, p->b, &beta, y,
                                                 p->c, y, p->c, &p->algo, workspace_.data(),
                                                 workspace_.size(), native(stream)));
    return Status::Ok();
  }

  Status rms_norm(const void* x, const void* w, void* y, std::int32_t rows, std::int32_t dim,
                  float eps, DType t, Stream& s) override {
    return launch_rms_norm(x, w, y, rows, dim, eps, t, native(s));
  }
  Status add(void* x, const void* r, std::size_t n, DType t, Stream& s) override {
    return launch_add(x, r, n, t, native(s));
  }
  Status rope_store(const RopeStoreArgs& a, Stream& s) override {
    return launch_rope_store(a, native(s));
  }
  Status silu_mul(const void* gu, void* out, std::int32_t rows, std::int32_t inter, DType t,
                  Stream& s) override {
    return launch_silu_mul(gu, out, rows, inter, t, native(s));
  }
  Status embed(const std::int32_t* tokens, const void* table, void* out, std::int32_t n,
               std::int32_t hidden, DType t, Stream& s) override {
    return launch_embed(tokens, table, out, n, hidden, t, native(s));
  }
  Status argmax(const float* logits, std::int32_t rows, std::int32_t vocab, std::int32_t* out,
                Stream& s) override {
    return launch_argmax(logits, rows, vocab, out, native(s));
  }

 private:
  Result<const Plan*> plan(std::int32_t m, std::int32_t n, std::int32_t k, DType in, DType out) {
    const auto key = std::make_tuple(m, n, k, in, out);
    if (auto it = plans_.find(key); it != plans_.end()) return &it->second;
    TIERKV_ASSIGN_OR_RETURN(const cudaDataType_t in_t, cuda_type(in));
    TIERKV_ASSIGN_OR_RETURN(const cudaDataType_t out_t, cuda_type(out));
    Plan p;
    TIERKV_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    TIERKV_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA,
                                                                 &trans_a, sizeof trans_a));
    TIERKV_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB,
                                                                 &trans_b, sizeof trans_b));
    TIERKV_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&p.a, in_t, k, n, k));
    TIERKV_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&p.b, in_t, k, m, k));
    TIERKV_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&p.c, out_t, n, m, n));
    cublasLtMatmulPreference_t pref = nullptr;
    TIERKV_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref));
    const std::size_t ws = workspace_.size();
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                         sizeof ws);
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
      cublasLtMatrixLayoutDestroy(p.a);
      cublasLtMatrixLayoutDestroy(p.b);
      cublasLtMatrixLayoutDestroy(p.c);
      cublasLtMatmulDescDestroy(p.op);
      return unimplemented("linear: cuBLASLt has no algorithm for " + std::to_string(m) + "x" +
                           std::to_string(n) + "x" + std::to_string(k));
    }
    p.algo = result.algo;
    return &plans_.emplace(key, p).first->second;
  }

  Backend& backend_;
  cublasLtHandle_t handle_;
  Buffer workspace_;
  std::map<std::tuple<std::int32_t, std::int32_t, std::int32_t, DType, DType>, Plan> plans_;
};

}  // namespace

Result<std::unique_ptr<Ops>> create_cuda_ops(Backend& backend) {
  if (backend.kind() != BackendKind::kCuda)
    return invalid_argument("cuda ops need the CUDA backend");
  cublasLtHandle_t handle = nullptr;
  TIERKV_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&handle));
  auto ws = backend.allocate(MemoryKind::kDevice, kWorkspaceBytes);
  if (!ws.ok()) {
    cublasLtDestroy(handle);
    return ws.status();
  }
  return std::unique_ptr<Ops>(std::make_unique<CudaOps>(backend, handle, std::move(ws).value()));
}

}  // namespace tierkv::cuda
