// The disk tier (tierkv/disk_store.h). One file per record; an in-memory index of the directory
// (name -> size, LRU position, generation) under one mutex.
//
// Invariants:
//  - The index holds exactly the records published (renamed to their final name) by this store or
//    found valid at open, minus those removed since. Every rename, removal and index change of a
//    final name happens under mu_, so a name's index entry and the file under that name change
//    together; each publication gets a new generation.
//  - A reader opens the file under mu_ and reads it outside: the open descriptor keeps the bytes
//    of that generation readable even if the name is replaced or removed meanwhile. A reader that
//    finds the record bad removes it only if the name still has the generation it read.
//  - used_ + reserved_ <= budget (when there is one): reserved_ counts writes in flight.
//  - A write that must evict to fit takes over the file of a victim of its own size that no reader
//    has open (Entry::readers): the victim's name is renamed to the write's temporary name under
//    mu_, so the victim stops being a record at once, and the write overwrites blocks the file
//    system has already allocated and written, instead of allocating new ones (on ext4 and XFS
//    that skips the conversion of unwritten extents that makes writes into a fresh file slower).
//    A reader's open descriptor never sees its bytes change: files with readers are not taken.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <list>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "core/record.h"
#include "tiers/disk/disk_files.h"

namespace tierkv::disk {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kRememberEvicted = 4096;

double us_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

bool direct_capable(const void* p, std::size_t n) {
  return reinterpret_cast<std::uintptr_t>(p) % kDirectAlign == 0 && n % kDirectAlign == 0;
}

std::string human_bytes(std::uint64_t b) {
  char s[32];
  if (b >= (1ull << 30))
    std::snprintf(s, sizeof s, "%.1f GiB", double(b) / double(1ull << 30));
  else
    std::snprintf(s, sizeof s, "%.1f MiB", double(b) / double(1ull << 20));
  return s;
}

const char* sync_name(DiskSync s) {
  switch (s) {
    case DiskSync::kNone:
      return "no fsync";
    case DiskSync::kFile:
      return "fsync file";
    case DiskSync::kFileAndDirectory:
      return "fsync file and directory";
  }
  return "?";
}

Status check_shape(const RecordId& id, std::size_t bytes) {
  TIERKV_RETURN_IF_ERROR(validate_record_id(id));
  if (bytes != id.payload_bytes())
    return invalid_argument("payload buffer of " + std::to_string(bytes) +
                            " bytes for a record of " + std::to_string(id.payload_bytes()));
  return Status::Ok();
}

// With DiskStoreOptions::verify_while_reading, records at least this large are verified layer by
// layer as their pieces land: XXH3 over a 32 MiB record takes milliseconds of one core, a tenth to
// a fifth of its O_DIRECT read on a 2-3 GB/s disk.
constexpr std::uint64_t kOverlapMinBytes = 4 << 20;

bool overlaps(const RecordId& id) {
  return id.payload_bytes() >= kOverlapMinBytes && id.num_layers >= 2;
}

// Reads the payload `h` describes into `payload` and verifies every layer. With `overlap`, a large
// payload is verified layer by layer from the read's progress callback: through io_uring that is
// the thread that reaps completions, which hashes one layer while the rest of the record is still
// in flight (no helper thread); the file layers without streaming call it once, at the end.
// `*io_failed` tells an I/O error (the record may be fine) from a bad record (DataLoss).
Status read_payload_verified(File& f, const RecordHeader& h, std::span<std::uint8_t> payload,
                             bool overlap, bool* io_failed) {
  *io_failed = false;
  const auto truncated = [] { return data_loss("corrupt record: the payload ends early"); };
  if (!overlap || !overlaps(h.id)) {
    Result<std::size_t> n = read_full(f, h.header_bytes, payload);
    if (!n.ok()) {
      *io_failed = true;
      return n.status();
    }
    if (*n != payload.size()) return truncated();
    return verify_record_payload(h, payload);
  }
  const std::uint64_t lb = h.id.layer_bytes;
  std::uint32_t verified = 0;  // layers checked so far; landed() calls do not overlap
  Status verdict;
  Result<std::size_t> got = f.read_at_streaming(h.header_bytes, payload, [&](std::size_t n) {
    while (verdict.ok() && verified < h.id.num_layers && n >= (verified + 1) * lb) {
      verdict = verify_record_layer(h, verified, payload.subspan(verified * lb, lb));
      ++verified;
    }
  });
  if (!got.ok()) {
    *io_failed = true;
    return got.status();
  }
  if (*got != payload.size()) return truncated();
  if (verdict.ok() && verified != h.id.num_layers)
    return internal_error("disk read: the read ended with layers left unverified");
  return verdict;
}

class DiskStore final : public Store {
 public:
  DiskStore(const DiskStoreOptions& o, std::string dir, std::shared_ptr<FileSystem> fs,
            std::unique_ptr<DirLock> lock, bool direct)
      : o_(o), dir_(std::move(dir)), fs_(std::move(fs)), lock_(std::move(lock)), direct_(direct) {
    caps_.name = "disk";
    caps_.persistent = true;
    caps_.description = "disk " + dir_ + " (" + fs_->describe() + ", " +
                        (direct        ? "O_DIRECT"
                         : o.direct_io ? "buffered: the file system refuses O_DIRECT"
                                       : "buffered: direct_io off") +
                        ", " + sync_name(o.sync) +
                        (o.budget_bytes ? ", budget " + human_bytes(o.budget_bytes) : "") + ")";
    st_.budget_bytes = o.budget_bytes;
  }

