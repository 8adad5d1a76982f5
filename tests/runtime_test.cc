// The continuous-batching scheduler driven directly, in process, on the cpu
// device with a tiny synthetic model (steps take well under a millisecond):
// admission and the queue limit, a free slot for every waiting request
// whatever the sessions, prefix reuse and eviction, cancellation and
// deadlines (running and queued), no vocabulary-sized memory per queued
// request, and a scheduler that sleeps when there is nothing to do.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <new>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/exec/forward.h"
#include "engine/runtime/runtime.h"
#include "engine/text/tokenizer.h"
#include "tests/in_memory_model.h"

// Bytes allocated through operator new on a thread while it counts: what a
// Submit costs.
namespace {
thread_local bool t_counting = false;
thread_local size_t t_allocated = 0;
}  // namespace

// GCC pairs operator new with the free below as a mismatch; they are this
// file's own pair.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(size_t n) {
  if (t_counting) t_allocated += n;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace ferry::runtime {
namespace {

using ::testing::HasSubstr;

constexpr int kVocab = 4096;

class RuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model::SynthOptions o;
    o.n_layer = 2;
    o.n_embd = 64;
    o.n_head = 4;
    o.n_head_kv = 2;
    o.n_ff = 128;
    o.n_vocab = kVocab;
    o.n_ctx = 512;
    o.type = quant::TensorType::kF32;
    model_ = testing::BuildInMemory(o);
    auto tok = text::Tokenizer::FromGguf(*model_.model->file);
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = std::move(*tok);
  }

  void Start(int slots, int max_queue = 64) {
    auto ex = exec::Executor::Create(*model_.model, nullptr,
                                     {.max_batch = 32, .n_seq = slots, .n_ctx = 256, .threads = 1});
    ASSERT_TRUE(ex.ok()) << ex.status();
    executor_ = std::move(*ex);
    auto rt = Runtime::Create(executor_.get(), tokenizer_.get(), {.max_queue = max_queue, .observer = {}});
    ASSERT_TRUE(rt.ok()) << rt.status();
    runtime_ = std::move(*rt);
  }

  void TearDown() override {
    runtime_.reset();
    executor_.reset();
  }

  testing::InMemoryModel model_;
  std::unique_ptr<text::Tokenizer> tokenizer_;
  std::unique_ptr<exec::Executor> executor_;
  std::unique_ptr<Runtime> runtime_;
};

// What a request got: its tokens and how it ended (filled on the scheduler thread).
struct Result {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int32_t> tokens;
  int updates = 0;
  FinishReason finish = FinishReason::kNone;
  Usage usage;
  Timings timings;
  std::function<void()> on_update;  // runs on the scheduler thread, before the update is stored

  Sink sink() {
    return [this](Update&& u) {
      if (on_update) on_update();
      std::lock_guard<std::mutex> l(mu);
      ++updates;
      for (const text::Sampled& t : u.tokens) tokens.push_back(t.token);
      if (u.finish != FinishReason::kNone) {
        finish = u.finish;
        usage = u.usage;
        timings = u.timings;
        cv.notify_all();
      }
    };
  }
  // The finish reason, once there (kNone if none came within a minute: the
  // scheduler wedged).
  FinishReason Wait() {
    std::unique_lock<std::mutex> l(mu);
    cv.wait_for(l, std::chrono::seconds(60), [&] { return finish != FinishReason::kNone; });
    return finish;
  }
};

Request Greedy(std::vector<int32_t> prompt, int max_tokens, const std::string& session = "") {
  Request r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  r.ignore_eos = true;
  r.session = session;
  return r;
}

std::vector<int32_t> Prompt(int seed, int n) {
  std::mt19937 rng(seed);
  std::vector<int32_t> p = {1};
  for (int i = 1; i < n; ++i) p.push_back(static_cast<int32_t>(300 + rng() % (kVocab - 300)));
  return p;
}

// Submits and waits for the end.
FinishReason RunToEnd(Runtime& rt, Request r, Result* out) {
  auto h = rt.Submit(std::move(r), out->sink());
  EXPECT_TRUE(h.ok()) << h.status();
  return h.ok() ? out->Wait() : FinishReason::kError;
}

