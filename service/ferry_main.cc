// ferry: the command-line entry point. Subcommands share one flag set
// (Abseil flags); each flag's help says which subcommands read it.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
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
#include "service/plan_cli.h"
#include "service/loadgen.h"
#include "service/serve.h"
#include <random>
#include <sys/resource.h>

ABSL_FLAG(std::string, model, "",
          "inspect, info, generate, bench, plan: path of a GGUF model; empty = the demo model (made on first use in the cache "
          "directory)");
ABSL_FLAG(std::string, out, "", "make-model: output path of the GGUF file (required)");
ABSL_FLAG(std::string, arch, "llama", "make-model: architecture: llama, qwen2, qwen3, gemma2 or gemma3");
ABSL_FLAG(int, sliding_window, 4096,
          "make-model: gemma2 / gemma3 sliding-window size (gemma3: 0 = no sliding layers)");
ABSL_FLAG(float, rope_scale, 1.0f, "make-model: linear rope scaling factor (gemma3: of its global layers); 1 = none");
ABSL_FLAG(int, layers, 4, "make-model: transformer layers");
ABSL_FLAG(int, embd, 256, "make-model: embedding width");
ABSL_FLAG(int, heads, 8, "make-model: attention heads");
ABSL_FLAG(int, kv_heads, 4, "make-model: key/value heads (grouped-query attention when < heads)");
ABSL_FLAG(int, ff, 704, "make-model: feed-forward width");
ABSL_FLAG(int, vocab, 1024, "make-model: vocabulary size (>= 260)");
ABSL_FLAG(int, context, 2048, "make-model: context length written to the metadata");
ABSL_FLAG(std::string, type, "q8_0", "make-model: type of the 2-D weights: f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q4_K, q5_K, q6_K");
ABSL_FLAG(uint64_t, weights_seed, 1, "make-model: random seed; the same seed and shape give the same bytes");
ABSL_FLAG(bool, tied_output, false, "make-model: omit output.weight (the head reuses token_embd)");
ABSL_FLAG(int, head_dim, 0, "make-model: per-head size; 0 = embd / heads");
ABSL_FLAG(std::string, mix, "", "make-model: q4_k_m or q5_k_m: llama.cpp-style type mix instead of one --type");
ABSL_FLAG(std::string, preset, "",
          "make-model: the shape of a popular model (llama3.1-8b, llama3.1-70b, qwen2.5-7b, qwen3-8b, gemma2-9b, "
          "gemma2-27b, gemma3-27b), "
          "q4_k_m mix unless --mix/--type say otherwise; shape flags are ignored");
ABSL_FLAG(bool, header_only, false, "make-model: write only the header (real shapes and types, no weights)");
ABSL_FLAG(bool, json, false, "inspect: print the whole header as JSON; bench, plan: results as JSON");
ABSL_FLAG(bool, tensors, false, "inspect: list every tensor");
ABSL_FLAG(std::string, prompt, "", "generate: the prompt text (empty: start from BOS alone); loadgen: each request's prompt (default \"Once upon a time\")");
ABSL_FLAG(std::string, chat, "",
          "generate: a user message, rendered with the model's chat template (tokenizer.chat_template) and answered "
          "(only the answer is printed); instead of --prompt");
ABSL_FLAG(std::string, system, "",
          "generate --chat: a system message (without it, the template's default system prompt if it has one)");
ABSL_FLAG(bool, think, true, "generate --chat: qwen3 templates: false turns thinking off (enable_thinking)");
ABSL_FLAG(int, n, 128, "generate: tokens to generate at most (-n N); loadgen: tokens per request (the end-of-generation token is ignored)");
ABSL_FLAG(float, temperature, 0.8f, "generate, loadgen: sampling temperature; 0 = greedy");
ABSL_FLAG(int, top_k, 40, "generate: keep the k most likely tokens; 0 = off");
ABSL_FLAG(float, top_p, 0.95f, "generate: nucleus sampling mass in (0, 1]; 1 = off");
ABSL_FLAG(float, min_p, 0.05f, "generate: drop tokens below min_p x the best one's probability; 0 = off");
ABSL_FLAG(float, typical_p, 1.0f, "generate: locally typical sampling mass in (0, 1]; 1 = off");
ABSL_FLAG(float, repeat_penalty, 1.0f, "generate: divide logits of recent tokens by this; 1 = off");
ABSL_FLAG(float, presence_penalty, 0.0f, "generate: subtract from logits of recent tokens");
ABSL_FLAG(float, frequency_penalty, 0.0f, "generate: subtract this x count from logits of recent tokens");
ABSL_FLAG(int, repeat_last_n, 64, "generate: how many recent tokens the penalties consider");
ABSL_FLAG(int64_t, seed, -1,
          "generate: sampling seed (same seed, same text); -1 = a random seed, printed; loadgen: seed of the --cancel_fraction/--sessions/--malformed_fraction draws");
