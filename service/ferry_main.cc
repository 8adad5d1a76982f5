// ferry: the command-line entry point. Subcommands share one flag set, made
// from the settings' tables (service/flags.h); each Run function gets the
// groups it reads through FromFlags, under the name --help lists it by.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "engine/gguf/gguf.h"
#include "engine/engine/engine.h"
#include "engine/model/synth.h"
#include "engine/status.h"
#include "engine/units.h"
#include "service/auth.h"
#include "service/bench.h"
#include "service/generate.h"
#include "service/inspect.h"
#include "service/args.h"
#include "service/flags.h"
#include "service/plan_cli.h"
#include "service/loadgen.h"
#include "service/serve.h"
#include <random>
#include <sys/resource.h>

namespace ferry {
namespace {

// Writes a model, printing progress on stderr when it takes a while.
absl::Status MakeModel(const std::string& path, const model::SynthOptions& options, bool header_only = false) {
  const absl::Time start = absl::Now();
  absl::Time last_report = start;
  const bool tty = ::isatty(2);
  auto progress = [&](size_t done, size_t total, uint64_t bytes, uint64_t total_bytes) {
    const absl::Time now = absl::Now();
    if (done == total || now - last_report > absl::Milliseconds(500)) {
      std::fprintf(stderr, "%swriting %s: tensor %zu/%zu, %s of %s", tty ? "\r" : "", path.c_str(), done, total,
                   HumanBytes(bytes).c_str(), HumanBytes(total_bytes).c_str());
      if (!tty || done == total) std::fprintf(stderr, "\n");
      last_report = now;
    }
  };
  if (absl::Status s = model::WriteSyntheticModel(path, options, progress, header_only); !s.ok()) return s;
  if (header_only) {
    std::fprintf(stderr, "wrote the header of %s (no weights; for ferry plan) in %.1f s\n", path.c_str(),
                 absl::ToDoubleSeconds(absl::Now() - start));
    return absl::OkStatus();
  }
  std::fprintf(stderr, "wrote %s (%s parameters of random weights) in %.1f s\n", path.c_str(),
               absl::StrCat(model::ParameterCount(options)).c_str(), absl::ToDoubleSeconds(absl::Now() - start));
  return absl::OkStatus();
}

absl::Status RunMakeModel() {
  const service::MakeModelArgs a = service::FromFlags<service::MakeModelArgs>("make-model");
  model::SynthOptions o;
  // --mix and --type: a mix, else one type (a preset's own mix where neither is given).
  auto mix_and_type = [&](model::SynthOptions* to) -> absl::Status {
    if (a.mix == "q4_k_m") {
      to->mix = model::Mix::kQ4_K_M;
    } else if (a.mix == "q5_k_m") {
      to->mix = model::Mix::kQ5_K_M;
    } else if (!a.mix.empty()) {
      return absl::InvalidArgumentError("--mix must be q4_k_m or q5_k_m, got '" + a.mix + "'");
    }
    if (a.type.empty()) return absl::OkStatus();
    const auto info = quant::FindTypeByName(a.type);
    if (!info) return absl::InvalidArgumentError(absl::StrCat("--type: unknown tensor type '", a.type, "'"));
    to->type = info->type;
    if (a.mix.empty()) to->mix = model::Mix::kUniform;
    return absl::OkStatus();
  };
  if (!a.preset.empty()) {
    absl::StatusOr<model::SynthOptions> p = model::Preset(a.preset);
    if (!p.ok()) return p.status();
    o = *p;
    o.seed = a.weights_seed;
    FERRY_RETURN_IF_ERROR(mix_and_type(&o));
    if (a.out.empty()) return absl::InvalidArgumentError("make-model: --out PATH is required");
    return MakeModel(a.out, o, a.header_only);
  }
  o.arch = a.arch;
  o.n_layer = a.layers;
  o.n_embd = a.embd;
  o.n_head = a.heads;
  o.n_head_kv = a.kv_heads;
  o.n_ff = a.ff;
  o.n_vocab = a.vocab;
  o.n_ctx = a.context;
  o.seed = a.weights_seed;
  o.tied_output = a.tied_output;
  o.sliding_window = a.sliding_window;
  o.rope_scale_factor = a.rope_scale;
  o.head_dim = a.head_dim;
  FERRY_RETURN_IF_ERROR(mix_and_type(&o));
  if (a.out.empty()) return absl::InvalidArgumentError("make-model: --out PATH is required");
  return MakeModel(a.out, o, a.header_only);
}

// The demo model lives in $FERRY_CACHE_DIR, else $XDG_CACHE_HOME/ferry, else
// ~/.cache/ferry, and is written the first time it is needed.
absl::StatusOr<std::string> DemoModelPath() {
  std::filesystem::path dir;
  if (const char* d = std::getenv("FERRY_CACHE_DIR"); d && *d) dir = d;
  else if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) dir = std::filesystem::path(x) / "ferry";
  else if (const char* h = std::getenv("HOME"); h && *h) dir = std::filesystem::path(h) / ".cache" / "ferry";
  else dir = std::filesystem::temp_directory_path() / "ferry";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(dir.string(), ": cannot create: ", ec.message()));
  const model::SynthOptions demo;  // the defaults are the demo's shape
  const std::string path = (dir / absl::StrCat("demo-", demo.arch, "-", quant::Info(demo.type).name, "-v1.gguf")).string();
  if (!std::filesystem::exists(path)) {
    std::fprintf(stderr, "no --model given: writing the demo model (random weights; its text is noise)\n");
    if (absl::Status s = MakeModel(path, demo); !s.ok()) return s;
  } else {
    std::fprintf(stderr, "no --model given: using the demo model %s (random weights; its text is noise)\n",
                 path.c_str());
  }
  return path;
}

