#include "replay_max_rate.h"

#include <cmath>

namespace tierkv::cli::replay {

Status find_max_rate(const std::function<Result<double>(double)>& p90_at, int steps, MaxRate& m) {
  double pass = 0, fail = 0;  // 0: not found yet
  double s = 1.0;
  for (int k = 0; k < steps; ++k) {
    TIERKV_ASSIGN_OR_RETURN(const double p90, p90_at(s));
    m.probes.emplace_back(s, p90);
    if (p90 <= m.threshold_ms) {
      pass = std::max(pass, s);
    } else {
      fail = fail == 0 ? s : std::min(fail, s);
    }
    if (pass > 0 && fail > 0) {
      s = std::sqrt(pass * fail);
    } else if (fail == 0) {
      s *= 2;
    } else {
      s /= 2;
    }
  }
  m.max_scale = pass;
  m.failed_scale = fail;
  return Status::Ok();
}

}  // namespace tierkv::cli::replay
