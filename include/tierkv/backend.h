// The backend seam: every device operation tierkv performs goes through a Backend.
//
// Two implementations exist: "cpu" (plain C++, streams are worker threads, fp32 math on 16-bit
// storage; used by CI and tiny models) and "cuda". Both are real: the CPU backend executes each
// operation asynchronously on its stream's thread, in order, exactly as a CUDA stream would.
//
// Objects:
//   Backend  one device. Creates buffers, streams and events and launches kernels.
//   Buffer   move-only owner of memory of one MemoryKind; freed when destroyed.
//   Stream   an in-order queue of operations. Operations return once queued; their errors
//            surface from that call when detected at enqueue time, otherwise from a later
//            synchronize() (like CUDA's asynchronous errors).
//   Event    a point in a stream; used for ordering (Stream::wait) and timing (elapsed_ms). An
//            event recorded after an asynchronous failure on its stream completes with that
//            error, and a stream that waits on it fails too.
//   Graph    a captured sequence of stream operations, replayed with one call.
//
// Lifetimes: Buffers, Streams, Events and Graphs must be destroyed before the Backend that made
// them. Destroying a Stream first waits for its queued work.
// Thread safety: a Backend may be used from several threads at once. A single Stream, Event or
// Graph must not be used from two threads at the same time.
// No CUDA types appear here: native handles are exposed as void*.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "tierkv/dtype.h"
#include "tierkv/status.h"

namespace tierkv {

struct DecodeAttentionArgs;   // tierkv/attention.h
struct PrefillAttentionArgs;  // tierkv/prefill.h

enum class BackendKind : std::uint8_t { kCpu = 0, kCuda = 1 };
std::string_view backend_kind_name(BackendKind k);  // "cpu" / "cuda"
Result<BackendKind> parse_backend_kind(std::string_view name);

enum class MemoryKind : std::uint8_t {
  kDevice = 0,        // device memory (HBM); on the CPU backend, ordinary host memory
  kPinnedHost = 1,    // page-locked host memory the device can DMA and read directly
  kPageableHost = 2,  // ordinary host memory
};
std::string_view memory_kind_name(MemoryKind k);

// What a backend's device is. Fields that cannot be known are 0 or empty.
struct DeviceInfo {
  BackendKind backend = BackendKind::kCpu;
  std::string name;  // as the driver reports it, e.g. "NVIDIA H100 80GB HBM3"
  std::int32_t device_index = 0;
  std::int32_t compute_units = 0;             // streaming multiprocessors, or CPU hardware threads
  std::int32_t cc_major = 0, cc_minor = 0;    // CUDA compute capability
  std::size_t total_memory = 0;               // bytes of device memory
  std::size_t l2_bytes = 0;                   // last-level cache that benchmarks must defeat
  std::size_t max_shared_per_block = 0;       // opt-in shared memory per block (CUDA)
  double memory_gbps_theoretical = 0;         // from memory clock and bus width
  std::int32_t pcie_gen = 0, pcie_width = 0;  // current host link, when the driver tells
};

class Backend;
class Stream;

// One contiguous copy of `bytes` from `src` to `dst`.
struct CopyRun {
  void* dst = nullptr;
  const void* src = nullptr;
  std::size_t bytes = 0;
};

// How a set of runs crosses between host and device memory.
enum class CopyPath : std::uint8_t {
  kCopyEngine = 0,  // the DMA engines, one batched call: no SMs used, best over large runs
  kSmKernel = 1,    // a kernel that reads and writes pinned host memory directly: best for many
                    // small runs when no compute runs beside it (it takes SMs from that compute)
};
std::string_view copy_path_name(CopyPath p);  // "copy-engine" / "sm-kernel"

// Move-only owner of `size()` bytes of one MemoryKind, allocated by a Backend. Alignment is at
// least 256 bytes. An empty Buffer owns nothing.
class Buffer {
 public:
  Buffer() = default;
  ~Buffer() { reset(); }
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  std::size_t size() const { return size_; }
  MemoryKind kind() const { return kind_; }
  bool empty() const { return data_ == nullptr; }
  void reset();

 private:
  friend class Backend;
  Buffer(Backend* owner, void* data, std::size_t size, MemoryKind kind)
      : owner_(owner), data_(data), size_(size), kind_(kind) {}

  Backend* owner_ = nullptr;
  void* data_ = nullptr;
  std::size_t size_ = 0;
  MemoryKind kind_ = MemoryKind::kDevice;
};

class Event {
 public:
  virtual ~Event() = default;
  // Blocks until the work before the last record() completed. OK at once if never recorded.
  // Returns the asynchronous error that work ended with, if any (as a device event does).
  virtual Status synchronize() = 0;
  // Whether the work before the last record() completed; once it did, its asynchronous error,
  // if any, instead of true.
  virtual Result<bool> done() = 0;
  // The event that executes this one's work: itself, unless it decorates another (the
  // fault-injecting backend's events do). Backends look through decorators with base(); it
  // returns the innermost event, never a decorator.
  virtual Event& base() { return *this; }
  virtual const Event& base() const { return *this; }
};

class Graph {
 public:
  virtual ~Graph() = default;
  // Enqueues the captured operations on `stream`.
  virtual Status launch(Stream& stream) = 0;
};

class Stream {
 public:
  virtual ~Stream() = default;

