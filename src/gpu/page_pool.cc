#include "tierkv/page_pool.h"

#include <algorithm>
#include <limits>
#include <mutex>
#include <new>
#include <set>
#include <string>

#include "core/key_map.h"

namespace tierkv {

namespace {
constexpr std::int32_t kNone = -1;
}  // namespace

// Invariants (under mu): every page is in exactly one state -- free (is_free), cached (refs == 0,
// named, in the LRU list) or referenced (refs > 0; named or not). index maps the key of every
// named page to it. run_free[r] counts free pages of run r; full_runs / partial_runs hold the runs
// whose pages are all / some free.
struct PagePool::State {
  Backend& backend;
  PagePoolOptions opts;
  std::vector<Buffer> k, v;
  std::vector<const void*> k_ptrs, v_ptrs;

  mutable std::mutex mu;
  std::vector<std::int32_t> refs;
  std::vector<std::uint8_t> is_free, named;
  std::vector<Key> keys;
  KeyMap<std::int32_t> index;
  std::vector<std::int32_t> lru_prev, lru_next;     // intrusive list of cached pages
  std::int32_t lru_head = kNone, lru_tail = kNone;  // head: least recently released
  std::vector<std::int32_t> run_free;
  std::set<std::int32_t> full_runs, partial_runs;
  std::int32_t free_count = 0, cached_count = 0;
  std::uint64_t hit_pages = 0, evicted_pages = 0;

  State(Backend& b, const PagePoolOptions& o)
      : backend(b), opts(o), index(std::size_t(o.num_pages)) {}

  std::int32_t run_of(std::int32_t page) const { return page / opts.pages_per_run; }
  std::int32_t run_size(std::int32_t run) const {
    return std::min(opts.pages_per_run, opts.num_pages - run * opts.pages_per_run);
  }

  void track_run(std::int32_t run) {
    full_runs.erase(run);
    partial_runs.erase(run);
    if (run_free[run] == run_size(run)) {
      full_runs.insert(run);
    } else if (run_free[run] > 0) {
      partial_runs.insert(run);
    }
  }

  void mark_free(std::int32_t page) {
    is_free[page] = 1;
    ++free_count;
    ++run_free[run_of(page)];
    track_run(run_of(page));
  }

  void take(std::int32_t page, std::vector<std::int32_t>& out) {
    is_free[page] = 0;
    refs[page] = 1;
    --free_count;
    --run_free[run_of(page)];
    track_run(run_of(page));
    out.push_back(page);
  }

  void lru_push_back(std::int32_t p) {
    lru_prev[p] = lru_tail;
    lru_next[p] = kNone;
    (lru_tail == kNone ? lru_head : lru_next[lru_tail]) = p;
    lru_tail = p;
    ++cached_count;
  }

  void lru_remove(std::int32_t p) {
    (lru_prev[p] == kNone ? lru_head : lru_next[lru_prev[p]]) = lru_next[p];
    (lru_next[p] == kNone ? lru_tail : lru_prev[lru_next[p]]) = lru_prev[p];
    --cached_count;
  }

  void evict_oldest() {
    const std::int32_t p = lru_head;
    lru_remove(p);
    index.erase(keys[p]);
    named[p] = 0;
    ++evicted_pages;
    mark_free(p);
  }

