// A fixed pool of worker threads for data-parallel loops. Started once; no
// allocation per loop. Workers that just finished a loop poll for the next
// one for a short while (kSpin) before they sleep on a condition variable,
// so the back-to-back loops of a forward pass (about 150 per decode step of
// a 22-layer model) start without a futex wake-up each; the caller polls for
// the workers' end the same way.
#pragma once

#include <atomic>
#include <chrono>
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

  // How long an idle worker polls before it sleeps.
  static constexpr std::chrono::microseconds kSpin{100};

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_;
  std::atomic<uint64_t> generation_{0};  // bumped (after n_, fn_, ctx_ are set) to start a loop
  std::atomic<int> pending_{0};          // workers still in the current loop
  std::atomic<int> sleepers_{0};         // workers asleep or about to sleep on start_cv_
  std::atomic<bool> stop_{false};
  int64_t n_ = 0;
  Fn fn_ = nullptr;
  void* ctx_ = nullptr;
};

}  // namespace ferry::cpu