  // Copies `bytes` from `src` to `dst`, any pair of memory kinds of this backend.
  virtual Status copy(void* dst, const void* src, std::size_t bytes) = 0;
  // Sets `bytes` bytes at `dst` (device or pinned memory) to `value`.
  virtual Status fill(void* dst, std::uint8_t value, std::size_t bytes) = 0;
  // Marks this point of the stream in `event`.
  virtual Status record(Event& event) = 0;
  // Later work on this stream waits for the event's last record (at the time of this call). When
  // that record completes with an error, this stream fails with it (from its synchronize(), and
  // in events recorded on it later).
  virtual Status wait(const Event& event) = 0;
  // Blocks until all queued work completed; returns the first asynchronous error since the last
  // synchronize(), if any.
  virtual Status synchronize() = 0;
  // Until end_capture(), operations are captured into a graph instead of executed. Capture must
  // not span host synchronization of this stream.
  virtual Status begin_capture() = 0;
  virtual Result<std::unique_ptr<Graph>> end_capture() = 0;
  // cudaStream_t on the CUDA backend; nullptr on the CPU backend.
  virtual void* native_handle() = 0;
  // The stream that executes this one's work: itself, unless it decorates another (the
  // fault-injecting backend's streams do). Backends look through decorators with base(); it
  // returns the innermost stream, never a decorator.
  virtual Stream& base() { return *this; }
  virtual const Stream& base() const { return *this; }
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const DeviceInfo& info() const = 0;
  BackendKind kind() const { return info().backend; }

  // Bytes of device memory free right now (host memory available, on the CPU backend).
  virtual Result<std::size_t> free_memory() = 0;

  // Allocates `bytes` (> 0) of `kind`. ResourceExhausted when the memory is not there.
  virtual Result<Buffer> allocate(MemoryKind kind, std::size_t bytes) = 0;
  virtual Result<std::unique_ptr<Stream>> create_stream() = 0;
  virtual Result<std::unique_ptr<Event>> create_event() = 0;
  // Milliseconds between two completed events recorded on this backend's streams.
  virtual Result<double> elapsed_ms(const Event& start, const Event& end) = 0;

  // Fills `count` elements of `dtype` at `dst` with values uniform in [lo, hi), a pure function of
  // (seed, element index): both backends produce the same bits.
  virtual Status fill_uniform(void* dst, std::size_t count, DType dtype, std::uint64_t seed,
                              float lo, float hi, Stream& stream) = 0;

  // Copies every run on `stream`, in no particular order among the runs; runs must not overlap.
  // Pointers are device or pinned host memory. kSmKernel uses `sm_blocks` blocks (>= 1) and needs
  // 16-byte aligned pointers and sizes (on every backend). A call that fails copies nothing. On the
  // CUDA backend it allocates nothing after the first calls, and kSmKernel can be captured in a
  // graph; the CPU backend copies both paths alike on the stream's thread.
  virtual Status copy_runs(std::span<const CopyRun> runs, CopyPath path, int sm_blocks,
                           Stream& stream) = 0;

  // Decode attention over paged KV (tierkv/attention.h).
  virtual Status decode_attention(const DecodeAttentionArgs& args, Stream& stream) = 0;

  // Causal prefill attention of new tokens over paged KV (tierkv/prefill.h).
  virtual Status prefill_attention(const PrefillAttentionArgs& args, Stream& stream) = 0;

 protected:
  Buffer wrap(void* data, std::size_t size, MemoryKind kind) { return {this, data, size, kind}; }
  // Frees memory returned by allocate(); called by Buffer.
  virtual void release(void* data, std::size_t size, MemoryKind kind) noexcept = 0;

 private:
  friend class Buffer;
};

// Creates the backend of `kind` on device `device` (ignored by the CPU backend).
// Unimplemented when tierkv was built without CUDA; Unavailable when no device is present.
Result<std::unique_ptr<Backend>> create_backend(BackendKind kind, int device = 0);

// Whether this build contains the CUDA backend, and how many CUDA devices are visible (0 when
// none or when built without CUDA).
bool cuda_backend_built();
int cuda_device_count();

// The element value fill_uniform writes at `index`: a counter-based hash, identical on all
// backends.
float uniform_at(std::uint64_t seed, std::uint64_t index, float lo, float hi);

}  // namespace tierkv