// --model, or the demo model when it is empty.
absl::StatusOr<std::string> ModelPath(absl::string_view reader) {
  const std::string path = service::FromFlags<service::ModelArgs>(reader).model;
  if (!path.empty()) return path;
  return DemoModelPath();
}

// The placement group, and --gpu_memory as its one budget.
absl::StatusOr<engine::PlacementArgs> PlacementFromFlags(absl::string_view reader) {
  engine::PlacementArgs f = service::FromFlags<engine::PlacementArgs>(reader);
  if (const std::vector<std::string> budgets = service::FromFlags<service::GpuArgs>(reader).gpu_memory;
      !budgets.empty()) {
    if (budgets.size() != 1) return absl::InvalidArgumentError("generate, bench: --gpu_memory takes one budget");
    absl::StatusOr<uint64_t> bytes = ParseBytes(budgets[0]);
    if (!bytes.ok()) return absl::InvalidArgumentError(absl::StrCat("--gpu_memory: ", bytes.status().message()));
    f.gpu_memory = *bytes;
  }
  FERRY_RETURN_IF_ERROR(engine::Validate(f));
  return f;
}

// Loading steps that take a while (uploads to a GPU), on stderr.
void PrintProgress(const std::string& what) { std::fprintf(stderr, "ferry: %s\n", what.c_str()); }

absl::Status RunGenerate() {
  const service::SamplingArgs a = service::FromFlags<service::SamplingArgs>("generate");
  service::GenerateOptions o;
  absl::StatusOr<std::string> path = ModelPath("generate");
  if (!path.ok()) return path.status();
  o.model_path = *path;
  o.prompt = a.prompt;
  o.chat = a.chat;
  o.system = a.system;
  o.enable_thinking = a.think;
  o.max_tokens = a.n;
  o.stops = a.stop;
  o.ignore_eos = a.ignore_eos;
  for (const std::string& id : a.stop_token_ids) {
    int v = 0;
    if (!absl::SimpleAtoi(id, &v)) return absl::InvalidArgumentError("--stop_token_ids: '" + id + "' is not a token id");
    o.stop_ids.push_back(v);
  }
  text::SamplingParams& p = o.sampling;
  p.temperature = a.temperature;
  p.top_k = a.top_k;
  p.top_p = a.top_p;
  p.min_p = a.min_p;
  p.typical_p = a.typical_p;
  p.repetition_penalty = a.repeat_penalty;
  p.presence_penalty = a.presence_penalty;
  p.frequency_penalty = a.frequency_penalty;
  p.penalty_last_n = a.repeat_last_n;
  const int64_t seed = a.seed;
  p.seed = seed >= 0 ? static_cast<uint64_t>(seed) : std::random_device{}();
  o.progress = PrintProgress;
  o.runtime = service::FromFlags<engine::RuntimeArgs>("generate");  // slots: generate runs one request
  o.runtime.slots = 1;
  FERRY_ASSIGN_OR_RETURN(o.placement, PlacementFromFlags("generate"));
  if (seed < 0 && p.temperature > 0) std::fprintf(stderr, "seed %llu\n", static_cast<unsigned long long>(p.seed));
  absl::StatusOr<service::GenerateStats> stats = service::Generate(o, stdout, stderr);
  if (!stats.ok()) return stats.status();
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const auto rate = [](int n, double s) { return s > 0 ? n / s : 0.0; };
  std::fprintf(stderr,
               "prompt %d tokens, generated %d tokens (%s); prefill %.1f tokens/s, decode %.1f tokens/s; "
               "peak memory %.1f MiB\n",
               stats->prompt_tokens, stats->generated_tokens, stats->finish_reason.c_str(),
               rate(stats->prompt_tokens, stats->prefill_seconds), rate(stats->generated_tokens, stats->decode_seconds),
               usage.ru_maxrss / 1024.0);
  return absl::OkStatus();
}

