#include "service/http_api.h"

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including
// <utility> (an error in C++20 mode): include it first.
#include <utility>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "service/auth.h"
#include "service/openai_api.h"

namespace ferry::service {
namespace {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;

// Two event-loop threads: one connection's JSON parsing, tokenizing and
// chat rendering (milliseconds for a long prompt) does not hold up the
// others' tokens.
constexpr int kThreads = 2;
constexpr auto kReadTimeout = std::chrono::seconds(60);   // a request (or the TLS handshake) must arrive within this
constexpr auto kLingerTimeout = std::chrono::seconds(2);  // reading what a refused client still sends, before closing
constexpr uint32_t kHeaderLimit = 16 << 10;

// OpenAI's error type for a status (the SDKs pick their exception by the status).
const char* ErrorType(http::status s) {
  switch (s) {
    case http::status::unauthorized: return "authentication_error";
    case http::status::not_found: return "not_found_error";
    case http::status::too_many_requests: return "rate_limit_error";
    case http::status::service_unavailable: return "unavailable_error";
    case http::status::internal_server_error: return "server_error";
    default: return "invalid_request_error";
  }
}

http::status HttpStatus(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange: return http::status::bad_request;
    case absl::StatusCode::kUnauthenticated: return http::status::unauthorized;
    case absl::StatusCode::kResourceExhausted: return http::status::too_many_requests;
    case absl::StatusCode::kUnavailable: return http::status::service_unavailable;
    default: return http::status::internal_server_error;
  }
}

std::string RandomId(const char* prefix) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return absl::StrFormat("%s%016x%08x", prefix, rng(), static_cast<uint32_t>(rng()));
}

}  // namespace

class HttpApi::Impl {
 public:
  Impl(const ServeOptions& options, Metrics* metrics)
      : options_(options), metrics_(metrics), acceptor_(ioc_), guard_(net::make_work_guard(ioc_)) {}

  absl::Status Listen();
  void Accept();

  // The engine, or why a request cannot run now (the messages are gRPC's).
  absl::StatusOr<const HttpEngine*> Ready() const {
    if (draining_.load()) return absl::UnavailableError("the server is shutting down");
    const HttpEngine* e = engine_.load(std::memory_order_acquire);
    if (e == nullptr) return absl::UnavailableError("the model is still loading");
    if (!e->runtime->healthy()) return absl::UnavailableError("the engine is unhealthy after a device fault");
    return e;
  }

  void Count(const std::string& code) {
    if (metrics_ != nullptr) metrics_->OnHttpRequestEnd(code);
  }
  void RequestStarted() { active_.fetch_add(1); }
  void RequestReleased() {
    std::lock_guard<std::mutex> l(idle_mu_);
    if (active_.fetch_sub(1) == 1) idle_cv_.notify_all();
  }

  const ServeOptions options_;
  Metrics* const metrics_;
  net::io_context ioc_{kThreads};
  std::optional<ssl::context> tls_;
  tcp::acceptor acceptor_;
  net::executor_work_guard<net::io_context::executor_type> guard_;
  std::vector<std::thread> threads_;
  std::unique_ptr<HttpEngine> engine_storage_;
  std::atomic<const HttpEngine*> engine_{nullptr};
  int64_t created_ = 0;  // unix seconds of Publish: the model's "created"
  std::atomic<bool> draining_{false};
  std::atomic<int> active_{0};  // completions requests in progress
  std::mutex idle_mu_;
  std::condition_variable idle_cv_;
  bool stopped_ = false;
};

namespace {

// One HTTP/1.1 connection: requests one after another (keep-alive), each
// answered with JSON or, for a stream, server-sent events. Everything runs
// on the connection's strand; the runtime's updates are posted to it.
template <class Stream>
class Connection : public std::enable_shared_from_this<Connection<Stream>> {
 public:
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

  Connection(HttpApi::Impl* api, Stream stream) : api_(api), stream_(std::move(stream)), timer_(stream_.get_executor()) {}

  void Start() {
    if constexpr (kTls) {
      ArmTimer();
      stream_.async_handshake(ssl::stream_base::server, [self = this->shared_from_this()](error_code ec) {
        self->timer_.cancel();
        if (ec) return self->Close();
        self->ReadRequest();
      });
    } else {
      ReadRequest();
    }
  }

 private:
  tcp::socket& Socket() { return beast::get_lowest_layer(stream_).socket(); }