ABSL_FLAG(std::vector<std::string>, stop, {}, "generate: stop sequences, comma-separated");
ABSL_FLAG(bool, ignore_eos, false, "generate: keep going past the end-of-generation token");
ABSL_FLAG(std::vector<std::string>, stop_token_ids, {}, "generate: token ids that end generation, comma-separated");
ABSL_FLAG(int, threads, 0, "generate, bench, serve: CPU threads; 0 = one per hardware thread");
ABSL_FLAG(int, ctx, 0, "generate, plan, serve: context length (per request slot); 0 = the model's, at most 4096");
ABSL_FLAG(std::string, kv_type, "f16", "generate, serve, loadgen --direct, plan: KV cache element type, f16 or f32");
ABSL_FLAG(int, batch, 64, "generate, bench, plan: prompt tokens per forward step; serve: tokens per step over all requests (decode tokens + prompt chunks)");
ABSL_FLAG(std::vector<std::string>, batches, std::vector<std::string>({"1", "8"}),
          "bench: sequences decoded together, comma-separated");
ABSL_FLAG(int, prompt_tokens, 128, "bench: prompt tokens per sequence");
ABSL_FLAG(int, gen_tokens, 32, "bench: decode steps");
ABSL_FLAG(int, repetitions, 2, "bench: runs per batch size; the best is reported");
ABSL_FLAG(std::string, gpu, "rtx4060-8g", "plan: GPU profile (memory and CUDA context overhead)");
ABSL_FLAG(std::vector<std::string>, gpu_memory, {},
          "plan: memory budgets to plan for, comma-separated (8GiB, 512MiB, ...; default 6,8,12,16,24,48,80 GiB); "
          "'device' = the profile's memory. "
          "generate, bench: one budget on the device (default: all of its memory)");
ABSL_FLAG(int, gpu_layers, -1,
          "plan, generate, bench: exactly this many layers resident on the GPU, the output head counted apart "
          "(-1: as many as fit)");
ABSL_FLAG(int, slots, 4,
          "serve, plan, loadgen --direct: requests decoded together, each with its own KV cache (plan: sizes the KV "
          "cache and is the step the placement is chosen for); generate runs one request");
ABSL_FLAG(int, ring_depth, 2, "plan, generate, bench: staging slots for streamed layers (the copy queue runs this many ahead)");
ABSL_FLAG(std::string, placement, "auto",
          "generate, bench, serve: where the layers that are not resident go: stream (over PCIe every step), cpu "
          "(computed on the CPU from host memory, as LM Studio does), mixed (some of each, at once: the split the speed "
          "model predicts fastest for a step of --slots tokens, or --cpu_layers of them) or auto (mixed, the fastest "
          "split)");
ABSL_FLAG(int, cpu_layers, -1,
          "generate, bench, serve: with --placement mixed or auto, exactly this many of the units that are not "
          "resident on the CPU, the rest streamed (-1: the fastest split)");
ABSL_FLAG(std::string, device, "cpu",
          "generate, bench, serve: cpu, sim[:key=value,...] or cuda[:N][,key=value,...]. sim keys: profile (a --gpu "
          "profile, gives the defaults), mem (8GiB), overhead, h2d (25GB/s), lat (10us), poison (1: NaN-fill staging "
          "slots on reuse), fault (N: latch a device fault after N copies on the copy queue, to test fault handling). "
          "cuda keys: mem (at most this much of the GPU), poison, int8 (default 1: decode matvec on int8 activations "
          "for q8_0/q4_0/q4_K/q5_K/q6_K; 0: float activations, ~10x smaller error, 1.5-3x slower decode), graphs "
          "(default 1: steps replayed as CUDA graphs; 0: every kernel launched on its own), fuse (default 1: fused "
          "launches (q/k/v, gate/up with the gating, residual adds, rope q+k, norm+quantize); 0: one launch per op)");
