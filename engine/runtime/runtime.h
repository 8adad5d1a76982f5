// Continuous batching: S sequence slots share one executor. Every step takes
// the next token of every running request plus chunks of waiting prompts
// (up to the executor's per-step token budget), runs one forward pass over
// the placement (so a streamed layer crosses PCIe once per step for the
// whole batch), samples each request that produced logits, and admits or
// retires requests between steps. The engine knows nothing of gRPC: a
// request reports through a callback on the scheduler thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engine/exec/forward.h"
#include "engine/text/sampler.h"
#include "engine/text/tokenizer.h"

namespace ferry::runtime {

enum class FinishReason {
  kNone,          // still running
  kStop,          // end-of-generation token or a stop token id
  kLength,        // max_tokens reached
  kStopSequence,  // a stop string completed
  kCancelled,     // the caller cancelled (or disconnected)
  kDeadline,      // the request's deadline passed
  kShutdown,      // the runtime stopped before the request finished
  kError,         // the forward pass failed (device fault)
};
const char* FinishReasonName(FinishReason r);

struct Request {
  std::vector<int32_t> prompt;       // token ids (BOS included when wanted); at least one
  text::SamplingParams sampling;     // sampling.top_logprobs alternatives per token when logprobs
  int max_tokens = 128;
  std::vector<std::string> stops;    // stop strings (not emitted)
  std::vector<int32_t> stop_ids;     // tokens that end generation besides end-of-generation
  bool ignore_eos = false;
  bool logprobs = false;
  bool text_at_start = true;         // the first generated piece starts the text (drop SentencePiece's space)
  std::string session;               // prefix reuse only between requests of the same session
  absl::Time deadline = absl::InfiniteFuture();
};

struct Usage {
  int prompt_tokens = 0;
  int completion_tokens = 0;
  int cached_tokens = 0;  // prompt tokens whose KV came from the slot's cache
};

struct Timings {
  double queue_s = 0;        // submitted -> given a slot
  double first_token_s = 0;  // submitted -> first token sampled
  double prefill_s = 0;      // given a slot -> first token sampled
  double decode_s = 0;       // first token -> finished
};

// What one step produced for one request. `tokens` has 0 or 1 entries;
// `text` is what became complete (valid UTF-8, stop strings held back).
struct Update {
  std::vector<text::Sampled> tokens;
  std::string text;
  FinishReason finish = FinishReason::kNone;  // set on the request's last update
  absl::Status error;                         // with kError
  Usage usage;                                // on the last update
  Timings timings;                            // on the last update
};

// Called on the scheduler thread, once per step that touched the request and
// once with a finish reason; it must not block (queue the update and return).
using Sink = std::function<void(Update&&)>;

// The caller's hold on a submitted request.
class Handle {
 public:
  // Removes the request at the next step (kCancelled); safe from any thread.
  void Cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }

 private:
  std::atomic<bool> cancelled_{false};
};

// One step, for metrics (the engine's plain stats; service/ turns them into metrics).
struct StepInfo {
  int batch_tokens = 0;
  int sequences = 0;         // requests with tokens in the step
  int prefill_tokens = 0;
  int decode_tokens = 0;
  int generated_tokens = 0;  // sent to requests after the step
  double seconds = 0;        // the forward pass
  exec::StreamStats stream;  // the executor's running sums after the step
};
// Called on the scheduler thread after each step's tokens went out.
using StepObserver = std::function<void(const StepInfo&)>;

struct RuntimeOptions {
  int max_queue = 64;  // requests waiting for a slot; Submit refuses past it
  StepObserver observer;
};

// Counters, readable from any thread.
struct RuntimeStats {
  int slots = 0;
  int running = 0;
  int waiting = 0;
  int kv_tokens_used = 0;  // positions held by running requests
  int kv_tokens_capacity = 0;
  uint64_t steps = 0;
  uint64_t prompt_tokens = 0;      // computed by prefill (cached ones excluded)
  uint64_t generated_tokens = 0;
  uint64_t requests_finished = 0;
  bool healthy = true;
  exec::StreamStats stream;  // the executor's copy/compute overlap, as of the last step
};