  // Closes the connection when a request (or handshake) takes too long.
  void ArmTimer() {
    timer_.expires_after(kReadTimeout);
    timer_.async_wait([self = this->shared_from_this()](error_code ec) {
      if (!ec) self->Close();
    });
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    // A stream whose last events were all queued when the connection
    // closed (its client read [DONE] and left before the final empty
    // chunk) ran to its end: counted with its code, not left uncounted.
    if (ran_ && finished_ && stream_mode_) End(end_code_.empty() ? "499" : end_code_);
    timer_.cancel();
    error_code ec;
    Socket().shutdown(tcp::socket::shutdown_both, ec);
    Socket().close(ec);
  }

  // After a refusal with "Connection: close": stop sending, and read what
  // the client still sends for a moment, so that closing does not reset the
  // connection before the client has read the answer.
  void LingerAndClose() {
    error_code ec;
    Socket().shutdown(tcp::socket::shutdown_send, ec);
    timer_.expires_after(kLingerTimeout);
    timer_.async_wait([self = this->shared_from_this()](error_code e) {
      if (!e) self->Close();
    });
    Drain();
  }
  void Drain() {
    Socket().async_read_some(net::buffer(scratch_), [self = this->shared_from_this()](error_code ec, size_t) {
      if (ec) return self->Close();
      self->Drain();
    });
  }

  void ReadRequest() {
    if (closed_) return;
    counted_ = false;
    parser_.emplace();
    parser_->header_limit(kHeaderLimit);
    parser_->body_limit(static_cast<uint64_t>(api_->options_.limits.max_message_bytes));
    ArmTimer();
    http::async_read_header(stream_, buffer_, *parser_, [self = this->shared_from_this()](error_code ec, size_t) {
      self->OnHeader(ec);
    });
  }