  Status rebuild(DiskRecovery* recovery);

  const StoreCapabilities& capabilities() const override { return caps_; }
  Result<bool> contains(const RecordId& id) override {
    std::lock_guard<std::mutex> l(mu_);
    return index_.count(record_file_name(id)) != 0;
  }
  Status read(const RecordId& id, std::span<std::uint8_t> payload) override;
  Status write(const RecordId& id, std::span<const std::uint8_t> payload) override;
  Status erase(const RecordId& id) override;
  StoreStats stats() const override {
    std::lock_guard<std::mutex> l(mu_);
    StoreStats s = st_;
    s.records = index_.size();
    s.bytes_held = payload_held_;
    return s;
  }

 private:
  struct Entry {
    std::uint64_t file_bytes = 0;
    std::uint64_t payload_bytes = 0;
    std::uint64_t generation = 0;
    std::list<std::string>::iterator lru;
    std::int32_t readers = 0;  // reads of this generation in flight
  };

  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  // Index bookkeeping; all REQUIRE mu_.
  void add_locked(const std::string& name, std::uint64_t file_bytes, std::uint64_t payload,
                  bool newest);
  void forget_locked(const std::string& name);
  void remove_locked(std::string name, bool evicted);  // by value: callers pass lru_ elements
  void note_eviction_locked(const std::string& name);  // counts it; later reads miss as evicted
  void remove_if_generation_locked(const std::string& name, std::uint64_t gen);

  Status read_verified(File& f, const RecordId& id, std::span<std::uint8_t> payload,
                       MissReason* why);
  // Makes room for a file of `bytes` (evicting LRU records) and counts it as reserved. Sets
  // *reused when an evicted file of that size was renamed to `tmp` to be overwritten.
  Status reserve(std::uint64_t bytes, const std::string& tmp, bool* reused);
  Status write_temporary(const RecordId& id, std::span<const std::uint8_t> payload,
                         const std::string& tmp, bool reused);
  Status publish(const std::string& tmp, const std::string& name, std::uint64_t file_bytes,
                 std::uint64_t payload_bytes, std::uint64_t* gen);

