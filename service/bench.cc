#include "service/bench.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "engine/backend/cpu/cpu_device.h"
#include "engine/backend/cpu/kernels.h"
#include "engine/exec/measure_host.h"
#include "engine/model/weights.h"
#include "engine/status.h"

namespace ferry::service {

double Overlap(double step_s, double copy_s, double compute_s) {
  const double shorter = std::min(copy_s, compute_s);
  if (shorter <= 0) return 0;
  return std::clamp((copy_s + compute_s - step_s) / shorter, 0.0, 1.0);
}

namespace {

absl::StatusOr<BenchRow> Measure(const model::Model& model, backend::Device& device, const BenchOptions& o,
                                 const plan::HostSpec& host, engine::PlacementArgs flags, int batch, std::mt19937& rng) {
  const int vocab = model.config.n_vocab;
  exec::ForwardOptions fo = o.forward;
  fo.n_seq = batch;
  fo.n_ctx = o.prompt_tokens + o.gen_tokens + 1;
  fo.max_batch = std::max(fo.max_batch, batch);
  BenchRow row;
  row.batch = batch;
  absl::StatusOr<plan::Plan> p = engine::PlanPlacement(model, device, flags, &fo, &host);
  if (!p.ok()) {
    row.fits = std::string(p.status().message());
    return row;
  }
  std::unique_ptr<exec::Executor> fwd;
  const absl::Time load_start = absl::Now();
  FERRY_ASSIGN_OR_RETURN(fwd, exec::Executor::Create(model, &device, fo));
  // Progress on stderr (the table comes at the end): the placement, and
  // each repetition as it ends.
  std::fprintf(stderr, "bench: batch %d: %s (ready in %.1f s)\n", batch, fwd->PlacementSummary().c_str(),
               absl::ToDoubleSeconds(absl::Now() - load_start));
  row.placement = flags.placement;
  row.resident_layers = fwd->resident_layers();
  row.cpu_layers = fwd->placement().layers(plan::Home::kCpu);
  row.head_resident = fwd->head_resident();
  row.gpu_fraction = p->gpu_fraction();
  // The speed model predicts a placement on a device apart from the host;
  // on one whose memory is the host's there is none to predict. A sim run
  // is costed as it runs (host_kernels), not as the card.
  if (const backend::DeviceSpec spec = device.spec(); !spec.host_memory) {
    row.predicted_tokens_per_s = plan::Predict(*p, spec, host, batch).tokens_per_s;
  }
  std::vector<exec::BatchToken> tokens;
  // Touch every weight once before timing (the file is mapped lazily).
  // Logits land in the executor's buffer (page-locked on a GPU), as the
  // server's runtime takes them.
  const exec::BatchToken warm{1, 0, 0, true};
  FERRY_RETURN_IF_ERROR(fwd->Forward({&warm, 1}).status());
  for (int rep = 0; rep < o.repetitions; ++rep) {
    // Prefill: every sequence's prompt, in steps of at most max_batch tokens.
    tokens.clear();
    for (int s = 0; s < batch; ++s) {
      for (int q = 0; q < o.prompt_tokens; ++q) {
        tokens.push_back({static_cast<int32_t>(rng() % vocab), s, q, q + 1 == o.prompt_tokens});
      }
    }
    const absl::Time t0 = absl::Now();
    for (size_t begin = 0; begin < tokens.size(); begin += fwd->max_batch()) {
      const size_t n = std::min<size_t>(fwd->max_batch(), tokens.size() - begin);
      FERRY_RETURN_IF_ERROR(fwd->Forward(std::span(tokens).subspan(begin, n)).status());
    }
    const double prefill = absl::ToDoubleSeconds(absl::Now() - t0);
    // Decode: one token per sequence per step.
    const exec::StreamStats before = fwd->stats();
    const uint64_t replays_before = device.stats().replays;
    const absl::Time t1 = absl::Now();
    for (int g = 0; g < o.gen_tokens; ++g) {
      tokens.clear();
      for (int s = 0; s < batch; ++s) tokens.push_back({static_cast<int32_t>(rng() % vocab), s, o.prompt_tokens + g, true});
      FERRY_RETURN_IF_ERROR(fwd->Forward(tokens).status());
    }
    const double decode = absl::ToDoubleSeconds(absl::Now() - t1);
    const exec::StreamStats& after = fwd->stats();
    row.prefill_tokens_per_s = std::max(row.prefill_tokens_per_s, batch * o.prompt_tokens / prefill);
    const double rate = batch * o.gen_tokens / decode;
    // Per decode step: wall time, copy engine busy, the device's kernels,
    // the CPU's units' kernels, compute waiting on copies, and CUDA graph
    // launches where the device has them.
    const double per = 1e3 / o.gen_tokens;
    const uint64_t replays = device.stats().replays - replays_before;
    std::fprintf(stderr,
                 "bench: batch %d, run %d: prefill %.1f tok/s (%.2f s), decode %.2f tok/s (%.2f s; a step %.2f ms, "
                 "copy %.2f ms, compute %.2f ms, cpu %.2f ms, waiting %.2f ms%s)\n",
                 batch, rep + 1, batch * o.prompt_tokens / prefill, prefill, rate, decode,
                 (after.step_s - before.step_s) * per, (after.copy_busy_s - before.copy_busy_s) * per,
                 (after.compute_s - before.compute_s) * per, (after.cpu_compute_s - before.cpu_compute_s) * per,
                 (after.compute_wait_s - before.compute_wait_s) * per,
                 replays > 0 ? absl::StrFormat(", %.1f graph launches", static_cast<double>(replays) / o.gen_tokens).c_str()
                             : "");
    if (rate > row.decode_tokens_per_s) {
      row.decode_tokens_per_s = rate;
      const double step = after.step_s - before.step_s;
      row.streamed_gbps = step > 0 ? (after.bytes_streamed - before.bytes_streamed) / step / 1e9 : 0;
      row.overlap = Overlap(step, after.copy_busy_s - before.copy_busy_s, after.compute_s - before.compute_s);
    }
  }
  return row;
}

}  // namespace

absl::StatusOr<BenchResult> RunBench(const BenchOptions& o) {
  std::unique_ptr<model::Model> model;
  FERRY_ASSIGN_OR_RETURN(model, model::LoadModel(o.model_path));
  std::unique_ptr<backend::Device> device;
  FERRY_ASSIGN_OR_RETURN(device, backend::OpenDevice(o.placement.device, o.forward.threads));
  BenchResult result;
  result.model = o.model_path;
  result.device = device->Describe();
  result.weight_bytes = model->weights.bytes;
  result.isa = std::string(cpu::IsaName(cpu::ActiveIsa()));
  const backend::DeviceSpec spec = device->spec();
  result.threads = spec.threads;
  result.h2d_gbps = spec.h2d_gbps;
  if (o.sweep && spec.h2d_gbps <= 0) {
    return absl::InvalidArgumentError("--sweep varies what is resident on a GPU: use --device sim[:...] (or cuda)");
  }
  // The CPU's speed, once for every row: the speed model's predictions and
  // the placements that put units on the CPU.
  const plan::HostSpec host =
      spec.h2d_gbps > 0
          ? exec::MeasureHost(*model->file, model->config, o.forward.threads, model->weights.bytes, spec.host_kernels,
                              o.prompt_tokens + o.gen_tokens / 2)
          : plan::HostSpec();
  if (spec.h2d_gbps > 0) std::fprintf(stderr, "bench: this host's CPU kernels, measured: %s\n", host.Describe().c_str());
  std::mt19937 rng(1);
  const int L = model->config.n_layer;
  std::vector<engine::PlacementArgs> placements;
  if (o.sweep) {
    for (int percent : {0, 25, 50, 75, 100}) {
      for (const char* strategy : {"stream", "cpu", "mixed"}) {
        engine::PlacementArgs f = o.placement;
        f.gpu_layers = (L * percent + 50) / 100;
        f.stream_head = percent == 0;
        f.placement = strategy;
        if (percent < 100 || f.placement == "stream") placements.push_back(f);  // at 100 % the three are one
      }
    }
  } else {
    placements.push_back(o.placement);
  }
  for (const engine::PlacementArgs& f : placements) {
    for (int batch : o.batches) {
      if (batch <= 0) return absl::InvalidArgumentError("batch sizes must be positive");
      BenchRow row;
      FERRY_ASSIGN_OR_RETURN(row, Measure(*model, *device, o, host, f, batch, rng));
      if (result.h2d_gbps > 0) row.copy_utilization = row.streamed_gbps / result.h2d_gbps;
      result.rows.push_back(row);
    }
  }
  return result;
}

std::string BenchTable(const BenchResult& r) {
  std::string out = absl::StrFormat("%s: %.2f GiB of weights on %s\n", r.model, r.weight_bytes / double(1 << 30),
                                    r.device);
  const bool streaming = r.h2d_gbps > 0;
  absl::StrAppend(&out, absl::StrFormat("%6s", "batch"));
  if (streaming) absl::StrAppend(&out, absl::StrFormat(" %-6s %9s %4s %7s", "place", "resident", "cpu", "on GPU"));
  absl::StrAppend(&out, absl::StrFormat(" %14s %13s %18s", "prefill tok/s", "decode tok/s", "decode weight GB/s"));
  if (streaming) {
    absl::StrAppend(&out, absl::StrFormat(" %13s %9s %8s %10s %6s", "streamed GB/s", "% of h2d", "overlap", "predicted",
                                          "ratio"));
  }
  absl::StrAppend(&out, "\n");
  for (const BenchRow& row : r.rows) {
    const std::string resident = absl::StrCat(row.resident_layers, row.head_resident ? "+head" : "");
    if (!row.fits.empty()) {
      absl::StrAppend(&out, absl::StrFormat("%6d %-6s %9s  does not fit: %s\n", row.batch, row.placement, "-", row.fits));
      continue;
    }
    // Each decode step reads every weight once, whatever the batch.
    const double gbs = row.decode_tokens_per_s / row.batch * r.weight_bytes / 1e9;
    absl::StrAppend(&out, absl::StrFormat("%6d", row.batch));
    if (streaming) {
      absl::StrAppend(&out, absl::StrFormat(" %-6s %9s %4d %6.0f%%", row.placement, resident, row.cpu_layers,
                                            100 * row.gpu_fraction));
    }
    absl::StrAppend(&out, absl::StrFormat(" %14.1f %13.2f %18.2f", row.prefill_tokens_per_s, row.decode_tokens_per_s, gbs));
    if (streaming) {
      absl::StrAppend(&out, absl::StrFormat(" %13.2f %8.0f%% %7.0f%% %10.2f %6.2f", row.streamed_gbps,
                                            100 * row.copy_utilization, 100 * row.overlap, row.predicted_tokens_per_s,
                                            row.predicted_tokens_per_s > 0
                                                ? row.decode_tokens_per_s / row.predicted_tokens_per_s
                                                : 0.0));
    }
    absl::StrAppend(&out, "\n");
  }
  return out;
}

std::string BenchJson(const BenchResult& r) {
  std::string out = absl::StrCat("{\"device\":\"", r.device, "\",\"threads\":", r.threads, ",\"isa\":\"", r.isa, "\",\"weight_bytes\":",
                                 r.weight_bytes, ",\"h2d_gbps\":", r.h2d_gbps, ",\"rows\":[");
  for (size_t i = 0; i < r.rows.size(); ++i) {
    const BenchRow& w = r.rows[i];
    absl::StrAppend(&out, i ? "," : "", "{\"batch\":", w.batch, ",\"placement\":\"", w.placement,
                    "\",\"cpu_layers\":", w.cpu_layers, ",\"predicted_decode_tokens_per_s\":", w.predicted_tokens_per_s,
                    ",\"resident_layers\":", w.resident_layers,
                    ",\"head_resident\":", w.head_resident ? "true" : "false", ",\"fits\":", w.fits.empty() ? "true" : "false",
                    ",\"gpu_fraction\":", w.gpu_fraction, ",\"prefill_tokens_per_s\":", w.prefill_tokens_per_s,
                    ",\"decode_tokens_per_s\":", w.decode_tokens_per_s, ",\"streamed_gbps\":", w.streamed_gbps,
                    ",\"copy_utilization\":", w.copy_utilization, ",\"overlap\":", w.overlap, "}");
  }
  return out + "]}\n";
}

}  // namespace ferry::service
