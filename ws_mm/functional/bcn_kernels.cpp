// BCN on CPU (arXiv:1903.10520): the forward and backward of
// ws_mm/functional/batch_channel_norm.py, whose docstrings derive the
// math, with each group's block of the input (its channels, all samples)
// read from memory once and re-read while in cache, as group norm's own
// kernel does. Tensors are contiguous, float32 or float64: inputs (N, C, *),
// taken as (N, C, L) rows, outputs of their shape; per-row statistics
// (N, C), per-channel ones (C); the (N, C) arithmetic is in double.
// bcn_kernels.py builds this file.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

namespace {

// Calls f(g) for every group, split among torch's intra-op threads:
// at::get_num_threads, since this file's OpenMP runtime may not be torch's
// (torch 2.0.1's wheel bundles its own under another name).
template <typename F>
void for_groups(int64_t groups, int64_t numel, const F& f) {
  const int threads = numel < 32768 ? 1 : at::get_num_threads();
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t g = 0; g < groups; ++g) f(g);
}

// The sum of f(i) over a row, vectorized in T within blocks of 256
// elements, the blocks added in double: the rounding of a 256-term sum.
template <typename T, typename F>
double row_sum(int64_t length, const F& f) {
  double total = 0;
  for (int64_t start = 0; start < length; start += 256) {
    const int64_t stop = std::min<int64_t>(length, start + 256);
    T block = 0;
#pragma omp simd reduction(+ : block)
    for (int64_t i = start; i < stop; ++i) block += f(i);
    total += block;
  }
  return total;
}

// Mean and biased variance of a row in one pass, from the sums of its
// deviations from its first element and of their squares: the shift keeps
// a row far from 0 exact (a constant row has variance 0).
template <typename T>
void row_moments_of(const T* row, int64_t length, T* mean, T* var) {
  const T shift = row[0];
  double sum = 0, sum_sq = 0;
  for (int64_t start = 0; start < length; start += 256) {
    const int64_t stop = std::min<int64_t>(length, start + 256);
    T block = 0, block_sq = 0;
#pragma omp simd reduction(+ : block, block_sq)
    for (int64_t i = start; i < stop; ++i) {
      const T d = row[i] - shift;
      block += d;
      block_sq += d * d;
    }
    sum += block, sum_sq += block_sq;
  }
  const double m = sum / length;
  *mean = shift + m;
  *var = std::max(sum_sq / length - m * m, 0.0);
}

// One group's channels [c0, c0 + cg) in the channel stage's statistics
// (mean, var) and affine: z = scale * x + shift. Per sample, the group
// statistics of z follow from the rows' moments: gscale = group_weight /
// sqrt(var(z) + eps), and z's group mean.
struct Group {
  int64_t N, C, L, c0, cg;
  std::vector<double> m, v, scale, shift, rstd, mean, gmean, grstd;

  template <typename T>
  Group(int64_t N, int64_t C, int64_t L, int64_t c0, int64_t cg,
        const T* row_mean, const T* row_var, const T* ch_mean,
        const T* ch_var, const T* weight, const T* bias, double eps)
      : N(N), C(C), L(L), c0(c0), cg(cg), m(N * cg), v(N * cg), scale(cg),
        shift(cg), rstd(cg), mean(cg), gmean(N), grstd(N) {
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < cg; ++k) {
        m[n * cg + k] = row_mean[n * C + c0 + k];
        v[n * cg + k] = row_var[n * C + c0 + k];
      }
    for (int64_t k = 0; k < cg; ++k) {
      mean[k] = ch_mean[c0 + k];
      rstd[k] = 1 / std::sqrt(ch_var[c0 + k] + eps);
      scale[k] = weight[c0 + k] * rstd[k];
      shift[k] = bias[c0 + k] - mean[k] * scale[k];
    }
    for (int64_t n = 0; n < N; ++n) {
      double sum = 0, sum_sq = 0;
      for (int64_t k = 0; k < cg; ++k) sum += z_mean(n, k);
      gmean[n] = sum / cg;
      for (int64_t k = 0; k < cg; ++k) {
        const double d = z_mean(n, k) - gmean[n];
        sum_sq += d * d + scale[k] * scale[k] * v[n * cg + k];
      }
      grstd[n] = 1 / std::sqrt(sum_sq / cg + eps);
    }
  }

  double z_mean(int64_t n, int64_t k) const {
    return scale[k] * m[n * cg + k] + shift[k];
  }
  int64_t row(int64_t n, int64_t k) const { return (n * C + c0 + k) * L; }
};