  const DiskStoreOptions o_;
  const std::string dir_;
  const std::shared_ptr<FileSystem> fs_;
  const std::unique_ptr<DirLock> lock_;
  const bool direct_;
  StoreCapabilities caps_;
  std::atomic<std::uint64_t> temp_seq_{0};

  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> index_;  // GUARDED_BY(mu_)
  std::list<std::string> lru_;                    // GUARDED_BY(mu_): front = most recent
  std::unordered_set<std::string> evicted_;       // GUARDED_BY(mu_): recent evictions
  std::deque<std::string> evicted_order_;         // GUARDED_BY(mu_)
  std::uint64_t used_ = 0;                        // GUARDED_BY(mu_): indexed files' bytes
  std::uint64_t reserved_ = 0;                    // GUARDED_BY(mu_): writes in flight
  std::uint64_t payload_held_ = 0;                // GUARDED_BY(mu_)
  std::uint64_t next_generation_ = 1;             // GUARDED_BY(mu_)
  StoreStats st_;                                 // GUARDED_BY(mu_)
};

void DiskStore::add_locked(const std::string& name, std::uint64_t file_bytes, std::uint64_t payload,
                           bool newest) {
  forget_locked(name);
  lru_.insert(newest ? lru_.begin() : lru_.end(), name);
  index_[name] =
      Entry{file_bytes, payload, next_generation_++, newest ? lru_.begin() : std::prev(lru_.end())};
  used_ += file_bytes;
  payload_held_ += payload;
  evicted_.erase(name);
}

void DiskStore::forget_locked(const std::string& name) {
  auto it = index_.find(name);
  if (it == index_.end()) return;
  used_ -= it->second.file_bytes;
  payload_held_ -= it->second.payload_bytes;
  lru_.erase(it->second.lru);
  index_.erase(it);
}

void DiskStore::remove_locked(std::string name, bool evicted) {
  // A file that cannot be removed is forgotten all the same: the next open finds it again.
  fs_->remove(path(name)).ignore();
  forget_locked(name);
  if (evicted) note_eviction_locked(name);
}

void DiskStore::note_eviction_locked(const std::string& name) {
  ++st_.evictions;
  if (evicted_.insert(name).second) evicted_order_.push_back(name);
  while (evicted_order_.size() > kRememberEvicted) {
    evicted_.erase(evicted_order_.front());
    evicted_order_.pop_front();
  }
}

void DiskStore::remove_if_generation_locked(const std::string& name, std::uint64_t gen) {
  auto it = index_.find(name);
  if (it != index_.end() && it->second.generation == gen) remove_locked(name, false);
}

Status DiskStore::read_verified(File& f, const RecordId& id, std::span<std::uint8_t> payload,
                                MissReason* why) {
  *why = MissReason::kUnavailable;  // I/O errors: the record may be fine, it is kept
  const std::uint32_t hb = record_header_size(id.num_layers);
  AlignedBytes header(hb);
  if (!header.ok()) return resource_exhausted("no memory for a record header");
  TIERKV_ASSIGN_OR_RETURN(const std::size_t got, read_full(f, 0, header.span()));
  Result<RecordHeader> h = parse_record_header(header.span().first(got));
  if (!h.ok()) {
    // A valid record of another shape has a header of another length: read that one whole, so
    // that it counts as foreign rather than corrupt.
    Result<std::uint32_t> other = peek_record_header_size(header.span().first(got));
    if (other.ok() && *other != hb) {
      AlignedBytes again(*other);
      if (!again.ok()) return resource_exhausted("no memory for a record header");
      TIERKV_ASSIGN_OR_RETURN(const std::size_t n, read_full(f, 0, again.span()));
      h = parse_record_header(again.span().first(n));
    }
  }
  *why = MissReason::kCorrupt;
  if (!h.ok()) return h.status();
  if (Status s = check_record_id(*h, id); !s.ok()) {
    *why = MissReason::kForeign;
    return s;
  }
  *why = MissReason::kUnavailable;
  TIERKV_ASSIGN_OR_RETURN(const std::uint64_t size, f.size());
  *why = MissReason::kCorrupt;
  if (size != h->record_bytes())
    return data_loss("corrupt record: the file has " + std::to_string(size) +
                     " bytes, its header says " + std::to_string(h->record_bytes()));
  bool io_failed = false;
  Status s = read_payload_verified(f, *h, payload, o_.verify_while_reading, &io_failed);
  if (io_failed) *why = MissReason::kUnavailable;
  return s;
}

Status DiskStore::read(const RecordId& id, std::span<std::uint8_t> payload) {
  const auto t0 = Clock::now();
  TIERKV_RETURN_IF_ERROR(check_shape(id, payload.size()));
  const std::string name = record_file_name(id);
  std::unique_ptr<File> f;
  std::uint64_t gen = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = index_.find(name);
    if (it == index_.end()) {
      const bool evicted = evicted_.count(name) != 0;
      ++st_.misses[std::size_t(evicted ? MissReason::kEvicted : MissReason::kAbsent)];
      return not_found("no record " + name + " in " + dir_);
    }
    gen = it->second.generation;
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    Result<std::unique_ptr<File>> r = fs_->open(
        path(name), {.direct = direct_ && direct_capable(payload.data(), payload.size())});
    if (!r.ok()) {
      const bool gone = r.status().code() == StatusCode::kNotFound;
      if (gone) forget_locked(name);  // removed behind the store's back
      ++st_.misses[std::size_t(gone ? MissReason::kAbsent : MissReason::kUnavailable)];
      return r.status().with_context("disk read");
    }
    f = std::move(r).value();
    ++it->second.readers;
  }
  MissReason why = MissReason::kAbsent;
  Status s = read_verified(*f, id, payload, &why);
  f.reset();
  std::lock_guard<std::mutex> l(mu_);
  if (auto it = index_.find(name); it != index_.end() && it->second.generation == gen)
    --it->second.readers;
  if (!s.ok()) {
    if (s.code() == StatusCode::kDataLoss) remove_if_generation_locked(name, gen);
    ++st_.misses[std::size_t(why)];
    return s.with_context(path(name));
  }
  ++st_.hits;
  st_.bytes_read += payload.size();
  st_.read_latency.add(us_since(t0));
  return Status::Ok();
}

