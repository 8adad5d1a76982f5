#include "service/generate.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/model/weights.h"
#include "engine/status.h"
#include "engine/text/stop.h"
#include "engine/text/tokenizer.h"

namespace ferry::service {

absl::StatusOr<GenerateStats> Generate(const GenerateOptions& o, std::FILE* out, std::FILE* log) {
  std::unique_ptr<model::Model> model;
  FERRY_ASSIGN_OR_RETURN(model, model::LoadModel(o.model_path));
  std::unique_ptr<text::Tokenizer> tok;
  FERRY_ASSIGN_OR_RETURN(tok, text::Tokenizer::FromGguf(*model->file));
  const int n_vocab = model->config.n_vocab;
  if (tok->n_vocab() != n_vocab) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer has ", tok->n_vocab(), " tokens, the model ", n_vocab));
  }
  FERRY_RETURN_IF_ERROR(text::Validate(o.sampling, n_vocab));
  if (o.max_tokens < 0) return absl::InvalidArgumentError("-n must be >= 0");
  for (int32_t id : o.stop_ids) {
    if (id < 0 || id >= n_vocab) {
      return absl::InvalidArgumentError(absl::StrCat("stop token id ", id, " is outside the vocabulary [0, ", n_vocab, ")"));
    }
  }

  std::vector<int32_t> tokens = tok->Encode(o.prompt, tok->add_bos());
  if (tokens.empty()) return absl::InvalidArgumentError("the prompt is empty and the model adds no BOS token");
  exec::ForwardOptions fo = o.forward;
  fo.n_seq = 1;
  std::unique_ptr<backend::Device> device;
  FERRY_ASSIGN_OR_RETURN(device, backend::OpenDevice(o.device.device, fo.threads));
  if (absl::StatusOr<std::optional<plan::Plan>> p = PlanPlacement(*model, *device, o.device, &fo); !p.ok()) {
    return p.status();
  }
  std::unique_ptr<exec::Executor> fwd;
  FERRY_ASSIGN_OR_RETURN(fwd, exec::Executor::Create(*model, device.get(), fo));
  std::fprintf(log, "%s\n", fwd->PlacementSummary().c_str());
  if (static_cast<int>(tokens.size()) + o.max_tokens > fwd->n_ctx()) {
    return absl::InvalidArgumentError(absl::StrCat("prompt (", tokens.size(), " tokens) + -n ", o.max_tokens,
                                                   " exceeds the context of ", fwd->n_ctx(), " (--ctx)"));
  }

  GenerateStats stats;
  stats.prompt_tokens = static_cast<int>(tokens.size());
  std::vector<float> logits(n_vocab);
  std::vector<exec::BatchToken> batch;
  batch.reserve(fwd->max_batch());

  // Prefill in chunks of the batch size; logits only for the last token.
  const absl::Time t0 = absl::Now();
  for (size_t begin = 0; begin < tokens.size(); begin += fwd->max_batch()) {
    batch.clear();
    const size_t end = std::min(tokens.size(), begin + fwd->max_batch());
    for (size_t i = begin; i < end; ++i) {
      batch.push_back({tokens[i], 0, static_cast<int32_t>(i), i + 1 == tokens.size()});
    }
    FERRY_RETURN_IF_ERROR(fwd->Forward(batch, logits));
  }
  const absl::Time t1 = absl::Now();
  stats.prefill_seconds = absl::ToDoubleSeconds(t1 - t0);

  // Echo the prompt so the output reads as one text.
  std::fputs(o.prompt.c_str(), out);
  std::fflush(out);
  text::Sampler sampler(o.sampling, n_vocab);
  text::Detokenizer detok(*tok, /*at_start=*/o.prompt.empty());
  text::StopMatcher stops(o.stops);
  stats.finish_reason = "length";
  for (int i = 0; i < o.max_tokens; ++i) {
    const text::Sampled s = sampler.Sample(logits, tokens);
    const bool stop_id = std::find(o.stop_ids.begin(), o.stop_ids.end(), s.token) != o.stop_ids.end();
    if ((tok->IsEndOfGeneration(s.token) && !o.ignore_eos) || stop_id) {
      stats.finish_reason = "stop";
      break;
    }
    tokens.push_back(s.token);
    ++stats.generated_tokens;
    bool stopped = false;
    const std::string piece = stops.Push(detok.Push(s.token), &stopped);
    std::fwrite(piece.data(), 1, piece.size(), out);  // the text may hold NUL bytes
    std::fflush(out);
    if (stopped) {
      stats.finish_reason = "stop_sequence";
      break;
    }
    if (i + 1 == o.max_tokens) break;
    const exec::BatchToken next{s.token, 0, static_cast<int32_t>(tokens.size() - 1), true};
    FERRY_RETURN_IF_ERROR(fwd->Forward({&next, 1}, logits));
  }
  if (stats.finish_reason != "stop_sequence") {
    bool stopped = false;
    std::string rest = stops.Push(detok.Flush(), &stopped);
    if (!stopped) rest += stops.Flush();
    std::fwrite(rest.data(), 1, rest.size(), out);
  }
  std::fputs("\n", out);
  std::fflush(out);
  stats.decode_seconds = absl::ToDoubleSeconds(absl::Now() - t1);
  return stats;
}

}  // namespace ferry::service
