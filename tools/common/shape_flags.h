// The flags every KV-shaped benchmark shares: which backend and device, which model's KV shape,
// page size and in-page layout. Added to a CLI11 app in one place, resolved in one place.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "tierkv/backend.h"
#include "tierkv/model_spec.h"
#include "tierkv/paged_kv.h"

namespace tierkv::bench {

struct ShapeFlags {
  std::string backend = "auto";
  int device = 0;
  std::string model = "llama-3.1-8b";
  int page_tokens = 0;  // 0: the model's
  std::string layout = "nhd";
};

// --backend, --device, --model, --page-tokens, --layout.
void add_shape_flags(CLI::App& app, ShapeFlags& flags);

struct Shape {
  BackendKind backend = BackendKind::kCpu;
  bool backend_from_flag = false;  // named on the command line rather than chosen by "auto"
  ModelSpec model;                 // the preset with the page size applied
  KvLayout layout = KvLayout::kNHD;
};

// InvalidArgument naming the flag when a value is unknown or the model invalid.
Result<Shape> resolve_shape(const ShapeFlags& flags);

}  // namespace tierkv::bench
