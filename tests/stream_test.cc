// The ferry itself: the capped arena, the sim device's queues and events,
// and the streaming executor. Every placement and ring depth must give the
// cpu backend's logits bit for bit (the sim runs the same kernels); the
// poisoned staging slots must expose a broken schedule; the executor must
// hold exactly the bytes the planner named.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "engine/backend/arena.h"
#include "engine/backend/sim/sim_device.h"
#include "engine/exec/forward.h"
#include "engine/model/synth.h"
#include "engine/plan/planner.h"
#include "tests/in_memory_model.h"
#include "tests/tiny_steps.h"

namespace ferry {
namespace {

using ::testing::HasSubstr;
using quant::TensorType;

TEST(Arena, AlignsFitsAndCoalesces) {
  backend::Arena a(4096);
  auto x = a.Allocate(100), y = a.Allocate(1000), z = a.Allocate(1);
  ASSERT_TRUE(x && y && z);
  EXPECT_EQ(*x % 256, 0u);
  EXPECT_EQ(*y % 256, 0u);
  EXPECT_EQ(a.used(), 256u + 1024u + 256u);
  EXPECT_FALSE(a.Allocate(4096 - a.used() + 1)) << "past the cap";
  EXPECT_TRUE(a.Free(*y));
  EXPECT_FALSE(a.Free(*y)) << "a double free is refused";
  EXPECT_TRUE(a.Free(*x));
  // x and y's ranges coalesced: 1280 contiguous bytes at 0.
  auto w = a.Allocate(1280);
  ASSERT_TRUE(w);
  EXPECT_EQ(*w, 0u);
  EXPECT_EQ(a.peak(), 256u + 1024u + 256u);
}

TEST(SimDevice, OptionsFromAProfileAndOverrides) {
  auto o = backend::ParseSimOptions("profile=rtx4090-24g,mem=2GiB,h2d=12.5GB/s,lat=0.5ms,poison=1");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->memory_bytes, 2ull << 30);
  EXPECT_EQ(o->overhead_bytes, 500ull << 20) << "from the profile";
  EXPECT_DOUBLE_EQ(o->h2d_gbps, 12.5);
  EXPECT_DOUBLE_EQ(o->latency_us, 500.0);
  EXPECT_TRUE(o->poison);
  EXPECT_THAT(std::string(backend::ParseSimOptions("speed=9").status().message()), HasSubstr("unknown key 'speed'"));
  EXPECT_FALSE(backend::ParseSimOptions("h2d=fast").ok());
  EXPECT_FALSE(backend::ParseSimOptions("mem=1GiB,overhead=2GiB").ok());
  EXPECT_FALSE(backend::ParseSimOptions("profile=voodoo2").ok());
}

TEST(SimDevice, AllocationPastTheCapFailsLikeAGpu) {
  auto d = backend::SimDevice::Create({.memory_bytes = 1 << 20, .overhead_bytes = 256 << 10, .h2d_gbps = 10}, 1);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ((*d)->used(), 256u << 10) << "the context overhead is taken at start";
  auto a = (*d)->Allocate(512 << 10, "weights");
  ASSERT_TRUE(a.ok());
  auto b = (*d)->Allocate(512 << 10, "KV cache");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(b.status().message()), HasSubstr("device out of memory: KV cache needs 512.00 KiB, 256.00 KiB of 1.00 MiB free"));
  (*d)->Free(*a);
  EXPECT_TRUE((*d)->Allocate(768 << 10, "all of it").ok());
}

TEST(SimDevice, EventsOrderTheCopyQueueLikeCudaStreams) {
  // 1 MiB at 0.02 GB/s takes ~50 ms on the copy engine.
  auto d = backend::SimDevice::Create({.memory_bytes = 8 << 20, .h2d_gbps = 0.02, .poison = true}, 1);
  ASSERT_TRUE(d.ok());
  backend::SimDevice& dev = **d;
  std::vector<uint8_t> src(1 << 20, 7);
  ASSERT_TRUE(dev.RegisterHost(src.data(), src.size()).ok());
  void* dst = *dev.Allocate(src.size(), "slot");
  const backend::Event never = *dev.CreateEvent(), ready = *dev.CreateEvent();
  dev.Wait(backend::Queue::kCopy, never);  // never recorded: a no-op, as in CUDA
  dev.CopyToDevice(backend::Queue::kCopy, dst, src.data(), src.size());
  dev.Record(ready, backend::Queue::kCopy);
  EXPECT_FALSE(dev.Query(ready)) << "the copy is still in flight";
  dev.Wait(backend::Queue::kCompute, ready);  // compute (the caller) waits for it
  EXPECT_TRUE(dev.Query(ready));
  EXPECT_EQ(std::memcmp(dst, src.data(), src.size()), 0);
  const backend::DeviceStats s = dev.stats();
  EXPECT_EQ(s.bytes_to_device, src.size());
  EXPECT_EQ(s.copies, 1u);
  EXPECT_GT(s.copy_busy_s, 0.0);
  EXPECT_GT(s.compute_wait_s, 0.0);
}