  void OnHeader(error_code ec) {
    if (ec) {
      timer_.cancel();
      if (ec == http::error::body_limit) return TooLarge();
      return Close();
    }
    const auto& req = parser_->get();
    if (absl::EqualsIgnoreCase(std::string(req[http::field::expect]), "100-continue")) {
      // curl asks before sending a body over 1 MiB; answering at once saves it a second's wait.
      auto cont = std::make_shared<http::response<http::empty_body>>(http::status::continue_, req.version());
      http::async_write(stream_, *cont, [self = this->shared_from_this(), cont](error_code e, size_t) {
        if (e) return self->Close();
        self->ReadBody();
      });
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    http::async_read(stream_, buffer_, *parser_, [self = this->shared_from_this()](error_code ec, size_t) {
      self->timer_.cancel();
      if (ec == http::error::body_limit) return self->TooLarge();
      if (ec) return self->Close();
      self->req_ = self->parser_->release();
      self->Route();
    });
  }

  void TooLarge() {
    const auto& req = parser_->get();
    path_ = std::string(req.target().substr(0, req.target().find('?')));
    version_ = req.version();
    keep_alive_ = false;
    const int limit = api_->options_.limits.max_message_bytes;
    Error(http::status::payload_too_large,
          absl::StrCat("the request body is larger than the limit of ", limit, " bytes (--max_message_bytes)"), "",
          "request_too_large");
  }

  bool IsCompletions() const { return path_ == "/v1/completions" || path_ == "/v1/chat/completions"; }

  void Route() {
    path_ = std::string(req_.target().substr(0, req_.target().find('?')));
    version_ = req_.version();
    keep_alive_ = req_.keep_alive();
    const http::verb method = req_.method();
    if (path_ == "/health") {
      if (method != http::verb::get && method != http::verb::head) return NotAllowed("GET");
      absl::StatusOr<const HttpEngine*> e = api_->Ready();
      if (e.ok()) return Reply(http::status::ok, "{\"status\":\"ok\"}");
      return Reply(http::status::service_unavailable,
                   OpenAiErrorJson(std::string(e.status().message()), "unavailable_error", "", ""));
    }
    if (!absl::StartsWith(path_, "/v1/")) return NotFound();
    if (!api_->options_.auth_token.empty()) {
      std::vector<absl::string_view> values;
      for (auto [it, end] = req_.equal_range(http::field::authorization); it != end; ++it) {
        values.emplace_back(it->value().data(), it->value().size());
      }
      if (values.empty()) {
        return Error(http::status::unauthorized, "missing 'Authorization: Bearer <token>' header", "", "invalid_api_key");
      }
      // Every Authorization header must carry the token, as on gRPC.
      if (!CheckBearer(values, api_->options_.auth_token).ok()) {
        return Error(http::status::unauthorized, "the bearer token is not valid", "", "invalid_api_key");
      }
    }
    if (path_ == "/v1/completions" || path_ == "/v1/chat/completions") {
      if (method != http::verb::post) return NotAllowed("POST");
      return Generate(path_ == "/v1/completions" ? OpenAiEndpoint::kCompletions : OpenAiEndpoint::kChat);
    }
    if (path_ == "/v1/models" || absl::StartsWith(path_, "/v1/models/")) {
      if (method != http::verb::get) return NotAllowed("GET");
      absl::StatusOr<const HttpEngine*> e = api_->Ready();
      if (!e.ok()) return Error(HttpStatus(e.status().code()), std::string(e.status().message()), "", "");
      const HttpEngine& engine = **e;
      const int64_t created = api_->created_;
      if (path_ == "/v1/models") return Reply(http::status::ok, ModelsJson(engine.model_id, created, engine.context));
      const std::string id = path_.substr(std::string("/v1/models/").size());
      if (id != engine.model_id) {
        return Error(http::status::not_found,
                     absl::StrCat("no model '", id, "'; this server serves '", engine.model_id, "'"), "model",
                     "model_not_found");
      }
      return Reply(http::status::ok, ModelJson(engine.model_id, created, engine.context));
    }
    NotFound();
  }

  void NotFound() {
    Error(http::status::not_found, absl::StrCat("no such endpoint: ", path_), "", "unknown_url");
  }
  void NotAllowed(const char* allow) {
    allow_ = allow;
    Error(http::status::method_not_allowed, absl::StrCat(path_, " takes ", allow), "", "method_not_allowed");
  }

  void Error(http::status status, const std::string& message, const std::string& param, const std::string& code) {
    Reply(status, OpenAiErrorJson(message, ErrorType(status), param, code));
  }

  // A whole JSON response; then the next request (or the end). Completions
  // requests are counted here unless they ran (those count when they end).
  void Reply(http::status status, std::string body) {
    if (IsCompletions()) Count(absl::StrCat(static_cast<int>(status)));
    auto res = std::make_shared<http::response<http::string_body>>(status, version_);
    res->set(http::field::server, "ferry");
    res->set(http::field::content_type, "application/json");
    if (status == http::status::too_many_requests || status == http::status::service_unavailable) {
      res->set(http::field::retry_after, "1");  // seconds, as gRPC's pushback says 1000 ms
    }
    if (status == http::status::unauthorized) res->set(http::field::www_authenticate, "Bearer");
    if (status == http::status::method_not_allowed) res->set(http::field::allow, allow_);
    const bool keep = keep_alive_ && status != http::status::payload_too_large;
    res->keep_alive(keep);
    res->body() = std::move(body);
    if (req_.method() != http::verb::head) res->prepare_payload();
    http::async_write(stream_, *res, [self = this->shared_from_this(), res, keep](error_code ec, size_t) {
      self->Release();
      if (ec) return self->Close();
      if (!keep) return self->LingerAndClose();
      self->Next();
    });
  }

  // The next request on this connection: at once, or once the read that
  // watched for a disconnect while the last one ran returns.
  void Next() {
    if (watching_) {
      resume_after_watch_ = true;
      return;
    }
    ReadRequest();
  }

  // --- completions ---

  void Generate(OpenAiEndpoint endpoint) {
    absl::StatusOr<const HttpEngine*> ready = api_->Ready();
    if (!ready.ok()) return Error(HttpStatus(ready.status().code()), std::string(ready.status().message()), "", "");
    const HttpEngine& engine = **ready;
    std::string param;
    absl::StatusOr<OpenAiRequest> parsed = ParseOpenAiRequest(endpoint, req_.body(), &param);
    if (!parsed.ok()) return Error(http::status::bad_request, std::string(parsed.status().message()), param, "");
    // Unset max_tokens is decided below, once the prompt's length is known;
    // 0 meanwhile, so that the prompt alone is checked against the context.
    if (!parsed->max_tokens_set) parsed->request.set_max_tokens(0);
    thread_local std::mt19937_64 rng{std::random_device{}()};
    absl::StatusOr<PreparedRequest> prepared = PrepareRequest(parsed->request, *engine.request_ctx, rng());
    if (!prepared.ok()) {
      return Error(HttpStatus(prepared.status().code()), std::string(prepared.status().message()), "", "");
    }
    runtime::Request& r = prepared->request;
    if (!parsed->max_tokens_set) {
      // OpenAI's chat default: as many tokens as the context leaves.
      const int n_ctx = engine.request_ctx->n_ctx;
      const int limit = api_->options_.limits.max_output_tokens > 0 ? api_->options_.limits.max_output_tokens : n_ctx;
      r.max_tokens = std::max(0, std::min(limit, n_ctx - static_cast<int>(r.prompt.size())));
    }
    stream_mode_ = parsed->stream;
    include_usage_ = parsed->include_usage;
    reply_ = ReplyContext{endpoint, RandomId(endpoint == OpenAiEndpoint::kChat ? "chatcmpl-" : "cmpl-"),
                          engine.model_id, absl::ToUnixSeconds(absl::Now()), prepared->logprobs, engine.tokenizer};
    builder_.emplace(reply_);
    tokens_buffered_ = 0;
    finished_ = false;
    end_code_.clear();
    const std::string prompt_text = prepared->prompt_text;

    auto self = this->shared_from_this();
    absl::StatusOr<std::shared_ptr<runtime::Handle>> h =
        engine.runtime->Submit(std::move(r), [self](runtime::Update&& u) {
          net::post(self->stream_.get_executor(), [self, u = std::move(u)]() mutable { self->OnUpdate(std::move(u)); });
        });
    if (!h.ok()) {
      return Error(HttpStatus(h.status().code()), std::string(h.status().message()), "",
                   h.status().code() == absl::StatusCode::kResourceExhausted ? "rate_limit_exceeded" : "");
    }
    handle_ = *h;
    ran_ = true;
    api_->RequestStarted();
    Watch();
    if (!stream_mode_) {
      if (parsed->echo) builder_->AddEcho(prompt_text);
      return;
    }
    // Server-sent events: the header now, then the events as they come.
    chunked_ = version_ >= 11;
    if (!chunked_) keep_alive_ = false;  // HTTP/1.0: the end of the body is the end of the connection
    if (endpoint == OpenAiEndpoint::kChat) pending_ += ChatRoleEvent(reply_, include_usage_);
    if (parsed->echo) pending_ += EchoEvent(reply_, prompt_text, include_usage_);
    stream_res_.emplace(http::status::ok, version_);
    stream_res_->set(http::field::server, "ferry");
    stream_res_->set(http::field::content_type, "text/event-stream");
    stream_res_->set(http::field::cache_control, "no-cache");
    stream_res_->keep_alive(keep_alive_);
    stream_res_->chunked(chunked_);
    serializer_.emplace(*stream_res_);
    writing_ = true;
    http::async_write_header(stream_, *serializer_, [self](error_code ec, size_t) { self->OnWritten(ec); });
  }

  // A read while the request runs: its end (EOF, reset) means the client is
  // gone, and the request is cancelled at the runtime's next step.
  void Watch() {
    if (closed_) return;
    watching_ = true;
    stream_.async_read_some(buffer_.prepare(4096), [self = this->shared_from_this()](error_code ec, size_t n) {
      self->watching_ = false;
      if (ec) {
        self->peer_gone_ = true;
        if (self->handle_ && !self->finished_) {
          self->handle_->Cancel();
          return;  // the request's last update ends it
        }
        return self->Close();
      }
      // Bytes of the next request (the client sent it as soon as it had
      // this one's last bytes, possibly before the write's handler ran, or
      // pipelined): kept for the parser. The watch ends here; a write error
      // still tells of a client gone while this request runs.
      self->buffer_.commit(n);
      if (self->resume_after_watch_) {
        self->resume_after_watch_ = false;
        self->ReadRequest();
      }
    });
  }

  void OnUpdate(runtime::Update&& u) {
    if (finished_) return;
    const bool last = u.finish != runtime::FinishReason::kNone;
    if (last && api_->metrics_ != nullptr) api_->metrics_->OnFinish(u.finish, u.usage, u.timings);
    if (last) {
      finished_ = true;
      handle_.reset();
    }
    // The status a request that did not finish normally ends with.
    std::optional<absl::Status> failed;
    if (last) {
      switch (u.finish) {
        case runtime::FinishReason::kCancelled: failed = absl::CancelledError("request cancelled"); break;
        case runtime::FinishReason::kDeadline:
          failed = absl::DeadlineExceededError("the request's deadline passed before it finished");
          break;
        case runtime::FinishReason::kShutdown:
          failed = absl::UnavailableError("the server shut down before the request finished; retry");
          break;
        case runtime::FinishReason::kError:
          failed = absl::InternalError(absl::StrCat("device fault: ", u.error.message()));
          break;
        default: break;
      }
    }
    if (peer_gone_ || closed_) {
      // 499: nginx's "client closed request"; 429: cut off for not reading.
      if (last) {
        End(cut_off_ ? "429" : "499");
        Close();
      }
      return;
    }
    if (!stream_mode_) {
      builder_->Add(u);
      if (!last) return;
      // Counted by Reply; released once written.
      if (failed) return Error(HttpStatus(failed->code()), std::string(failed->message()), "", "");
      return Reply(http::status::ok, builder_->Json(u));
    }
    if (!u.text.empty() || (!u.tokens.empty() && reply_.logprobs) || (last && !failed)) {
      pending_ += ChunkEvent(reply_, u, include_usage_);
      tokens_buffered_ += static_cast<int>(u.tokens.size());
    }
    if (tokens_buffered_ > api_->options_.limits.max_buffered_tokens) {
      // The client stopped reading: end its request rather than hold its slot
      // or buffer without bound (as gRPC cuts such a stream off).
      cut_off_ = true;
      if (handle_) handle_->Cancel();
      if (last) End("429");
      return Close();
    }
    if (last) {
      if (failed) {
        const http::status status = HttpStatus(failed->code());
        pending_ += ErrorEvent(std::string(failed->message()), ErrorType(status), "");
        end_code_ = absl::StrCat(static_cast<int>(status));
      } else {
        if (include_usage_) pending_ += UsageEvent(reply_, u.usage);
        pending_ += kDoneEvent;
        end_code_ = "200";
      }
      stream_done_ = true;
    }
    if (!writing_) Flush();
  }

  // One write in flight; what arrives meanwhile waits in pending_ and goes
  // out with the next write.
  void Flush() {
    if (closed_) return;
    if (!pending_.empty()) {
      inflight_.swap(pending_);
      pending_.clear();
      tokens_buffered_ = 0;
      writing_ = true;
      auto done = [self = this->shared_from_this()](error_code ec, size_t) { self->OnWritten(ec); };
      if (chunked_) {
        net::async_write(stream_, http::make_chunk(net::buffer(inflight_)), std::move(done));
      } else {
        net::async_write(stream_, net::buffer(inflight_), std::move(done));
      }
      return;
    }
    if (stream_done_) {
      stream_done_ = false;
      if (!chunked_) {
        End(end_code_);
        return LingerAndClose();
      }
      writing_ = true;
      net::async_write(stream_, http::make_chunk_last(), [self = this->shared_from_this()](error_code ec, size_t) {
        self->writing_ = false;
        self->End(self->end_code_);
        if (ec || !self->keep_alive_) return self->LingerAndClose();
        self->Next();
      });
    }
  }

  void OnWritten(error_code ec) {
    writing_ = false;
    if (ec) {  // the client is gone
      peer_gone_ = true;
      if (handle_) handle_->Cancel();
      if (finished_) End("499");
      return Close();
    }
    Flush();
  }

  // The request's code for ferry_requests_total, once per request.
  void Count(const std::string& code) {
    if (counted_) return;
    counted_ = true;
    api_->Count(code);
  }
  // A request that ran no longer holds up a drain.
  void Release() {
    if (!ran_) return;
    ran_ = false;
    api_->RequestReleased();
  }
  void End(const std::string& code) {
    Count(code);
    Release();
  }

  HttpApi::Impl* const api_;
  Stream stream_;
  net::steady_timer timer_;
  beast::flat_buffer buffer_;
  std::array<char, 4096> scratch_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> req_;
  std::string path_;
  unsigned version_ = 11;
  bool keep_alive_ = true;
  std::string allow_;
  bool closed_ = false;
  bool watching_ = false;
  bool resume_after_watch_ = false;
  bool peer_gone_ = false;

  // The request running now.
  bool counted_ = false;  // its code went to the metrics
  bool ran_ = false;      // it was submitted and its response is not yet out
  std::shared_ptr<runtime::Handle> handle_;
  ReplyContext reply_{};
  std::optional<CompletionBuilder> builder_;
  bool stream_mode_ = false, include_usage_ = false, chunked_ = true;
  bool finished_ = false, cut_off_ = false, stream_done_ = false, writing_ = false;
  std::optional<http::response<http::empty_body>> stream_res_;
  std::optional<http::response_serializer<http::empty_body>> serializer_;
  std::string pending_, inflight_;
  int tokens_buffered_ = 0;
  std::string end_code_;
};

}  // namespace

absl::Status HttpApi::Impl::Listen() {
  const ServeOptions& o = options_;
  if (!o.tls_cert.empty()) {
    tls_.emplace(ssl::context::tls_server);
    error_code ec;
    tls_->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                          ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1,
                      ec);
    tls_->use_certificate_chain_file(o.tls_cert, ec);
    if (ec) return absl::InvalidArgumentError(absl::StrCat("--tls_cert ", o.tls_cert, ": ", ec.message()));
    tls_->use_private_key_file(o.tls_key, ssl::context::pem, ec);
    if (ec) return absl::InvalidArgumentError(absl::StrCat("--tls_key ", o.tls_key, ": ", ec.message()));
    if (!o.tls_client_ca.empty()) {
      tls_->load_verify_file(o.tls_client_ca, ec);
      if (ec) return absl::InvalidArgumentError(absl::StrCat("--tls_client_ca ", o.tls_client_ca, ": ", ec.message()));
      tls_->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert, ec);
    }
  }
  error_code ec;
  // An address or a name (localhost), as gRPC takes --host.
  tcp::resolver resolver(ioc_);
  const auto resolved = resolver.resolve(o.host, std::to_string(o.http_port),
                                         tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || resolved.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("HTTP: cannot resolve --host ", o.host, ": ", ec.message()));
  }
  const tcp::endpoint endpoint = resolved.begin()->endpoint();
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("HTTP: cannot listen on ", o.host, ":", o.http_port, ": ", ec.message()));
  }
  Accept();
  for (int i = 0; i < kThreads; ++i) threads_.emplace_back([this] { ioc_.run(); });
  return absl::OkStatus();
}

