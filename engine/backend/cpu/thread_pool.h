// A fixed pool of worker threads for data-parallel loops. Started once; a
// parallel loop costs two condition-variable round trips and no allocation.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace ferry::cpu {

class ThreadPool {
 public:
  // n_threads <= 0: one per hardware thread.
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Splits [0, n) into size() contiguous chunks and runs
  // f(thread_index, begin, end) on each, the caller's thread included.
  // Work below `serial_below` (in the caller's units) runs on the calling
  // thread alone: waking the pool costs a few microseconds.
  template <typename F>
  void ParallelFor(int64_t n, F&& f, int64_t work = 0, int64_t serial_below = 0) {
    if (work < serial_below) {
      if (n > 0) f(0, 0, n);
      return;
    }
    Run(n, [](void* ctx, int t, int64_t b, int64_t e) { (*static_cast<F*>(ctx))(t, b, e); }, &f);
  }

 private:
  using Fn = void (*)(void*, int, int64_t, int64_t);
  void Run(int64_t n, Fn fn, void* ctx);
  void Worker(int index);
  void Chunk(int index, int64_t n, Fn fn, void* ctx) const;

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
  int64_t n_ = 0;
  Fn fn_ = nullptr;
  void* ctx_ = nullptr;
};

}  // namespace ferry::cpu
