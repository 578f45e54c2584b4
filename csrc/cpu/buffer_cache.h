// A cache of large freed CPU buffers for the ops' per-call tensors (gates, cell states,
// outputs, weight panels, gate gradients). Without it every call maps fresh pages from the
// kernel: glibc serves blocks above 32 MB (and, after a trim, smaller ones) with mmap, and
// first touch costs a page fault per 4 KB. Measured at (T, B, H) = (100, 64, 512): the
// training forward takes 118 ms with fresh pages and 92 ms without.
//
// Only blocks of at least kMinCachedBytes are cached; a freed block is kept for the next
// request of a size it fits (at most 1/8 larger), the oldest ones are released beyond the
// cache's limit (FUSED_LSTM_CPU_CACHE_MB, default 1024; 0 disables caching), and
// empty_cache() releases everything, as torch.cuda.empty_cache() does on GPU.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace fused_lstm::cpu {

// Large enough that the list stays short, small enough to hold the buffers of one stream
// (at (T, B, H) = (200, 1, 256) the gate gradients are 800 KB; fresh pages for them and for
// the 1 MB weight gradients cost 7% of that backward's samples in page faults).
constexpr int64_t kMinCachedBytes = int64_t{256} << 10;

// at::empty(sizes, opts) for a CPU dtype, served from the cache when large enough; an
// ordinary (resizable) CPU tensor.
at::Tensor cached_empty(at::IntArrayRef sizes, const at::TensorOptions& opts);

// Frees the cached blocks (not the ones in use); returns how many bytes it freed.
int64_t empty_cache();

// Bytes held by the cache, not in use.
int64_t cached_bytes();

}  // namespace fused_lstm::cpu
