// The CUDA peers: cudaMemcpyAsync per run, and a cuBLASLt bf16 GEMM.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/cublas_check.h"
#include "backend/cuda/cuda_check.h"
#include "peers.h"
#include "tierkv/dtype.h"

namespace tierkv::transfer_bench {
namespace {

constexpr std::size_t kWorkspaceBytes = std::size_t{32} << 20;

Result<cudaStream_t> cuda_stream(Stream& stream) {
  void* h = stream.native_handle();
  if (h == nullptr) return invalid_argument("not a CUDA stream (the peer needs --backend cuda)");
  return static_cast<cudaStream_t>(h);
}

// Owners of the cuBLASLt descriptors; destroyed in reverse order of creation.
struct LtObjects {
  cublasLtHandle_t handle = nullptr;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  LtObjects() = default;
  LtObjects(const LtObjects&) = delete;
  LtObjects& operator=(const LtObjects&) = delete;
  ~LtObjects() {
    if (pref) (void)cublasLtMatmulPreferenceDestroy(pref);
    if (c) (void)cublasLtMatrixLayoutDestroy(c);
    if (b) (void)cublasLtMatrixLayoutDestroy(b);
    if (a) (void)cublasLtMatrixLayoutDestroy(a);
    if (op) (void)cublasLtMatmulDescDestroy(op);
    if (handle) (void)cublasLtDestroy(handle);
  }
};

class LtGemm final : public Gemm {
 public:
  LtGemm(Backend& backend, GemmShape shape) : backend_(backend), shape_(shape) {}

  Status init(Stream& stream, std::uint64_t seed);
  Status enqueue(Stream& stream) override;
  Result<double> check(Stream& stream, int samples) override;
  const GemmShape& shape() const override { return shape_; }

 private:
  Status make_descriptors();

  Backend& backend_;
  GemmShape shape_;
  Buffer a_, b_, c_, workspace_;
  LtObjects lt_;
  cublasLtMatmulAlgo_t algo_{};
};

Status LtGemm::init(Stream& stream, std::uint64_t seed) {
  const auto m = std::size_t(shape_.m), n = std::size_t(shape_.n), k = std::size_t(shape_.k);
  TIERKV_ASSIGN_OR_RETURN(a_, backend_.allocate(MemoryKind::kDevice, m * k * 2));
  TIERKV_ASSIGN_OR_RETURN(b_, backend_.allocate(MemoryKind::kDevice, n * k * 2));
  TIERKV_ASSIGN_OR_RETURN(c_, backend_.allocate(MemoryKind::kDevice, m * n * 2));
  TIERKV_ASSIGN_OR_RETURN(workspace_, backend_.allocate(MemoryKind::kDevice, kWorkspaceBytes));
  TIERKV_RETURN_IF_ERROR(
      backend_.fill_uniform(a_.data(), m * k, DType::kBF16, seed, -1.0f, 1.0f, stream));
  TIERKV_RETURN_IF_ERROR(
      backend_.fill_uniform(b_.data(), n * k, DType::kBF16, seed + 1, -1.0f, 1.0f, stream));
  TIERKV_RETURN_IF_ERROR(stream.fill(c_.data(), 0xFF, c_.size()));  // NaN until written
  TIERKV_RETURN_IF_ERROR(stream.synchronize());
  return make_descriptors();
}

Status LtGemm::make_descriptors() {
  const auto m = std::uint64_t(shape_.m), n = std::uint64_t(shape_.n), k = std::uint64_t(shape_.k);
  TIERKV_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&lt_.handle));
  TIERKV_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&lt_.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transa = CUBLAS_OP_T, transb = CUBLAS_OP_N;
  TIERKV_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(lt_.op, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof transa));
  TIERKV_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(lt_.op, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof transb));
  // Column-major: A is k x m (row-major [m][k]), B is k x n (row-major [n][k]), C is m x n.
  TIERKV_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&lt_.a, CUDA_R_16BF, k, m, k));
  TIERKV_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&lt_.b, CUDA_R_16BF, k, n, k));
  TIERKV_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&lt_.c, CUDA_R_16BF, m, n, m));
  TIERKV_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&lt_.pref));
  const std::uint64_t ws = kWorkspaceBytes;
  TIERKV_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceSetAttribute(
      lt_.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  TIERKV_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulAlgoGetHeuristic(
      lt_.handle, lt_.op, lt_.a, lt_.b, lt_.c, lt_.c, lt_.pref, 1, &result, &found));
  if (found == 0) return unimplemented("cuBLASLt has no algorithm for the bf16 GEMM");
  algo_ = result.algo;
  return Status::Ok();
}

