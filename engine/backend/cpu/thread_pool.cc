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

void ThreadPool::Chunk(int index, int64_t n, Fn fn, void* ctx) const {
  const int64_t parts = size();
  const int64_t begin = n * index / parts, end = n * (index + 1) / parts;
  if (begin < end) fn(ctx, index, begin, end);
}

void ThreadPool::Run(int64_t n, Fn fn, void* ctx) {
  if (workers_.empty() || n <= 1) {
    if (n > 0) fn(ctx, 0, 0, n);
    return;
  }
  n_ = n;
  fn_ = fn;
  ctx_ = ctx;
  pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
  // Publishes n_, fn_, ctx_ and pending_ to the workers that see the new
  // generation. Sequentially consistent with the workers' sleepers_
  // increment: either this thread sees a sleeper and wakes it, or the
  // sleeper sees the new generation before it waits.
  generation_.fetch_add(1, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0) {
    { std::lock_guard<std::mutex> lock(mu_); }
    start_cv_.notify_all();
  }
  Chunk(0, n, fn, ctx);
  // The workers' chunks are about as long as this one: poll, yielding the
  // core now and then in case a worker is waiting for one.
  for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins % 1024 == 1023) {
      sched_yield();
    } else {
      _mm_pause();
    }
  }
}

void ThreadPool::Worker(int index) {
  uint64_t seen = 0;
  for (;;) {
    // Poll for the next loop for kSpin, then sleep until one starts.
    const auto until = std::chrono::steady_clock::now() + kSpin;
    for (int spins = 0; generation_.load(std::memory_order_acquire) == seen && !stop_.load(std::memory_order_relaxed);
         ++spins) {
      _mm_pause();
      if (spins % 64 == 63 && std::chrono::steady_clock::now() > until) {
        std::unique_lock<std::mutex> lock(mu_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        start_cv_.wait(lock, [&] { return stop_.load() || generation_.load(std::memory_order_seq_cst) != seen; });
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
        break;
      }
    }
    if (stop_.load()) return;
    seen = generation_.load(std::memory_order_acquire);
    Chunk(index, n_, fn_, ctx_);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

}  // namespace ferry::cpu