absl::Status RunBench() {
  const service::BenchArgs a = service::FromFlags<service::BenchArgs>("bench");
  const engine::RuntimeArgs r = service::FromFlags<engine::RuntimeArgs>("bench");
  service::BenchOptions o;
  absl::StatusOr<std::string> path = ModelPath("bench");
  if (!path.ok()) return path.status();
  o.model_path = *path;
  o.batches.clear();
  for (const std::string& b : a.batches) {
    int v = 0;
    if (!absl::SimpleAtoi(b, &v) || v <= 0) return absl::InvalidArgumentError("--batches: '" + b + "' is not a positive integer");
    o.batches.push_back(v);
  }
  o.prompt_tokens = a.prompt_tokens;
  o.gen_tokens = a.gen_tokens;
  o.repetitions = a.repetitions;
  if (o.prompt_tokens <= 0 || o.gen_tokens <= 0 || o.repetitions <= 0) {
    return absl::InvalidArgumentError("--prompt_tokens, --gen_tokens and --repetitions must be positive");
  }
  o.forward.threads = r.threads;
  o.forward.progress = PrintProgress;
  o.forward.max_batch = r.batch;
  FERRY_ASSIGN_OR_RETURN(o.placement, PlacementFromFlags("bench"));
  o.sweep = a.sweep;
  std::fprintf(stderr, "bench: %d prompt tokens and %d decode steps per batch size, best of %d\n", o.prompt_tokens,
               o.gen_tokens, o.repetitions);
  absl::StatusOr<service::BenchResult> result = service::RunBench(o);
  if (!result.ok()) return result.status();
  const std::string text =
      service::FromFlags<service::OutputArgs>("bench").json ? service::BenchJson(*result) : service::BenchTable(*result);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return absl::OkStatus();
}

absl::Status RunPlan() {
  const service::GpuArgs g = service::FromFlags<service::GpuArgs>("plan");
  const engine::PlacementArgs placement = service::FromFlags<engine::PlacementArgs>("plan");
  const engine::RuntimeArgs r = service::FromFlags<engine::RuntimeArgs>("plan");
  service::PlanOptions o;
  absl::StatusOr<std::string> path = ModelPath("plan");
  if (!path.ok()) return path.status();
  o.model_path = *path;
  o.gpu = g.gpu;
  std::vector<std::string> budgets = g.gpu_memory;
  if (budgets.empty()) budgets = {"6GiB", "8GiB", "12GiB", "16GiB", "24GiB", "48GiB", "80GiB"};
  for (const std::string& b : budgets) {
    if (b == "device") continue;  // the profile's own memory: the auto policy
    absl::StatusOr<uint64_t> bytes = ParseBytes(b);
    if (!bytes.ok()) return absl::InvalidArgumentError(absl::StrCat("--gpu_memory: ", bytes.status().message()));
    o.budgets.push_back(*bytes);
  }
  o.gpu_layers = placement.gpu_layers;
  o.request.n_ctx = r.ctx;  // 0: the model's default context (RunPlan reads it)
  o.request.n_slots = r.slots;
  if (o.request.n_slots <= 0) return absl::InvalidArgumentError("--slots must be at least 1");
  o.request.max_batch = r.batch;
  o.request.ring_depth = placement.ring_depth;
  o.threads = r.threads;
  o.request.kv_bytes_per_elem = exec::KvBytesPerElement(r.kv_type);
  o.json = service::FromFlags<service::OutputArgs>("plan").json;
  absl::StatusOr<std::string> text = service::RunPlan(o);
  if (!text.ok()) return text.status();
  std::fwrite(text->data(), 1, text->size(), stdout);
  return absl::OkStatus();
}

// The bearer token in `file` (service/auth.h checks it), or "" without one.
absl::StatusOr<std::string> AuthToken(const std::string& file) {
  if (file.empty()) return std::string();
  return service::ReadTokenFile(file);
}