ABSL_FLAG(std::string, host, "127.0.0.1",
          "serve: address the gRPC port listens on; the default is loopback only. 0.0.0.0 or :: = every interface: "
          "pair it with --tls_cert/--tls_key and --auth_token_file (plaintext and no token by default)");
ABSL_FLAG(int, port, 50051, "serve: gRPC port; 0 = any free port (printed)");
ABSL_FLAG(int, metrics_port, 9400,
          "serve: HTTP port for Prometheus /metrics and /healthz, /readyz; 0 = any free port (printed), -1 = none");
ABSL_FLAG(int, http_port, -1,
          "serve: port of the OpenAI-compatible HTTP API on --host (/v1/models, /v1/completions, "
          "/v1/chat/completions, /health; TLS and bearer token as gRPC's); 0 = any free port (printed), -1 = off");
ABSL_FLAG(std::string, metrics_host, "127.0.0.1",
          "serve: address the metrics port listens on (plain HTTP, no token: /metrics, /healthz, /readyz); loopback by "
          "default, 0.0.0.0 only where a scraper outside the host or container must reach it");
ABSL_FLAG(int, max_queue, 64, "serve: requests waiting for a slot before new ones get RESOURCE_EXHAUSTED");
ABSL_FLAG(int, max_prompt_tokens, 0, "serve: longest prompt accepted; 0 = the context");
ABSL_FLAG(int, max_output_tokens, 0, "serve: largest max_tokens accepted; 0 = the context");
ABSL_FLAG(int, max_message_bytes, 4 << 20, "serve: largest request message");
ABSL_FLAG(int, max_streams_per_connection, 100, "serve: concurrent calls on one HTTP/2 connection");
ABSL_FLAG(int, min_ping_interval_ms, 10000,
          "serve: keepalive enforcement: clients pinging more often than this without data are disconnected");
ABSL_FLAG(int, max_buffered_tokens, 1024,
          "serve: generated tokens queued for a client that is not reading before its stream is cut off");
ABSL_FLAG(std::string, tls_cert, "",
          "serve: PEM certificate chain: serve TLS (with --tls_key; default: plaintext gRPC); loadgen: client "
          "certificate for mutual TLS");