// The channel statistics of channels [c0, c0 + cg): the batch's, pooled
// from the rows' moments (the law of total variance), into batch_*; then
// those to normalize with, into ch_*: the batch's if none are given (given
// null), else the given ones moved toward the batch's mean and its second
// moment around the given mean by rate (0: the given ones).
template <typename T>
void channel_statistics(const T* row_mean, const T* row_var,
                        const T* given_mean, const T* given_var, double rate,
                        T* batch_mean, T* batch_var, T* ch_mean, T* ch_var,
                        int64_t N, int64_t C, int64_t c0, int64_t cg) {
  for (int64_t c = c0; c < c0 + cg; ++c) {
    double mean = 0, var = 0;
    for (int64_t n = 0; n < N; ++n) mean += row_mean[n * C + c];
    mean /= N;
    for (int64_t n = 0; n < N; ++n) {
      const double d = row_mean[n * C + c] - mean;
      var += row_var[n * C + c] + d * d;
    }
    var /= N;
    batch_mean[c] = mean, batch_var[c] = var;
    if (!given_mean) {
      ch_mean[c] = mean, ch_var[c] = var;
    } else if (rate == 0) {  // not 0 * the batch's: those may be NaN
      ch_mean[c] = given_mean[c], ch_var[c] = given_var[c];
    } else {
      const double m = given_mean[c], d = mean - m;
      ch_mean[c] = m + rate * d;
      ch_var[c] = given_var[c] + rate * (var + d * d - given_var[c]);
    }
  }
}

template <typename T>
void forward_group(const T* x, T* y, T* row_mean, T* row_var,
                   const T* given_mean, const T* given_var, double rate,
                   T* batch_mean, T* batch_var, T* ch_mean, T* ch_var,
                   const T* weight, const T* bias, double group_weight,
                   double group_bias, double eps, int64_t N, int64_t C,
                   int64_t L, int64_t c0, int64_t cg) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = c0; c < c0 + cg; ++c)
      row_moments_of(x + (n * C + c) * L, L, row_mean + n * C + c,
                     row_var + n * C + c);
  channel_statistics(row_mean, row_var, given_mean, given_var, rate,
                     batch_mean, batch_var, ch_mean, ch_var, N, C, c0, cg);
  const Group s(N, C, L, c0, cg, row_mean, row_var, ch_mean, ch_var, weight,
                bias, eps);
  // y = a * (x - row mean) + b: b is the group-normalized row mean of z
  for (int64_t n = 0; n < N; ++n) {
    const double gscale = s.grstd[n] * group_weight;
    for (int64_t k = 0; k < cg; ++k) {
      const int64_t at = s.row(n, k);
      const T a = s.scale[k] * gscale, mu = s.m[n * cg + k],
              b = group_bias + gscale * (s.z_mean(n, k) - s.gmean[n]);
#pragma omp simd
      for (int64_t i = 0; i < L; ++i) y[at + i] = a * (x[at + i] - mu) + b;
    }
  }
}

