#include "engine/backend/cpu/thread_pool.h"

#include <immintrin.h>
#include <sched.h>

#include <algorithm>

namespace ferry::cpu {

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this, i] { Worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::RunChunks(uint32_t generation, int index) {
  uint64_t w = work_.load(std::memory_order_acquire);
  for (;;) {
    const uint64_t chunks = (w >> 16) & 0xffff, next = w & 0xffff;
    if (GenerationOf(w) != generation || next >= chunks) return;
    if (!work_.compare_exchange_weak(w, w + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
    const int64_t begin = n_ * static_cast<int64_t>(next) / static_cast<int64_t>(chunks);
    const int64_t end = n_ * static_cast<int64_t>(next + 1) / static_cast<int64_t>(chunks);
    fn_(ctx_, index, begin, end);
    done_.fetch_add(1, std::memory_order_acq_rel);
    w = work_.load(std::memory_order_acquire);
  }
}

void ThreadPool::Run(int64_t n, Fn fn, void* ctx) {
  if (workers_.empty() || n <= 1) {
    if (n > 0) fn(ctx, 0, 0, n);
    return;
  }
  const int64_t chunks = std::min<int64_t>({n, static_cast<int64_t>(size()) * kChunksPerThread, 0xffff});
  n_ = n;
  fn_ = fn;
  ctx_ = ctx;
  done_.store(0, std::memory_order_relaxed);
  const uint32_t generation = GenerationOf(work_.load(std::memory_order_relaxed)) + 1;
  // Publishes n_, fn_, ctx_ and done_ to the threads that claim a chunk of
  // this generation. Sequentially consistent with the workers' sleepers_
  // increment: either this thread sees a sleeper and wakes it, or the
  // sleeper sees the new generation before it waits.
  work_.store(static_cast<uint64_t>(generation) << 32 | static_cast<uint64_t>(chunks) << 16,
              std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0) {
    { std::lock_guard<std::mutex> lock(mu_); }
    start_cv_.notify_all();
  }
  RunChunks(generation, 0);
  // Every chunk is claimed; the ones still running are about as long as the
  // last one here: poll, yielding the core now and then in case the thread
  // running one is waiting for it.
  for (int spins = 0; done_.load(std::memory_order_acquire) != chunks; ++spins) {
    if (spins % 1024 == 1023) {
      sched_yield();
    } else {
      _mm_pause();
    }
  }
}

void ThreadPool::Worker(int index) {
  uint32_t seen = 0;
  for (;;) {
    // Poll for the next loop for kSpin, then sleep until one starts.
    const auto until = std::chrono::steady_clock::now() + kSpin;
    for (int spins = 0; GenerationOf(work_.load(std::memory_order_acquire)) == seen &&
                        !stop_.load(std::memory_order_relaxed);
         ++spins) {
      _mm_pause();
      if (spins % 64 == 63 && std::chrono::steady_clock::now() > until) {
        std::unique_lock<std::mutex> lock(mu_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        start_cv_.wait(lock, [&] {
          return stop_.load() || GenerationOf(work_.load(std::memory_order_seq_cst)) != seen;
        });
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
        break;
      }
    }
    if (stop_.load()) return;
    seen = GenerationOf(work_.load(std::memory_order_acquire));
    RunChunks(seen, index);
  }
}

}  // namespace ferry::cpu