  // Takes free pages of `run` until `n` are taken or the run is exhausted.
  void take_from_run(std::int32_t run, std::int32_t n, std::vector<std::int32_t>& out) {
    const std::int32_t first = run * opts.pages_per_run;
    for (std::int32_t p = first; p < first + run_size(run) && n > 0; ++p) {
      if (is_free[p]) {
        take(p, out);
        --n;
      }
    }
  }
};

Result<std::unique_ptr<PagePool>> PagePool::create(Backend& backend, const PagePoolOptions& o) {
  TIERKV_RETURN_IF_ERROR(o.model.validate());
  if (o.num_pages <= 0 || o.num_pages > kMaxPoolPages) {
    return invalid_argument("page pool: num_pages must be in [1, " +
                            std::to_string(kMaxPoolPages) + "], got " +
                            std::to_string(o.num_pages));
  }
  if (o.pages_per_run <= 0 || o.pages_per_run > o.num_pages) {
    return invalid_argument("page pool: pages_per_run must be in [1, num_pages]");
  }
  // Every size is checked before anything is allocated: the device arrays against the device's
  // free memory, and the host-side bookkeeping (a few tens of bytes a page) is small next to them.
  const std::size_t page_bytes = std::size_t(o.model.page_tokens) * o.model.num_kv_heads *
                                 o.model.head_dim * dtype_size(o.model.kv_dtype);
  const std::size_t layer_bytes = page_bytes * std::size_t(o.num_pages);  // < 2^31 * 2^29
  const std::size_t arrays = 2 * std::size_t(o.model.num_layers);
  if (layer_bytes > std::numeric_limits<std::size_t>::max() / arrays) {
    return invalid_argument("page pool: the pool's size overflows 64 bits");
  }
  auto free_bytes = backend.free_memory();
  if (free_bytes.ok() && layer_bytes * arrays > *free_bytes) {
    return resource_exhausted("page pool: " + std::to_string(o.num_pages) + " pages of " +
                              std::to_string(o.model.num_layers) + " layers need " +
                              std::to_string(layer_bytes * arrays) + " bytes of device memory, " +
                              std::to_string(*free_bytes) + " are free");
  }
  try {
    auto st = std::make_unique<State>(backend, o);
    for (std::int32_t l = 0; l < o.model.num_layers; ++l) {
      for (auto* arrays_of : {&st->k, &st->v}) {
        auto buf = backend.allocate(MemoryKind::kDevice, layer_bytes);
        if (!buf.ok()) return buf.status().with_context("page pool: layer " + std::to_string(l));
        arrays_of->push_back(std::move(buf).value());
      }
      st->k_ptrs.push_back(st->k.back().data());
      st->v_ptrs.push_back(st->v.back().data());
    }
    const std::size_t n = std::size_t(o.num_pages);
    st->refs.assign(n, 0);
    st->is_free.assign(n, 0);
    st->named.assign(n, 0);
    st->keys.resize(n);
    st->lru_prev.assign(n, kNone);
    st->lru_next.assign(n, kNone);
    st->run_free.assign(std::size_t((o.num_pages + o.pages_per_run - 1) / o.pages_per_run), 0);
    for (std::int32_t p = 0; p < o.num_pages; ++p)
      st->mark_free(p);
    return std::unique_ptr<PagePool>(new PagePool(std::move(st)));
  } catch (const std::bad_alloc&) {
    return resource_exhausted("page pool: out of host memory for the bookkeeping of " +
                              std::to_string(o.num_pages) + " pages");
  }
}

PagePool::PagePool(std::unique_ptr<State> state) : state_(std::move(state)) {}
PagePool::~PagePool() = default;

const PagePoolOptions& PagePool::options() const {
  return state_->opts;
}

PagedKvView PagePool::view() const {
  const ModelSpec& m = state_->opts.model;
  PagedKvView v;
  v.k_layers = state_->k_ptrs;
  v.v_layers = state_->v_ptrs;
  v.num_pages = state_->opts.num_pages;
  v.strides = packed_strides(state_->opts.layout, m.page_tokens, m.num_kv_heads, m.head_dim);
  v.page_tokens = m.page_tokens;
  v.num_kv_heads = m.num_kv_heads;
  v.head_dim = m.head_dim;
  v.dtype = m.kv_dtype;
  return v;
}

std::int32_t PagePool::count_cached(std::span<const Key> keys) const {
  std::lock_guard lock(state_->mu);
  std::int32_t n = 0;
  for (const Key& k : keys) {
    if (state_->index.find(k) == nullptr) break;
    ++n;
  }
  return n;
}

std::vector<std::int32_t> PagePool::acquire_cached(std::span<const Key> keys) {
  State& s = *state_;
  std::lock_guard lock(s.mu);
  std::vector<std::int32_t> pages;
  for (const Key& k : keys) {
    const std::int32_t* p = s.index.find(k);
    if (p == nullptr) break;
    if (s.refs[*p]++ == 0) s.lru_remove(*p);
    pages.push_back(*p);
  }
  s.hit_pages += pages.size();
  return pages;
}

Result<std::vector<std::int32_t>> PagePool::allocate(std::int32_t n) {
  State& s = *state_;
  if (n < 0) return invalid_argument("page pool: cannot allocate a negative number of pages");
  if (n > s.opts.num_pages) {
    return resource_exhausted("page pool: " + std::to_string(n) + " pages wanted, the pool has " +
                              std::to_string(s.opts.num_pages));
  }
  std::lock_guard lock(s.mu);
  if (s.free_count + s.cached_count < n) {
    return resource_exhausted("page pool: " + std::to_string(n) + " pages wanted, " +
                              std::to_string(s.free_count) + " free and " +
                              std::to_string(s.cached_count) + " evictable of " +
                              std::to_string(s.opts.num_pages));
  }
  while (s.free_count < n)
    s.evict_oldest();
  std::vector<std::int32_t> out;
  out.reserve(std::size_t(n));
  std::int32_t left = n;
  // Whole runs first, so each chunk lands contiguously; then partial runs, to keep whole runs
  // whole.
  while (left >= s.opts.pages_per_run && !s.full_runs.empty()) {
    const std::int32_t run = *s.full_runs.begin();
    const std::int32_t take = s.run_size(run);
    s.take_from_run(run, take, out);
    left -= take;
  }
  while (left > 0 && !s.partial_runs.empty()) {
    const std::int32_t run = *s.partial_runs.begin();
    const std::int32_t before = std::int32_t(out.size());
    s.take_from_run(run, left, out);
    left -= std::int32_t(out.size()) - before;
  }
  while (left > 0) {  // break whole runs for what remains
    const std::int32_t run = *s.full_runs.begin();
    const std::int32_t before = std::int32_t(out.size());
    s.take_from_run(run, left, out);
    left -= std::int32_t(out.size()) - before;
  }
  return out;
}

bool PagePool::publish(std::int32_t page, const Key& key) {
  State& s = *state_;
  std::lock_guard lock(s.mu);
  if (page < 0 || page >= s.opts.num_pages || s.named[page] || s.refs[page] == 0) return false;
  if (!s.index.insert(key, page)) return false;
  s.named[page] = 1;
  s.keys[page] = key;
  return true;
}

Status PagePool::release(std::span<const std::int32_t> pages) {
  State& s = *state_;
  std::lock_guard lock(s.mu);
  // All or nothing: every id is checked, counting repeats, before any reference is dropped.
  std::vector<std::pair<std::int32_t, std::int32_t>> uses;  // (page, times listed)
  uses.reserve(pages.size());
  for (std::int32_t p : pages) {
    if (p < 0 || p >= s.opts.num_pages) {
      return invalid_argument("page pool: release of page " + std::to_string(p) + ", outside [0, " +
                              std::to_string(s.opts.num_pages) + ")");
    }
    uses.emplace_back(p, 1);
  }
  std::sort(uses.begin(), uses.end());
  for (std::size_t i = 0; i < uses.size();) {
    std::size_t j = i;
    while (j < uses.size() && uses[j].first == uses[i].first)
      ++j;
    if (s.refs[uses[i].first] < std::int32_t(j - i)) {
      return failed_precondition("page pool: release of page " + std::to_string(uses[i].first) +
                                 " more often than it is referenced (" +
                                 std::to_string(s.refs[uses[i].first]) + ")");
    }
    i = j;
  }
  for (auto it = pages.rbegin(); it != pages.rend(); ++it) {
    const std::int32_t p = *it;
    if (--s.refs[p] > 0) continue;
    if (s.named[p]) {
      s.lru_push_back(p);
    } else {
      s.mark_free(p);
    }
  }
  return Status::Ok();
}

PagePoolStats PagePool::stats() const {
  const State& s = *state_;
  std::lock_guard lock(s.mu);
  PagePoolStats st;
  st.num_pages = s.opts.num_pages;
  st.free_pages = s.free_count;
  st.cached_pages = s.cached_count;
  st.referenced_pages = s.opts.num_pages - s.free_count - s.cached_count;
  st.hit_pages = s.hit_pages;
  st.evicted_pages = s.evicted_pages;
  return st;
}

}  // namespace tierkv
