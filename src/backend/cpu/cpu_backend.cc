#include "backend/cpu/cpu_backend.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "backend/cpu/cpu_stream.h"
#include "core/counter_rng.h"
#include "tierkv/attention.h"
#include "tierkv/prefill.h"

namespace tierkv::cpu {
namespace {

constexpr std::size_t kAlignment = 4096;

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "CPU";
}

DeviceInfo probe() {
  DeviceInfo info;
  info.backend = BackendKind::kCpu;
  info.name = cpu_model_name();
  info.compute_units = static_cast<std::int32_t>(std::max(1u, std::thread::hardware_concurrency()));
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page_size > 0) info.total_memory = std::size_t(pages) * std::size_t(page_size);
  long cache = sysconf(_SC_LEVEL3_CACHE_SIZE);
  if (cache <= 0) cache = sysconf(_SC_LEVEL2_CACHE_SIZE);
  info.l2_bytes = cache > 0 ? std::size_t(cache) : std::size_t{32} << 20;
  return info;
}

// Looks through decorating streams (the fault-injecting backend's) to the CpuStream that runs
// the work; nullptr for a stream of another backend.
CpuStream* as_cpu(Stream& s) {
  return dynamic_cast<CpuStream*>(&s.base());
}

class CpuBackend final : public Backend {
 public:
  CpuBackend() : info_(probe()) {}

  const DeviceInfo& info() const override { return info_; }

  Result<std::size_t> free_memory() override {
    const long pages = sysconf(_SC_AVPHYS_PAGES);
    const long page_size = sysconf(_SC_PAGESIZE);
    if (pages < 0 || page_size < 0) return unavailable("sysconf cannot tell the available memory");
    return std::size_t(pages) * std::size_t(page_size);
  }

  Result<Buffer> allocate(MemoryKind kind, std::size_t bytes) override {
    if (bytes == 0) return invalid_argument("allocate: zero bytes");
    const std::size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    if (rounded < bytes || (info_.total_memory > 0 && bytes > info_.total_memory)) {
      return resource_exhausted("allocate: " + std::to_string(bytes) + " bytes exceed the " +
                                std::to_string(info_.total_memory) + " bytes of this machine");
    }
    void* p = std::aligned_alloc(kAlignment, rounded);
    if (p == nullptr) {
      return resource_exhausted("allocate: cannot allocate " + std::to_string(bytes) +
                                " bytes of " + std::string(memory_kind_name(kind)) + " memory");
    }
    return wrap(p, bytes, kind);
  }

  Result<std::unique_ptr<Stream>> create_stream() override {
    return std::unique_ptr<Stream>(std::make_unique<CpuStream>());
  }

  Result<std::unique_ptr<Event>> create_event() override {
    return std::unique_ptr<Event>(std::make_unique<CpuEvent>());
  }

  Result<double> elapsed_ms(const Event& start, const Event& end) override {
    const auto* a = dynamic_cast<const CpuEvent*>(&start.base());
    const auto* b = dynamic_cast<const CpuEvent*>(&end.base());
    if (a == nullptr || b == nullptr)
      return invalid_argument("elapsed_ms: events of another backend");
    TIERKV_RETURN_IF_ERROR(a->error().with_context("elapsed_ms: the start event"));
    TIERKV_RETURN_IF_ERROR(b->error().with_context("elapsed_ms: the end event"));
    const auto ta = a->completed_at();
    const auto tb = b->completed_at();
    if (!ta || !tb)
      return failed_precondition("elapsed_ms: both events must be recorded and complete");
    return std::chrono::duration<double, std::milli>(*tb - *ta).count();
  }

  Status fill_uniform(void* dst, std::size_t count, DType dtype, std::uint64_t seed, float lo,
                      float hi, Stream& stream) override {
    CpuStream* s = as_cpu(stream);
    if (s == nullptr) return invalid_argument("fill_uniform: stream of another backend");
    if (dst == nullptr && count > 0) return invalid_argument("fill_uniform: null pointer");
    s->enqueue([=] {
      for (std::size_t i = 0; i < count; ++i) {
        store_from_float(dst, i, dtype, counter_uniform(seed, i, lo, hi));
      }
      return Status::Ok();
    });
    return Status::Ok();
  }

  Status copy_runs(std::span<const CopyRun> runs, CopyPath path, int sm_blocks,
                   Stream& stream) override {
    CpuStream* s = as_cpu(stream);
    if (s == nullptr) return invalid_argument("copy_runs: stream of another backend");
    // The same contract as the CUDA backend, so that CI catches what a GPU would refuse.
    if (path == CopyPath::kSmKernel && sm_blocks < 1)
      return invalid_argument("copy_runs: sm_blocks must be >= 1");
    for (const CopyRun& r : runs) {
      if (r.bytes > 0 && (r.dst == nullptr || r.src == nullptr))
        return invalid_argument("copy_runs: null pointer");
      const auto bits = reinterpret_cast<std::uintptr_t>(r.dst) |
                        reinterpret_cast<std::uintptr_t>(r.src) | r.bytes;
      if (path == CopyPath::kSmKernel && bits % 16 != 0) {
        return invalid_argument(
            "copy_runs (sm-kernel): a run is not 16-byte aligned in address or size");
      }
    }
    if (runs.empty()) return Status::Ok();
    s->enqueue([copies = std::vector<CopyRun>(runs.begin(), runs.end())] {
      for (const CopyRun& r : copies)
        std::memcpy(r.dst, r.src, r.bytes);
      return Status::Ok();
    });
    return Status::Ok();
  }

  Status prefill_attention(const PrefillAttentionArgs& args, Stream& stream) override {
    CpuStream* s = as_cpu(stream);
    if (s == nullptr) return invalid_argument("prefill_attention: stream of another backend");
    TIERKV_RETURN_IF_ERROR(validate(args));
    s->enqueue([args] {
      prefill_attention_reference(args);
      return Status::Ok();
    });
    return Status::Ok();
  }

  Status decode_attention(const DecodeAttentionArgs& args, Stream& stream) override {
    CpuStream* s = as_cpu(stream);
    if (s == nullptr) return invalid_argument("decode_attention: stream of another backend");
    TIERKV_RETURN_IF_ERROR(validate(args));
    s->enqueue([args] {
      decode_attention_reference(args);
      return Status::Ok();
    });
    return Status::Ok();
  }

 protected:
  void release(void* data, std::size_t, MemoryKind) noexcept override { std::free(data); }

 private:
  DeviceInfo info_;
};

}  // namespace

std::unique_ptr<Backend> create_cpu_backend() {
  return std::make_unique<CpuBackend>();
}

}  // namespace tierkv::cpu
