#include <utility>  // before Boost 1.74's Asio in C++20 (see http_api.cc)

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <nlohmann/json.hpp>
#include <optional>

#include "absl/strings/str_cat.h"
#include "service/loadgen_driver.h"

namespace ferry::service {
namespace {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;
using json = nlohmann::json;

// A worker's connection: plain TCP, or TLS when --tls_ca is given.
struct Connection {
  net::io_context ioc;
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls;
  beast::flat_buffer buffer;
};

class HttpDriver final : public Driver {
 public:
  explicit HttpDriver(const LoadgenOptions& o) : o_(o) {
    const size_t colon = o.target.rfind(':');
    host_ = o.target.substr(0, colon);
    port_ = colon == std::string::npos ? "80" : o.target.substr(colon + 1);
    if (host_.size() > 1 && host_.front() == '[') host_ = host_.substr(1, host_.size() - 2);
    body_ = json{{"prompt", o.prompt},
                 {"max_tokens", o.max_tokens},
                 {"temperature", o.temperature},
                 {"ignore_eos", o.ignore_eos},
                 {"stream", true},
                 {"stream_options", {{"include_usage", true}}}}
                .dump();
    if (!o.tls_ca.empty()) {
      // A file that cannot be read shows as failed handshakes (UNAVAILABLE), as with gRPC.
      beast::error_code ec;
      tls_.emplace(ssl::context::tls_client);
      tls_->load_verify_file(o.tls_ca, ec);
      tls_->set_verify_mode(ssl::verify_peer, ec);
      if (!o.tls_cert.empty()) {
        tls_->use_certificate_chain_file(o.tls_cert, ec);
        tls_->use_private_key_file(o.tls_key, ssl::context::pem, ec);
      }
    }
    connections_.resize(o.concurrency);
  }

  Outcome Run(int worker, const Mix&) override {
    std::unique_ptr<Connection>& c = connections_[worker];
    Outcome out;
    out.start = Clock::now();
    beast::error_code ec;
    if (!c) {
      c = std::make_unique<Connection>();
      tcp::resolver resolver(c->ioc);
      const auto endpoints = resolver.resolve(host_, port_, ec);
      if (!ec) {
        if (tls_) {
          c->tls.emplace(c->ioc, *tls_);
          SSL_set_tlsext_host_name(c->tls->native_handle(), host_.c_str());
          beast::get_lowest_layer(*c->tls).connect(endpoints, ec);
          if (!ec) c->tls->handshake(ssl::stream_base::client, ec);
        } else {
          c->plain.emplace(c->ioc);
          c->plain->connect(endpoints, ec);
        }
      }
      if (ec) {
        c.reset();
        out.code = "UNAVAILABLE";
        return out;
      }
      if (c->plain) c->plain->socket().set_option(tcp::no_delay(true));
      if (c->tls) beast::get_lowest_layer(*c->tls).socket().set_option(tcp::no_delay(true));
    }
    const bool ok = c->tls ? Exchange(*c->tls, c->buffer, &out) : Exchange(*c->plain, c->buffer, &out);
    if (!ok) c.reset();  // a broken or closed connection is made anew next time
    return out;
  }

 private:
  // One request and its streamed answer; false when the connection cannot be reused.
  template <class Stream>
  bool Exchange(Stream& stream, beast::flat_buffer& buffer, Outcome* out) {
    http::request<http::string_body> req(http::verb::post, "/v1/completions", 11);
    req.set(http::field::host, host_);
    req.set(http::field::content_type, "application/json");
    if (!o_.auth_token.empty()) req.set(http::field::authorization, "Bearer " + o_.auth_token);
    req.body() = body_;
    req.prepare_payload();
    beast::error_code ec;
    http::write(stream, req, ec);
    if (ec) {
      out->code = "UNAVAILABLE";
      return false;
    }
    http::response_parser<http::buffer_body> parser;
    parser.body_limit(std::numeric_limits<uint64_t>::max());
    http::read_header(stream, buffer, parser, ec);
    if (ec) {
      out->code = "UNAVAILABLE";
      return false;
    }
    const int status = static_cast<int>(parser.get().result_int());
    if (status != 200) out->code = absl::StrCat("HTTP ", status);
    std::string events;
    char data[16384];
    bool done = false;
    while (!parser.is_done()) {
      parser.get().body().data = data;
      parser.get().body().size = sizeof(data);
      http::read(stream, buffer, parser, ec);
      if (ec == http::error::need_buffer) ec = {};
      if (ec) {
        out->code = "UNAVAILABLE";
        return false;
      }
      const Clock::time_point now = Clock::now();
      events.append(data, sizeof(data) - parser.get().body().size);
      for (size_t end; status == 200 && (end = events.find("\n\n")) != std::string::npos;) {
        const std::string event = events.substr(0, end);
        events.erase(0, end + 2);
        if (event.rfind("data: ", 0) != 0) continue;
        if (event == "data: [DONE]") {
          done = true;
          continue;
        }
        const json j = json::parse(event.substr(6), nullptr, false);
        if (j.is_discarded() || j.contains("error")) {
          out->code = "HTTP stream error";
          continue;
        }
        if (j.contains("usage") && j["usage"].is_object()) out->tokens = j["usage"].value("completion_tokens", 0);
        if (j.contains("choices") && !j["choices"].empty()) out->arrivals.push_back(now);
      }
    }
    if (status == 200 && !done && out->code == "OK") out->code = "HTTP stream without [DONE]";
    return parser.get().keep_alive();
  }

  const LoadgenOptions& o_;
  std::string host_, port_, body_;
  std::optional<ssl::context> tls_;
  std::vector<std::unique_ptr<Connection>> connections_;  // one per worker, touched only by it
};

}  // namespace

std::unique_ptr<Driver> MakeHttpDriver(const LoadgenOptions& options) {
  return std::make_unique<HttpDriver>(options);
}

}  // namespace ferry::service
