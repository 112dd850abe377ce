#include "engine/rope.h"

#include <cmath>
#include <numbers>

namespace tierkv {

std::vector<float> rope_inv_freq(const ModelSpec& s) {
  const int half = s.head_dim / 2;
  std::vector<float> out(static_cast<std::size_t>(half));
  const RopeScaling& r = s.rope_scaling;
  const double low_wavelen = r.original_max_positions / double(r.low_freq_factor);
  const double high_wavelen = r.original_max_positions / double(r.high_freq_factor);
  for (int i = 0; i < half; ++i) {
    double f = std::pow(double(s.rope_theta), -2.0 * i / s.head_dim);
    if (r.factor > 0) {
      const double wavelen = 2 * std::numbers::pi / f;
      if (wavelen > low_wavelen) {
        f /= r.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (r.original_max_positions / wavelen - r.low_freq_factor) /
                              (r.high_freq_factor - r.low_freq_factor);
        f = (1 - smooth) * f / r.factor + smooth * f;
      }
    }
    out[static_cast<std::size_t>(i)] = static_cast<float>(f);
  }
  return out;
}

}  // namespace tierkv