Status DiskStore::reserve(std::uint64_t bytes, const std::string& tmp, bool* reused) {
  *reused = false;
  std::lock_guard<std::mutex> l(mu_);
  const std::uint64_t budget = o_.budget_bytes;
  if (budget > 0 && bytes > budget)
    return resource_exhausted("a record of " + std::to_string(bytes) +
                              " bytes is larger than the disk budget of " + std::to_string(budget));
  while (budget > 0 && used_ + reserved_ + bytes > budget && !lru_.empty()) {
    const std::string victim = lru_.back();
    const Entry& e = index_.at(victim);
    if (!*reused && e.file_bytes == bytes && e.readers == 0 &&
        fs_->rename(path(victim), path(tmp)).ok()) {
      *reused = true;
      forget_locked(victim);
      note_eviction_locked(victim);
      continue;
    }
    remove_locked(victim, true);
  }
  if (budget > 0 && used_ + reserved_ + bytes > budget)
    return resource_exhausted("the disk budget is taken by writes in flight; retry later");
  reserved_ += bytes;
  return Status::Ok();
}

Status DiskStore::write_temporary(const RecordId& id, std::span<const std::uint8_t> payload,
                                  const std::string& tmp, bool reused) {
  const std::uint32_t hb = record_header_size(id.num_layers);
  AlignedBytes header(hb);
  if (!header.ok()) return resource_exhausted("no memory for a record header");
  const bool direct = direct_ && direct_capable(payload.data(), payload.size());
  TIERKV_ASSIGN_OR_RETURN(
      std::unique_ptr<File> f,
      fs_->open(path(tmp), {.create = !reused, .overwrite = reused, .direct = direct}));
  // Allocated up front: O_DIRECT writes that extend a file are serialized by ext4 and XFS. A
  // reused file has its size already.
  if (!reused) TIERKV_RETURN_IF_ERROR(f->allocate(hb + payload.size()));
  // The payload, then the header, into the unpublished temporary: the payload's writes go out
  // first and the checksums (XXH3 over every byte, a few ms per 32 MiB) are computed while they
  // run; the header, which holds them, follows.
  Status encoded = internal_error("the record header was not encoded");
  const std::span<const std::uint8_t> body[] = {payload};
  TIERKV_RETURN_IF_ERROR(f->write_parts(hb, body, [&] {
    encoded = encode_record_header(id, payload, header.span());
  }));
  TIERKV_RETURN_IF_ERROR(encoded);
  const std::span<const std::uint8_t> head[] = {header.span()};
  TIERKV_RETURN_IF_ERROR(f->write_parts(0, head));
  if (o_.sync != DiskSync::kNone) TIERKV_RETURN_IF_ERROR(f->sync());
  return Status::Ok();
}

