#include "engine/backend/sim/sim_device.h"

#include <sys/mman.h>
#include <sys/prctl.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "engine/backend/device_spec.h"
#include "engine/backend/scratch.h"
#include "engine/status.h"
#include "engine/units.h"

namespace ferry::backend {
namespace {

using Clock = std::chrono::steady_clock;

// "25GB/s", "25 GB/s", "25" -> 25 (GB/s).
absl::StatusOr<double> ParseGbps(absl::string_view text) {
  absl::string_view t = absl::StripAsciiWhitespace(text);
  if (!absl::ConsumeSuffix(&t, "GB/s")) absl::ConsumeSuffix(&t, "gb/s");
  double v = 0;
  if (!absl::SimpleAtod(absl::StripAsciiWhitespace(t), &v) || !(v > 0) || v > 1e6) {
    return absl::InvalidArgumentError(absl::StrCat("bandwidth '", text, "': want GB/s, like 25GB/s"));
  }
  return v;
}

// "10us", "0.5ms", "0" -> microseconds.
absl::StatusOr<double> ParseMicros(absl::string_view text) {
  absl::string_view t = absl::StripAsciiWhitespace(text);
  double scale = 1.0;
  if (absl::ConsumeSuffix(&t, "us")) {
  } else if (absl::ConsumeSuffix(&t, "ms")) {
    scale = 1000.0;
  } else if (absl::ConsumeSuffix(&t, "s")) {
    scale = 1e6;
  }
  double v = 0;
  if (!absl::SimpleAtod(absl::StripAsciiWhitespace(t), &v) || v < 0 || v * scale > 1e7) {
    return absl::InvalidArgumentError(absl::StrCat("latency '", text, "': want a time like 10us or 0.5ms (< 10 s)"));
  }
  return v * scale;
}

}  // namespace

absl::StatusOr<SimOptions> ParseSimOptions(absl::string_view spec) {
  SimOptions o;
  std::vector<std::pair<std::string, std::string>> kv;
  for (absl::string_view item : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
    std::pair<std::string, std::string> p = absl::StrSplit(item, absl::MaxSplits('=', 1));
    if (p.first == "profile") o.profile = p.second;
    kv.push_back(std::move(p));
  }
  absl::StatusOr<DeviceSpec> profile = FindGpuProfile(o.profile);
  if (!profile.ok()) return profile.status();
  o.memory_bytes = profile->memory_bytes;
  o.overhead_bytes = profile->overhead_bytes;
  o.h2d_gbps = profile->h2d_gbps;
  o.latency_us = profile->latency_us;
  for (const auto& [key, value] : kv) {
    if (key == "profile") continue;
    if (key == "mem") {
      FERRY_ASSIGN_OR_RETURN(o.memory_bytes, ParseBytes(value));
    } else if (key == "overhead") {
      FERRY_ASSIGN_OR_RETURN(o.overhead_bytes, ParseBytes(value));
    } else if (key == "h2d") {
      FERRY_ASSIGN_OR_RETURN(o.h2d_gbps, ParseGbps(value));
    } else if (key == "lat") {
      FERRY_ASSIGN_OR_RETURN(o.latency_us, ParseMicros(value));
    } else if (key == "poison") {
      if (value != "0" && value != "1") return absl::InvalidArgumentError("sim: poison=0 or poison=1");
      o.poison = value == "1";
    } else if (key == "fault") {
      if (!absl::SimpleAtoi(value, &o.fault_after_copies) || o.fault_after_copies < 0) {
        return absl::InvalidArgumentError(absl::StrCat("sim: fault=N takes a copy count >= 0, got '", value, "'"));
      }
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("sim: unknown key '", key, "' (keys: profile, mem, overhead, h2d, lat, poison, fault)"));
    }
  }
  if (o.memory_bytes == 0 || o.memory_bytes > (1ull << 44)) {
    return absl::InvalidArgumentError("sim: mem must be between 1 byte and 16 TiB");
  }
  if (o.overhead_bytes >= o.memory_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("sim: overhead ", HumanBytes(o.overhead_bytes),
                                                   " leaves nothing of mem ", HumanBytes(o.memory_bytes)));
  }
  return o;
}

