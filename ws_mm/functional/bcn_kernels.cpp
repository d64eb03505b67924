// BCN on CPU (arXiv:1903.10520): the forward and backward of
// ws_mm/functional/batch_channel_norm.py, whose docstrings derive the
// math, with each block of the input read from memory once and re-read
// while in cache, as group norm's own kernel does: a group's channels in
// all samples where the batch's channel statistics are needed, else one
// sample's. Tensors are contiguous, float32 or float64: inputs (N, C, *),
// taken as (N, C, L) rows, outputs of their shape; per-row statistics
// (N, C), per-channel ones (C); the (N, C) arithmetic is in double.
// They run as an autograd function in C++ (bcn), which updates running
// estimates in place too: at a small input, Python's share of a call
// (an autograd Function, a dozen small torch ops) would cost more than
// the kernels. bcn_kernels.py builds this file.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace {

// Calls f(i) for i < count (groups, rows...) of an input of numel
// elements, split among torch's intra-op threads: at::get_num_threads,
// since this file's OpenMP runtime may not be torch's (torch 2.0.1's wheel
// bundles its own under another name).
template <typename F>
void in_parallel(int64_t count, int64_t numel, const F& f) {
  const int threads = numel < 32768 ? 1 : at::get_num_threads();
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < count; ++i) f(i);
}

// 32 bytes of T: an AVX register, or two SSE or NEON ones, as the build's
// flags allow (GCC's and Clang's vector extensions).
template <typename T>
struct Vector;
template <>
struct Vector<float> {
  typedef float type __attribute__((vector_size(32)));
};
template <>
struct Vector<double> {
  typedef double type __attribute__((vector_size(32)));
};

template <typename T>
T lane_sum(typename Vector<T>::type v) {
  constexpr int width = sizeof v / sizeof(T);
  T lanes[width];
  std::memcpy(lanes, &v, sizeof v);
  for (int half = width / 2; half > 0; half /= 2)  // a tree, vectorized
    for (int j = 0; j < half; ++j) lanes[j] += lanes[j + half];
  return lanes[0];
}

// Two sums over a row of terms of its elements a[i], b[i]: add(a, b, s, q)
// adds them to s and q, for a register's width of elements or for one. In
// T within blocks of 256 elements, the blocks added in double: the rounding
// of a 256-term sum. The registers' lanes are added as a tree: an `omp
// simd` reduction adds them one by one, which costs as much as a row of
// 7x7 elements.
template <typename T, typename Add>
void row_sums(const T* a, const T* b, int64_t length, const Add& add,
              double* sum, double* sum_q) {
  using V = typename Vector<T>::type;
  constexpr int64_t width = sizeof(V) / sizeof(T);
  const auto load = [](const T* at) {
    V v;
    std::memcpy(&v, at, sizeof v);
    return v;
  };
  double total = 0, total_q = 0;
  for (int64_t start = 0; start < length; start += 256) {
    const int64_t stop = std::min<int64_t>(length, start + 256);
    V s = {}, q = {}, s2 = {}, q2 = {};  // two pairs: two chains of adds
    int64_t i = start;
    for (; i + 2 * width <= stop; i += 2 * width) {
      add(load(a + i), load(b + i), s, q);
      add(load(a + i + width), load(b + i + width), s2, q2);
    }
    if (i + width <= stop) add(load(a + i), load(b + i), s, q), i += width;
    T block = lane_sum<T>(s + s2), block_q = lane_sum<T>(q + q2);
    for (; i < stop; ++i) add(a[i], b[i], block, block_q);
    total += block, total_q += block_q;
  }
  *sum = total, *sum_q = total_q;
}

// The sums of a row's grad and of grad * (x - mu).
template <typename T>
void row_sums_of(const T* grad, const T* x, T mu, int64_t length,
                 double* sum, double* sum_x) {
  row_sums(grad, x, length, [mu](auto g, auto v, auto& s, auto& q) {
    s += g;
    q += g * (v - mu);
  }, sum, sum_x);
}

