// A `ferry serve` child process on free ports, and the gRPC client calls
// the server tests share. The including test target defines FERRY_BINARY.
#pragma once

#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "ferry/v1/inference.grpc.pb.h"

namespace ferry {

inline std::string TempDir() {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("ferry_server_test_" + std::to_string(getpid()));
  fs::create_directories(dir);
  return dir.string();
}

// A `ferry serve` child process; its output is collected by a thread.
class ServerProcess {
 public:
  explicit ServerProcess(const std::string& args) {
    int out[2];
    if (pipe(out) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], 1);
      dup2(out[1], 2);
      close(out[0]);
      const std::string cmd = std::string("exec ") + FERRY_BINARY + " serve --port 0 --metrics_port 0 " + args;
      execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(out[1]);
    fd_ = out[0];
    reader_ = std::thread([this] {
      char buf[4096];
      ssize_t n;
      while ((n = read(fd_, buf, sizeof(buf))) > 0) {
        std::lock_guard<std::mutex> l(mu_);
        output_.append(buf, n);
        grew_.notify_all();
      }
      std::lock_guard<std::mutex> l(mu_);
      closed_ = true;
      grew_.notify_all();
    });
  }
  ~ServerProcess() {
    if (pid_ > 0 && exit_code_ == kRunning) {
      kill(pid_, SIGKILL);
      Wait();
    }
    if (reader_.joinable()) reader_.join();
    if (fd_ >= 0) close(fd_);
  }

  // Waits for "serving" (true) or the process to end (false); sets port().
  bool WaitServing() {
    for (int i = 0; i < 600; ++i) {
      const std::string out = output();
      std::smatch m;
      static const std::regex listening("listening on [^ ]*:([0-9]+)");
      static const std::regex metrics("metrics on http://[^ ]*:([0-9]+)/");
      if (std::regex_search(out, m, listening)) port_ = std::stoi(m[1]);
      if (std::regex_search(out, m, metrics)) metrics_port_ = std::stoi(m[1]);
      if (out.find("ferry: serving") != std::string::npos) return port_ > 0;
      int status;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  int Wait() {
    if (exit_code_ != kRunning) return exit_code_;
    int status;
    waitpid(pid_, &status, 0);
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return exit_code_;
  }
  void Signal(int sig) { kill(pid_, sig); }
  // Waits (reading as the output arrives, not polling) until the output
  // holds `text` (true), or the process closed its output or `timeout` passed.
  bool WaitOutput(const std::string& text, std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
    std::unique_lock<std::mutex> l(mu_);
    return grew_.wait_for(l, timeout, [&] { return output_.find(text) != std::string::npos || closed_; }) &&
           output_.find(text) != std::string::npos;
  }
  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string output() {
    std::lock_guard<std::mutex> l(mu_);
    return output_;
  }

 private:
  static constexpr int kRunning = -1000;
  pid_t pid_ = -1;
  int fd_ = -1;
  int port_ = 0;
  int metrics_port_ = -1;
  int exit_code_ = kRunning;
  std::mutex mu_;
  std::condition_variable grew_;
  bool closed_ = false;
  std::string output_;
  std::thread reader_;
};

struct Generated {
  grpc::Status status;
  std::string text;
  std::vector<int32_t> ids;
  v1::GenerateResponse last;
  int messages = 0;
};

// Runs a Generate call to the end. `each` sees every message (and the
// context, to cancel); `setup` adjusts the context before the call.
inline Generated Generate(v1::Inference::Stub& stub, const v1::GenerateRequest& req,
                   const std::function<void(grpc::ClientContext&)>& setup = {},
                   const std::function<void(const v1::GenerateResponse&, grpc::ClientContext&)>& each = {}) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  if (setup) setup(ctx);
  Generated g;
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader = stub.Generate(&ctx, req);
  v1::GenerateResponse m;
  while (reader->Read(&m)) {
    ++g.messages;
    if (!m.echo_prompt()) {
      g.text += m.text();
      g.ids.insert(g.ids.end(), m.token_ids().begin(), m.token_ids().end());
    }
    g.last = m;
    if (each) each(m, ctx);
  }
  g.status = reader->Finish();
  return g;
}

inline v1::GenerateRequest Greedy(const std::string& text, int max_tokens) {
  v1::GenerateRequest r;
  r.set_text(text);
  r.set_max_tokens(max_tokens);
  r.mutable_sampling()->set_temperature(0);
  return r;
}

inline v1::Stats GetStats(v1::Inference::Stub& stub) {
  grpc::ClientContext ctx;
  v1::Stats s;
  const grpc::Status st = stub.GetStats(&ctx, {}, &s);
  EXPECT_TRUE(st.ok()) << st.error_message();
  return s;
}

// Polls until `pred` holds (true) or 30 s pass (false): the server acts at
// its next step, not at once.
inline bool Eventually(const std::function<bool()>& pred) {
  for (int i = 0; i < 600; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

inline std::unique_ptr<v1::Inference::Stub> Connect(const std::string& target) {
  return v1::Inference::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
}

}  // namespace ferry