void HttpApi::Impl::Accept() {
  acceptor_.async_accept(net::make_strand(ioc_), [this](error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted) return;  // Stop
    if (!ec) {
      socket.set_option(tcp::no_delay(true), ec);  // a token is a small write that should leave at once
      if (tls_) {
        std::make_shared<Connection<beast::ssl_stream<beast::tcp_stream>>>(
            this, beast::ssl_stream<beast::tcp_stream>(std::move(socket), *tls_))
            ->Start();
      } else {
        std::make_shared<Connection<beast::tcp_stream>>(this, beast::tcp_stream(std::move(socket)))->Start();
      }
    }
    Accept();
  });
}

HttpApi::HttpApi(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpApi::~HttpApi() { Stop(); }

absl::StatusOr<std::unique_ptr<HttpApi>> HttpApi::Start(const ServeOptions& options, Metrics* metrics) {
  auto impl = std::make_unique<Impl>(options, metrics);
  if (absl::Status s = impl->Listen(); !s.ok()) return s;
  return std::unique_ptr<HttpApi>(new HttpApi(std::move(impl)));
}

void HttpApi::Publish(const HttpEngine& engine) {
  impl_->created_ = absl::ToUnixSeconds(absl::Now());  // before the engine is seen
  impl_->engine_storage_ = std::make_unique<HttpEngine>(engine);
  impl_->engine_.store(impl_->engine_storage_.get(), std::memory_order_release);
}

void HttpApi::StartDrain() { impl_->draining_.store(true); }

bool HttpApi::WaitIdle(absl::Time deadline) {
  std::unique_lock<std::mutex> l(impl_->idle_mu_);
  return impl_->idle_cv_.wait_until(l, absl::ToChronoTime(deadline), [&] { return impl_->active_.load() == 0; });
}

void HttpApi::Stop() {
  if (impl_->stopped_) return;
  impl_->stopped_ = true;
  net::post(impl_->acceptor_.get_executor(), [impl = impl_.get()] {
    error_code ec;
    impl->acceptor_.close(ec);
  });
  impl_->guard_.reset();
  impl_->ioc_.stop();
  for (std::thread& t : impl_->threads_) t.join();
}

int HttpApi::port() const { return impl_->acceptor_.local_endpoint().port(); }

}  // namespace ferry::service