// Mean and biased variance of a row in one pass, from the sums of its
// deviations from its first element and of their squares: the shift keeps
// a row far from 0 exact (a constant row has variance 0).
template <typename T>
void row_moments_of(const T* row, int64_t length, T* mean, T* var) {
  const T shift = row[0];
  double sum, sum_sq;
  row_sums(row, row, length, [shift](auto v, auto, auto& s, auto& q) {
    const auto d = v - shift;
    s += d;
    q += d * d;
  }, &sum, &sum_sq);
  const double m = sum / length;
  *mean = shift + m;
  *var = std::max(sum_sq / length - m * m, 0.0);
}

// z's mean over one sample's rows of a group, and 1 / sqrt(var(z) + eps),
// from the rows' means m[k] and variances v[k] (k < cg), z = scale * x +
// shift row by row.
template <typename M>
void group_moments(int64_t cg, const double* scale, const double* shift,
                   const M* m, const M* v, double eps, double* gmean,
                   double* grstd) {
  double sum = 0, sum_sq = 0;
  for (int64_t k = 0; k < cg; ++k) sum += scale[k] * m[k] + shift[k];
  *gmean = sum / cg;
  for (int64_t k = 0; k < cg; ++k) {
    const double d = scale[k] * m[k] + shift[k] - *gmean;
    sum_sq += d * d + scale[k] * scale[k] * v[k];
  }
  *grstd = 1 / std::sqrt(sum_sq / cg + eps);
}

// y = a * (x - m) + b on one sample's rows of a group (x and y at its
// first row): a = scale * gscale, b the group-normalized row mean of z.
template <typename T, typename M>
void normalize_rows(const T* x, T* y, int64_t L, int64_t cg,
                    const double* scale, const double* shift, const M* m,
                    double gmean, double gscale, double group_bias) {
  for (int64_t k = 0; k < cg; ++k) {
    const T a = scale[k] * gscale, mu = m[k],
            b = group_bias + gscale * (scale[k] * m[k] + shift[k] - gmean);
    const T* in = x + k * L;
    T* out = y + k * L;
#pragma omp simd
    for (int64_t i = 0; i < L; ++i) out[i] = a * (in[i] - mu) + b;
  }
}

// One group's channels [c0, c0 + cg) in the channel stage's statistics
// (mean, var) and affine: z = scale * x + shift; and per sample (add_sample)
// its rows' moments and group statistics.
struct Group {
  int64_t N, C, L, c0, cg;
  double eps;
  std::vector<double> buffer;  // one allocation for the arrays below
  double *m, *v, *scale, *shift, *rstd, *mean, *gmean, *grstd;

  template <typename T>
  Group(int64_t N, int64_t C, int64_t L, int64_t c0, int64_t cg,
        const T* ch_mean, const T* ch_var, const T* weight, const T* bias,
        double eps)
      : N(N), C(C), L(L), c0(c0), cg(cg), eps(eps),
        buffer(2 * N * cg + 4 * cg + 2 * N) {
    double* at = buffer.data();
    for (double** array : {&m, &v}) *array = at, at += N * cg;
    for (double** array : {&scale, &shift, &rstd, &mean}) *array = at, at += cg;
    gmean = at, grstd = at + N;
    for (int64_t k = 0; k < cg; ++k) {
      mean[k] = ch_mean[c0 + k];
      rstd[k] = 1 / std::sqrt(ch_var[c0 + k] + eps);
      scale[k] = weight[c0 + k] * rstd[k];
      shift[k] = bias[c0 + k] - mean[k] * scale[k];
    }
  }
  Group(const Group&) = delete;