// Issue 17, item 1: after one request each from sessions "alpha" and
// "beta", both slots kept their session, and a request with no session or
// another session never got one (it waited until its deadline while the
// scheduler spun).
TEST_F(RuntimeTest, AFreeSlotIsNeverReservedForASession) {
  Start(2);
  Result alpha, beta;
  ASSERT_EQ(RunToEnd(*runtime_, Greedy(Prompt(1, 12), 4, "alpha"), &alpha), FinishReason::kLength);
  ASSERT_EQ(RunToEnd(*runtime_, Greedy(Prompt(2, 12), 4, "beta"), &beta), FinishReason::kLength);
  Result plain, gamma;
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  Request a = Greedy(Prompt(3, 12), 4), b = Greedy(Prompt(4, 12), 4, "gamma");
  a.deadline = b.deadline = deadline;
  ASSERT_TRUE(runtime_->Submit(std::move(a), plain.sink()).ok());
  ASSERT_TRUE(runtime_->Submit(std::move(b), gamma.sink()).ok());
  EXPECT_EQ(plain.Wait(), FinishReason::kLength) << "a request without a session waited for a slot";
  EXPECT_EQ(gamma.Wait(), FinishReason::kLength) << "a request of a third session waited for a slot";
  EXPECT_EQ(plain.tokens.size(), 4u);
  EXPECT_EQ(gamma.tokens.size(), 4u);
  EXPECT_TRUE(runtime_->WaitIdle(absl::Now() + absl::Seconds(10)));
  EXPECT_EQ(runtime_->Stats().waiting, 0);
}

// A session's cache is used when its slot is free, kept while a slot with
// no session's cache is free, and evicted least recently used first.
TEST_F(RuntimeTest, PrefixReuseIsAPreferenceAndEvictionIsLeastRecentlyUsed) {
  Start(2);
  const std::vector<int32_t> pa = Prompt(10, 40), pb = Prompt(11, 40), pc = Prompt(12, 40);
  Result a1, plain, a2;
  ASSERT_EQ(RunToEnd(*runtime_, Greedy(pa, 8, "alpha"), &a1), FinishReason::kLength);
  EXPECT_EQ(a1.usage.cached_tokens, 0);
  // A plain request takes the slot that holds no session's cache.
  ASSERT_EQ(RunToEnd(*runtime_, Greedy(pb, 8), &plain), FinishReason::kLength);
  ASSERT_EQ(RunToEnd(*runtime_, Greedy(pa, 8, "alpha"), &a2), FinishReason::kLength);
  EXPECT_EQ(a2.usage.cached_tokens, 39) << "all but the last prompt token come from alpha's cache";
  EXPECT_EQ(a2.tokens, a1.tokens) << "reused KV gives the same greedy tokens";

  // Both slots hold a session; "gamma" evicts the one used longest ago.
  Result b1, g, b2, a3;
  ASSERT_EQ(RunToEnd(*runtime_, Greedy(pb, 8, "beta"), &b1), FinishReason::kLength);  // the plain slot, now beta's
  ASSERT_EQ(RunToEnd(*runtime_, Greedy(pc, 8, "gamma"), &g), FinishReason::kLength);
  EXPECT_EQ(g.usage.cached_tokens, 0);
  ASSERT_EQ(RunToEnd(*runtime_, Greedy(pb, 8, "beta"), &b2), FinishReason::kLength);
  EXPECT_EQ(b2.usage.cached_tokens, 39) << "beta was used after alpha: gamma should have evicted alpha";
  ASSERT_EQ(RunToEnd(*runtime_, Greedy(pa, 8, "alpha"), &a3), FinishReason::kLength);
  EXPECT_EQ(a3.usage.cached_tokens, 0);
  EXPECT_EQ(a3.tokens, a1.tokens);
}

// Many sessions on few slots, all submitted at once: every request runs to
// its end (none waits for its deadline), and each gives the tokens it gives
// alone.
TEST_F(RuntimeTest, ASessionHeavyMixStarvesNoRequest) {
  Start(2, 256);
  constexpr int kRequests = 48;
  std::vector<std::unique_ptr<Result>> results;
  std::vector<std::vector<int32_t>> prompts;
  std::mt19937 rng(7);
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  for (int i = 0; i < kRequests; ++i) {
    prompts.push_back(Prompt(100 + static_cast<int>(rng() % 6), 8 + static_cast<int>(rng() % 24)));
    const int session = static_cast<int>(rng() % 9);  // 8 sessions and no session
    Request r = Greedy(prompts.back(), 6, session == 8 ? "" : absl::StrCat("s", session));
    r.deadline = deadline;
    results.push_back(std::make_unique<Result>());
    ASSERT_TRUE(runtime_->Submit(std::move(r), results.back()->sink()).ok());
  }
  for (int i = 0; i < kRequests; ++i) {
    EXPECT_EQ(results[i]->Wait(), FinishReason::kLength) << "request " << i;
  }
  for (int i = 0; i < kRequests; i += 7) {
    Result alone;
    ASSERT_EQ(RunToEnd(*runtime_, Greedy(prompts[i], 6), &alone), FinishReason::kLength);
    EXPECT_EQ(results[i]->tokens, alone.tokens) << "request " << i;
  }
}