absl::StatusOr<int> RunServe() {
  const service::ServerArgs a = service::FromFlags<service::ServerArgs>("serve");
  service::ServeOptions o;
  absl::StatusOr<std::string> path = ModelPath("serve");
  if (!path.ok()) return path.status();
  o.model_path = *path;
  o.host = a.host;
  o.port = a.port;
  if (o.port < 0 || o.port > 65535) return absl::InvalidArgumentError("--port must be in [0, 65535]");
  o.http_port = a.http_port;
  if (o.http_port < -1 || o.http_port > 65535) return absl::InvalidArgumentError("--http_port must be in [0, 65535], or -1 for none");
  o.metrics_host = a.metrics_host;
  o.metrics_port = a.metrics_port;
  if (o.metrics_port < -1 || o.metrics_port > 65535) {
    return absl::InvalidArgumentError("--metrics_port must be in [0, 65535], or -1 for none");
  }
  FERRY_ASSIGN_OR_RETURN(o.placement, PlacementFromFlags("serve"));
  o.runtime = service::FromFlags<engine::RuntimeArgs>("serve");
  FERRY_RETURN_IF_ERROR(engine::Validate(o.runtime));
  o.progress = PrintProgress;
  service::ServeLimits& l = o.limits;
  l.max_queue = o.runtime.max_queue;
  l.max_prompt_tokens = a.max_prompt_tokens;
  l.max_output_tokens = a.max_output_tokens;
  l.max_message_bytes = a.max_message_bytes;
  l.max_streams_per_connection = a.max_streams_per_connection;
  l.min_ping_interval_ms = a.min_ping_interval_ms;
  l.max_buffered_tokens = a.max_buffered_tokens;
  if (l.max_queue < 0 || l.max_prompt_tokens < 0 || l.max_output_tokens < 0 || l.max_message_bytes < 1024 ||
      l.max_streams_per_connection < 1 || l.min_ping_interval_ms < 0 || l.max_buffered_tokens < 1) {
    return absl::InvalidArgumentError(
        "limits: --max_queue, --max_prompt_tokens, --max_output_tokens, --min_ping_interval_ms must be >= 0, "
        "--max_message_bytes >= 1024, --max_streams_per_connection and --max_buffered_tokens >= 1");
  }
  o.tls_cert = a.tls_cert;
  o.tls_key = a.tls_key;
  o.tls_client_ca = a.tls_client_ca;
  FERRY_ASSIGN_OR_RETURN(o.auth_token, AuthToken(a.auth_token_file));
  if (!(a.drain_seconds >= 0)) return absl::InvalidArgumentError("--drain_seconds must be >= 0");
  return service::Serve(o, absl::Seconds(a.drain_seconds));
}

absl::Status RunLoadgen() {
  const service::LoadgenArgs a = service::FromFlags<service::LoadgenArgs>("loadgen");
  const service::SamplingArgs s = service::FromFlags<service::SamplingArgs>("loadgen");
  const service::ServerArgs credentials = service::FromFlags<service::ServerArgs>("loadgen");
  service::LoadgenOptions o;
  o.target = a.target;
  o.concurrency = a.concurrency;
  o.connections = a.connections;
  o.requests = a.requests;
  o.duration_s = a.duration;
  if (!s.prompt.empty()) o.prompt = s.prompt;
  o.max_tokens = s.n;
  o.temperature = s.temperature;
  o.tls_ca = a.tls_ca;
  o.cancel_fraction = a.cancel_fraction;
  o.sessions = a.sessions;
  o.malformed_fraction = a.malformed_fraction;
  if (s.seed >= 0) o.seed = static_cast<uint64_t>(s.seed);
  o.tls_cert = credentials.tls_cert;
  o.tls_key = credentials.tls_key;
  FERRY_ASSIGN_OR_RETURN(o.auth_token, AuthToken(credentials.auth_token_file));
  o.direct = a.direct;
  o.http = a.http;
  if (o.direct) {
    absl::StatusOr<std::string> path = ModelPath("loadgen --direct");
    if (!path.ok()) return path.status();
    o.model_path = *path;
    FERRY_ASSIGN_OR_RETURN(o.placement, PlacementFromFlags("loadgen --direct"));
    o.runtime = service::FromFlags<engine::RuntimeArgs>("loadgen --direct");
    FERRY_RETURN_IF_ERROR(engine::Validate(o.runtime));
  }
  absl::StatusOr<service::LoadgenReport> r = service::RunLoadgen(o);
  if (!r.ok()) return r.status();
  const std::string text = service::LoadgenText(o, *r);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return absl::OkStatus();
}

