#include "service/bench.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "engine/model/weights.h"
#include "engine/status.h"

namespace ferry::service {

absl::StatusOr<BenchResult> RunBench(const BenchOptions& o) {
  std::unique_ptr<model::Model> model;
  FERRY_ASSIGN_OR_RETURN(model, model::LoadModel(o.model_path));
  BenchResult result;
  result.model = o.model_path;
  result.weight_bytes = model->weights.bytes;
  result.isa = std::string(cpu::IsaName(cpu::ActiveIsa()));
  std::mt19937 rng(1);
  const int vocab = model->config.n_vocab;
  for (int batch : o.batches) {
    if (batch <= 0) return absl::InvalidArgumentError("batch sizes must be positive");
    exec::ForwardOptions fo = o.forward;
    fo.n_seq = batch;
    fo.n_ctx = o.prompt_tokens + o.gen_tokens + 1;
    fo.max_batch = std::max(fo.max_batch, batch);
    std::unique_ptr<exec::CpuForward> fwd;
    FERRY_ASSIGN_OR_RETURN(fwd, exec::CpuForward::Create(*model, fo));
    result.threads = fwd->threads();
    std::vector<float> logits(static_cast<size_t>(batch) * vocab);
    std::vector<exec::BatchToken> tokens;
    BenchRow row{batch, 0, 0};
    // Touch every weight once before timing (the file is mapped lazily).
    const exec::BatchToken warm{1, 0, 0, true};
    FERRY_RETURN_IF_ERROR(fwd->Forward({&warm, 1}, logits));
    for (int rep = 0; rep < o.repetitions; ++rep) {
      // Prefill: every sequence's prompt, in steps of at most max_batch tokens.
      tokens.clear();
      for (int s = 0; s < batch; ++s) {
        for (int p = 0; p < o.prompt_tokens; ++p) {
          tokens.push_back({static_cast<int32_t>(rng() % vocab), s, p, p + 1 == o.prompt_tokens});
        }
      }
      const absl::Time t0 = absl::Now();
      for (size_t begin = 0; begin < tokens.size(); begin += fwd->max_batch()) {
        const size_t n = std::min<size_t>(fwd->max_batch(), tokens.size() - begin);
        FERRY_RETURN_IF_ERROR(fwd->Forward(std::span(tokens).subspan(begin, n), logits));
      }
      const double prefill = absl::ToDoubleSeconds(absl::Now() - t0);
      // Decode: one token per sequence per step.
      const absl::Time t1 = absl::Now();
      for (int g = 0; g < o.gen_tokens; ++g) {
        tokens.clear();
        for (int s = 0; s < batch; ++s) {
          tokens.push_back({static_cast<int32_t>(rng() % vocab), s, o.prompt_tokens + g, true});
        }
        FERRY_RETURN_IF_ERROR(fwd->Forward(tokens, logits));
      }
      const double decode = absl::ToDoubleSeconds(absl::Now() - t1);
      row.prefill_tokens_per_s = std::max(row.prefill_tokens_per_s, batch * o.prompt_tokens / prefill);
      row.decode_tokens_per_s = std::max(row.decode_tokens_per_s, batch * o.gen_tokens / decode);
    }
    result.rows.push_back(row);
  }
  return result;
}

std::string BenchTable(const BenchResult& r) {
  std::string out = absl::StrFormat("%s: %.2f GiB of weights, %d threads, %s kernels (CPU)\n", r.model,
                                    r.weight_bytes / double(1 << 30), r.threads, r.isa);
  absl::StrAppend(&out, absl::StrFormat("%6s %16s %16s %18s\n", "batch", "prefill tok/s", "decode tok/s",
                                        "decode weight GB/s"));
  for (const BenchRow& row : r.rows) {
    // Each decode step reads every weight once, whatever the batch.
    const double gbs = row.decode_tokens_per_s / row.batch * r.weight_bytes / 1e9;
    absl::StrAppend(&out, absl::StrFormat("%6d %16.1f %16.2f %18.2f\n", row.batch, row.prefill_tokens_per_s,
                                          row.decode_tokens_per_s, gbs));
  }
  return out;
}

std::string BenchJson(const BenchResult& r) {
  std::string out = absl::StrCat("{\"threads\":", r.threads, ",\"isa\":\"", r.isa, "\",\"weight_bytes\":",
                                 r.weight_bytes, ",\"rows\":[");
  for (size_t i = 0; i < r.rows.size(); ++i) {
    absl::StrAppend(&out, i ? "," : "", "{\"batch\":", r.rows[i].batch, ",\"prefill_tokens_per_s\":",
                    r.rows[i].prefill_tokens_per_s, ",\"decode_tokens_per_s\":", r.rows[i].decode_tokens_per_s, "}");
  }
  return out + "]}\n";
}

}  // namespace ferry::service