Status LtGemm::enqueue(Stream& stream) {
  TIERKV_ASSIGN_OR_RETURN(cudaStream_t s, cuda_stream(stream));
  const float alpha = 1.0f, beta = 0.0f;
  TIERKV_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(
      lt_.handle, lt_.op, &alpha, a_.data(), lt_.a, b_.data(), lt_.b, &beta, c_.data(), lt_.c,
      c_.data(), lt_.c, &algo_, workspace_.data(), workspace_.size(), s));
  return Status::Ok();
}

Result<double> LtGemm::check(Stream& stream, int samples) {
  const auto m = std::size_t(shape_.m), n = std::size_t(shape_.n), k = std::size_t(shape_.k);
  TIERKV_RETURN_IF_ERROR(stream.fill(c_.data(), 0xFF, c_.size()));
  TIERKV_RETURN_IF_ERROR(enqueue(stream));
  const std::size_t per = (2 * k + 1) * 2;  // a row of A, a row of B, one element of C
  TIERKV_ASSIGN_OR_RETURN(Buffer host, backend_.allocate(MemoryKind::kPinnedHost, per * samples));
  std::mt19937_64 rng(shape_.m * 31u + shape_.k);
  std::vector<std::pair<std::size_t, std::size_t>> at;
  for (int i = 0; i < samples; ++i) {
    const std::size_t row = rng() % m, col = rng() % n;
    at.emplace_back(row, col);
    auto* dst = host.as<std::uint16_t>() + std::size_t(i) * (2 * k + 1);
    TIERKV_RETURN_IF_ERROR(stream.copy(dst, a_.as<std::uint16_t>() + row * k, k * 2));
    TIERKV_RETURN_IF_ERROR(stream.copy(dst + k, b_.as<std::uint16_t>() + col * k, k * 2));
    TIERKV_RETURN_IF_ERROR(stream.copy(dst + 2 * k, c_.as<std::uint16_t>() + col * m + row, 2));
  }
  TIERKV_RETURN_IF_ERROR(stream.synchronize());
  double err2 = 0, ref2 = 0;
  for (int i = 0; i < samples; ++i) {
    const auto* p = host.as<std::uint16_t>() + std::size_t(i) * (2 * k + 1);
    double ref = 0;
    for (std::size_t j = 0; j < k; ++j)
      ref += double(bf16_bits_to_float(p[j])) * double(bf16_bits_to_float(p[k + j]));
    const double got = bf16_bits_to_float(p[2 * k]);
    if (std::isnan(got)) {
      return data_loss("GEMM output C(" + std::to_string(at[i].first) + ", " +
                       std::to_string(at[i].second) + ") is NaN: not written");
    }
    err2 += (got - ref) * (got - ref);
    ref2 += ref * ref;
  }
  return std::sqrt(err2 / ref2);
}

}  // namespace

Status use_backend_device(const Backend& backend) {
  if (backend.kind() != BackendKind::kCuda) return Status::Ok();
  TIERKV_CUDA_RETURN_IF_ERROR(cudaSetDevice(backend.info().device_index));
  return Status::Ok();
}

Status memcpy_each_run(Stream& stream, std::span<const CopyRun> runs, bool to_device) {
  TIERKV_ASSIGN_OR_RETURN(cudaStream_t s, cuda_stream(stream));
  const cudaMemcpyKind kind = to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
  for (const CopyRun& r : runs)
    TIERKV_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(r.dst, r.src, r.bytes, kind, s));
  return Status::Ok();
}

Result<std::unique_ptr<Gemm>> make_gemm(Backend& backend, Stream& stream, const GemmShape& shape,
                                        std::uint64_t seed) {
  if (backend.kind() != BackendKind::kCuda)
    return unimplemented("the GEMM runs on the CUDA backend only");
  auto gemm = std::make_unique<LtGemm>(backend, shape);
  TIERKV_RETURN_IF_ERROR(gemm->init(stream, seed));
  return std::unique_ptr<Gemm>(std::move(gemm));
}

}  // namespace tierkv::transfer_bench