absl::StatusOr<std::unique_ptr<SimDevice>> SimDevice::Create(const SimOptions& options, int threads) {
  // Address space only: pages are committed as the arena's ranges are
  // written, so an 80 GiB "card" costs what the model actually puts on it.
  void* base = mmap(nullptr, options.memory_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                    -1, 0);
  if (base == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("sim: cannot reserve ", HumanBytes(options.memory_bytes), " of address space: ", std::strerror(errno)));
  }
  std::unique_ptr<SimDevice> d(new SimDevice(options, threads, static_cast<uint8_t*>(base)));
  if (options.overhead_bytes > 0) {
    // The context overhead stays allocated for the device's lifetime.
    absl::StatusOr<void*> ctx = d->Allocate(options.overhead_bytes, "context overhead");
    if (!ctx.ok()) return ctx.status();
  }
  return d;
}

SimDevice::SimDevice(const SimOptions& options, int threads, uint8_t* base)
    : CpuDevice(threads), options_(options), base_(base), arena_(options.memory_bytes) {
  engine_ = std::thread([this] { CopyEngine(); });
}

SimDevice::~SimDevice() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  engine_.join();
  munmap(base_, options_.memory_bytes);
}

std::string SimDevice::Describe() const {
  return absl::StrFormat("sim %s (%s, %.1f GB/s host-to-device, %.0f us per copy%s; cpu kernels on %d threads)",
                         options_.profile, HumanBytes(options_.memory_bytes), options_.h2d_gbps, options_.latency_us,
                         options_.poison ? ", poisoned slots" : "", pool_.size());
}

uint64_t SimDevice::used() const {
  std::lock_guard<std::mutex> lock(mu_);
  return arena_.used();
}

uint64_t SimDevice::peak() const {
  std::lock_guard<std::mutex> lock(mu_);
  return arena_.peak();
}

absl::Status SimDevice::ReserveKernelScratch(int64_t max_rows, int64_t max_width, int max_tokens) {
  FERRY_RETURN_IF_ERROR(CpuDevice::ReserveKernelScratch(max_rows, max_width, max_tokens));
  ReleaseKernelScratch();
  const uint64_t bytes = KernelScratchFor(max_rows, max_width, max_tokens).bytes();
  FERRY_ASSIGN_OR_RETURN(gpu_scratch_, Allocate(bytes, "kernel scratch"));
  gpu_scratch_bytes_ = AlignDevice(bytes);
  return absl::OkStatus();
}

void SimDevice::ReleaseKernelScratch() {
  recordings_.clear();  // the buffers they name go with the executor
  if (gpu_scratch_ != nullptr) Free(gpu_scratch_);
  gpu_scratch_ = nullptr;
  gpu_scratch_bytes_ = 0;
}

DeviceSpec SimDevice::spec() const {
  DeviceSpec f;
  f.name = absl::StrCat("sim ", options_.profile);
  f.memory_bytes = options_.memory_bytes;
  f.overhead_bytes = options_.overhead_bytes;
  f.h2d_gbps = options_.h2d_gbps;
  f.latency_us = options_.latency_us;
  f.host_kernels = true;
  f.threads = threads();
  if (absl::StatusOr<DeviceSpec> p = FindGpuProfile(options_.profile); p.ok()) {
    f.memory_gbps = p->memory_gbps;
    f.tflops = p->tflops;
  }
  return f;
}

absl::StatusOr<void*> SimDevice::Allocate(uint64_t bytes, absl::string_view what) {
  std::lock_guard<std::mutex> lock(mu_);
  std::optional<uint64_t> offset = arena_.Allocate(bytes);
  if (!offset) {
    return arena_.OutOfMemory(what, bytes);
  }
  CommitPages(base_ + *offset, bytes);
  return base_ + *offset;
}