ABSL_FLAG(std::string, tls_key, "", "serve, loadgen: PEM private key for --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "", "serve: PEM CA bundle: require client certificates it signed (mutual TLS)");
ABSL_FLAG(std::string, auth_token_file, "",
          "serve, loadgen: file holding a bearer token (default: none, every call is let in); every "
          "ferry.v1.Inference call must send 'authorization: Bearer <token>' (health and reflection stay open for "
          "probes). At most 4096 bytes of printable ASCII; serve refuses a file others can read or write (chmod 600, "
          "or 640 for a group)");
ABSL_FLAG(double, drain_seconds, 30, "serve: on SIGTERM, how long in-flight requests may take to finish");
ABSL_FLAG(std::string, target, "127.0.0.1:50051", "loadgen: the server to load (only this address is contacted)");
ABSL_FLAG(int, concurrency, 1, "loadgen: requests in flight at once");
ABSL_FLAG(int, connections, 1, "loadgen: HTTP/2 connections the requests share (one per client: --connections = --concurrency)");
ABSL_FLAG(int, requests, 0, "loadgen: requests in all (or --duration)");
ABSL_FLAG(double, duration, 0, "loadgen: seconds to keep the load up (or --requests)");
ABSL_FLAG(std::string, tls_ca, "", "loadgen: PEM CA bundle: connect with TLS and trust it");
ABSL_FLAG(double, cancel_fraction, 0,
          "loadgen: share of requests cancelled after a random number of tokens (0 = before the first)");
ABSL_FLAG(int, sessions, 0, "loadgen: requests carry a session id out of this many (0 = none), each with its own prompt");
ABSL_FLAG(double, malformed_fraction, 0,
          "loadgen: share of requests sent malformed (each kind must come back INVALID_ARGUMENT)");
ABSL_FLAG(bool, direct, false,
          "loadgen: drive an in-process runtime on --model (--device, --slots, --batch) instead of --target: "
          "the baseline for the gRPC overhead");
ABSL_FLAG(bool, http, false,
          "loadgen: send the requests to --target's OpenAI-compatible HTTP API (ferry serve --http_port; "
          "POST /v1/completions, streamed) instead of gRPC; one HTTP/1.1 connection per worker");
ABSL_FLAG(bool, sweep, false,
          "bench: run at 0, 25, 50, 75 and 100 % of the layers resident (one --device budget) and print tokens/s, "
          "streamed GB/s, % of copy bandwidth and overlap per row");

namespace ferry {
namespace {

constexpr char kUsage[] = R"(ferry: serve GGUF language models from a GPU too small to hold them.

usage: ferry <command> [flags]

commands:
  bench        prefill and decode tokens/s at batch sizes --batches (default
               1,8) on --device; --sweep: the same at 0..100 % resident with
               streamed GB/s and copy/compute overlap per row
  generate     generate text, streamed as it is made, then a line of figures
               (--model, --prompt, -n, sampling flags); --device sim:...
               streams the layers that do not fit, after printing where
               each layer went
  info         a model's architecture, parameters, context, tokenizer, bytes
               by type and by layer (--model)
  loadgen      load a server: --target HOST:PORT (default 127.0.0.1:50051),
               --concurrency C, --requests N or --duration T, -n tokens each;
               prints time to first token and inter-token latency p50/p90/
               p99, tokens/s and errors by code (--direct: the same load on
               an in-process runtime, no gRPC; --http: through the server's
               OpenAI-compatible HTTP API)
  make-model   write a model with deterministic random weights in a real
               architecture's layout (--out PATH, shape and --type flags)
  serve        the gRPC service (ferry.v1.Inference, health, reflection),
               and with --http_port an OpenAI-compatible HTTP API:
               --model (default: the demo model), --host, --port, --device
               and placement flags, --slots, limits, TLS and token flags;
               SIGTERM drains. Exposure by default: gRPC on 127.0.0.1:50051
               and metrics on 127.0.0.1:9400, loopback only, plaintext, no
               token; before --host 0.0.0.0 add --tls_cert/--tls_key and
               --auth_token_file
  plan         what fits on a GPU, from the header alone: layers resident and
               device memory by category for each --gpu_memory budget
               (default 6..80 GiB), or exactly --gpu_layers N
  inspect      describe a GGUF file from its header: architecture, shape,
               bytes by type and by layer, metadata (--model PATH, --json,
               --tensors); without --model, the demo model

examples:
  ferry generate --model stories260K.gguf --prompt "Once upon a time" -n 64 --temperature 0
  ferry generate --device sim:mem=2GiB,h2d=12GB/s --gpu_layers 10 --prompt "Hello"
  ferry serve --model stories260K.gguf --port 50051 --slots 8
  ferry loadgen --target 127.0.0.1:50051 --concurrency 16 --requests 64 -n 64
  ferry bench --device sim:profile=rtx4060-8g --sweep --batches 1,8
  ferry make-model --out tiny.gguf --layers 2 --embd 128 --type f16
  ferry inspect --model ~/models/llama-3-8b.Q4_K_M.gguf --tensors

Flags for all commands follow; each says which command reads it.)";

// Writes a model, printing progress on stderr when it takes a while.
absl::Status MakeModel(const std::string& path, const model::SynthOptions& options) {
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
  const bool header_only = absl::GetFlag(FLAGS_header_only);
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
  model::SynthOptions o;
  const std::string preset = absl::GetFlag(FLAGS_preset);
  if (!preset.empty()) {
    absl::StatusOr<model::SynthOptions> p = model::Preset(preset);
    if (!p.ok()) return p.status();
    o = *p;
    o.seed = absl::GetFlag(FLAGS_weights_seed);
    const std::string mix = absl::GetFlag(FLAGS_mix);
    if (mix == "q5_k_m") o.mix = model::Mix::kQ5_K_M;
    if (mix.empty() && absl::GetFlag(FLAGS_type) != "q8_0") {  // an explicit --type other than the default
      o.mix = model::Mix::kUniform;
      const auto info = quant::FindTypeByName(absl::GetFlag(FLAGS_type));
      if (!info) return absl::InvalidArgumentError("--type: unknown tensor type '" + absl::GetFlag(FLAGS_type) + "'");
      o.type = info->type;
    }
    const std::string out = absl::GetFlag(FLAGS_out);
    if (out.empty()) return absl::InvalidArgumentError("make-model: --out PATH is required");
    return MakeModel(out, o);
  }
  o.arch = absl::GetFlag(FLAGS_arch);
  o.n_layer = absl::GetFlag(FLAGS_layers);
  o.n_embd = absl::GetFlag(FLAGS_embd);
  o.n_head = absl::GetFlag(FLAGS_heads);
  o.n_head_kv = absl::GetFlag(FLAGS_kv_heads);
  o.n_ff = absl::GetFlag(FLAGS_ff);
  o.n_vocab = absl::GetFlag(FLAGS_vocab);
  o.n_ctx = absl::GetFlag(FLAGS_context);
  o.seed = absl::GetFlag(FLAGS_weights_seed);
  o.tied_output = absl::GetFlag(FLAGS_tied_output);
  o.sliding_window = absl::GetFlag(FLAGS_sliding_window);
  o.rope_scale_factor = absl::GetFlag(FLAGS_rope_scale);
  o.head_dim = absl::GetFlag(FLAGS_head_dim);
  const std::string mix = absl::GetFlag(FLAGS_mix);
  if (mix == "q4_k_m") {
    o.mix = model::Mix::kQ4_K_M;
  } else if (mix == "q5_k_m") {
    o.mix = model::Mix::kQ5_K_M;
  } else if (!mix.empty()) {
    return absl::InvalidArgumentError("--mix must be q4_k_m or q5_k_m, got '" + mix + "'");
  }
  const std::string type = absl::GetFlag(FLAGS_type);
  const auto info = quant::FindTypeByName(type);
  if (!info) return absl::InvalidArgumentError(absl::StrCat("--type: unknown tensor type '", type, "'"));
  o.type = info->type;
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return absl::InvalidArgumentError("make-model: --out PATH is required");
  return MakeModel(out, o);
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
absl::StatusOr<std::string> ModelPath() {
  const std::string path = absl::GetFlag(FLAGS_model);
  if (!path.empty()) return path;
  return DemoModelPath();
}

absl::StatusOr<engine::PlacementArgs> DeviceFlagsFromCommandLine() {
  engine::PlacementArgs f;
  f.device = absl::GetFlag(FLAGS_device);
  f.gpu_layers = absl::GetFlag(FLAGS_gpu_layers);
  f.ring_depth = absl::GetFlag(FLAGS_ring_depth);
  f.placement = absl::GetFlag(FLAGS_placement);
  f.cpu_layers = absl::GetFlag(FLAGS_cpu_layers);
  if (const std::vector<std::string> budgets = absl::GetFlag(FLAGS_gpu_memory); !budgets.empty()) {
    if (budgets.size() != 1) return absl::InvalidArgumentError("generate, bench: --gpu_memory takes one budget");
    absl::StatusOr<uint64_t> bytes = ParseBytes(budgets[0]);
    if (!bytes.ok()) return absl::InvalidArgumentError(absl::StrCat("--gpu_memory: ", bytes.status().message()));
    f.gpu_memory = *bytes;
  }
  FERRY_RETURN_IF_ERROR(engine::Validate(f));
  return f;
}

// --threads, --ctx, --slots (`slots` instead when > 0: generate's one request), --batch, --kv_type, --max_queue.
absl::StatusOr<engine::RuntimeArgs> RuntimeArgsFromCommandLine(int slots = 0) {
  engine::RuntimeArgs a;
  a.threads = absl::GetFlag(FLAGS_threads);
  a.ctx = absl::GetFlag(FLAGS_ctx);
  a.slots = slots > 0 ? slots : absl::GetFlag(FLAGS_slots);
  a.batch = absl::GetFlag(FLAGS_batch);
  FERRY_ASSIGN_OR_RETURN(a.kv_type, engine::ParseKvType(absl::GetFlag(FLAGS_kv_type)));
  a.max_queue = absl::GetFlag(FLAGS_max_queue);
  return a;
}

// Loading steps that take a while (uploads to a GPU), on stderr.
void PrintProgress(const std::string& what) { std::fprintf(stderr, "ferry: %s\n", what.c_str()); }

absl::Status RunGenerate() {
  service::GenerateOptions o;
  absl::StatusOr<std::string> path = ModelPath();
  if (!path.ok()) return path.status();
  o.model_path = *path;
  o.prompt = absl::GetFlag(FLAGS_prompt);
  o.chat = absl::GetFlag(FLAGS_chat);
  o.system = absl::GetFlag(FLAGS_system);
  o.enable_thinking = absl::GetFlag(FLAGS_think);
  o.max_tokens = absl::GetFlag(FLAGS_n);
  o.stops = absl::GetFlag(FLAGS_stop);
  o.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  for (const std::string& id : absl::GetFlag(FLAGS_stop_token_ids)) {
    int v = 0;
    if (!absl::SimpleAtoi(id, &v)) return absl::InvalidArgumentError("--stop_token_ids: '" + id + "' is not a token id");
    o.stop_ids.push_back(v);
  }
  text::SamplingParams& p = o.sampling;
  p.temperature = absl::GetFlag(FLAGS_temperature);
  p.top_k = absl::GetFlag(FLAGS_top_k);
  p.top_p = absl::GetFlag(FLAGS_top_p);
  p.min_p = absl::GetFlag(FLAGS_min_p);
  p.typical_p = absl::GetFlag(FLAGS_typical_p);
  p.repetition_penalty = absl::GetFlag(FLAGS_repeat_penalty);
  p.presence_penalty = absl::GetFlag(FLAGS_presence_penalty);
  p.frequency_penalty = absl::GetFlag(FLAGS_frequency_penalty);
  p.penalty_last_n = absl::GetFlag(FLAGS_repeat_last_n);
  const int64_t seed = absl::GetFlag(FLAGS_seed);
  p.seed = seed >= 0 ? static_cast<uint64_t>(seed) : std::random_device{}();
  o.progress = PrintProgress;
  FERRY_ASSIGN_OR_RETURN(o.runtime, RuntimeArgsFromCommandLine(1));
  FERRY_ASSIGN_OR_RETURN(o.placement, DeviceFlagsFromCommandLine());
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
  service::BenchOptions o;
  absl::StatusOr<std::string> path = ModelPath();
  if (!path.ok()) return path.status();
  o.model_path = *path;
  o.batches.clear();
  for (const std::string& b : absl::GetFlag(FLAGS_batches)) {
    int v = 0;
    if (!absl::SimpleAtoi(b, &v) || v <= 0) return absl::InvalidArgumentError("--batches: '" + b + "' is not a positive integer");
    o.batches.push_back(v);
  }
  o.prompt_tokens = absl::GetFlag(FLAGS_prompt_tokens);
  o.gen_tokens = absl::GetFlag(FLAGS_gen_tokens);
  o.repetitions = absl::GetFlag(FLAGS_repetitions);
  if (o.prompt_tokens <= 0 || o.gen_tokens <= 0 || o.repetitions <= 0) {
    return absl::InvalidArgumentError("--prompt_tokens, --gen_tokens and --repetitions must be positive");
  }
  o.forward.threads = absl::GetFlag(FLAGS_threads);
  o.forward.progress = PrintProgress;
  o.forward.max_batch = absl::GetFlag(FLAGS_batch);
  FERRY_ASSIGN_OR_RETURN(o.placement, DeviceFlagsFromCommandLine());
  o.sweep = absl::GetFlag(FLAGS_sweep);
  std::fprintf(stderr, "bench: %d prompt tokens and %d decode steps per batch size, best of %d\n", o.prompt_tokens,
               o.gen_tokens, o.repetitions);
  absl::StatusOr<service::BenchResult> r = service::RunBench(o);
  if (!r.ok()) return r.status();
  const std::string text = absl::GetFlag(FLAGS_json) ? service::BenchJson(*r) : service::BenchTable(*r);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return absl::OkStatus();
}

absl::Status RunPlan() {
  service::PlanOptions o;
  absl::StatusOr<std::string> path = ModelPath();
  if (!path.ok()) return path.status();
  o.model_path = *path;
  o.gpu = absl::GetFlag(FLAGS_gpu);
  std::vector<std::string> budgets = absl::GetFlag(FLAGS_gpu_memory);
  if (budgets.empty()) budgets = {"6GiB", "8GiB", "12GiB", "16GiB", "24GiB", "48GiB", "80GiB"};
  for (const std::string& b : budgets) {
    if (b == "device") continue;  // the profile's own memory: the auto policy
    absl::StatusOr<uint64_t> bytes = ParseBytes(b);
    if (!bytes.ok()) return absl::InvalidArgumentError(absl::StrCat("--gpu_memory: ", bytes.status().message()));
    o.budgets.push_back(*bytes);
  }
  o.gpu_layers = absl::GetFlag(FLAGS_gpu_layers);
  const int ctx = absl::GetFlag(FLAGS_ctx);
  o.request.n_ctx = ctx;  // 0: the model's default context (RunPlan reads it)
  o.request.n_slots = absl::GetFlag(FLAGS_slots);
  if (o.request.n_slots <= 0) return absl::InvalidArgumentError("--slots must be at least 1");
  o.request.max_batch = absl::GetFlag(FLAGS_batch);
  o.request.ring_depth = absl::GetFlag(FLAGS_ring_depth);
  o.threads = absl::GetFlag(FLAGS_threads);
  exec::KvType kv = exec::KvType::kF16;
  FERRY_ASSIGN_OR_RETURN(kv, engine::ParseKvType(absl::GetFlag(FLAGS_kv_type)));
  o.request.kv_bytes_per_elem = exec::KvBytesPerElement(kv);
  o.json = absl::GetFlag(FLAGS_json);
  absl::StatusOr<std::string> text = service::RunPlan(o);
  if (!text.ok()) return text.status();
  std::fwrite(text->data(), 1, text->size(), stdout);
  return absl::OkStatus();
}

// The bearer token in --auth_token_file (service/auth.h checks the file),
// or "" without the flag.
absl::StatusOr<std::string> AuthToken() {
  const std::string f = absl::GetFlag(FLAGS_auth_token_file);
  if (f.empty()) return std::string();
  return service::ReadTokenFile(f);
}

absl::StatusOr<int> RunServe() {
  service::ServeOptions o;
  absl::StatusOr<std::string> path = ModelPath();
  if (!path.ok()) return path.status();
  o.model_path = *path;
  o.host = absl::GetFlag(FLAGS_host);
  o.port = absl::GetFlag(FLAGS_port);
  if (o.port < 0 || o.port > 65535) return absl::InvalidArgumentError("--port must be in [0, 65535]");
  o.http_port = absl::GetFlag(FLAGS_http_port);
  if (o.http_port < -1 || o.http_port > 65535) return absl::InvalidArgumentError("--http_port must be in [0, 65535], or -1 for none");
  o.metrics_host = absl::GetFlag(FLAGS_metrics_host);
  o.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  if (o.metrics_port < -1 || o.metrics_port > 65535) {
    return absl::InvalidArgumentError("--metrics_port must be in [0, 65535], or -1 for none");
  }
  FERRY_ASSIGN_OR_RETURN(o.placement, DeviceFlagsFromCommandLine());
  FERRY_ASSIGN_OR_RETURN(o.runtime, RuntimeArgsFromCommandLine());
  FERRY_RETURN_IF_ERROR(engine::Validate(o.runtime));
  o.progress = PrintProgress;
  service::ServeLimits& l = o.limits;
  l.max_queue = absl::GetFlag(FLAGS_max_queue);
  l.max_prompt_tokens = absl::GetFlag(FLAGS_max_prompt_tokens);
  l.max_output_tokens = absl::GetFlag(FLAGS_max_output_tokens);
  l.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  l.max_streams_per_connection = absl::GetFlag(FLAGS_max_streams_per_connection);
  l.min_ping_interval_ms = absl::GetFlag(FLAGS_min_ping_interval_ms);
  l.max_buffered_tokens = absl::GetFlag(FLAGS_max_buffered_tokens);
  if (l.max_queue < 0 || l.max_prompt_tokens < 0 || l.max_output_tokens < 0 || l.max_message_bytes < 1024 ||
      l.max_streams_per_connection < 1 || l.min_ping_interval_ms < 0 || l.max_buffered_tokens < 1) {
    return absl::InvalidArgumentError(
        "limits: --max_queue, --max_prompt_tokens, --max_output_tokens, --min_ping_interval_ms must be >= 0, "
        "--max_message_bytes >= 1024, --max_streams_per_connection and --max_buffered_tokens >= 1");
  }
  o.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  o.tls_key = absl::GetFlag(FLAGS_tls_key);
  o.tls_client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  FERRY_ASSIGN_OR_RETURN(o.auth_token, AuthToken());
  const double drain = absl::GetFlag(FLAGS_drain_seconds);
  if (!(drain >= 0)) return absl::InvalidArgumentError("--drain_seconds must be >= 0");
  return service::Serve(o, absl::Seconds(drain));
}

absl::Status RunLoadgen() {
  service::LoadgenOptions o;
  o.target = absl::GetFlag(FLAGS_target);
  o.concurrency = absl::GetFlag(FLAGS_concurrency);
  o.connections = absl::GetFlag(FLAGS_connections);
  o.requests = absl::GetFlag(FLAGS_requests);
  o.duration_s = absl::GetFlag(FLAGS_duration);
  if (!absl::GetFlag(FLAGS_prompt).empty()) o.prompt = absl::GetFlag(FLAGS_prompt);
  o.max_tokens = absl::GetFlag(FLAGS_n);
  o.temperature = absl::GetFlag(FLAGS_temperature);
  o.tls_ca = absl::GetFlag(FLAGS_tls_ca);
  o.cancel_fraction = absl::GetFlag(FLAGS_cancel_fraction);
  o.sessions = absl::GetFlag(FLAGS_sessions);
  o.malformed_fraction = absl::GetFlag(FLAGS_malformed_fraction);
  if (absl::GetFlag(FLAGS_seed) >= 0) o.seed = static_cast<uint64_t>(absl::GetFlag(FLAGS_seed));
  o.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  o.tls_key = absl::GetFlag(FLAGS_tls_key);
  FERRY_ASSIGN_OR_RETURN(o.auth_token, AuthToken());
  o.direct = absl::GetFlag(FLAGS_direct);
  o.http = absl::GetFlag(FLAGS_http);
  if (o.direct) {
    absl::StatusOr<std::string> path = ModelPath();
    if (!path.ok()) return path.status();
    o.model_path = *path;
    FERRY_ASSIGN_OR_RETURN(o.placement, DeviceFlagsFromCommandLine());
    FERRY_ASSIGN_OR_RETURN(o.runtime, RuntimeArgsFromCommandLine());
    FERRY_RETURN_IF_ERROR(engine::Validate(o.runtime));
  }
  absl::StatusOr<service::LoadgenReport> r = service::RunLoadgen(o);
  if (!r.ok()) return r.status();
  const std::string text = service::LoadgenText(o, *r);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return absl::OkStatus();
}

absl::Status RunInfo() {
  absl::StatusOr<std::string> path = ModelPath();
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
  absl::StatusOr<std::string> model_path = ModelPath();
  if (!model_path.ok()) return model_path.status();
  const std::string path = *model_path;
  // The header is all inspect reads: header-only and truncated files work too.
  absl::StatusOr<std::unique_ptr<gguf::File>> file = gguf::File::Open(path, {.header_only = true});
  if (!file.ok()) return file.status();
  const std::string text =
      absl::GetFlag(FLAGS_json) ? service::InspectJson(**file) : service::InspectText(**file, absl::GetFlag(FLAGS_tensors));
  std::fwrite(text.data(), 1, text.size(), stdout);
  return absl::OkStatus();
}

}  // namespace
}  // namespace ferry

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(ferry::kUsage);
  // Flags may be spelled with dashes as well as underscores
  // (--gpu-memory=8GiB is --gpu_memory=8GiB): the name part only, never
  // the value, and nothing after a bare "--".
  std::vector<std::string> spelled(argv, argv + argc);
  std::vector<char*> argv_underscored;
  bool flags_done = false;
  for (std::string& a : spelled) {
    if (a == "--") flags_done = true;
    if (!flags_done && a.size() > 2 && a.compare(0, 2, "--") == 0) {
      const size_t end = std::min(a.find('='), a.size());
      std::replace(a.begin() + 2, a.begin() + static_cast<std::ptrdiff_t>(end), '-', '_');
    }
    argv_underscored.push_back(a.data());
  }
  std::vector<char*> args = absl::ParseCommandLine(argc, argv_underscored.data());
  if (args.size() < 2) {
    std::fprintf(stderr, "%s\n\nrun `ferry --help` for the flags.\n", ferry::kUsage);
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
