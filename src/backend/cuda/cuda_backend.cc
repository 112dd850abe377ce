#include "backend/cuda/cuda_backend.h"

#include <cuda_runtime.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"
#include "tierkv/attention.h"
#include "tierkv/prefill.h"

namespace tierkv::cuda {
namespace {

constexpr std::size_t kHostAlignment = 4096;

// Makes `device` current for the calling thread; the CUDA runtime keeps the current device per
// thread, and a Backend may be called from any thread.
Status use_device(int device) {
  int current = -1;
  TIERKV_CUDA_RETURN_IF_ERROR(cudaGetDevice(&current));
  if (current != device) TIERKV_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  return Status::Ok();
}

class CudaEvent final : public Event {
 public:
  explicit CudaEvent(cudaEvent_t e) : event_(e) {}
  ~CudaEvent() override { (void)cudaEventDestroy(event_); }

  Status synchronize() override {
    TIERKV_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(event_));
    return Status::Ok();
  }
  Result<bool> done() override {
    const cudaError_t e = cudaEventQuery(event_);
    if (e == cudaSuccess) return true;
    if (e == cudaErrorNotReady) return false;
    return cuda_error(e, "cudaEventQuery", __FILE__, __LINE__);
  }
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_;
};

class CudaGraph final : public Graph {
 public:
  explicit CudaGraph(cudaGraphExec_t exec) : exec_(exec) {}
  ~CudaGraph() override { (void)cudaGraphExecDestroy(exec_); }
  Status launch(Stream& stream) override;

 private:
  cudaGraphExec_t exec_;
};

class CudaStream final : public Stream {
 public:
  CudaStream(int device, cudaStream_t s) : device_(device), stream_(s) {}
  ~CudaStream() override {
    (void)cudaStreamSynchronize(stream_);
    (void)cudaStreamDestroy(stream_);
  }

  Status copy(void* dst, const void* src, std::size_t bytes) override {
    if (bytes == 0) return Status::Ok();
    if (dst == nullptr || src == nullptr) return invalid_argument("copy: null pointer");
    TIERKV_RETURN_IF_ERROR(use_device(device_));
    TIERKV_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream_));
    return Status::Ok();
  }
  Status fill(void* dst, std::uint8_t value, std::size_t bytes) override {
    if (bytes == 0) return Status::Ok();
    if (dst == nullptr) return invalid_argument("fill: null pointer");
    TIERKV_RETURN_IF_ERROR(use_device(device_));
    TIERKV_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(dst, value, bytes, stream_));
    return Status::Ok();
  }
  Status record(Event& event) override {
    auto* e = dynamic_cast<CudaEvent*>(&event.base());
    if (e == nullptr) return invalid_argument("record: event of another backend");
    TIERKV_RETURN_IF_ERROR(use_device(device_));
    TIERKV_CUDA_RETURN_IF_ERROR(cudaEventRecord(e->get(), stream_));
    return Status::Ok();
  }
  Status wait(const Event& event) override {
    auto* e = dynamic_cast<const CudaEvent*>(&event.base());
    if (e == nullptr) return invalid_argument("wait: event of another backend");
    TIERKV_RETURN_IF_ERROR(use_device(device_));
    TIERKV_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(stream_, e->get(), 0));
    return Status::Ok();
  }
  Status synchronize() override {
    TIERKV_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return Status::Ok();
  }
  Status begin_capture() override {
    TIERKV_RETURN_IF_ERROR(use_device(device_));
    if (capturing_) return failed_precondition("begin_capture: already capturing");
    TIERKV_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    capturing_ = true;
    return Status::Ok();
  }
  Result<std::unique_ptr<Graph>> end_capture() override {
    if (!capturing_) return failed_precondition("end_capture: not capturing");
    capturing_ = false;
    cudaGraph_t graph = nullptr;
    TIERKV_CUDA_RETURN_IF_ERROR(cudaStreamEndCapture(stream_, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
    (void)cudaGraphDestroy(graph);
    if (e != cudaSuccess) return cuda_error(e, "cudaGraphInstantiate", __FILE__, __LINE__);
    return std::unique_ptr<Graph>(std::make_unique<CudaGraph>(exec));
  }
  void* native_handle() override { return stream_; }
  cudaStream_t get() const { return stream_; }

 private:
  int device_;
  cudaStream_t stream_;
  bool capturing_ = false;
};

Status CudaGraph::launch(Stream& stream) {
  auto* s = dynamic_cast<CudaStream*>(&stream.base());
  if (s == nullptr) return invalid_argument("graph launch: stream of another backend");
  TIERKV_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(exec_, s->get()));
  return Status::Ok();
}