// The copy queue reads page-locked host memory only, as a GPU needs for an
// asynchronous copy: from AllocateHost or registered; anything else latches
// a fault that names the cause.
TEST(SimDevice, CopyQueueReadsOnlyPageLockedHostMemory) {
  auto d = backend::SimDevice::Create({.memory_bytes = 8 << 20, .h2d_gbps = 100}, 1);
  ASSERT_TRUE(d.ok());
  backend::SimDevice& dev = **d;
  void* dst = *dev.Allocate(4096, "slot");
  auto pinned = backend::HostBuffer::Make(dev, 4096, "test");
  ASSERT_TRUE(pinned.ok());
  dev.CopyToDevice(backend::Queue::kCopy, dst, pinned->bytes() + 100, 1000);  // inside the range
  dev.SynchronizeAll();
  EXPECT_TRUE(dev.health().ok()) << dev.health();
  std::vector<uint8_t> pageable(4096, 1);
  dev.CopyToDevice(backend::Queue::kCompute, dst, pageable.data(), 4096);  // the compute queue may
  EXPECT_TRUE(dev.health().ok()) << dev.health();
  // Runs past a registered range's end (into valid, unregistered memory).
  backend::PageVector<uint8_t> pages(3 * 4096, 2);
  ASSERT_TRUE(dev.RegisterHost(pages.data(), 4096).ok());
  dev.CopyToDevice(backend::Queue::kCopy, dst, pages.data() + 100, 4096);
  dev.SynchronizeAll();
  EXPECT_THAT(std::string(dev.health().message()), HasSubstr("reads pageable host memory"));
  dev.UnregisterHost(pages.data());
  auto fresh = backend::SimDevice::Create({.memory_bytes = 8 << 20, .h2d_gbps = 100}, 1);
  ASSERT_TRUE(fresh.ok());
  void* dst2 = *(*fresh)->Allocate(4096, "slot");
  (*fresh)->CopyToDevice(backend::Queue::kCopy, dst2, pageable.data(), 4096);
  (*fresh)->SynchronizeAll();
  EXPECT_FALSE((*fresh)->health().ok());
}

// What a CUDA graph replay assumes, checked on the sim: work recorded
// under a key is the same kernels on the same buffers the next time (a
// fault names the first kernel that differs), the step's shape is part of
// the key, and recorded work holds kernels only.
TEST(SimDevice, RecordedWorkMustRepeatUnderItsKey) {
  auto make = [] {
    auto d = backend::SimDevice::Create({.memory_bytes = 8 << 20, .h2d_gbps = 100}, 1);
    EXPECT_TRUE(d.ok());
    return std::move(*d);
  };
  const std::vector<backend::TokenPos> one = {{0, 0}}, two = {{0, 0}, {0, 1}};
  const backend::RopeParams rope;
  std::unique_ptr<backend::SimDevice> dev = make();
  float* a = static_cast<float*>(*dev->Allocate(4096, "a"));
  float* b = static_cast<float*>(*dev->Allocate(4096, "b"));
  dev->BeginStep(one, {}, rope);
  dev->RunRecorded(7, [&] { dev->Add(a, b, 16); });
  dev->RunRecorded(7, [&] { dev->Add(a, b, 16); });
  dev->BeginStep(two, {}, rope);  // another shape: another recording
  dev->RunRecorded(7, [&] { dev->Add(a, b, 32); });
  EXPECT_TRUE(dev->health().ok()) << dev->health();
  dev->BeginStep(one, {}, rope);
  dev->RunRecorded(7, [&] { dev->Add(b, a, 16); });  // other buffers under the same key and shape
  EXPECT_THAT(std::string(dev->health().message()), HasSubstr("differs from its first run at kernel 0"));

  dev = make();
  backend::Event e = *dev->CreateEvent();
  dev->RunRecorded(1, [&] { dev->Wait(backend::Queue::kCompute, e); });
  EXPECT_THAT(std::string(dev->health().message()), HasSubstr("an event wait inside recorded work"));
}

using Built = testing::InMemoryModel;
Built Build(const model::SynthOptions& o) { return testing::BuildInMemory(o); }

using testing::RunSteps;
using testing::Tiny;

exec::ForwardOptions Options(bool head_resident, int resident_layers, int ring) {
  exec::ForwardOptions o{.max_batch = 8, .n_seq = 2, .n_ctx = 16, .threads = 2};
  o.placement = {head_resident, resident_layers, ring};
  return o;
}

