#include "buffer_cache.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <cstdlib>
#include <list>
#include <mutex>
#include <new>

#include <sys/mman.h>

namespace fused_lstm::cpu {
namespace {

constexpr size_t kAlignment = 64;
// Blocks from 4 MB (weight panels, gates, the GEMM's packed operands) are asked for
// transparent huge pages, 2 MB-aligned: the time loops stream them every step, and with
// 4 KB pages the large-hidden forward (100, 16, 1024, 1024) took 77-81 ms against 72-75 with
// huge pages, the fastrnns forward+backward 198-201 ms against 189-195 (alternating runs,
// THP in madvise mode as on this machine).
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kHugeMinBytes = size_t{4} << 20;

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
    const bool huge = bytes >= kHugeMinBytes;
    const size_t align = huge ? kHugePage : kAlignment;
    const size_t size = (bytes + align - 1) / align * align;
    void* p = std::aligned_alloc(align, size);
    if (p == nullptr) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
    if (huge) madvise(p, size, MADV_HUGEPAGE);  // a hint: without THP it changes nothing
#endif
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

// A c10::Allocator over the cache, so that its tensors are ordinary resizable CPU tensors
// (a resize_ reallocates through it). Requests below kMinCachedBytes go to torch's CPU
// allocator.
class CachingAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t bytes) override {
    if (bytes < static_cast<size_t>(kMinCachedBytes)) {
      return c10::GetCPUAllocator()->allocate(bytes);
    }
    void* p = cache().get(bytes);
    return {p, p, &release, c10::Device(c10::DeviceType::CPU)};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

 private:
  static void release(void* p) { cache().put(p); }
};

c10::Allocator* allocator() {
  static CachingAllocator* a = new CachingAllocator();
  return a;
}

}  // namespace

at::Tensor cached_empty(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  return at::detail::empty_generic(sizes, allocator(), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   opts.dtype().toScalarType(), std::nullopt);
}

int64_t empty_cache() { return cache().clear(); }

int64_t cached_bytes() { return cache().cached(); }

}  // namespace fused_lstm::cpu