void SimDevice::Free(void* p) {
  if (p == nullptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  arena_.Free(static_cast<uint8_t*>(p) - base_);
}

absl::StatusOr<Event> SimDevice::CreateEvent() {
  std::lock_guard<std::mutex> lock(mu_);
  if (n_events_ == kMaxEvents) return absl::ResourceExhaustedError(absl::StrCat("sim: more than ", kMaxEvents, " events"));
  return n_events_++;
}

void SimDevice::Push(const Op& op) {
  ops_.push_back(op);
  cv_.notify_all();
}

void SimDevice::Record(Event e, Queue q) {
  NotInRecorded("an event record");
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t generation = ++recorded_[e];
  if (q == Queue::kCompute) {
    // The compute queue runs on the caller: everything before is done.
    if (completed_[e].load() < generation) completed_[e].store(generation);
    cv_.notify_all();
  } else {
    Push({.kind = Op::kRecord, .event = e, .generation = generation});
  }
}

void SimDevice::WaitFor(Event e, uint64_t generation) {
  // The compute side polls, yielding the core, instead of sleeping on the
  // condition variable: a futex wake-up from the copy engine lets Linux
  // run the woken thread on the engine's core and preempt the engine
  // (measured here: the copy engine stalled for the length of the next
  // kernel, ~2 ms, a few times per step, and copy-bound steps took copy +
  // compute instead of copy). A GPU's host side spins the same way
  // (cudaDeviceScheduleSpin).
  while (completed_[e].load(std::memory_order_acquire) < generation) std::this_thread::yield();
}

void SimDevice::Wait(Queue q, Event e) {
  NotInRecorded("an event wait");
  if (q == Queue::kCopy) {
    std::lock_guard<std::mutex> lock(mu_);
    Push({.kind = Op::kWait, .event = e, .generation = recorded_[e]});
    return;
  }
  const Clock::time_point start = Clock::now();
  uint64_t generation = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation = recorded_[e];
  }
  WaitFor(e, generation);
  std::lock_guard<std::mutex> lock(mu_);
  wait_s_ += std::chrono::duration<double>(Clock::now() - start).count();
}

bool SimDevice::Query(Event e) {
  std::lock_guard<std::mutex> lock(mu_);
  return completed_[e].load() >= recorded_[e];
}

void SimDevice::Synchronize(Event e) {
  uint64_t generation = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation = recorded_[e];
  }
  WaitFor(e, generation);
}

void SimDevice::SynchronizeAll() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return ops_.empty() && !engine_busy_; });
}

absl::StatusOr<void*> SimDevice::AllocateHost(uint64_t bytes, absl::string_view what) {
  absl::StatusOr<void*> p = CpuDevice::AllocateHost(bytes, what);
  if (p.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    page_locked_.Add(*p, bytes);
  }
  return p;
}

void SimDevice::FreeHost(void* p, uint64_t bytes) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    page_locked_.Remove(p);
  }
  CpuDevice::FreeHost(p, bytes);
}

absl::Status SimDevice::RegisterHost(const void* p, uint64_t bytes) {
  if (p == nullptr || bytes == 0) return absl::OkStatus();
  std::lock_guard<std::mutex> lock(mu_);
  page_locked_.Add(p, bytes);
  return absl::OkStatus();
}

uint64_t SimDevice::page_locked_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return page_locked_.TotalBytes();
}

void SimDevice::UnregisterHost(const void* p) {
  std::lock_guard<std::mutex> lock(mu_);
  page_locked_.Remove(p);
}

void SimDevice::CopyToDevice(Queue q, void* dst, const void* src, uint64_t bytes) {
  if (bytes == 0) return;
  NotInRecorded("a host-to-device copy");
  if (q == Queue::kCompute) {
    std::memcpy(dst, src, bytes);
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!page_locked_.Find(src, bytes) && fault_.ok()) {
    fault_ = absl::InternalError(absl::StrCat("sim: a copy-queue copy of ", bytes,
                                              " bytes reads pageable host memory (neither from AllocateHost nor "
                                              "registered): a GPU would copy it synchronously"));
  }
  if (options_.fault_after_copies >= 0 && ++copies_enqueued_ > options_.fault_after_copies && fault_.ok()) {
    fault_ = absl::InternalError(absl::StrCat("sim: injected device fault after ", options_.fault_after_copies,
                                              " copies on the copy queue (fault=", options_.fault_after_copies, ")"));
  }
  Push({.kind = Op::kCopy, .dst = dst, .src = src, .bytes = bytes});
}

void SimDevice::PoisonOnReuse(void* dst, uint64_t bytes) {
  if (!options_.poison) return;
  std::lock_guard<std::mutex> lock(mu_);
  Push({.kind = Op::kPoison, .dst = dst, .bytes = bytes});
}

