#include "engine/runtime/runtime.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/text/stop.h"

namespace ferry::runtime {

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "none";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kStopSequence: return "stop_sequence";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kDeadline: return "deadline";
    case FinishReason::kShutdown: return "shutdown";
    case FinishReason::kError: return "error";
  }
  return "?";
}

namespace {
text::SamplingParams WithLogprobs(text::SamplingParams p, bool logprobs) {
  p.logprobs = logprobs;
  return p;
}
}  // namespace

// A request. It holds nothing the size of the vocabulary: the sampler's
// scratch belongs to the slot it is given (a queued request costs its
// prompt and a few hundred bytes, whatever the vocabulary).
struct Runtime::Sequence {
  Sequence(Request r, Sink s, const text::Tokenizer& tok)
      : req(std::move(r)),
        sink(std::move(s)),
        handle(std::make_shared<Handle>()),
        tokens(req.prompt),
        detok(tok, req.text_at_start),
        stops(req.stops) {}

  Request req;
  Sink sink;
  std::shared_ptr<Handle> handle;
  int slot = -1;
  std::vector<int32_t> tokens;  // prompt, then what was generated
  int n_past = 0;               // tokens[0..n_past) are in the slot's KV cache
  int cached = 0;               // of which reused from the slot's previous request
  int generated = 0;
  text::Sampler* sampler = nullptr;  // the slot's, from admission on
  text::Detokenizer detok;
  text::StopMatcher stops;
  absl::Time submitted, admitted, first_token;
  bool done = false;
};

Runtime::Runtime(exec::Executor* executor, const text::Tokenizer* tokenizer, const RuntimeOptions& options)
    : executor_(executor), tokenizer_(tokenizer), options_(options) {}

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::Create(exec::Executor* executor, const text::Tokenizer* tokenizer,
                                                         const RuntimeOptions& options) {
  if (executor->max_batch() < executor->n_seq()) {
    return absl::InvalidArgumentError(absl::StrCat("the per-step token budget (", executor->max_batch(),
                                                   ") must be at least the number of slots (", executor->n_seq(),
                                                   "): every running request decodes one token per step"));
  }
  if (tokenizer->n_vocab() != executor->config().n_vocab) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer has ", tokenizer->n_vocab(), " tokens, the model ",
                                                   executor->config().n_vocab));
  }
  if (options.max_queue < 0) return absl::InvalidArgumentError("max_queue must be >= 0");
  std::unique_ptr<Runtime> r(new Runtime(executor, tokenizer, options));
  const int slots = executor->n_seq();
  r->running_.resize(slots);
  r->slot_tokens_.resize(slots);
  r->slot_session_.resize(slots);
  r->slot_last_use_.assign(slots, 0);
  for (int i = 0; i < slots; ++i) {
    r->slot_samplers_.push_back(std::make_unique<text::Sampler>(text::SamplingParams{}, executor->config().n_vocab));
  }
  r->batch_.reserve(executor->max_batch());
  r->batch_seq_.reserve(executor->max_batch());
  r->thread_ = std::thread([p = r.get()] { p->Loop(); });
  return r;
}

Runtime::~Runtime() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<std::shared_ptr<Handle>> Runtime::Submit(Request request, Sink sink) {
  const int n_vocab = executor_->config().n_vocab;
  if (request.prompt.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  for (int32_t id : request.prompt) {
    if (id < 0 || id >= n_vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token id ", id, " is outside the vocabulary [0, ", n_vocab, ")"));
    }
  }
  for (int32_t id : request.stop_ids) {
    if (id < 0 || id >= n_vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop token id ", id, " is outside the vocabulary [0, ", n_vocab, ")"));
    }
  }
  if (request.max_tokens < 0) return absl::InvalidArgumentError("max_tokens must be >= 0");
  const int64_t need = static_cast<int64_t>(request.prompt.size()) + request.max_tokens;
  if (need > executor_->n_ctx()) {
    return absl::InvalidArgumentError(absl::StrCat("prompt (", request.prompt.size(), " tokens) + max_tokens (",
                                                   request.max_tokens, ") = ", need, " exceeds the context of ",
                                                   executor_->n_ctx(), " tokens per request"));
  }
  if (absl::Status s = text::Validate(request.sampling, n_vocab); !s.ok()) return s;
  const absl::Time now = absl::Now();
  std::shared_ptr<Handle> handle;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!healthy_.load()) return absl::UnavailableError("the engine is unhealthy after a device fault");
    if (draining_ || stop_) return absl::UnavailableError("the server is shutting down");
    const int slots = executor_->n_seq();
    const int free_slots = std::max(0, slots - n_running_.load());
    if (static_cast<int>(queue_.size()) >= options_.max_queue + free_slots) {
      return absl::ResourceExhaustedError(absl::StrCat("admission queue full: ", queue_.size(), " requests waiting (limit ",
                                                       options_.max_queue, ") and all ", slots,
                                                       " slots busy; retry later"));
    }
    auto seq = std::make_unique<Sequence>(std::move(request), std::move(sink), *tokenizer_);
    seq->submitted = now;
    handle = seq->handle;
    queue_.push_back(std::move(seq));
    n_waiting_.store(static_cast<int>(queue_.size()));
    poked_ = true;
  }
  wake_.notify_one();
  return handle;
}