Result<DeviceInfo> probe(int device) {
  cudaDeviceProp p{};
  TIERKV_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&p, device));
  DeviceInfo info;
  info.backend = BackendKind::kCuda;
  info.name = p.name;
  info.device_index = device;
  info.compute_units = p.multiProcessorCount;
  info.cc_major = p.major;
  info.cc_minor = p.minor;
  info.total_memory = p.totalGlobalMem;
  info.l2_bytes = static_cast<std::size_t>(p.l2CacheSize);
  info.max_shared_per_block = p.sharedMemPerBlockOptin;
  int clock_khz = 0, bus_bits = 0;
  if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device) == cudaSuccess &&
      cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device) == cudaSuccess) {
    info.memory_gbps_theoretical =
        2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;  // double data rate
  }
  (void)cudaGetLastError();
  char bus_id[32] = {};
  if (cudaDeviceGetPCIBusId(bus_id, sizeof bus_id, device) == cudaSuccess) {
    const PcieLink link = probe_pcie_link(bus_id);
    info.pcie_gen = link.max_gen;
    info.pcie_width = link.max_width;
  }
  (void)cudaGetLastError();
  return info;
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, DeviceInfo info) : device_(device), info_(std::move(info)) {}

  const DeviceInfo& info() const override { return info_; }

  Result<std::size_t> free_memory() override {
    TIERKV_RETURN_IF_ERROR(use_device(device_));
    std::size_t free = 0, total = 0;
    TIERKV_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free, &total));
    return free;
  }

  Result<Buffer> allocate(MemoryKind kind, std::size_t bytes) override {
    if (bytes == 0) return invalid_argument("allocate: zero bytes");
    TIERKV_RETURN_IF_ERROR(use_device(device_));
    void* p = nullptr;
    switch (kind) {
      case MemoryKind::kDevice:
        TIERKV_RETURN_IF_ERROR(with_size(cuda_alloc(&p, bytes, false), bytes, kind));
        break;
      case MemoryKind::kPinnedHost:
        TIERKV_RETURN_IF_ERROR(with_size(cuda_alloc(&p, bytes, true), bytes, kind));
        break;
      case MemoryKind::kPageableHost: {
        const std::size_t rounded = (bytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
        p = std::aligned_alloc(kHostAlignment, rounded);
        if (p == nullptr) return with_size(resource_exhausted("aligned_alloc failed"), bytes, kind);
        break;
      }
    }
    return wrap(p, bytes, kind);
  }

  Result<std::unique_ptr<Stream>> create_stream() override {
    TIERKV_RETURN_IF_ERROR(use_device(device_));
    cudaStream_t s = nullptr;
    TIERKV_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return std::unique_ptr<Stream>(std::make_unique<CudaStream>(device_, s));
  }

  Result<std::unique_ptr<Event>> create_event() override {
    TIERKV_RETURN_IF_ERROR(use_device(device_));
    cudaEvent_t e = nullptr;
    TIERKV_CUDA_RETURN_IF_ERROR(cudaEventCreate(&e));
    return std::unique_ptr<Event>(std::make_unique<CudaEvent>(e));
  }

  Result<double> elapsed_ms(const Event& start, const Event& end) override {
    auto* a = dynamic_cast<const CudaEvent*>(&start.base());
    auto* b = dynamic_cast<const CudaEvent*>(&end.base());
    if (a == nullptr || b == nullptr)
      return invalid_argument("elapsed_ms: events of another backend");
    float ms = 0;
    TIERKV_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, a->get(), b->get()));
    return static_cast<double>(ms);
  }

  Status fill_uniform(void* dst, std::size_t count, DType dtype, std::uint64_t seed, float lo,
                      float hi, Stream& stream) override {
    auto* s = dynamic_cast<CudaStream*>(&stream.base());
    if (s == nullptr) return invalid_argument("fill_uniform: stream of another backend");
    TIERKV_RETURN_IF_ERROR(use_device(device_));
    return launch_fill_uniform(dst, count, dtype, seed, lo, hi, s->get());
  }

  Status copy_runs(std::span<const CopyRun> runs, CopyPath path, int sm_blocks,
                   Stream& stream) override {
    auto* s = dynamic_cast<CudaStream*>(&stream.base());
    if (s == nullptr) return invalid_argument("copy_runs: stream of another backend");
    for (const CopyRun& r : runs) {
      if (r.bytes > 0 && (r.dst == nullptr || r.src == nullptr))
        return invalid_argument("copy_runs: null pointer");
    }
    if (runs.empty()) return Status::Ok();
    TIERKV_RETURN_IF_ERROR(use_device(device_));
    if (path == CopyPath::kSmKernel) return launch_copy_runs_kernel(runs, sm_blocks, s->get());
    return copy_engine_batch(runs, s->get());
  }

  Status prefill_attention(const PrefillAttentionArgs& args, Stream& stream) override {
    auto* s = dynamic_cast<CudaStream*>(&stream.base());
    if (s == nullptr) return invalid_argument("prefill_attention: stream of another backend");
    TIERKV_RETURN_IF_ERROR(validate(args));
    TIERKV_RETURN_IF_ERROR(use_device(device_));
    return launch_prefill_attention(args, info_.compute_units, s->get());
  }

  Status decode_attention(const DecodeAttentionArgs& args, Stream& stream) override {
    auto* s = dynamic_cast<CudaStream*>(&stream.base());
    if (s == nullptr) return invalid_argument("decode_attention: stream of another backend");
    TIERKV_RETURN_IF_ERROR(validate(args));
    TIERKV_RETURN_IF_ERROR(use_device(device_));
    return launch_decode_attention(args, info_.compute_units, s->get());
  }

 protected:
  void release(void* data, std::size_t size, MemoryKind kind) noexcept override {
    if (kind == MemoryKind::kPageableHost) {
      std::free(data);
      return;
    }
    (void)use_device(device_);
    if (kind == MemoryKind::kDevice) {
      (void)cudaFree(data);
    } else {
      (void)cudaHostUnregister(data);
      munmap(data, round_to_pages(size));
    }
  }

 private:
  static Status cuda_alloc(void** p, std::size_t bytes, bool pinned) {
    if (!pinned) {
      TIERKV_CUDA_RETURN_IF_ERROR(cudaMalloc(p, bytes));
      return Status::Ok();
    }
    // Pinned memory of exactly the pages asked for (no power-of-two rounding): mmap, then register
    // with the driver so the DMA engines and kernels can reach it.
    void* m = mmap(nullptr, round_to_pages(bytes), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
      return resource_exhausted("mmap failed: " + std::string(std::strerror(errno)));
    const cudaError_t e = cudaHostRegister(m, round_to_pages(bytes), cudaHostRegisterPortable);
    if (e != cudaSuccess) {
      munmap(m, round_to_pages(bytes));
      return cuda_error(e, "cudaHostRegister", __FILE__, __LINE__);
    }
    *p = m;
    return Status::Ok();
  }
  static std::size_t round_to_pages(std::size_t bytes) {
    return (bytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
  }

  // The copy-engine path: every run in one cudaMemcpyBatchAsync. The pointer arrays are per-thread
  // scratch that only grows, so steady-state calls allocate nothing.
  static Status copy_engine_batch(std::span<const CopyRun> runs, cudaStream_t stream) {
    thread_local std::vector<void*> dsts;
    thread_local std::vector<const void*> srcs;
    thread_local std::vector<std::size_t> sizes;
    dsts.clear();
    srcs.clear();
    sizes.clear();
    for (const CopyRun& r : runs) {
      if (r.bytes == 0) continue;
      dsts.push_back(r.dst);
      srcs.push_back(r.src);
      sizes.push_back(r.bytes);
    }
    if (dsts.empty()) return Status::Ok();
    cudaMemcpyAttributes attr{};
    attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
    attr.flags = cudaMemcpyFlagPreferOverlapWithCompute;
    std::size_t attr_index = 0;
    TIERKV_CUDA_RETURN_IF_ERROR(cudaMemcpyBatchAsync(dsts.data(), srcs.data(), sizes.data(),
                                                     dsts.size(), &attr, &attr_index, 1, stream));
    return Status::Ok();
  }
  static Status with_size(Status s, std::size_t bytes, MemoryKind kind) {
    if (s.ok()) return s;
    return s.with_context("allocate " + std::to_string(bytes) + " bytes of " +
                          std::string(memory_kind_name(kind)) + " memory");
  }

  int device_;
  DeviceInfo info_;
};

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

Result<std::unique_ptr<Backend>> create_cuda_backend(int device) {
  const int n = device_count();
  if (n == 0) return unavailable("no CUDA device is visible (no GPU, or no driver loaded)");
  if (device < 0 || device >= n) {
    return unavailable("CUDA device " + std::to_string(device) + " does not exist (" +
                       std::to_string(n) + " visible)");
  }
  TIERKV_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  TIERKV_CUDA_RETURN_IF_ERROR(cudaFree(nullptr));  // create the context now, not in a timed region
  TIERKV_ASSIGN_OR_RETURN(DeviceInfo info, probe(device));
  TIERKV_RETURN_IF_ERROR(check_kernel_image(info.name, info.cc_major, info.cc_minor));
  return std::unique_ptr<Backend>(std::make_unique<CudaBackend>(device, std::move(info)));
}

}  // namespace tierkv::cuda
