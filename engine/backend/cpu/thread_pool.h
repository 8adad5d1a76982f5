// A fixed pool of worker threads for data-parallel loops. Started once; no
// allocation per loop. A loop is cut into a few chunks per thread, which the
// threads claim one at a time: a thread the OS takes off its core (a server's
// network threads share the cores with the engine) holds up at most the chunk
// it is in, not a fixed share of the loop. Workers that just finished a loop
// poll for the next one for a short while (kSpin) before they sleep on a
// condition variable, so the back-to-back loops of a forward pass (about 150
// per decode step of a 22-layer model) start without a futex wake-up each;
// the caller polls for the loop's end the same way.
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

  // Runs f(thread_index, begin, end) over contiguous pieces that together
  // cover [0, n) once, on the calling thread (index 0) and the workers
  // (1 .. size()-1); a thread may run several pieces, never two at once.
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
  // Claims and runs chunks of loop `generation` until none is left.
  void RunChunks(uint32_t generation, int index);

  // How long an idle worker polls before it sleeps.
  static constexpr std::chrono::microseconds kSpin{100};
  static constexpr int kChunksPerThread = 4;

  // The loop being run, in one word so that a claim is one compare-and-swap
  // that also checks the loop is still the one the claimer means:
  // generation << 32 | chunk count << 16 | next chunk to claim.
  static uint32_t GenerationOf(uint64_t w) { return static_cast<uint32_t>(w >> 32); }

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_;
  std::atomic<uint64_t> work_{0};
  std::atomic<int64_t> done_{0};  // chunks of the current loop finished
  std::atomic<int> sleepers_{0};  // workers asleep or about to sleep on start_cv_
  std::atomic<bool> stop_{false};
  // Set before the loop's word is published; read by a thread only after it
  // claimed a chunk, and the loop (so these) cannot change before that chunk
  // is done.
  int64_t n_ = 0;
  Fn fn_ = nullptr;
  void* ctx_ = nullptr;
};

}  // namespace ferry::cpu