absl::Status RunInfo() {
  absl::StatusOr<std::string> path = ModelPath("info");
  if (!path.ok()) return path.status();
  absl::StatusOr<std::unique_ptr<model::Model>> m = model::LoadModel(*path);
  if (!m.ok()) return m.status();
  absl::StatusOr<std::unique_ptr<text::Tokenizer>> tok = text::Tokenizer::FromGguf(*(*m)->file);
  const std::string text = service::InfoText(**m, tok.ok() ? tok->get() : nullptr);
  std::fwrite(text.data(), 1, text.size(), stdout);
  if (!tok.ok()) std::printf("tokenizer: %s\n", std::string(tok.status().message()).c_str());
  return absl::OkStatus();
}

absl::Status RunInspect() {
  absl::StatusOr<std::string> model_path = ModelPath("inspect");
  if (!model_path.ok()) return model_path.status();
  const std::string path = *model_path;
  // The header is all inspect reads: header-only and truncated files work too.
  absl::StatusOr<std::unique_ptr<gguf::File>> file = gguf::File::Open(path, {.header_only = true});
  if (!file.ok()) return file.status();
  const service::OutputArgs out = service::FromFlags<service::OutputArgs>("inspect");
  const std::string text = out.json ? service::InspectJson(**file) : service::InspectText(**file, out.tensors);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return absl::OkStatus();
}

}  // namespace
}  // namespace ferry

int main(int argc, char** argv) {
  const std::string usage = ferry::service::Usage();
  absl::SetProgramUsageMessage(usage);  // for Abseil's --helpfull
  // Flags may be spelled with dashes as well as underscores
  // (--gpu-memory=8GiB is --gpu_memory=8GiB): the name part only, never
  // the value, and nothing after a bare "--". --help (or -help) is taken out
  // here: it prints the help made from the settings' tables, of the command
  // if one is given.
  std::vector<std::string> spelled(argv, argv + argc);
  std::vector<char*> argv_underscored;
  bool flags_done = false;
  bool help = false;
  for (std::string& a : spelled) {
    if (a == "--") flags_done = true;
    if (!flags_done && (a == "--help" || a == "-help")) {
      help = true;
      continue;
    }
    if (!flags_done && a.size() > 2 && a.compare(0, 2, "--") == 0) {
      const size_t end = std::min(a.find('='), a.size());
      std::replace(a.begin() + 2, a.begin() + static_cast<std::ptrdiff_t>(end), '-', '_');
    }
    argv_underscored.push_back(a.data());
  }
  std::vector<char*> args =
      absl::ParseCommandLine(static_cast<int>(argv_underscored.size()), argv_underscored.data());
  if (help) {
    const std::string text = ferry::service::Help(args.size() >= 2 ? args[1] : "");
    if (text.empty()) {
      std::fprintf(stderr, "ferry: unknown command '%s' (commands: bench, generate, info, inspect, loadgen, make-model, plan, serve)\n", args[1]);
      return 2;
    }
    std::fwrite(text.data(), 1, text.size(), stdout);
    return 1;  // as Abseil's --help did
  }
  if (args.size() < 2) {
    std::fprintf(stderr, "%s\nrun `ferry --help` for the flags.\n", usage.c_str());
    return 2;
  }
  if (args.size() > 2) {
    std::fprintf(stderr, "ferry: unexpected argument '%s' (flags are --name=value)\n", args[2]);
    return 2;
  }
  const std::string command = args[1];
  absl::Status status;
  if (command == "make-model") {
    status = ferry::RunMakeModel();
  } else if (command == "inspect") {
    status = ferry::RunInspect();
  } else if (command == "bench") {
    status = ferry::RunBench();
  } else if (command == "plan") {
    status = ferry::RunPlan();
  } else if (command == "info") {
    status = ferry::RunInfo();
  } else if (command == "generate") {
    status = ferry::RunGenerate();
  } else if (command == "loadgen") {
    status = ferry::RunLoadgen();
  } else if (command == "serve") {
    absl::StatusOr<int> code = ferry::RunServe();
    if (code.ok()) return *code;
    status = code.status();
  } else {
    std::fprintf(stderr, "ferry: unknown command '%s' (commands: bench, generate, info, inspect, loadgen, make-model, plan, serve; see --help)\n", command.c_str());
    return 2;
  }
  if (!status.ok()) {
    std::fprintf(stderr, "ferry %s: %s\n", command.c_str(), std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
