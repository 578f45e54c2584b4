#include "buffer_cache.h"

#include <algorithm>
#include <cstdlib>
#include <list>
#include <mutex>
#include <new>

namespace fused_lstm::cpu {
namespace {

constexpr size_t kAlignment = 64;

int64_t limit_from_env() {
  const char* mb = std::getenv("FUSED_LSTM_CPU_CACHE_MB");
  if (mb == nullptr || *mb == '\0') return int64_t{1024} << 20;
  return std::max<int64_t>(0, std::atoll(mb)) << 20;
}

class BufferCache {
 public:
  void* get(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      // The most recently freed block that fits: its pages are the likeliest still in cache.
      for (auto it = free_.begin(); it != free_.end(); ++it) {
        if (it->bytes >= bytes && it->bytes - bytes <= bytes / 8) {
          void* p = it->ptr;
          cached_ -= it->bytes;
          in_use_.push_front(*it);
          free_.erase(it);
          return p;
        }
      }
    }
    void* p = std::aligned_alloc(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
    if (p == nullptr) throw std::bad_alloc();
    std::lock_guard<std::mutex> lock(mu_);
    in_use_.push_front({p, bytes});
    return p;
  }

  void put(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = in_use_.begin(); it != in_use_.end(); ++it) {
      if (it->ptr != p) continue;
      free_.push_front(*it);
      cached_ += it->bytes;
      in_use_.erase(it);
      break;
    }
    while (cached_ > limit_ && !free_.empty()) {  // oldest first
      cached_ -= free_.back().bytes;
      std::free(free_.back().ptr);
      free_.pop_back();
    }
  }

  int64_t clear() {
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t freed = cached_;
    for (const Block& b : free_) std::free(b.ptr);
    free_.clear();
    cached_ = 0;
    return freed;
  }

  int64_t cached() {
    std::lock_guard<std::mutex> lock(mu_);
    return cached_;
  }

 private:
  struct Block {
    void* ptr;
    size_t bytes;
  };
  std::mutex mu_;
  std::list<Block> free_, in_use_;  // most recent first; in_use_ stays short (live buffers)
  int64_t cached_ = 0;
  const int64_t limit_ = limit_from_env();
};

// Never destroyed: tensors may outlive static destruction at interpreter exit.
BufferCache& cache() {
  static BufferCache* c = new BufferCache();
  return *c;
}

}  // namespace

at::Tensor cached_empty(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  int64_t numel = 1;
  for (int64_t s : sizes) numel *= s;
  const int64_t bytes = numel * static_cast<int64_t>(opts.dtype().itemsize());
  if (bytes < kMinCachedBytes) return at::empty(sizes, opts);
  void* p = cache().get(static_cast<size_t>(bytes));
  return at::from_blob(p, sizes, [](void* ptr) { cache().put(ptr); }, opts);
}

int64_t empty_cache() { return cache().clear(); }

int64_t cached_bytes() { return cache().cached(); }

}  // namespace fused_lstm::cpu