void Runtime::StartDrain() {
  std::lock_guard<std::mutex> l(mu_);
  draining_ = true;
}

bool Runtime::WaitIdle(absl::Time deadline) {
  std::unique_lock<std::mutex> l(mu_);
  while (!(queue_.empty() && n_running_.load() == 0)) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return false;
    idle_.wait_for(l, absl::ToChronoNanoseconds(std::min(left, absl::Milliseconds(50))));
  }
  return true;
}

void Runtime::CancelAll(FinishReason reason) {
  {
    std::lock_guard<std::mutex> l(mu_);
    cancel_all_ = reason;
    poked_ = true;
  }
  wake_.notify_all();
}

RuntimeStats Runtime::Stats() const {
  RuntimeStats s;
  s.slots = executor_->n_seq();
  s.running = n_running_.load();
  s.waiting = n_waiting_.load();
  s.kv_tokens_used = kv_used_.load();
  s.kv_tokens_capacity = executor_->n_seq() * executor_->n_ctx();
  s.steps = steps_.load();
  s.prompt_tokens = prompt_tokens_.load();
  s.generated_tokens = generated_tokens_.load();
  s.requests_finished = finished_.load();
  s.healthy = healthy_.load();
  std::lock_guard<std::mutex> l(stream_mu_);
  s.stream = stream_;
  return s;
}

// The scheduler sleeps whenever a pass did nothing: it wakes for a new
// request, CancelAll or stop, and on its own only to expire a queued
// request's deadline (or every kIdlePoll, for a cancelled one). A pass that
// ran a step goes straight on to the next.
void Runtime::Loop() {
  bool worked = true;
  for (;;) {
    {
      std::unique_lock<std::mutex> l(mu_);
      if (!worked) {
        absl::Time until = absl::Now() + kIdlePoll;
        for (const auto& q : queue_) until = std::min(until, q->req.deadline);
        wake_.wait_for(l, absl::ToChronoNanoseconds(std::max(absl::ZeroDuration(), until - absl::Now())),
                       [&] { return stop_ || poked_; });
      }
      wake_.wait(l, [&] { return stop_ || !queue_.empty() || n_running_.load() > 0 || cancel_all_ != FinishReason::kNone; });
      if (stop_) break;
      poked_ = false;
    }
    const bool admitted = Admit();
    worked = Step() || admitted;
  }
  // Stopping: whatever is left ends now.
  std::deque<std::unique_ptr<Sequence>> queued;
  {
    std::lock_guard<std::mutex> l(mu_);
    queued.swap(queue_);
    n_waiting_.store(0);
  }
  for (auto& s : queued) Finish(*s, FinishReason::kShutdown);
  for (auto& s : running_) {
    if (s) Finish(*s, FinishReason::kShutdown);
  }
  idle_.notify_all();
}