  template <typename T>
  void add_sample(int64_t n, const T* row_mean, const T* row_var) {
    for (int64_t k = 0; k < cg; ++k) {
      m[n * cg + k] = row_mean[n * C + c0 + k];
      v[n * cg + k] = row_var[n * C + c0 + k];
    }
    group_moments(cg, scale, shift, m + n * cg, v + n * cg, eps, gmean + n,
                  grstd + n);
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
  // samples outermost: a sample's rows of the group are next to each other
  std::vector<double> sums(2 * cg, 0.0);
  double *means = sums.data(), *vars = means + cg;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < cg; ++k) means[k] += row_mean[n * C + c0 + k];
  for (int64_t k = 0; k < cg; ++k) means[k] /= N;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < cg; ++k) {
      const double d = row_mean[n * C + c0 + k] - means[k];
      vars[k] += row_var[n * C + c0 + k] + d * d;
    }
  for (int64_t c = c0; c < c0 + cg; ++c) {
    const double mean = means[c - c0], var = vars[c - c0] / N;
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

// One group, all samples: every sample's moments first, for the channel
// statistics.
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
  Group s(N, C, L, c0, cg, ch_mean, ch_var, weight, bias, eps);
  for (int64_t n = 0; n < N; ++n) {
    s.add_sample(n, row_mean, row_var);
    normalize_rows(x + s.row(n, 0), y + s.row(n, 0), L, cg, s.scale, s.shift,
                   s.m + n * cg, s.gmean[n], s.grstd[n] * group_weight,
                   group_bias);
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
  std::vector<double> buffer(2 * N * cg + 2 * N + 2 * cg, 0.0);
  double *sum_g = buffer.data(), *sum_gx = sum_g + N * cg,
         *coef = sum_gx + N * cg, *constant = coef + N,
         *shift_sum = constant + N, *weight_sum = shift_sum + cg;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < cg; ++k) {
      const int64_t at = s.row(n, k);
      row_sums_of<T>(grad + at, x + at, s.m[n * cg + k], L, sum_g + n * cg + k,
                     sum_gx + n * cg + k);
    }
  // per sample: grad_z = gscale * grad + coef * z + constant
  const double size = double(L) * cg;
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
  if (t.scalar_type() == x.scalar_type() && t.is_contiguous()) return t;
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
    in_parallel(count, rows.numel(), [&](int64_t r) {
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
    // pointers read once: data_ptr checks the tensor on every call
    const scalar_t *xp = x.data_ptr<scalar_t>(), *wp = w.data_ptr<scalar_t>(),
                   *bp = b.data_ptr<scalar_t>(), *gwp = gw.data_ptr<scalar_t>(),
                   *gbp = gb.data_ptr<scalar_t>(),
                   *gm = mean ? given_mean.data_ptr<scalar_t>() : nullptr,
                   *gv = mean ? given_var.data_ptr<scalar_t>() : nullptr;
    scalar_t *yp = y.data_ptr<scalar_t>(), *rmp = row_mean.data_ptr<scalar_t>(),
             *rvp = row_var.data_ptr<scalar_t>(),
             *cm = stats[0].data_ptr<scalar_t>(),
             *cv = stats[1].data_ptr<scalar_t>(),
             *bm = stats[2].data_ptr<scalar_t>(),
             *bv = stats[3].data_ptr<scalar_t>();
    const int64_t cg = C / groups;
    if (gm && rate == 0) {
      // The channel statistics given: each sample's group normalized right
      // after its moments, while in cache, in memory order, as group norm's
      // kernel does; then the batch's statistics.
      const Group channels(0, C, L, 0, C, gm, gv, wp, bp, eps);
      in_parallel(N * groups, x.numel(), [&](int64_t t) {
        const int64_t n = t / groups, g = t % groups, c = n * C + g * cg;
        for (int64_t k = 0; k < cg; ++k)
          row_moments_of(xp + (c + k) * L, L, rmp + c + k, rvp + c + k);
        double gmean, grstd;
        group_moments(cg, channels.scale + g * cg, channels.shift + g * cg,
                      rmp + c, rvp + c, eps, &gmean, &grstd);
        normalize_rows(xp + c * L, yp + c * L, L, cg, channels.scale + g * cg,
                       channels.shift + g * cg, rmp + c, gmean,
                       grstd * gwp[g], gbp[g]);
      });
      channel_statistics(rmp, rvp, gm, gv, 0.0, bm, bv, cm, cv, N, C, 0, C);
    } else {
      in_parallel(groups, x.numel(), [&](int64_t g) {
        forward_group(xp, yp, rmp, rvp, gm, gv, rate, bm, bv, cm, cv, wp, bp,
                      gwp[g], gbp[g], eps, N, C, L, g * cg, cg);
      });
    }
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
    const scalar_t *gp = g_.data_ptr<scalar_t>(), *xp = x.data_ptr<scalar_t>(),
                   *rmp = rm.data_ptr<scalar_t>(), *rvp = rv.data_ptr<scalar_t>(),
                   *cmp = cm.data_ptr<scalar_t>(), *cvp = cv.data_ptr<scalar_t>(),
                   *wp = w.data_ptr<scalar_t>(), *bp = b.data_ptr<scalar_t>(),
                   *gwp = gw.data_ptr<scalar_t>();
    scalar_t *gx = input_grad ? grad_x.data_ptr<scalar_t>() : nullptr,
             *gwd = grad_w.data_ptr<scalar_t>(),
             *gbd = grad_b.data_ptr<scalar_t>(),
             *ggw = grad_gw.data_ptr<scalar_t>(),
             *ggb = grad_gb.data_ptr<scalar_t>();
    in_parallel(groups, x.numel(), [&](int64_t g) {
      Group s(N, C, L, g * (C / groups), C / groups, cmp, cvp, wp, bp, eps);
      for (int64_t n = 0; n < N; ++n) s.add_sample(n, rmp, rvp);
      backward_group(gp, xp, gx, s, bp, gwp[g], batch, gwd, gbd, ggw + g,
                     ggb + g);
    });
  });
  return {grad_x, grad_w.view(weight.sizes()).to(weight.scalar_type()),
          grad_b.view(bias.sizes()).to(bias.scalar_type()),
          grad_gw.view(group_weight.sizes()).to(group_weight.scalar_type()),
          grad_gb.view(group_weight.sizes()).to(group_weight.scalar_type())};
}