// Group norm's backward in z, then the channel stage's: a per-channel
// affine's, or with batch statistics batch norm's; from the rows' sums of
// grad and grad * (x - row mean). Accumulates the affines' gradients.
template <typename T>
void backward_group(const T* grad, const T* x, T* grad_x, const Group& s,
                    const T* bias, double group_weight, bool batch,
                    T* grad_weight, T* grad_bias, T* grad_group_weight,
                    T* grad_group_bias) {
  const int64_t N = s.N, cg = s.cg, L = s.L;
  std::vector<double> sum_g(N * cg), sum_gx(N * cg);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < cg; ++k) {
      const T *gr = grad + s.row(n, k), *xr = x + s.row(n, k),
              mu = s.m[n * cg + k];
      sum_g[n * cg + k] = row_sum<T>(L, [&](int64_t i) { return gr[i]; });
      sum_gx[n * cg + k] = row_sum<T>(
          L, [&](int64_t i) { return gr[i] * (xr[i] - mu); });
    }
  // per sample: grad_z = gscale * grad + coef * z + constant
  const double size = double(L) * cg;
  std::vector<double> coef(N), constant(N), shift_sum(cg, 0),
      weight_sum(cg, 0);
  double group_sum_all = 0, group_weight_sum = 0;
  for (int64_t n = 0; n < N; ++n) {
    double group_sum = 0, group_sum_z = 0;  // of grad, of grad * z
    for (int64_t k = 0; k < cg; ++k) {
      const double delta = s.m[n * cg + k] - s.mean[k];
      const double sum_gxm = sum_gx[n * cg + k] + delta * sum_g[n * cg + k];
      group_sum += sum_g[n * cg + k];
      group_sum_z += bias[s.c0 + k] * sum_g[n * cg + k] + s.scale[k] * sum_gxm;
    }
    const double group_sum_zc = group_sum_z - s.gmean[n] * group_sum;
    const double gscale = s.grstd[n] * group_weight;
    group_sum_all += group_sum;
    group_weight_sum += group_sum_zc * s.grstd[n];
    coef[n] = group_sum_zc * s.grstd[n] * s.grstd[n] * gscale / -size;
    constant[n] = -coef[n] * s.gmean[n] - gscale * group_sum / size;
    // the rows' sums of grad_z and grad_z * (x - mean)
    for (int64_t k = 0; k < cg; ++k) {
      const double delta = s.m[n * cg + k] - s.mean[k];
      const double sum_gxm = sum_gx[n * cg + k] + delta * sum_g[n * cg + k];
      const double var = s.v[n * cg + k];
      shift_sum[k] += gscale * sum_g[n * cg + k] +
                      (coef[n] * s.z_mean(n, k) + constant[n]) * L;
      weight_sum[k] +=
          gscale * sum_gxm +
          L * (coef[n] * (s.scale[k] * (var + delta * delta) +
                          bias[s.c0 + k] * delta) +
               constant[n] * delta);
    }
  }
  *grad_group_bias = group_sum_all;
  *grad_group_weight = group_weight_sum;
  for (int64_t k = 0; k < cg; ++k) {
    grad_bias[s.c0 + k] = shift_sum[k];
    grad_weight[s.c0 + k] = s.rstd[k] * weight_sum[k];
  }
  if (!grad_x) return;
  // grad_x = scale * grad_z, less with batch statistics batch norm's
  // mean(grad_z) and x_hat * mean(grad_z * x_hat) over the channel
  const double count = double(N) * L;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < cg; ++k) {
      const double delta = s.m[n * cg + k] - s.mean[k];
      double p = coef[n] * s.scale[k],
             q = coef[n] * s.z_mean(n, k) + constant[n];
      if (batch) {
        const double kk = s.rstd[k] * s.rstd[k] * weight_sum[k] / count;
        p -= kk;
        q -= shift_sum[k] / count + kk * delta;
      }
      const int64_t at = s.row(n, k);
      const T a = s.scale[k] * s.grstd[n] * group_weight, xp = p * s.scale[k],
              c = q * s.scale[k], mu = s.m[n * cg + k];
#pragma omp simd
      for (int64_t i = 0; i < L; ++i)
        grad_x[at + i] = a * grad[at + i] + xp * (x[at + i] - mu) + c;
    }
}

void check(const at::Tensor& x) {
  TORCH_CHECK(x.is_contiguous() && x.is_cpu() &&
                  (x.scalar_type() == at::kFloat ||
                   x.scalar_type() == at::kDouble),
              "ws_mm BCN kernels take contiguous float32/float64 CPU tensors");
}

// t as a contiguous tensor of x's dtype with `count` elements (of any shape)
at::Tensor like(const at::Tensor& x, const at::Tensor& t, int64_t count) {
  TORCH_CHECK(t.numel() == count && t.device() == x.device(),
              "ws_mm BCN kernels: an operand has ", t.numel(),
              " elements, expected ", count);
  return t.to(x.scalar_type()).contiguous();
}

std::vector<at::Tensor> row_moments(const at::Tensor& rows) {
  check(rows);
  TORCH_CHECK(rows.dim() == 2, "row_moments takes (R, L) rows");
  const int64_t count = rows.size(0), length = rows.size(1);
  auto mean = at::empty({count}, rows.options());
  auto var = at::empty({count}, rows.options());
  AT_DISPATCH_FLOATING_TYPES(rows.scalar_type(), "row_moments", [&] {
    const scalar_t* x = rows.data_ptr<scalar_t>();
    scalar_t *mp = mean.data_ptr<scalar_t>(), *vp = var.data_ptr<scalar_t>();
    for_groups(count, rows.numel(), [&](int64_t r) {
      row_moments_of(x + r * length, length, mp + r, vp + r);
    });
  });
  return {mean, var};
}