// Moves queued requests, oldest first, into free slots: while a slot is
// free nobody waits. A session's cache is a preference, never a
// reservation. The slot a request gets is, best first: one of its own
// session holding the longest common prefix (its KV is reused: a
// position's K and V depend only on the tokens at and before it, so the
// cached rows are exactly what prefill would compute again); one holding no
// session's cache; the one whose cache was used longest ago (evicted).
bool Runtime::Admit() {
  bool admitted = false;
  std::vector<std::unique_ptr<Sequence>> ended;
  FinishReason cancel_all;
  {
    std::lock_guard<std::mutex> l(mu_);
    cancel_all = cancel_all_;
    cancel_all_ = FinishReason::kNone;
    const absl::Time now = absl::Now();
    for (auto it = queue_.begin(); it != queue_.end();) {
      Sequence& s = **it;
      if (cancel_all != FinishReason::kNone || s.handle->cancelled() || now >= s.req.deadline) {
        ended.push_back(std::move(*it));
        it = queue_.erase(it);
      } else {
        ++it;
      }
    }
    const int slots = static_cast<int>(running_.size());
    while (!queue_.empty()) {
      // Ranked by (kind, common prefix, -last use): 2 = own session, 1 = no
      // session's cache, 0 = another session's.
      int best = -1, best_kind = -1, best_common = 0;
      uint64_t best_use = 0;
      Sequence& s = *queue_.front();
      for (int slot = 0; slot < slots; ++slot) {
        if (running_[slot]) continue;
        int kind = 0, common = 0;
        if (!s.req.session.empty() && s.req.session == slot_session_[slot]) {
          kind = 2;
          const std::vector<int32_t>& c = slot_tokens_[slot];
          const size_t n = std::min(c.size(), s.tokens.size());
          while (common < static_cast<int>(n) && c[common] == s.tokens[common]) ++common;
        } else if (slot_session_[slot].empty()) {
          kind = 1;
        }
        const uint64_t use = slot_last_use_[slot];
        if (best < 0 || kind > best_kind || (kind == best_kind && (common > best_common ||
                                                                   (common == best_common && use < best_use)))) {
          best = slot;
          best_kind = kind;
          best_common = common;
          best_use = use;
        }
      }
      if (best < 0) break;  // every slot runs a request
      std::unique_ptr<Sequence> seq = std::move(queue_.front());
      queue_.pop_front();
      seq->slot = best;
      // At least the last prompt token is computed again: its logits are needed.
      seq->n_past = best_kind == 2 ? std::clamp(best_common, 0, static_cast<int>(seq->tokens.size()) - 1) : 0;
      seq->cached = seq->n_past;
      seq->admitted = absl::Now();
      seq->sampler = slot_samplers_[best].get();
      seq->sampler->Reset(WithLogprobs(seq->req.sampling, seq->req.logprobs));
      slot_tokens_[best].clear();
      slot_session_[best] = seq->req.session;
      slot_last_use_[best] = ++admissions_;
      running_[best] = std::move(seq);
      n_running_.fetch_add(1);
      admitted = true;
    }
    n_waiting_.store(static_cast<int>(queue_.size()));
  }
  for (auto& s : ended) {
    Finish(*s, cancel_all != FinishReason::kNone ? cancel_all
               : s->handle->cancelled()          ? FinishReason::kCancelled
                                                 : FinishReason::kDeadline);
  }
  if (cancel_all != FinishReason::kNone) {
    for (int slot = 0; slot < static_cast<int>(running_.size()); ++slot) {
      if (running_[slot]) Finish(*running_[slot], cancel_all);
    }
  }
  for (auto& s : running_) {
    if (s && s->req.max_tokens == 0) Finish(*s, FinishReason::kLength);
  }
  return admitted || !ended.empty() || cancel_all != FinishReason::kNone;
}

bool Runtime::Step() {
  const absl::Time now = absl::Now();
  for (auto& s : running_) {
    if (!s) continue;
    if (s->handle->cancelled()) Finish(*s, FinishReason::kCancelled);
    else if (now >= s->req.deadline) Finish(*s, FinishReason::kDeadline);
  }
  // Decode tokens first (one per running request), then prompt chunks in
  // slot order until the budget is spent.
  batch_.clear();
  batch_seq_.clear();
  int budget = executor_->max_batch();
  StepInfo info;
  for (int pass = 0; pass < 2; ++pass) {
    for (auto& sp : running_) {
      if (!sp || budget == 0) continue;
      Sequence& s = *sp;
      const int pending = static_cast<int>(s.tokens.size()) - s.n_past;
      const bool decode = s.generated > 0;
      if ((pass == 0) != decode || pending <= 0) continue;
      const int n = std::min(pending, budget);
      for (int i = 0; i < n; ++i) {
        const int pos = s.n_past + i;
        const bool last = pos + 1 == static_cast<int>(s.tokens.size());
        batch_.push_back({s.tokens[pos], s.slot, pos, last});
        if (last) batch_seq_.push_back(&s);
      }
      s.n_past += n;
      budget -= n;
      (decode ? info.decode_tokens : info.prefill_tokens) += n;
      ++info.sequences;
    }
  }
  int used = 0;  // positions the running requests hold once this step ran
  for (auto& sp : running_) {
    if (sp) used += sp->n_past;
  }
  kv_used_.store(used);
  if (batch_.empty()) return false;
  info.batch_tokens = static_cast<int>(batch_.size());

  const int n_vocab = executor_->config().n_vocab;
  const absl::Time t0 = absl::Now();
  // The logits land in the executor's page-locked buffer (no host copy).
  const absl::StatusOr<std::span<float>> out = executor_->Forward(batch_);
  const absl::Status status = out.status();
  info.seconds = absl::ToDoubleSeconds(absl::Now() - t0);
  steps_.fetch_add(1, std::memory_order_relaxed);
  prompt_tokens_.fetch_add(info.prefill_tokens, std::memory_order_relaxed);
  info.stream = executor_->stats();
  {
    std::lock_guard<std::mutex> l(stream_mu_);
    stream_ = info.stream;
  }
  if (!status.ok()) {
    // The device state is unknown after a failed step: every request ends and
    // the runtime refuses new ones.
    healthy_.store(false);
    for (auto& s : running_) {
      if (s) Finish(*s, FinishReason::kError, status);
    }
    if (options_.observer) options_.observer(info);
    return true;
  }
  const uint64_t generated_before = generated_tokens_.load(std::memory_order_relaxed);
  for (size_t row = 0; row < batch_seq_.size(); ++row) {
    Sequence& s = *batch_seq_[row];
    const std::span<float> logits = out->subspan(row * static_cast<size_t>(n_vocab), n_vocab);
    const text::Sampled t = s.sampler->Sample(logits, s.tokens);
    Emit(s, t);
  }
  info.generated_tokens = static_cast<int>(generated_tokens_.load(std::memory_order_relaxed) - generated_before);
  if (options_.observer) options_.observer(info);
  return true;
}

