// Parts of the backend seam that do not depend on a backend.
#include <string>

#include "core/counter_rng.h"
#include "tierkv/backend.h"

namespace tierkv {

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    reset();
    owner_ = o.owner_;
    data_ = o.data_;
    size_ = o.size_;
    kind_ = o.kind_;
    o.owner_ = nullptr;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

void Buffer::reset() {
  if (data_ != nullptr && owner_ != nullptr) owner_->release(data_, size_, kind_);
  owner_ = nullptr;
  data_ = nullptr;
  size_ = 0;
}

std::string_view backend_kind_name(BackendKind k) {
  return k == BackendKind::kCuda ? "cuda" : "cpu";
}

Result<BackendKind> parse_backend_kind(std::string_view name) {
  if (name == "cpu") return BackendKind::kCpu;
  if (name == "cuda") return BackendKind::kCuda;
  return invalid_argument("unknown backend '" + std::string(name) + "' (known: cpu, cuda)");
}

std::string_view copy_path_name(CopyPath p) {
  return p == CopyPath::kSmKernel ? "sm-kernel" : "copy-engine";
}

std::string_view memory_kind_name(MemoryKind k) {
  switch (k) {
    case MemoryKind::kDevice:
      return "device";
    case MemoryKind::kPinnedHost:
      return "pinned";
    case MemoryKind::kPageableHost:
      return "pageable";
  }
  return "unknown";
}

float uniform_at(std::uint64_t seed, std::uint64_t index, float lo, float hi) {
  return counter_uniform(seed, index, lo, hi);
}

}  // namespace tierkv