// -> y, the rows' mean and variance (N, C), the channel statistics it
// normalized with, and the batch's (C): see channel_statistics. Parameters
// may have any shape and floating dtype.
std::vector<at::Tensor> forward(const at::Tensor& x, int64_t groups,
                                const c10::optional<at::Tensor>& mean,
                                const c10::optional<at::Tensor>& var,
                                double rate, const at::Tensor& weight,
                                const at::Tensor& bias,
                                const at::Tensor& group_weight,
                                const at::Tensor& group_bias, double eps) {
  check(x);
  TORCH_CHECK(x.dim() >= 2 && x.size(0) * x.size(1) > 0 && groups > 0 &&
                  x.size(1) % groups == 0,
              "BCN forward takes (N, C, *) with groups dividing C");
  TORCH_CHECK(mean.has_value() == var.has_value(),
              "BCN forward takes both a mean and a variance, or neither");
  const int64_t N = x.size(0), C = x.size(1), L = x.numel() / (N * C);
  const auto w = like(x, weight, C), b = like(x, bias, C),
             gw = like(x, group_weight, groups),
             gb = like(x, group_bias, groups);
  at::Tensor given_mean, given_var;
  if (mean) given_mean = like(x, *mean, C), given_var = like(x, *var, C);
  auto y = at::empty_like(x);
  auto row_mean = at::empty({N, C}, x.options());
  auto row_var = at::empty({N, C}, x.options());
  std::vector<at::Tensor> stats;
  for (int i = 0; i < 4; ++i) stats.push_back(at::empty({C}, x.options()));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bcn_forward", [&] {
    const scalar_t* gwp = gw.data_ptr<scalar_t>();
    const scalar_t* gbp = gb.data_ptr<scalar_t>();
    const scalar_t* gm = mean ? given_mean.data_ptr<scalar_t>() : nullptr;
    const scalar_t* gv = mean ? given_var.data_ptr<scalar_t>() : nullptr;
    for_groups(groups, x.numel(), [&](int64_t g) {
      forward_group(x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                    row_mean.data_ptr<scalar_t>(), row_var.data_ptr<scalar_t>(),
                    gm, gv, rate, stats[2].data_ptr<scalar_t>(),
                    stats[3].data_ptr<scalar_t>(),
                    stats[0].data_ptr<scalar_t>(),
                    stats[1].data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                    b.data_ptr<scalar_t>(), gwp[g], gbp[g], eps, N, C, L,
                    g * (C / groups), C / groups);
    });
  });
  return {y, row_mean, row_var, stats[0], stats[1], stats[2], stats[3]};
}

// -> grad_x (undefined unless input_grad), and the gradients of weight,
// bias and the group affine, each of its parameter's shape and dtype
std::vector<at::Tensor> backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& row_mean,
    const at::Tensor& row_var, const at::Tensor& ch_mean,
    const at::Tensor& ch_var, const at::Tensor& weight, const at::Tensor& bias,
    const at::Tensor& group_weight, double eps, bool batch, bool input_grad) {
  check(x);
  TORCH_CHECK(x.dim() >= 2 && x.size(0) * x.size(1) > 0 &&
                  grad.sizes() == x.sizes(),
              "BCN backward takes grad and x of the same (N, C, *) shape");
  const int64_t N = x.size(0), C = x.size(1), L = x.numel() / (N * C);
  const int64_t groups = group_weight.numel();
  TORCH_CHECK(groups > 0 && C % groups == 0,
              "BCN backward: the groups do not divide the channels");
  const auto g_ = like(x, grad, x.numel()), rm = like(x, row_mean, N * C),
             rv = like(x, row_var, N * C), cm = like(x, ch_mean, C),
             cv = like(x, ch_var, C), w = like(x, weight, C),
             b = like(x, bias, C), gw = like(x, group_weight, groups);
  at::Tensor grad_x = input_grad ? at::empty_like(x) : at::Tensor();
  auto grad_w = at::empty({C}, x.options()),
       grad_b = at::empty({C}, x.options());
  auto grad_gw = at::empty({groups}, x.options()),
       grad_gb = at::empty({groups}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bcn_backward", [&] {
    const scalar_t *gwp = gw.data_ptr<scalar_t>(), *bp = b.data_ptr<scalar_t>();
    scalar_t* gx = input_grad ? grad_x.data_ptr<scalar_t>() : nullptr;
    for_groups(groups, x.numel(), [&](int64_t g) {
      const Group s(N, C, L, g * (C / groups), C / groups,
                    rm.data_ptr<scalar_t>(), rv.data_ptr<scalar_t>(),
                    cm.data_ptr<scalar_t>(), cv.data_ptr<scalar_t>(),
                    w.data_ptr<scalar_t>(), bp, eps);
      backward_group(g_.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), gx, s, bp,
                     gwp[g], batch, grad_w.data_ptr<scalar_t>(),
                     grad_b.data_ptr<scalar_t>(),
                     grad_gw.data_ptr<scalar_t>() + g,
                     grad_gb.data_ptr<scalar_t>() + g);
    });
  });
  return {grad_x, grad_w.view(weight.sizes()).to(weight.scalar_type()),
          grad_b.view(bias.sizes()).to(bias.scalar_type()),
          grad_gw.view(group_weight.sizes()).to(group_weight.scalar_type()),
          grad_gb.view(group_weight.sizes()).to(group_weight.scalar_type())};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("row_moments", &row_moments, "mean and biased variance per row");
  m.def("forward", &forward, "BCN's output and statistics");
  m.def("backward", &backward, "BCN's gradients");
}