class Runtime {
 public:
  // An idle scheduler looks at its queue this often (a request cancelled
  // while queued behind busy slots is also seen at the next step).
  static constexpr absl::Duration kIdlePoll = absl::Milliseconds(100);

  // `executor` (n_seq slots, max_batch >= n_seq) and `tokenizer` must outlive the runtime.
  static absl::StatusOr<std::unique_ptr<Runtime>> Create(exec::Executor* executor, const text::Tokenizer* tokenizer,
                                                         const RuntimeOptions& options);
  ~Runtime();  // stops the scheduler; unfinished requests end with kShutdown

  // Queues a request. Refused before any work: INVALID_ARGUMENT (prompt +
  // max_tokens beyond the context, a token outside the vocabulary, bad
  // sampling), RESOURCE_EXHAUSTED (queue full), UNAVAILABLE (draining or
  // unhealthy).
  absl::StatusOr<std::shared_ptr<Handle>> Submit(Request request, Sink sink);

  // Refuse new requests from now on; running and queued ones continue.
  void StartDrain();
  // Waits until nothing runs or waits, or `deadline`; true when idle.
  bool WaitIdle(absl::Time deadline);
  // Ends every request with `reason` at the next step.
  void CancelAll(FinishReason reason);

  RuntimeStats Stats() const;
  bool healthy() const { return healthy_.load(); }
  int n_ctx() const { return executor_->n_ctx(); }
  int slots() const { return executor_->n_seq(); }

 private:
  struct Sequence;
  Runtime(exec::Executor* executor, const text::Tokenizer* tokenizer, const RuntimeOptions& options);
  void Loop();
  bool Admit();                         // false when it changed nothing
  bool Step();                          // one forward pass; false when nothing ran
  // Sends the request's last update (`last`'s token and text, when given, with
  // the finish) and frees its slot.
  void Finish(Sequence& s, FinishReason reason, absl::Status error = absl::OkStatus(), Update* last = nullptr);
  void Emit(Sequence& s, const text::Sampled& t);

  exec::Executor* executor_;
  const text::Tokenizer* tokenizer_;
  const RuntimeOptions options_;

  mutable std::mutex mu_;
  std::condition_variable wake_;       // work arrived, or stop
  std::condition_variable idle_;       // a request finished
  std::deque<std::unique_ptr<Sequence>> queue_;
  bool stop_ = false;
  bool poked_ = false;                 // Submit or CancelAll since the scheduler last looked
  bool draining_ = false;
  FinishReason cancel_all_ = FinishReason::kNone;

  // Scheduler thread only (the counts are mirrored into atomics for Stats).
  std::vector<std::unique_ptr<Sequence>> running_;  // by slot; null = free
  std::vector<std::vector<int32_t>> slot_tokens_;   // what each slot's KV cache holds (positions 0..n-1)
  std::vector<std::string> slot_session_;
  std::vector<uint64_t> slot_last_use_;              // admission count when each slot was last given out
  uint64_t admissions_ = 0;
  std::vector<std::unique_ptr<text::Sampler>> slot_samplers_;  // vocabulary-sized scratch, one per slot
  std::vector<exec::BatchToken> batch_;
  std::vector<Sequence*> batch_seq_;                // the sequence of each logits row

  std::atomic<int> n_running_{0}, n_waiting_{0}, kv_used_{0};
  std::atomic<uint64_t> steps_{0}, prompt_tokens_{0}, generated_tokens_{0}, finished_{0};
  std::atomic<bool> healthy_{true};
  mutable std::mutex stream_mu_;  // taken once per step, not per token
  exec::StreamStats stream_;
  std::thread thread_;
};

}  // namespace ferry::runtime