Status DiskStore::publish(const std::string& tmp, const std::string& name, std::uint64_t file_bytes,
                          std::uint64_t payload_bytes, std::uint64_t* gen) {
  std::lock_guard<std::mutex> l(mu_);
  reserved_ -= file_bytes;
  TIERKV_RETURN_IF_ERROR(fs_->rename(path(tmp), path(name)));
  add_locked(name, file_bytes, payload_bytes, true);
  *gen = index_[name].generation;
  return Status::Ok();
}

Status DiskStore::write(const RecordId& id, std::span<const std::uint8_t> payload) {
  const auto t0 = Clock::now();
  const std::string name = record_file_name(id);
  const auto fail = [&](const Status& s) {
    std::lock_guard<std::mutex> l(mu_);
    ++st_.write_failures;
    return s.with_context("disk write " + path(name));
  };
  if (Status s = check_shape(id, payload.size()); !s.ok()) return fail(s);
  const std::uint64_t file_bytes = record_header_size(id.num_layers) + payload.size();
  const std::string tmp = name + "." + std::to_string(::getpid()) + "." +
                          std::to_string(temp_seq_.fetch_add(1, std::memory_order_relaxed)) +
                          ".tmp";
  bool reused = false;
  if (Status s = reserve(file_bytes, tmp, &reused); !s.ok()) return fail(s);
  std::uint64_t gen = 0;
  Status s = write_temporary(id, payload, tmp, reused);
  if (s.ok()) {
    s = publish(tmp, name, file_bytes, payload.size(), &gen);
  } else {
    std::lock_guard<std::mutex> l(mu_);
    reserved_ -= file_bytes;
  }
  if (!s.ok()) {
    fs_->remove(path(tmp)).ignore();  // a failed write leaves nothing, not even its temporary
    return fail(s);
  }
  if (o_.sync == DiskSync::kFileAndDirectory) {
    if (Status d = fs_->sync_dir(dir_); !d.ok()) {
      // The rename may not be durable: take the record back rather than report a write that a
      // power loss could undo.
      {
        std::lock_guard<std::mutex> l(mu_);
        remove_if_generation_locked(name, gen);
      }
      return fail(d);
    }
  }
  std::lock_guard<std::mutex> l(mu_);
  ++st_.writes;
  st_.bytes_written += payload.size();
  st_.write_latency.add(us_since(t0));
  return Status::Ok();
}

Status DiskStore::erase(const RecordId& id) {
  const std::string name = record_file_name(id);
  std::lock_guard<std::mutex> l(mu_);
  if (index_.count(name) == 0) return Status::Ok();
  Status s = fs_->remove(path(name));
  if (!s.ok() && s.code() != StatusCode::kNotFound) return s.with_context("disk erase");
  forget_locked(name);
  ++st_.erases;
  return Status::Ok();
}