TEST_F(RuntimeTest, AdmissionQueueLimitAndOrder) {
  Start(2, 1);
  // Two requests that run until cancelled hold both slots.
  Result r1, r2, queued, refused;
  auto h1 = runtime_->Submit(Greedy(Prompt(1, 8), 240), r1.sink());
  auto h2 = runtime_->Submit(Greedy(Prompt(2, 8), 240), r2.sink());
  ASSERT_TRUE(h1.ok() && h2.ok());
  std::atomic<bool> slow{true};
  r1.on_update = r2.on_update = [&] {
    if (slow) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  };
  for (int i = 0; i < 1000 && runtime_->Stats().running < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(runtime_->Stats().running, 2);
  auto hq = runtime_->Submit(Greedy(Prompt(3, 8), 4), queued.sink());
  ASSERT_TRUE(hq.ok());
  EXPECT_EQ(runtime_->Stats().waiting, 1);
  auto hr = runtime_->Submit(Greedy(Prompt(4, 8), 4), refused.sink());
  ASSERT_FALSE(hr.ok());
  EXPECT_EQ(hr.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(hr.status().message()), HasSubstr("limit 1"));
  // The first slot to free goes to the queued request.
  slow = false;
  (*h1)->Cancel();
  EXPECT_EQ(r1.Wait(), FinishReason::kCancelled);
  EXPECT_EQ(queued.Wait(), FinishReason::kLength);
  EXPECT_GT(queued.timings.queue_s, 0.0);
  (*h2)->Cancel();
  EXPECT_EQ(r2.Wait(), FinishReason::kCancelled);
  ASSERT_TRUE(runtime_->WaitIdle(absl::Now() + absl::Seconds(10)));
  const RuntimeStats s = runtime_->Stats();
  EXPECT_EQ(s.running, 0);
  EXPECT_EQ(s.waiting, 0);
  EXPECT_EQ(s.kv_tokens_used, 0);
}

TEST_F(RuntimeTest, CancellationRunningAndQueued) {
  Start(1);
  Result running, queued;
  running.on_update = [] { std::this_thread::sleep_for(std::chrono::milliseconds(1)); };
  auto hr = runtime_->Submit(Greedy(Prompt(1, 8), 240), running.sink());
  ASSERT_TRUE(hr.ok());
  auto hq = runtime_->Submit(Greedy(Prompt(2, 8), 240), queued.sink());
  ASSERT_TRUE(hq.ok());
  (*hq)->Cancel();
  EXPECT_EQ(queued.Wait(), FinishReason::kCancelled);
  EXPECT_EQ(queued.usage.completion_tokens, 0);
  (*hr)->Cancel();
  EXPECT_EQ(running.Wait(), FinishReason::kCancelled);
  EXPECT_LT(running.usage.completion_tokens, 240);
  ASSERT_TRUE(runtime_->WaitIdle(absl::Now() + absl::Seconds(10)));
  const RuntimeStats s = runtime_->Stats();
  EXPECT_EQ(s.running + s.waiting + s.kv_tokens_used, 0);
  EXPECT_EQ(s.requests_finished, 2u);
  // The slot serves the next request, which gives what it gives alone.
  Result after, again;
  ASSERT_EQ(RunToEnd(*runtime_, Greedy(Prompt(3, 8), 5), &after), FinishReason::kLength);
  ASSERT_EQ(RunToEnd(*runtime_, Greedy(Prompt(3, 8), 5), &again), FinishReason::kLength);
  EXPECT_EQ(after.tokens, again.tokens);
}

TEST_F(RuntimeTest, DeadlinesRunningAndQueued) {
  Start(1);
  Result running, queued;
  // 2 ms per token on the scheduler thread: 240 tokens outlive the deadlines.
  running.on_update = [] { std::this_thread::sleep_for(std::chrono::milliseconds(2)); };
  Request r = Greedy(Prompt(1, 8), 240);
  r.deadline = absl::Now() + absl::Milliseconds(150);
  Request q = Greedy(Prompt(2, 8), 4);
  q.deadline = absl::Now() + absl::Milliseconds(50);
  ASSERT_TRUE(runtime_->Submit(std::move(r), running.sink()).ok());
  ASSERT_TRUE(runtime_->Submit(std::move(q), queued.sink()).ok());
  EXPECT_EQ(queued.Wait(), FinishReason::kDeadline);
  EXPECT_EQ(queued.usage.completion_tokens, 0);
  EXPECT_EQ(running.Wait(), FinishReason::kDeadline);
  EXPECT_LT(running.usage.completion_tokens, 240);
  ASSERT_TRUE(runtime_->WaitIdle(absl::Now() + absl::Seconds(10)));
  EXPECT_EQ(runtime_->Stats().kv_tokens_used, 0);
}

// Issue 17, item 6: a queued request held a sampler sized for the
// vocabulary (4.6 MB at 128k tokens), allocated before the queue-full check.
TEST_F(RuntimeTest, AQueuedOrRefusedRequestAllocatesNothingVocabularySized) {
  Start(1, 1);
  Result running, queued, refused;
  running.on_update = [] { std::this_thread::sleep_for(std::chrono::milliseconds(1)); };
  auto h = runtime_->Submit(Greedy(Prompt(1, 8), 240), running.sink());
  ASSERT_TRUE(h.ok());
  for (int i = 0; i < 1000 && runtime_->Stats().running < 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(runtime_->Stats().running, 1);
  auto submit_bytes = [&](Result* res, absl::StatusCode* code) {
    Request r = Greedy(Prompt(2, 8), 4);
    Sink sink = res->sink();
    t_allocated = 0;
    t_counting = true;
    auto s = runtime_->Submit(std::move(r), std::move(sink));
    t_counting = false;
    *code = s.status().code();
    return t_allocated;
  };
  absl::StatusCode code;
  const size_t queued_bytes = submit_bytes(&queued, &code);
  EXPECT_EQ(code, absl::StatusCode::kOk);
  const size_t refused_bytes = submit_bytes(&refused, &code);
  EXPECT_EQ(code, absl::StatusCode::kResourceExhausted);
  // A vocabulary-sized scratch is at least one float per token.
  EXPECT_LT(queued_bytes, kVocab * sizeof(float)) << "a queued request";
  EXPECT_LT(refused_bytes, kVocab * sizeof(float)) << "a refused request";
  (*h)->Cancel();
  EXPECT_EQ(queued.Wait(), FinishReason::kLength);
}

// CPU time of the whole process over a stretch of wall time.
double CpuShare(absl::Duration wall) {
  timespec a{}, b{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(absl::ToChronoNanoseconds(wall));
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
  const double cpu = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
  return cpu / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Nothing to do: the scheduler sleeps (the issue measured 98 % of a core
// while a request waited for a slot it could not take).
TEST_F(RuntimeTest, AnIdleSchedulerSleeps) {
  Start(2);
  Result a, b;
  ASSERT_EQ(RunToEnd(*runtime_, Greedy(Prompt(1, 8), 4, "alpha"), &a), FinishReason::kLength);
  ASSERT_EQ(RunToEnd(*runtime_, Greedy(Prompt(2, 8), 4, "beta"), &b), FinishReason::kLength);
  // The moment that used to spin: a request of a third session arrives.
  Result c;
  Request r = Greedy(Prompt(3, 8), 4, "gamma");
  r.deadline = absl::Now() + absl::Seconds(2);
  ASSERT_TRUE(runtime_->Submit(std::move(r), c.sink()).ok());
  const double busy = CpuShare(absl::Milliseconds(500));
  EXPECT_EQ(c.Wait(), FinishReason::kLength);
  const double idle = CpuShare(absl::Milliseconds(500));
  EXPECT_LT(busy, 0.5) << "CPU time over wall time while a request waited";
  EXPECT_LT(idle, 0.05) << "CPU time over wall time with nothing to do";
}

}  // namespace
}  // namespace ferry::runtime
