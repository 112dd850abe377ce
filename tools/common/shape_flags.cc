#include "common/shape_flags.h"

#include "common/bench_io.h"

namespace tierkv::bench {

void add_shape_flags(CLI::App& app, ShapeFlags& f) {
  app.add_option("--backend", f.backend, "cpu, cuda, or auto (cuda when a GPU is visible)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("--device", f.device, "CUDA device index")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  std::string presets;
  for (std::string_view n : model_preset_names())
    presets += (presets.empty() ? "" : ", ") + std::string(n);
  app.add_option("--model", f.model, "model preset whose KV shape is measured (" + presets + ")")
      ->capture_default_str();
  app.add_option("--page-tokens", f.page_tokens, "tokens per KV page [the model's, 16]")
      ->check(CLI::Range(1, 1024));
  app.add_option("--layout", f.layout, "page layout: nhd ([page][token][head][dim]) or hnd")
      ->capture_default_str()
      ->check(CLI::IsMember({"nhd", "hnd"}));
}

Result<Shape> resolve_shape(const ShapeFlags& f) {
  Shape s;
  TIERKV_ASSIGN_OR_RETURN(s.backend, backend_from_flag(f.backend));
  s.backend_from_flag = f.backend != "auto";
  auto model = model_preset(f.model);
  if (!model.ok()) return model.status().with_context("--model");
  s.model = *model;
  if (f.page_tokens > 0) s.model.page_tokens = f.page_tokens;
  s.layout = f.layout == "hnd" ? KvLayout::kHND : KvLayout::kNHD;
  TIERKV_RETURN_IF_ERROR(s.model.validate());
  return s;
}

}  // namespace tierkv::bench
