#pragma once

#include <memory>

#include "tierkv/backend.h"

namespace tierkv::cpu {

// The CPU backend: device memory is host memory, streams are worker threads, kernels are the
// references. Thread-safe.
std::unique_ptr<Backend> create_cpu_backend();

}  // namespace tierkv::cpu
