// The cpu backend's thread pool: every index once, thread indices in range,
// and a thread held up in one piece does not hold up the rest of the loop.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "engine/backend/cpu/thread_pool.h"

namespace ferry::cpu {
namespace {

TEST(ThreadPool, CoversEveryIndexOnceWithThreadIndicesInRange) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 2, 7, 64, 1000, 100003}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      std::vector<std::atomic<int>> busy(static_cast<size_t>(threads));
      std::atomic<bool> bad_thread{false}, overlapped{false};
      pool.ParallelFor(n, [&](int t, int64_t b, int64_t e) {
        if (t < 0 || t >= threads) {
          bad_thread = true;
          return;
        }
        if (busy[t].fetch_add(1) != 0) overlapped = true;  // two pieces at once on one thread index
        for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
        busy[t].fetch_sub(1);
      });
      EXPECT_FALSE(bad_thread) << threads << " threads, n " << n;
      EXPECT_FALSE(overlapped) << threads << " threads, n " << n;
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << threads << " threads, n " << n << ", index " << i;
    }
  }
}

TEST(ThreadPool, RunsManyLoopsBackToBack) {
  ThreadPool pool(3);
  std::vector<int64_t> sums;
  for (int loop = 0; loop < 20000; ++loop) {
    const int64_t n = 1 + loop % 37;
    std::atomic<int64_t> sum{0};
    pool.ParallelFor(n, [&](int, int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sum += i;
    });
    ASSERT_EQ(sum.load(), n * (n - 1) / 2) << "loop " << loop;
  }
}

// A thread the OS stops (here: one that waits inside its first piece) holds
// up only that piece; the others run the rest of the loop meanwhile. With
// each thread bound to a fixed share, the held piece is half the loop.
TEST(ThreadPool, AThreadHeldUpInOnePieceLeavesTheRestToTheOthers) {
  ThreadPool pool(2);
  constexpr int64_t n = 64;
  bool worker_took_part = false;
  for (int attempt = 0; attempt < 100 && !worker_took_part; ++attempt) {
    std::atomic<int64_t> by_caller{0}, held{0};
    std::atomic<bool> released{false}, timed_out{false};
    pool.ParallelFor(n, [&](int t, int64_t b, int64_t e) {
      if (t == 0) {
        // Let the worker claim a piece before the caller takes them all.
        if (by_caller.load() == 0 && held.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
        if (by_caller.fetch_add(e - b) + (e - b) + held.load() == n) released = true;
        return;
      }
      if (held.load() != 0) return;  // the worker holds only its first piece
      held = e - b;
      if (by_caller.load() + held.load() == n) released = true;
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (!released.load()) {
        if (std::chrono::steady_clock::now() > until) {
          timed_out = true;
          break;
        }
        std::this_thread::yield();
      }
    });
    if (held.load() == 0) continue;  // the caller ran the whole loop: try again
    worker_took_part = true;
    EXPECT_FALSE(timed_out) << "the caller did not take the held-up worker's other pieces";
    EXPECT_LE(held.load(), n / 4) << "a held-up thread held " << held.load() << " of " << n << " indices";
  }
  EXPECT_TRUE(worker_took_part);
}

}  // namespace
}  // namespace ferry::cpu