void SimDevice::Latch(absl::Status fault) {
  std::lock_guard<std::mutex> lock(mu_);
  if (fault_.ok()) fault_ = std::move(fault);
}

void SimDevice::NotInRecorded(const char* what) {
  if (trace_ != nullptr) {
    Latch(absl::InternalError(absl::StrCat("sim: ", what, " inside recorded work (RunRecorded takes kernels only)")));
  }
}

void SimDevice::Trace(std::string kernel) {
  if (trace_ != nullptr) trace_->push_back(std::move(kernel));
}

void SimDevice::BeginStep(std::span<const TokenPos> tokens, std::span<const int32_t> logit_rows, const RopeParams&) {
  step_tokens_ = tokens.size();
  step_rows_ = logit_rows.size();
}

void SimDevice::RunRecorded(uint64_t key, const std::function<void()>& enqueue) {
  if (trace_ != nullptr) {
    Latch(absl::InternalError("sim: recorded work inside recorded work"));
    enqueue();
    return;
  }
  std::vector<std::string> trace;
  trace_ = &trace;
  enqueue();
  trace_ = nullptr;
  const auto [it, first] = recordings_.try_emplace({key, step_tokens_, step_rows_}, trace);
  if (first || it->second == trace) return;
  size_t i = 0;
  while (i < trace.size() && i < it->second.size() && trace[i] == it->second[i]) ++i;
  auto at = [](const std::vector<std::string>& t, size_t i) { return i < t.size() ? t[i] : std::string("nothing"); };
  Latch(absl::InternalError(absl::StrCat("sim: recorded work under key ", key, " (", step_tokens_, " tokens, ",
                                         step_rows_, " logit rows) differs from its first run at kernel ", i, ": ",
                                         at(trace, i), " where it recorded ", at(it->second, i),
                                         "; a CUDA graph would replay the first")));
}

// The kernels: traced with what a graph freezes (buffers, sizes, scalars),
// then the cpu kernels. Token and row spans only by size: their values
// come from the step's tables.
void SimDevice::MatMul(const model::Matrix& w, const float* x, int64_t x_stride, int n_tokens, float* y,
                       int64_t y_stride) {
  Trace(absl::StrCat("matmul ", w.name, " @", absl::Hex(w.data), " x@", absl::Hex(x), "/", x_stride, " n", n_tokens,
                     " y@", absl::Hex(y), "/", y_stride));
  CpuDevice::MatMul(w, x, x_stride, n_tokens, y, y_stride);
}

void SimDevice::RmsNorm(const float* x, int n_rows, int64_t width, const float* weight, float eps, float* out) {
  Trace(absl::StrCat("rmsnorm x@", absl::Hex(x), " ", n_rows, "x", width, " w@", absl::Hex(weight), " eps", eps,
                     " out@", absl::Hex(out)));
  CpuDevice::RmsNorm(x, n_rows, width, weight, eps, out);
}

void SimDevice::Add(float* x, const float* y, int64_t n) {
  Trace(absl::StrCat("add x@", absl::Hex(x), " y@", absl::Hex(y), " n", n));
  CpuDevice::Add(x, y, n);
}

void SimDevice::AddRowBias(float* x, int n_rows, int64_t width, const float* bias) {
  Trace(absl::StrCat("row bias x@", absl::Hex(x), " ", n_rows, "x", width, " b@", absl::Hex(bias)));
  CpuDevice::AddRowBias(x, n_rows, width, bias);
}

void SimDevice::Rope(float* x, int n_rows, int n_heads, std::span<const TokenPos> tokens, const RopeParams& rope) {
  Trace(absl::StrCat("rope x@", absl::Hex(x), " ", n_rows, "x", n_heads, " tokens ", tokens.size(), " dims ",
                     rope.dims, rope.neox ? " neox" : "", " head ", rope.head_dim, " table ", rope.set));
  CpuDevice::Rope(x, n_rows, n_heads, tokens, rope);
}

void SimDevice::StoreKv(const KvLayer& kv, const float* k, const float* v, std::span<const TokenPos> tokens) {
  Trace(absl::StrCat("store kv @", absl::Hex(kv.k), "/", absl::Hex(kv.v), " k@", absl::Hex(k), " v@", absl::Hex(v),
                     " tokens ", tokens.size()));
  CpuDevice::StoreKv(kv, k, v, tokens);
}