// Whether the batch's channel statistics may update the estimates: the
// mean and the second moment around the estimated mean (the variance on
// the first update, estimated_mean undefined) are finite.
bool finite(const at::Tensor& batch_mean, const at::Tensor& batch_var,
            const at::Tensor& estimated_mean) {
  bool all = true;
  AT_DISPATCH_FLOATING_TYPES(batch_mean.scalar_type(), "finite", [&] {
    const auto em = estimated_mean.defined()
                        ? like(batch_mean, estimated_mean, batch_mean.numel())
                        : at::Tensor();
    const scalar_t *m = batch_mean.data_ptr<scalar_t>(),
                   *v = batch_var.data_ptr<scalar_t>(),
                   *e = em.defined() ? em.data_ptr<scalar_t>() : nullptr;
    for (int64_t c = 0; c < batch_mean.numel() && all; ++c) {
      const double d = e ? double(m[c]) - e[c] : 0.0;
      all = std::isfinite(double(m[c])) && std::isfinite(v[c] + d * d);
    }
  });
  return all;
}

// x's values as the kernels take them: contiguous, in the statistics'
// dtype (at least float32); x itself if it is so already.
at::Tensor as_rows(const at::Tensor& x) {
  const auto dtype = at::promote_types(x.scalar_type(), at::kFloat);
  if (x.scalar_type() == dtype && x.is_contiguous()) return x;
  return x.to(dtype).contiguous();
}

