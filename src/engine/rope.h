// Rotary embedding frequencies, with Llama 3's long-context rescaling.
#pragma once

#include <vector>

#include "tierkv/model_spec.h"

namespace tierkv {

// inv_freq[i] = theta^(-2i / head_dim) for i < head_dim / 2, then, when rope_scaling.factor > 0,
// rescaled as Llama 3.1 does: wavelengths longer than original_max_positions / low_freq_factor are
// divided by `factor`, shorter than original_max_positions / high_freq_factor kept, and those in
// between interpolated smoothly. Computed in double, returned as float.
std::vector<float> rope_inv_freq(const ModelSpec& spec);

}  // namespace tierkv