void SimDevice::Attention(const float* q, const KvLayer& kv, std::span<const TokenPos> tokens,
                          const AttentionShape& s, float* scratch, float* out) {
  Trace(absl::StrCat("attention q@", absl::Hex(q), " kv@", absl::Hex(kv.k), "/", absl::Hex(kv.v), " tokens ",
                     tokens.size(), " heads ", s.n_head, "/", s.n_head_kv, "x", s.head_dim, " scale ", s.query_scale,
                     " cap ", s.softcap, " window ", s.window, " scratch@", absl::Hex(scratch), " out@",
                     absl::Hex(out)));
  CpuDevice::Attention(q, kv, tokens, s, scratch, out);
}

void SimDevice::GatedActivation(float* gate, const float* up, int64_t n, model::Activation act) {
  Trace(absl::StrCat("gate @", absl::Hex(gate), " up@", absl::Hex(up), " n", n, " act ", static_cast<int>(act)));
  CpuDevice::GatedActivation(gate, up, n, act);
}

void SimDevice::SoftCap(float* x, int64_t n, float cap) {
  Trace(absl::StrCat("softcap x@", absl::Hex(x), " n", n, " cap ", cap));
  CpuDevice::SoftCap(x, n, cap);
}

void SimDevice::GatherRows(const float* src, std::span<const int32_t> rows, int64_t width, float* dst) {
  Trace(absl::StrCat("gather src@", absl::Hex(src), " rows ", rows.size(), "x", width, " dst@", absl::Hex(dst)));
  CpuDevice::GatherRows(src, rows, width, dst);
}

absl::Status SimDevice::health() const {
  std::lock_guard<std::mutex> lock(mu_);
  return fault_;
}

DeviceStats SimDevice::stats() const {
  DeviceStats s = CpuDevice::stats();
  std::lock_guard<std::mutex> lock(mu_);
  s.bytes_to_device = copy_stats_.bytes_to_device;
  s.copies = copy_stats_.copies;
  s.copy_busy_s = copy_stats_.copy_busy_s;
  s.compute_wait_s = wait_s_;
  return s;
}

void SimDevice::CopyEngine() {
  // Sleeps end within microseconds of their deadline only with a small
  // timer slack (the default 50 us would stretch every short copy).
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || !ops_.empty(); });
    if (ops_.empty()) return;  // stop_ and drained
    const Op op = ops_.front();
    switch (op.kind) {
      case Op::kWait:
        cv_.wait(lock, [&] { return completed_[op.event].load() >= op.generation; });
        ops_.pop_front();
        break;
      case Op::kRecord:
        if (completed_[op.event].load() < op.generation) completed_[op.event].store(op.generation, std::memory_order_release);
        ops_.pop_front();
        break;
      case Op::kPoison:
      case Op::kCopy: {
        ops_.pop_front();
        engine_busy_ = true;
        lock.unlock();
        const Clock::time_point start = Clock::now();
        if (op.kind == Op::kPoison) {
          std::memset(op.dst, 0xFF, op.bytes);  // NaN as f32, f16 and every block scale
        } else {
          const auto duration = std::chrono::duration<double, std::micro>(
              options_.latency_us + static_cast<double>(op.bytes) / (options_.h2d_gbps * 1e3));
          const Clock::time_point deadline = start + std::chrono::duration_cast<Clock::duration>(duration);
          // With poisoning on, the bytes land at the end of the transfer,
          // so a read before the "ready" event sees poison, not the data.
          if (!options_.poison) std::memcpy(op.dst, op.src, op.bytes);
          std::this_thread::sleep_until(deadline);
          if (options_.poison) std::memcpy(op.dst, op.src, op.bytes);
        }
        const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
        lock.lock();
        engine_busy_ = false;
        if (op.kind == Op::kCopy) {
          copy_stats_.copy_busy_s += seconds;
          copy_stats_.bytes_to_device += op.bytes;
          ++copy_stats_.copies;
        }
        break;
      }
    }
    cv_.notify_all();
  }
}

}  // namespace ferry::backend