void Runtime::Emit(Sequence& s, const text::Sampled& t) {
  if (s.generated == 0) s.first_token = absl::Now();
  const bool stop_id = std::find(s.req.stop_ids.begin(), s.req.stop_ids.end(), t.token) != s.req.stop_ids.end();
  if ((tokenizer_->IsEndOfGeneration(t.token) && !s.req.ignore_eos) || stop_id) {
    Finish(s, FinishReason::kStop);
    return;
  }
  s.tokens.push_back(t.token);  // sampled, not yet in the cache (n_past stays)
  ++s.generated;
  generated_tokens_.fetch_add(1, std::memory_order_relaxed);
  Update u;
  u.tokens.push_back(t);
  bool stopped = false;
  u.text = s.stops.Push(s.detok.Push(t.token), &stopped);
  if (stopped) {
    Finish(s, FinishReason::kStopSequence, absl::OkStatus(), &u);
  } else if (s.generated >= s.req.max_tokens) {
    Finish(s, FinishReason::kLength, absl::OkStatus(), &u);  // one update carries the last token and the finish
  } else {
    s.sink(std::move(u));
  }
}

void Runtime::Finish(Sequence& s, FinishReason reason, absl::Status error, Update* last) {
  if (s.done) return;
  s.done = true;
  Update u;
  if (last != nullptr) u = std::move(*last);
  u.finish = reason;
  u.error = std::move(error);
  if (reason == FinishReason::kStop || reason == FinishReason::kLength) {
    bool stopped = false;
    u.text += s.stops.Push(s.detok.Flush(), &stopped);
    if (stopped) u.finish = FinishReason::kStopSequence;
    else u.text += s.stops.Flush();
  }
  const absl::Time now = absl::Now();
  u.usage.prompt_tokens = static_cast<int>(s.req.prompt.size());
  u.usage.completion_tokens = s.generated;
  u.usage.cached_tokens = s.cached;
  const absl::Time admitted = s.slot >= 0 ? s.admitted : now;
  u.timings.queue_s = absl::ToDoubleSeconds(admitted - s.submitted);
  if (s.generated > 0) {
    u.timings.first_token_s = absl::ToDoubleSeconds(s.first_token - s.submitted);
    u.timings.prefill_s = absl::ToDoubleSeconds(s.first_token - admitted);
    u.timings.decode_s = absl::ToDoubleSeconds(now - s.first_token);
  } else {
    u.timings.prefill_s = absl::ToDoubleSeconds(now - admitted);
  }
  s.sink(std::move(u));
  finished_.fetch_add(1, std::memory_order_relaxed);
  if (s.slot < 0) return;  // never admitted: the caller owns it
  const int slot = s.slot;
  if (reason == FinishReason::kError) {
    slot_tokens_[slot].clear();
    slot_session_[slot].clear();
  } else {
    slot_tokens_[slot].assign(s.tokens.begin(), s.tokens.begin() + std::min<size_t>(s.n_past, s.tokens.size()));
  }
  kv_used_.fetch_sub(s.n_past);  // counted by the step that built the batch
  std::unique_ptr<Sequence> gone = std::move(running_[slot]);  // `s` is destroyed on return
  {
    // The count changes under the lock so WaitIdle cannot miss the wake-up.
    std::lock_guard<std::mutex> l(mu_);
    n_running_.fetch_sub(1);
  }
  idle_.notify_all();
}

}  // namespace ferry::runtime
