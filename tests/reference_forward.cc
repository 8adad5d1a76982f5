#include "tests/reference_forward.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "engine/quant/quantize.h"

namespace ferry::testing {
namespace {

absl::Status Decode(const gguf::File& f, const std::string& name, std::vector<double>* out) {
  const gguf::TensorInfo* t = f.FindTensor(name);
  if (t == nullptr) return absl::NotFoundError(name);
  std::vector<float> tmp(t->elements);
  absl::Status s = quant::DequantizeRow(t->type, std::span(t->data, t->bytes), tmp);
  out->assign(tmp.begin(), tmp.end());
  return s;
}

std::vector<double> MatVec(const std::vector<double>& w, const std::vector<double>& x, int rows) {
  const size_t cols = x.size();
  std::vector<double> y(rows, 0.0);
  for (int r = 0; r < rows; ++r) {
    for (size_t c = 0; c < cols; ++c) y[r] += w[r * cols + c] * x[c];
  }
  return y;
}

std::vector<double> Norm(const std::vector<double>& x, const std::vector<double>& w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double k = 1.0 / std::sqrt(ss / x.size() + eps);
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * k * w[i];
  return y;
}

}  // namespace

absl::StatusOr<ReferenceModel> ReferenceModel::Load(const gguf::File& f) {
  ReferenceModel m;
  m.arch_ = std::string(*f.GetString("general.architecture"));
  const std::string p = m.arch_ + ".";
  auto u = [&](const std::string& k, int def) { return f.Has(p + k) ? static_cast<int>(*f.GetUint(p + k)) : def; };
  auto d = [&](const std::string& k, double def) { return f.Has(p + k) ? *f.GetFloat(p + k) : def; };
  m.n_embd_ = u("embedding_length", 0);
  m.n_head_ = u("attention.head_count", 0);
  m.n_kv_ = u("attention.head_count_kv", m.n_head_);
  m.head_dim_ = u("attention.key_length", m.n_embd_ / m.n_head_);
  m.n_ff_ = u("feed_forward_length", 0);
  m.n_layer_ = u("block_count", 0);
  m.eps_ = d("attention.layer_norm_rms_epsilon", 1e-5);
  m.base_ = d("rope.freq_base", 10000.0);
  m.q_scale_ = 1.0 / std::sqrt(static_cast<double>(m.head_dim_));
  if (f.Has(p + "rope.scaling.type") && *f.GetString(p + "rope.scaling.type") == "linear") {
    m.pos_scale_ = 1.0 / d("rope.scaling.factor", 1.0);
  }
  if (f.FindTensor("rope_freqs.weight")) {
    if (absl::Status s = Decode(f, "rope_freqs.weight", &m.freq_factors_); !s.ok()) return s;
  }
  if (m.arch_ == "gemma2") {
    m.attn_cap_ = d("attn_logit_softcapping", 0);
    m.final_cap_ = d("final_logit_softcapping", 0);
    m.window_ = u("attention.sliding_window", 0);
    m.emb_scale_ = std::sqrt(static_cast<double>(m.n_embd_));
  }
  if (m.arch_ == "gemma3") {  // Gemma 3: 5 local layers (base 10000) to 1 global one, no soft-caps
    m.window_ = u("attention.sliding_window", 0);
    m.window_every_ = 6;
    if (m.window_ > 0) m.local_base_ = 10000.0;
    m.emb_scale_ = std::sqrt(static_cast<double>(m.n_embd_));
  }
  for (absl::Status s : {Decode(f, "token_embd.weight", &m.embd_), Decode(f, "output_norm.weight", &m.out_norm_)}) {
    if (!s.ok()) return s;
  }
  if (f.FindTensor("output.weight")) {
    if (absl::Status s = Decode(f, "output.weight", &m.out_); !s.ok()) return s;
  } else {
    m.out_ = m.embd_;
  }
  m.n_vocab_ = static_cast<int>(m.embd_.size() / m.n_embd_);
  for (int l = 0; l < m.n_layer_; ++l) {
    Layer L;
    const std::string b = absl::StrCat("blk.", l, ".");
    for (auto [name, dst] : std::vector<std::pair<std::string, std::vector<double>*>>{
             {"attn_norm.weight", &L.attn_norm}, {"ffn_norm.weight", &L.ffn_norm}, {"attn_q.weight", &L.wq},
             {"attn_k.weight", &L.wk}, {"attn_v.weight", &L.wv}, {"attn_output.weight", &L.wo},
             {"ffn_gate.weight", &L.gate}, {"ffn_up.weight", &L.up}, {"ffn_down.weight", &L.down}}) {
      if (absl::Status s = Decode(f, b + name, dst); !s.ok()) return s;
    }
    for (auto [name, dst] : std::vector<std::pair<std::string, std::vector<double>*>>{
             {"attn_q.bias", &L.bq}, {"attn_k.bias", &L.bk}, {"attn_v.bias", &L.bv},
             {"post_attention_norm.weight", &L.post_attn_norm}, {"post_ffw_norm.weight", &L.post_ffn_norm},
             {"attn_q_norm.weight", &L.q_norm}, {"attn_k_norm.weight", &L.k_norm}}) {
      if (f.FindTensor(b + name)) {
        if (absl::Status s = Decode(f, b + name, dst); !s.ok()) return s;
      }
    }
    m.layers_.push_back(std::move(L));
  }
  return m;
}

std::vector<std::vector<double>> ReferenceModel::Logits(const std::vector<int32_t>& tokens) const {
  const int T = static_cast<int>(tokens.size()), E = n_embd_, hd = head_dim_;
  const bool neox = arch_ != "llama";
  std::vector<std::vector<double>> x(T, std::vector<double>(E));
  for (int t = 0; t < T; ++t) {
    for (int i = 0; i < E; ++i) x[t][i] = embd_[static_cast<size_t>(tokens[t]) * E + i] * emb_scale_;
  }
  // Each head of q or k normalized on its own (qwen3, gemma3).
  auto head_norm = [&](std::vector<double>& v, int heads, const std::vector<double>& w) {
    if (w.empty()) return;
    for (int h = 0; h < heads; ++h) {
      const std::vector<double> head(v.begin() + h * hd, v.begin() + (h + 1) * hd);
      const std::vector<double> n = Norm(head, w, eps_);
      std::copy(n.begin(), n.end(), v.begin() + h * hd);
    }
  };
  auto rope = [&](std::vector<double>& v, int heads, int pos, bool local) {
    for (int h = 0; h < heads; ++h) {
      for (int i = 0; i < hd / 2; ++i) {
        double theta = local ? pos * std::pow(local_base_, -2.0 * i / hd)
                             : pos * pos_scale_ * std::pow(base_, -2.0 * i / hd);
        if (!freq_factors_.empty()) theta /= freq_factors_[i];
        const int a = neox ? h * hd + i : h * hd + 2 * i;
        const int b = neox ? h * hd + i + hd / 2 : h * hd + 2 * i + 1;
        const double x0 = v[a], x1 = v[b];
        v[a] = x0 * std::cos(theta) - x1 * std::sin(theta);
        v[b] = x0 * std::sin(theta) + x1 * std::cos(theta);
      }
    }
  };
  for (int l = 0; l < n_layer_; ++l) {
    const Layer& L = layers_[l];
    const bool sliding = window_ > 0 && l % window_every_ != window_every_ - 1;
    std::vector<std::vector<double>> q(T), k(T), v(T);
    for (int t = 0; t < T; ++t) {
      const std::vector<double> xn = Norm(x[t], L.attn_norm, eps_);
      q[t] = MatVec(L.wq, xn, n_head_ * hd);
      k[t] = MatVec(L.wk, xn, n_kv_ * hd);
      v[t] = MatVec(L.wv, xn, n_kv_ * hd);
      for (size_t i = 0; i < L.bq.size(); ++i) q[t][i] += L.bq[i];
      for (size_t i = 0; i < L.bk.size(); ++i) k[t][i] += L.bk[i];
      for (size_t i = 0; i < L.bv.size(); ++i) v[t][i] += L.bv[i];
      head_norm(q[t], n_head_, L.q_norm);
      head_norm(k[t], n_kv_, L.k_norm);
      rope(q[t], n_head_, t, sliding && local_base_ > 0);
      rope(k[t], n_kv_, t, sliding && local_base_ > 0);
    }
    for (int t = 0; t < T; ++t) {
      std::vector<double> att(n_head_ * hd, 0.0);
      for (int h = 0; h < n_head_; ++h) {
        const int kvh = h / (n_head_ / n_kv_);
        const int lo = sliding ? std::max(0, t - window_ + 1) : 0;
        std::vector<double> s;
        for (int j = lo; j <= t; ++j) {
          double dot = 0;
          for (int i = 0; i < hd; ++i) dot += q[t][h * hd + i] * k[j][kvh * hd + i];
          dot *= q_scale_;
          if (attn_cap_ > 0) dot = attn_cap_ * std::tanh(dot / attn_cap_);
          s.push_back(dot);
        }
        double mx = s[0], sum = 0;
        for (double e : s) mx = std::max(mx, e);
        for (double& e : s) sum += e = std::exp(e - mx);
        for (int j = lo; j <= t; ++j) {
          for (int i = 0; i < hd; ++i) att[h * hd + i] += s[j - lo] / sum * v[j][kvh * hd + i];
        }
      }
      std::vector<double> o = MatVec(L.wo, att, E);
      if (!L.post_attn_norm.empty()) o = Norm(o, L.post_attn_norm, eps_);
      for (int i = 0; i < E; ++i) x[t][i] += o[i];
      const std::vector<double> xn = Norm(x[t], L.ffn_norm, eps_);
      std::vector<double> g = MatVec(L.gate, xn, n_ff_), u = MatVec(L.up, xn, n_ff_);
      for (int i = 0; i < n_ff_; ++i) {
        const double a = g[i];
        const double act = arch_ == "gemma2" || arch_ == "gemma3"
                               ? 0.5 * a * (1 + std::tanh(std::sqrt(2 / M_PI) * (a + 0.044715 * a * a * a)))
                               : a / (1 + std::exp(-a));
        g[i] = act * u[i];
      }
      std::vector<double> dn = MatVec(L.down, g, E);
      if (!L.post_ffn_norm.empty()) dn = Norm(dn, L.post_ffn_norm, eps_);
      for (int i = 0; i < E; ++i) x[t][i] += dn[i];
    }
  }
  std::vector<std::vector<double>> logits(T);
  for (int t = 0; t < T; ++t) {
    logits[t] = MatVec(out_, Norm(x[t], out_norm_, eps_), n_vocab_);
    if (final_cap_ > 0) {
      for (double& z : logits[t]) z = final_cap_ * std::tanh(z / final_cap_);
    }
  }
  return logits;
}

}  // namespace ferry::testing