Status DiskStore::rebuild(DiskRecovery* recovery) {
  DiskRecovery rec;
  TIERKV_ASSIGN_OR_RETURN(const std::vector<std::string> names, fs_->list(dir_));
  struct Found {
    std::int64_t mtime;
    std::string name;
    std::uint64_t file_bytes, payload_bytes;
  };
  std::vector<Found> found;
  for (const std::string& name : names) {
    if (name == kLockFileName) continue;
    if (is_temporary_file_name(name)) {
      if (fs_->remove(path(name)).ok()) ++rec.removed_temporary;
      continue;
    }
    const std::optional<RecordFileName> parsed = parse_record_file_name(name);
    if (!parsed) {
      ++rec.other_files;
      continue;
    }
    Result<std::unique_ptr<File>> f = fs_->open(path(name), {});
    if (!f.ok() && f.status().code() == StatusCode::kNotFound) continue;
    std::uint64_t size = 0;
    Result<RecordHeader> h = f.ok() ? read_record_file_header(**f, &size) : f.status();
    Result<std::int64_t> mtime = f.ok() ? (*f)->mtime_ns() : f.status();
    if (!h.ok() || !header_matches_name(*h, *parsed) || !mtime.ok()) {
      if (fs_->remove(path(name)).ok()) ++rec.removed_invalid;
      continue;
    }
    found.push_back({*mtime, name, size, h->payload_bytes});
  }
  std::sort(found.begin(), found.end(),
            [](const Found& a, const Found& b) { return a.mtime > b.mtime; });
  std::lock_guard<std::mutex> l(mu_);
  for (const Found& r : found) {
    add_locked(r.name, r.file_bytes, r.payload_bytes, /*newest=*/false);  // newest first
    ++rec.records;
    rec.record_bytes += r.file_bytes;
  }
  while (o_.budget_bytes > 0 && used_ > o_.budget_bytes && !lru_.empty()) {
    rec.record_bytes -= index_[lru_.back()].file_bytes;
    --rec.records;
    ++rec.evicted;
    remove_locked(lru_.back(), true);
  }
  st_.evictions = 0;  // evictions at open are reported in DiskRecovery, not as the store's own
  if (recovery != nullptr) *recovery = rec;
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<Store>> open_disk_store_with(const DiskStoreOptions& o,
                                                    std::shared_ptr<FileSystem> fs,
                                                    DiskRecovery* recovery) {
  if (o.directory.empty()) return invalid_argument("DiskStoreOptions.directory is empty");
  std::string dir = o.directory;
  while (dir.size() > 1 && dir.back() == '/')
    dir.pop_back();
  TIERKV_RETURN_IF_ERROR(fs->create_dir(dir).with_context("disk store"));
  TIERKV_ASSIGN_OR_RETURN(std::unique_ptr<DirLock> lock,
                          fs->lock(dir + "/" + std::string(kLockFileName)));
  bool direct = false;
  if (o.direct_io) {
    TIERKV_ASSIGN_OR_RETURN(direct, fs->probe_direct(dir));
  }
  auto store = std::make_unique<DiskStore>(o, dir, std::move(fs), std::move(lock), direct);
  TIERKV_RETURN_IF_ERROR(store->rebuild(recovery).with_context("disk store: reading " + dir));
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace tierkv::disk

namespace tierkv {

Result<std::unique_ptr<Store>> open_disk_store(const DiskStoreOptions& o, DiskRecovery* recovery) {
  TIERKV_ASSIGN_OR_RETURN(std::unique_ptr<disk::FileSystem> fs,
                          disk::make_posix_file_system({.io = o.io,
                                                        .io_threads = o.io_threads,
                                                        .queue_depth = o.queue_depth,
                                                        .io_block_bytes = o.io_block_bytes}));
  return disk::open_disk_store_with(o, std::shared_ptr<disk::FileSystem>(std::move(fs)), recovery);
}

}  // namespace tierkv