std::unique_ptr<backend::SimDevice> Sim(uint64_t mem = 64 << 20, double h2d = 100.0, bool poison = true) {
  auto d = backend::SimDevice::Create({.memory_bytes = mem, .h2d_gbps = h2d, .latency_us = 0, .poison = poison}, 2);
  EXPECT_TRUE(d.ok()) << d.status();
  return std::move(*d);
}

struct ArchType {
  const char* arch;
  TensorType type;
};

class EveryPlacement : public ::testing::TestWithParam<ArchType> {};

TEST_P(EveryPlacement, GivesTheCpuBackendsLogitsBitForBit) {
  const Built b = Build(Tiny(GetParam().arch, GetParam().type));
  const int L = b.model->config.n_layer;
  const std::vector<float> cpu = RunSteps(*b.model, nullptr, Options(true, -1, 1));
  ASSERT_FALSE(cpu.empty());
  for (int ring = 1; ring <= 4; ++ring) {
    // All resident, all streamed (the head too), and every mix between.
    std::vector<std::pair<bool, int>> placements = {{false, 0}};
    for (int r = 0; r <= L; ++r) placements.push_back({true, r});
    for (const auto& [head, layers] : placements) {
      SCOPED_TRACE(absl::StrCat("ring ", ring, ", head ", head ? "resident" : "streamed", ", ", layers, "/", L,
                                " layers resident"));
      std::unique_ptr<backend::SimDevice> sim = Sim();
      auto options = Options(head, layers, ring);
      const std::vector<float> got = RunSteps(*b.model, sim.get(), options);
      ASSERT_EQ(got.size(), cpu.size());
      EXPECT_EQ(std::memcmp(got.data(), cpu.data(), cpu.size() * sizeof(float)), 0);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Archs, EveryPlacement,
                         ::testing::Values(ArchType{"llama", TensorType::kQ4_0}, ArchType{"qwen2", TensorType::kQ8_0},
                                           ArchType{"gemma2", TensorType::kQ4_K}, ArchType{"qwen3", TensorType::kQ5_K},
                                           ArchType{"gemma3", TensorType::kQ6_K}, ArchType{"llama", TensorType::kQ4_1},
                                           ArchType{"qwen2", TensorType::kQ5_0}, ArchType{"gemma2", TensorType::kQ5_1}),
                         [](const auto& info) {
                           return absl::StrCat(info.param.arch, "_", quant::Info(info.param.type).name);
                         });

// Units on the CPU beside resident and streamed ones: every mix, in any
// order along the layers (the head on the CPU or streamed too), with ring
// depths 1..4, gives the cpu backend's logits bit for bit: the CPU units run
// the same kernels on host memory and the residual stream crosses exactly.
// The steps include a sequence that rewrites its cache from position 2
// (what prefix reuse does) and cross the sliding window (4).
std::vector<float> StepsWithPrefixReuse(const model::Model& m, backend::Device* device, const exec::ForwardOptions& o) {
  std::vector<float> all = RunSteps(m, device, o);
  auto fwd = exec::Executor::Create(m, device, o);
  EXPECT_TRUE(fwd.ok()) << fwd.status();
  if (!fwd.ok()) return {};
  const int V = m.config.n_vocab;
  std::vector<float> logits(2 * V);
  std::vector<exec::BatchToken> batch;
  for (int p = 0; p < 7; ++p) batch.push_back({(11 * p + 3) % V, 0, p, p == 6});
  EXPECT_TRUE((*fwd)->Forward(batch, logits).ok());
  all.insert(all.end(), logits.begin(), logits.begin() + V);
  batch.clear();  // the same sequence again from position 2: its first two positions reused
  for (int p = 2; p < 6; ++p) batch.push_back({(7 * p + 5) % V, 0, p, p == 5});
  EXPECT_TRUE((*fwd)->Forward(batch, logits).ok());
  all.insert(all.end(), logits.begin(), logits.begin() + V);
  return all;
}

class MixedPlacement : public ::testing::TestWithParam<ArchType> {};

TEST_P(MixedPlacement, CpuUnitsBesideResidentAndStreamedGiveTheCpuBackendsLogitsBitForBit) {
  const Built b = Build(Tiny(GetParam().arch, GetParam().type));
  const int L = b.model->config.n_layer;
  const std::vector<float> cpu = StepsWithPrefixReuse(*b.model, nullptr, Options(true, -1, 1));
  ASSERT_FALSE(cpu.empty());
  std::mt19937 rng(GetParam().type == TensorType::kQ4_0 ? 5 : 9);
  std::vector<std::vector<plan::Home>> mixes;
  using plan::Home;
  // Every layer on the CPU with the head resident, streamed, on the CPU;
  // then random mixes of the three homes.
  for (Home head : {Home::kResident, Home::kStreamed, Home::kCpu}) {
    std::vector<Home> h(L, Home::kCpu);
    h.push_back(head);
    mixes.push_back(h);
  }
  for (int i = 0; i < 6; ++i) {
    std::vector<Home> h;
    for (int u = 0; u <= L; ++u) h.push_back(static_cast<Home>(rng() % 3));
    mixes.push_back(h);
  }
  for (const std::vector<Home>& homes : mixes) {
    for (int ring = 1; ring <= 4; ++ring) {
      std::string names;
      for (Home h : homes) absl::StrAppend(&names, plan::HomeName(h), " ");
      SCOPED_TRACE(absl::StrCat("ring ", ring, ", homes ", names));
      std::unique_ptr<backend::SimDevice> sim = Sim();
      exec::ForwardOptions o = Options(true, -1, ring);
      o.placement = plan::Placement(homes, ring);
      const std::vector<float> got = StepsWithPrefixReuse(*b.model, sim.get(), o);
      ASSERT_EQ(got.size(), cpu.size());
      EXPECT_EQ(std::memcmp(got.data(), cpu.data(), cpu.size() * sizeof(float)), 0);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Archs, MixedPlacement,
                         ::testing::Values(ArchType{"llama", TensorType::kQ4_0}, ArchType{"qwen2", TensorType::kQ8_0},
                                           ArchType{"gemma2", TensorType::kQ4_K}, ArchType{"qwen3", TensorType::kF16},
                                           ArchType{"gemma3", TensorType::kQ6_K}),
                         [](const auto& info) {
                           return absl::StrCat(info.param.arch, "_", quant::Info(info.param.type).name);
                         });

TEST(Executor, StreamsEachStreamedByteOncePerStepAndWrapsIntoTheNextStep) {
  const Built b = Build(Tiny("llama", TensorType::kQ8_0, 6));
  std::unique_ptr<backend::SimDevice> sim = Sim();
  auto fwd = exec::Executor::Create(*b.model, sim.get(), Options(true, 2, 3));
  ASSERT_TRUE(fwd.ok()) << fwd.status();
  EXPECT_EQ((*fwd)->ring_depth(), 3);
  std::vector<float> logits(b.model->config.n_vocab);
  sim->SynchronizeAll();
  const uint64_t primed = sim->stats().bytes_to_device;
  const exec::BatchToken t{1, 0, 0, true};
  ASSERT_TRUE((*fwd)->Forward({&t, 1}, logits).ok());
  sim->SynchronizeAll();
  // Per step the 4 streamed layers cross once; the ring already holds the
  // next step's first 3 (queued as the last layers of this step ran).
  uint64_t layer_bytes = 0;
  for (const char* name : {"blk.5.attn_q.weight"}) layer_bytes = b.model->file->FindTensor(name)->bytes;
  EXPECT_GT(primed, 3 * layer_bytes);
  EXPECT_EQ(sim->stats().bytes_to_device, 7 * primed / 3) << "3 units primed + 4 per step";
  EXPECT_EQ((*fwd)->stats().steps, 1u);
}

TEST(Executor, PoisonedSlotsExposeAScheduleThatSkipsTheReadyEvent) {
  const Built b = Build(Tiny("llama", TensorType::kQ8_0));
  const std::vector<float> cpu = RunSteps(*b.model, nullptr, Options(true, -1, 1));
  // A slow copy engine: the compute side is always ahead of it.
  std::unique_ptr<backend::SimDevice> sim = Sim(64 << 20, 0.2);
  const std::vector<float> got = RunSteps(*b.model, sim.get(), Options(true, 0, 2), 5, {.skip_ready_wait = true});
  ASSERT_EQ(got.size(), cpu.size());
  // Compute read slots mid-transfer (poison) or still holding an earlier
  // layer (stale weights): either way not the model's logits.
  EXPECT_NE(std::memcmp(got.data(), cpu.data(), cpu.size() * sizeof(float)), 0);
}

TEST(Executor, PoisonedSlotsExposeASlotReleasedBeforeItsLayerRan) {
  const Built b = Build(Tiny("llama", TensorType::kQ8_0));
  const std::vector<float> cpu = RunSteps(*b.model, nullptr, Options(true, -1, 1));
  std::unique_ptr<backend::SimDevice> sim = Sim(64 << 20, 0.2);
  // The refill's poison lands while the layer reads.
  const std::vector<float> got = RunSteps(*b.model, sim.get(), Options(true, 0, 1), 5, {.release_slot_early = true});
  ASSERT_EQ(got.size(), cpu.size());
  EXPECT_NE(std::memcmp(got.data(), cpu.data(), cpu.size() * sizeof(float)), 0);
}

// The plan for (model, placement) and the executor's allocations agree by
// category, and the device holds nothing else.
void ExpectExecutorHoldsThePlan(const model::Model& m, backend::SimDevice& sim, const plan::Plan& p,
                                const exec::ForwardOptions& o) {
  auto fwd = exec::Executor::Create(m, &sim, o);
  ASSERT_TRUE(fwd.ok()) << fwd.status();
  const exec::DeviceUsage& u = (*fwd)->usage();
  EXPECT_EQ(u.weights_resident, p.weights_resident);
  EXPECT_EQ(u.staging, p.staging);
  EXPECT_EQ(u.kv_cache, p.kv_cache);
  EXPECT_EQ(u.workspace, p.workspace);
  EXPECT_EQ(sim.used(), p.overhead + u.total()) << "nothing on the device that the plan does not name";
  EXPECT_LE(sim.peak() + p.margin, sim.options().memory_bytes);
  EXPECT_EQ(sim.page_locked_bytes(), p.host_pinned) << "page-locked host memory as the plan says";
  EXPECT_EQ((*fwd)->host_pinned_bytes(), p.host_pinned);
  EXPECT_EQ((*fwd)->cpu_weight_bytes(), p.host_cpu_weights) << "the CPU units' regrouped weights";
  EXPECT_EQ((*fwd)->cpu_kv_bytes(), p.host_cpu_kv) << "the CPU units' KV cache";
  EXPECT_EQ((*fwd)->cpu_layers(), p.cpu_layers);
  std::vector<float> logits(m.config.n_vocab);
  const exec::BatchToken t{1, 0, 0, true};
  EXPECT_TRUE((*fwd)->Forward({&t, 1}, logits).ok());
}

TEST(Executor, HoldsExactlyWhatThePlannerNamed) {
  for (const char* arch : {"llama", "qwen2", "gemma2", "qwen3", "gemma3"}) {
    const Built b = Build(Tiny(arch, TensorType::kQ4_K, 5));
    for (int layers : {0, 2, 5}) {
      SCOPED_TRACE(absl::StrCat(arch, ", ", layers, " layers"));
      plan::PlanRequest r;
      r.policy = plan::Policy::kLayers;
      r.gpu_layers = layers;
      r.n_ctx = 16;
      r.n_slots = 2;
      r.kv_bytes_per_elem = 2;
      r.max_batch = 8;
      r.ring_depth = 2;
      plan::DeviceSpec spec{"sim", 64 << 20, 1 << 20};
      auto p = plan::MakePlan(*b.model->file, b.model->config, r, spec);
      ASSERT_TRUE(p.ok()) << p.status();
      auto sim = backend::SimDevice::Create({.memory_bytes = 64 << 20, .overhead_bytes = 1 << 20, .h2d_gbps = 100}, 2);
      ASSERT_TRUE(sim.ok());
      ExpectExecutorHoldsThePlan(*b.model, **sim, *p, Options(true, layers, 2));
    }
    // The rest on the CPU, or split: device bytes as before the CPU units
    // left it, host bytes as the plan names them.
    for (const auto& [strategy, cpu_layers] : {std::pair{plan::Strategy::kCpu, -1}, {plan::Strategy::kMixed, 2}}) {
      SCOPED_TRACE(absl::StrCat(arch, ", ", plan::StrategyName(strategy), ", 1 layer resident"));
      plan::PlanRequest r;
      r.policy = plan::Policy::kLayers;
      r.gpu_layers = 1;
      r.n_ctx = 16;
      r.n_slots = 2;
      r.kv_bytes_per_elem = 2;
      r.max_batch = 8;
      r.ring_depth = 2;
      r.strategy = strategy;
      r.cpu_layers = cpu_layers;
      plan::DeviceSpec spec{"sim", 64 << 20, 1 << 20};
      auto p = plan::MakePlan(*b.model->file, b.model->config, r, spec);
      ASSERT_TRUE(p.ok()) << p.status();
      EXPECT_GT(p->cpu_layers, 0);
      auto sim = backend::SimDevice::Create({.memory_bytes = 64 << 20, .overhead_bytes = 1 << 20, .h2d_gbps = 100}, 2);
      ASSERT_TRUE(sim.ok());
      exec::ForwardOptions o = Options(true, 1, 2);
      o.placement = p->placement;
      ExpectExecutorHoldsThePlan(*b.model, **sim, *p, o);
    }
  }
}

// A popular model's plan for a 5 or 8 GiB card, and the same placement of
// a tiny model with the same architecture, layer count and type mix on a
// sim device capped at that tiny plan's total: it loads and runs.
// Resident set size of the process's mapping that holds `bytes` (from
// /proc/self/smaps), 0 if it cannot be read.
uint64_t MappedRss(std::span<const uint8_t> bytes) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  const auto at = reinterpret_cast<uintptr_t>(bytes.data());
  while (std::getline(smaps, line)) {
    uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-') {
      inside = lo <= at && at < hi;
      continue;
    }
    if (inside && line.rfind("Rss:", 0) == 0) return std::stoull(line.substr(4)) * 1024;
  }
  return 0;
}

// Streamed weights are held once in host memory: packed as they sit in a
// slot into memory from AllocateHost (page-locked on a GPU), at most 1.1x
// the streamed units' bytes, and the file mapping's pages of what was
// packed are dropped.
TEST(Executor, HoldsStreamedWeightsOnceInHostMemory) {
  const Built b = Build(Tiny("llama", TensorType::kQ8_0, 6));
  const std::string path = ::testing::TempDir() + "/streamed_once.gguf";
  std::ofstream(path, std::ios::binary) << b.bytes;
  auto m = model::LoadModel(path);
  ASSERT_TRUE(m.ok()) << m.status();
  const std::span<const uint8_t> file = (*m)->file->bytes();
  volatile uint8_t sink = 0;  // read every page, so the mapping is resident
  for (size_t i = 0; i < file.size(); i += 4096) sink = sink + file[i];
  const uint64_t before = MappedRss(file);
  ASSERT_GT(before, file.size() / 2) << "the mapping should be resident after reading it";

  std::unique_ptr<backend::SimDevice> sim = Sim();
  auto e = exec::Executor::Create(**m, sim.get(), Options(true, 1, 2));
  ASSERT_TRUE(e.ok()) << e.status();
  const int L = (*m)->config.n_layer;
  uint64_t streamed = 0, streamed_matrices = 0;
  for (int l = 0; l < L; ++l) {
    if (plan::LayerResident(l, L, 1)) continue;
    const model::LayerWeights& w = (*m)->weights.layers[l];
    for (const model::Matrix* x : {&w.wq, &w.wk, &w.wv, &w.wo, &w.w_gate, &w.w_up, &w.w_down}) {
      streamed_matrices += x->bytes;
    }
    for (const std::vector<float>* v : {&w.attn_norm, &w.ffn_norm}) streamed += v->size() * sizeof(float);
  }
  streamed += streamed_matrices;
  const uint64_t packed = (*e)->load_times().packed_bytes;
  EXPECT_GE(packed, streamed);
  EXPECT_LE(packed, streamed + streamed / 10);
  const uint64_t after = MappedRss(file);
  EXPECT_LE(after + streamed_matrices * 9 / 10, before) << "before " << before << ", after " << after;
}

// On a device whose memory is the host's (the cpu device) resident units
// are read where they lie, not uploaded: no device bytes of weights,
// nothing page-locked, every layer computed by the CPU.
TEST(Executor, ReadsResidentUnitsInPlaceOnAHostMemoryDevice) {
  const Built b = Build(Tiny("llama", TensorType::kQ8_0));
  auto e = exec::Executor::Create(*b.model, nullptr, Options(true, -1, 2));
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE((*e)->device().spec().host_memory);
  EXPECT_EQ((*e)->usage().weights_resident, 0u);
  EXPECT_EQ((*e)->load_times().uploaded_bytes, 0u);
  EXPECT_EQ((*e)->host_pinned_bytes(), 0u);
  EXPECT_EQ((*e)->resident_layers(), 0);
  EXPECT_EQ((*e)->cpu_layers(), b.model->config.n_layer);
  EXPECT_THAT((*e)->PlacementSummary(), HasSubstr("computed in place from host memory"));
}

// Weights computed on the CPU are held once in host memory too: regrouped
// for the CPU's kernels, and the file mapping's pages of what was regrouped
// dropped (the cpu device, and layers placed on the CPU beside a device).
TEST(Executor, HoldsCpuWeightsOnceInHostMemory) {
  const Built b = Build(Tiny("llama", TensorType::kQ8_0, 6));
  const std::string path = ::testing::TempDir() + "/cpu_once.gguf";
  std::ofstream(path, std::ios::binary) << b.bytes;
  for (const bool on_cpu_device : {true, false}) {
    SCOPED_TRACE(on_cpu_device ? "cpu device" : "sim device, 5 layers and the head on the CPU");
    auto m = model::LoadModel(path);
    ASSERT_TRUE(m.ok()) << m.status();
    const std::span<const uint8_t> file = (*m)->file->bytes();
    volatile uint8_t sink = 0;  // read every page, so the mapping is resident
    for (size_t i = 0; i < file.size(); i += 4096) sink = sink + file[i];
    const uint64_t before = MappedRss(file);
    ASSERT_GT(before, file.size() / 2) << "the mapping should be resident after reading it";
    std::unique_ptr<backend::SimDevice> sim = Sim();
    exec::ForwardOptions o = Options(true, -1, 2);
    std::vector<plan::Home> homes(7, plan::Home::kCpu);
    homes[0] = plan::Home::kResident;
    o.placement = plan::Placement(homes, 2);
    auto e = exec::Executor::Create(**m, on_cpu_device ? nullptr : sim.get(), o);
    ASSERT_TRUE(e.ok()) << e.status();
    const uint64_t regrouped = on_cpu_device ? 0 : (*e)->cpu_weight_bytes();
    if (!on_cpu_device) {
      ASSERT_GT(regrouped, 0u);
    }
    uint64_t matrices = 0;  // what the CPU computes from its regrouped copy
    for (int l = on_cpu_device ? 0 : 1; l < 6; ++l) {
      const model::LayerWeights& w = (*m)->weights.layers[l];
      for (const model::Matrix* x : {&w.wq, &w.wk, &w.wv, &w.wo, &w.w_gate, &w.w_up, &w.w_down}) matrices += x->bytes;
    }
    const uint64_t after = MappedRss(file);
    EXPECT_LE(after + matrices * 9 / 10, before) << "before " << before << ", after " << after;
  }
}

// Forward(batch) gives the logits Forward(batch, logits) writes, in the
// executor's own buffer (from AllocateHost), also for a step that wants
// more rows than it holds (n_seq).
TEST(Executor, LogitsInItsOwnBufferAreTheSame) {
  const Built b = Build(Tiny("llama", TensorType::kQ8_0));
  const int V = b.model->config.n_vocab;
  std::unique_ptr<backend::SimDevice> sim[2] = {Sim(), Sim()};
  auto into = exec::Executor::Create(*b.model, sim[0].get(), Options(true, 1, 2));
  auto own = exec::Executor::Create(*b.model, sim[1].get(), Options(true, 1, 2));
  ASSERT_TRUE(into.ok() && own.ok());
  // A prompt step with a logits row for each of 5 tokens (n_seq is 2), then decode steps.
  std::vector<exec::BatchToken> batch;
  for (int p = 0; p < 5; ++p) batch.push_back({(p * 37) % V, 0, p, true});
  for (int step = 0; step < 3; ++step) {
    SCOPED_TRACE(absl::StrCat("step ", step));
    std::vector<float> want(batch.size() * V);
    ASSERT_TRUE((*into)->Forward(batch, want).ok());
    absl::StatusOr<std::span<float>> got = (*own)->Forward(batch);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->size(), want.size());
    EXPECT_EQ(std::memcmp(got->data(), want.data(), want.size() * sizeof(float)), 0);
    batch = {{(step * 11) % V, 0, 5 + step, true}, {(step * 13) % V, 1, step, true}};
  }
}

TEST(Executor, RunsTheTinyCounterpartOfPopularModelPlans) {
  int streamed_plans = 0;
  for (const char* preset : {"llama3.1-8b", "qwen2.5-7b", "gemma2-27b", "qwen3-8b", "gemma3-27b"}) {
   for (uint64_t gib : {5, 8}) {
    SCOPED_TRACE(absl::StrCat(preset, " on ", gib, " GiB"));
    model::SynthOptions big = *model::Preset(preset);
    gguf::Writer w;
    ASSERT_TRUE(model::BuildSyntheticModel(big, &w).ok());
    const std::string header = w.HeaderBytes();
    auto hf = gguf::File::FromBuffer(std::span(reinterpret_cast<const uint8_t*>(header.data()), header.size()),
                                     {.header_only = true});
    ASSERT_TRUE(hf.ok());
    plan::DeviceSpec card = *backend::FindGpuProfile("rtx4060-8g");
    card.memory_bytes = gib << 30;
    plan::PlanRequest r;
    r.policy = plan::Policy::kAuto;
    r.n_ctx = 4096;
    r.n_slots = 1;
    r.max_batch = 512;
    auto bp = plan::MakePlan(**hf, *model::LoadConfig(**hf), r, card);
    ASSERT_TRUE(bp.ok()) << bp.status();
    streamed_plans += bp->resident_layers < bp->n_layers;

    model::SynthOptions tiny = Tiny(big.arch, big.type, big.n_layer);
    tiny.mix = big.mix;
    tiny.tied_output = big.tied_output;
    const Built b = Build(tiny);
    plan::PlanRequest tr;
    tr.policy = plan::Policy::kLayers;
    tr.gpu_layers = bp->resident_layers;
    tr.n_ctx = 32;
    tr.n_slots = 1;
    tr.max_batch = 8;
    tr.ring_depth = r.ring_depth;
    const uint64_t overhead = 1 << 20;
    auto tp = plan::MakePlan(*b.model->file, b.model->config, tr, {"probe", 1ull << 40, overhead});
    ASSERT_TRUE(tp.ok()) << tp.status();
    // The cap: the tiny plan's device bytes plus the margin of a card that size.
    const uint64_t cap = static_cast<uint64_t>((tp->total - tp->margin) / (1.0 - tr.margin_fraction)) + 4096;
    auto tplan = plan::MakePlan(*b.model->file, b.model->config, tr, {"tiny card", cap, overhead});
    ASSERT_TRUE(tplan.ok()) << tplan.status();
    auto sim = backend::SimDevice::Create({.memory_bytes = cap, .overhead_bytes = overhead, .h2d_gbps = 100}, 2);
    ASSERT_TRUE(sim.ok());
    exec::ForwardOptions o{.max_batch = 8, .n_seq = 1, .n_ctx = 32, .threads = 2};
    o.placement = {true, bp->resident_layers, r.ring_depth};
    ExpectExecutorHoldsThePlan(*b.model, **sim, *tplan, o);
   }
  }
  EXPECT_GE(streamed_plans, 3) << "most of these plans stream part of the model";
}

TEST(Executor, ADeviceTooSmallFailsAtLoadWithAnError) {
  const Built b = Build(Tiny("llama", TensorType::kQ8_0));
  std::unique_ptr<backend::SimDevice> sim = Sim(1 << 20);  // 1 MiB: not even the head fits
  auto fwd = exec::Executor::Create(*b.model, sim.get(), Options(true, -1, 2));
  ASSERT_FALSE(fwd.ok());
  EXPECT_EQ(fwd.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(fwd.status().message()), HasSubstr("device out of memory"));
  EXPECT_EQ(sim->used(), 0u) << "what was allocated before the failure is given back";
}

// A device fault (here injected by the sim device after N copies) latches:
// the step that sees it fails with INTERNAL naming the fault, and so does
// every later step.
TEST(Executor, ADeviceFaultFailsThisStepAndEveryLaterOne) {
  const Built b = Build(Tiny("llama", TensorType::kQ8_0));
  backend::SimOptions so{.memory_bytes = 64 << 20, .h2d_gbps = 100, .latency_us = 0};
  // Copies at load and per step, counted on a device without the fault.
  uint64_t at_load, per_step;
  {
    auto probe = backend::SimDevice::Create(so, 2);
    ASSERT_TRUE(probe.ok());
    auto f = exec::Executor::Create(*b.model, probe->get(), Options(true, 0, 2));
    ASSERT_TRUE(f.ok()) << f.status();
    (*probe)->SynchronizeAll();
    at_load = (*probe)->stats().copies;
    std::vector<float> l(b.model->config.n_vocab);
    const exec::BatchToken t{1, 0, 0, true};
    ASSERT_TRUE((*f)->Forward({&t, 1}, l).ok());
    (*probe)->SynchronizeAll();
    per_step = (*probe)->stats().copies - at_load;
    ASSERT_GT(per_step, 0u);
  }
  so.fault_after_copies = static_cast<int64_t>(at_load + 3 * per_step + per_step / 2);  // in the 4th step
  auto sim = backend::SimDevice::Create(so, 2);
  ASSERT_TRUE(sim.ok());
  auto fwd = exec::Executor::Create(*b.model, sim->get(), Options(true, 0, 2));
  ASSERT_TRUE(fwd.ok()) << fwd.status();
  std::vector<float> logits(b.model->config.n_vocab);
  int ok_steps = 0;
  absl::Status first_error;
  for (int pos = 0; pos < 12; ++pos) {
    const exec::BatchToken t{1, 0, pos, true};
    const absl::Status s = (*fwd)->Forward({&t, 1}, logits);
    if (s.ok()) {
      EXPECT_EQ(first_error, absl::OkStatus()) << "a step succeeded after the fault";
      ++ok_steps;
    } else {
      EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
      EXPECT_THAT(std::string(s.message()), HasSubstr("device fault: sim: injected device fault after "));
      if (first_error.ok()) first_error = s;
    }
  }
  EXPECT_EQ(ok_steps, 3);
  EXPECT_FALSE(first_error.ok()) << "no fault after 12 steps";
  EXPECT_FALSE((*sim)->health().ok());
}

TEST(SimDevice, FaultOptionParses) {
  auto o = backend::ParseSimOptions("mem=1GiB,fault=7");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->fault_after_copies, 7);
  EXPECT_FALSE(backend::ParseSimOptions("fault=-2").ok());
  EXPECT_FALSE(backend::ParseSimOptions("fault=x").ok());
}

}  // namespace
}  // namespace ferry