// BCN's forward (see Function), with the kernel's outputs: y (of x's
// dtype), the rows' moments, the channel statistics used, the batch's;
// and whether the estimates were updated.
std::pair<std::vector<at::Tensor>, bool> normalize(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
    const at::Tensor& group_weight, const at::Tensor& group_bias,
    const c10::optional<at::Tensor>& mean,
    const c10::optional<at::Tensor>& var, c10::optional<double> rate,
    bool update, double eps) {
  TORCH_CHECK(!update || (mean && var),
              "BCN: updating estimates takes them (mean and var)");
  const auto rows = as_rows(x);
  const int64_t groups = group_weight.numel();
  const bool first = update && !rate;  // the batch's own statistics
  const c10::optional<at::Tensor> none;
  auto out = forward(rows, groups, first ? none : mean, first ? none : var,
                     rate.value_or(0.0), weight, bias, group_weight,
                     group_bias, eps);
  bool kept = true;
  if (update) {
    kept = finite(out[5], out[6], first ? at::Tensor() : *mean);
    if (kept) {
      mean->copy_(out[3]), var->copy_(out[4]);
    } else {
      out = forward(rows, groups, mean, var, 0.0, weight, bias, group_weight,
                    group_bias, eps);
    }
  }
  out[0] = out[0].to(x.scalar_type());
  return {out, kept};
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The Python function that computes the gradients differentiably, for
// backward(create_graph=True); set by batch_channel_norm.py.
py::object* differentiable_backward = nullptr;

// BCN as an autograd function. With update, (mean, var) are the running
// estimates: moved toward the batch's statistics by rate (or, rate null,
// replaced by them) in place before normalizing, unless the batch's are
// not finite; then the batch is normalized with them unchanged.
// -> y, the batch's channel mean and variance, whether it updated them.
struct Function : public torch::autograd::Function<Function> {
  static variable_list forward(
      AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
      const at::Tensor& bias, const at::Tensor& group_weight,
      const at::Tensor& group_bias, const c10::optional<at::Tensor>& mean,
      const c10::optional<at::Tensor>& var, c10::optional<double> rate,
      bool update, bool batch, double eps) {
    auto [out, kept] = normalize(x, weight, bias, group_weight, group_bias,
                                 mean, var, rate, update, eps);
    ctx->save_for_backward({x, out[1], out[2], out[3], out[4], weight, bias,
                            group_weight, group_bias});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["batch"] = batch;
    auto flag = at::scalar_tensor(kept, at::kBool);
    ctx->mark_non_differentiable({out[5], out[6], flag});
    return {out[0], out[5], out[6], flag};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    // unpacked once: non-reentrant checkpointing allows no second unpack
    const auto s = ctx->get_saved_variables();
    const double eps = ctx->saved_data["eps"].toDouble();
    const bool batch = ctx->saved_data["batch"].toBool();
    variable_list result(11);  // one per argument of forward
    if (at::GradMode::is_enabled()) {  // backward(create_graph=True)
      TORCH_CHECK(differentiable_backward,
                  "BCN: second derivatives need set_differentiable_backward");
      py::gil_scoped_acquire gil;
      py::object channel = py::none();
      if (!batch) channel = py::make_tuple(s[3], s[4]);
      std::vector<bool> needs;
      for (int i = 0; i < 5; ++i) needs.push_back(ctx->needs_input_grad(i));
      const auto grad = (*differentiable_backward)(
          grads[0], s[0], py::make_tuple(s[5], s[6], s[7], s[8]), channel,
          eps, needs);
      for (int i = 0; i < 5; ++i) {
        const py::object g = grad[py::int_(i)];
        if (!g.is_none()) result[i] = g.cast<at::Tensor>();
      }
      return result;
    }
    const auto g = ::backward(grads[0], as_rows(s[0]), s[1], s[2], s[3], s[4],
                              s[5], s[6], s[7], eps, batch,
                              ctx->needs_input_grad(0));
    if (g[0].defined()) result[0] = g[0].to(s[0].scalar_type());
    for (int i = 1; i < 5; ++i)
      if (ctx->needs_input_grad(i)) result[i] = g[i];
    return result;
  }
};

// -> y, the batch's channel mean and variance, whether the estimates were
// updated; as an autograd function where a gradient is to be computed.
std::tuple<at::Tensor, at::Tensor, at::Tensor, bool> bcn(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
    const at::Tensor& group_weight, const at::Tensor& group_bias,
    const c10::optional<at::Tensor>& mean,
    const c10::optional<at::Tensor>& var, c10::optional<double> rate,
    bool update, bool batch, double eps) {
  const bool gradient =
      at::GradMode::is_enabled() &&
      (x.requires_grad() || weight.requires_grad() || bias.requires_grad() ||
       group_weight.requires_grad() || group_bias.requires_grad());
  if (!gradient) {
    const auto [out, kept] = normalize(x, weight, bias, group_weight,
                                       group_bias, mean, var, rate, update,
                                       eps);
    return {out[0], out[5], out[6], kept};
  }
  const auto out = Function::apply(x, weight, bias, group_weight, group_bias,
                                   mean, var, rate, update, batch, eps);
  return {out[0], out[1], out[2], out[3].item<bool>()};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("row_moments", &row_moments, "mean and biased variance per row");
  m.def("bcn", &bcn, "BCN's output, the batch's channel statistics, and "
        "whether the estimates were updated");
  m.def("set_differentiable_backward", [](py::object f) {
    if (!differentiable_backward) differentiable_backward = new py::object();
    *differentiable_backward = f;
  });
}
