#include "engine/backend/cpu/thread_pool.h"

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
  {
    std::lock_guard<std::mutex> lock(mu_);
    n_ = n;
    fn_ = fn;
    ctx_ = ctx;
    pending_ = static_cast<int>(workers_.size());
    ++generation_;
  }
  start_cv_.notify_all();
  Chunk(0, n, fn, ctx);
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [this] { return pending_ == 0; });
}

void ThreadPool::Worker(int index) {
  uint64_t seen = 0;
  for (;;) {
    int64_t n;
    Fn fn;
    void* ctx;
    {
      std::unique_lock<std::mutex> lock(mu_);
      start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      n = n_;
      fn = fn_;
      ctx = ctx_;
    }
    Chunk(index, n, fn, ctx);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }
}

}  // namespace ferry::cpu
