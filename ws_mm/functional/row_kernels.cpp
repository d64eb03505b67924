// BCN's passes over its input's (sample, channel) rows, on CPU: each reads
// a row while it is in cache and writes at most one tensor. Rows are
// contiguous (R, L) float32 or float64 tensors; per-row coefficients have R
// elements of the same dtype. ws_mm/functional/row_kernels.py has the same
// four functions with torch's kernels, and builds this file.
#include <torch/extension.h>

#include <ATen/Parallel.h>

namespace {

// Calls f(r, offset of row r) for every row, the rows split among torch's
// intra-op threads: at::get_num_threads, since this file's OpenMP runtime
// may not be torch's (torch 2.0.1's wheel bundles its own under another
// name; 2.13's bundles libgomp.so.1, which this file then shares).
template <typename F>
void for_rows(int64_t count, int64_t length, const F& f) {
  const int threads = count * length < 32768 ? 1 : at::get_num_threads();
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < count; ++r) f(r, r * length);
}

// Sums of f(i) over a row, vectorized in T within blocks of 256 elements,
// the blocks added in double: the rounding of a 256-term sum, not a row's.
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

// Mean and biased variance of each row: two passes over the row, the
// second over its deviations from the mean (the row is still in cache).
template <typename T>
void moments(const T* x, T* mean, T* var, int64_t count, int64_t length) {
  for_rows(count, length, [&](int64_t r, int64_t at) {
    const T* row = x + at;
    const double mu = row_sum<T>(length, [&](int64_t i) { return row[i]; }) /
                      length;
    const T m = mu;
    var[r] = row_sum<T>(length, [&](int64_t i) {
               const T d = row[i] - m;
               return d * d;
             }) / length;
    mean[r] = mu;
  });
}

// y = a * (x - mean) + b per row.
template <typename T>
void affine(const T* x, const T* mean, const T* a, const T* b, T* y,
            int64_t count, int64_t length) {
  for_rows(count, length, [&](int64_t r, int64_t at) {
    const T mu = mean[r], scale = a[r], shift = b[r];
#pragma omp simd
    for (int64_t i = 0; i < length; ++i)
      y[at + i] = scale * (x[at + i] - mu) + shift;
  });
}

// Per row, the sums of g and of g * (x - mean).
template <typename T>
void sums(const T* g, const T* x, const T* mean, T* sum_g, T* sum_gx,
          int64_t count, int64_t length) {
  for_rows(count, length, [&](int64_t r, int64_t at) {
    const T *gr = g + at, *row = x + at, mu = mean[r];
    sum_g[r] = row_sum<T>(length, [&](int64_t i) { return gr[i]; });
    sum_gx[r] = row_sum<T>(length,
                           [&](int64_t i) { return gr[i] * (row[i] - mu); });
  });
}

// y = a * g + p * (x - mean) + q per row.
template <typename T>
void gradient(const T* g, const T* x, const T* mean, const T* a, const T* p,
              const T* q, T* y, int64_t count, int64_t length) {
  for_rows(count, length, [&](int64_t r, int64_t at) {
    const T mu = mean[r], ga = a[r], xp = p[r], c = q[r];
#pragma omp simd
    for (int64_t i = 0; i < length; ++i)
      y[at + i] = ga * g[at + i] + xp * (x[at + i] - mu) + c;
  });
}

void check(const at::Tensor& rows, std::initializer_list<at::Tensor> others) {
  TORCH_CHECK(rows.dim() == 2 && rows.is_contiguous() && rows.is_cpu() &&
                  (rows.scalar_type() == at::kFloat ||
                   rows.scalar_type() == at::kDouble),
              "ws_mm row kernels take contiguous 2-d float32/float64 CPU "
              "rows");
  for (const auto& t : others)
    TORCH_CHECK(t.is_contiguous() && t.scalar_type() == rows.scalar_type() &&
                    t.numel() % rows.size(0) == 0,
                "ws_mm row kernels: an operand does not match the rows");
}

std::vector<at::Tensor> row_moments(const at::Tensor& rows) {
  check(rows, {});
  auto mean = at::empty({rows.size(0)}, rows.options());
  auto var = at::empty({rows.size(0)}, rows.options());
  AT_DISPATCH_FLOATING_TYPES(rows.scalar_type(), "row_moments", [&] {
    moments(rows.data_ptr<scalar_t>(), mean.data_ptr<scalar_t>(),
            var.data_ptr<scalar_t>(), rows.size(0), rows.size(1));
  });
  return {mean, var};
}

at::Tensor row_affine(const at::Tensor& rows, const at::Tensor& mean,
                      const at::Tensor& a, const at::Tensor& b) {
  check(rows, {mean, a, b});
  auto out = at::empty_like(rows);
  AT_DISPATCH_FLOATING_TYPES(rows.scalar_type(), "row_affine", [&] {
    affine(rows.data_ptr<scalar_t>(), mean.data_ptr<scalar_t>(),
           a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(),
           out.data_ptr<scalar_t>(), rows.size(0), rows.size(1));
  });
  return out;
}

std::vector<at::Tensor> row_sums(const at::Tensor& grad, const at::Tensor& rows,
                                 const at::Tensor& mean) {
  check(rows, {grad, mean});
  auto sum_grad = at::empty({rows.size(0)}, rows.options());
  auto sum_grad_x = at::empty({rows.size(0)}, rows.options());
  AT_DISPATCH_FLOATING_TYPES(rows.scalar_type(), "row_sums", [&] {
    sums(grad.data_ptr<scalar_t>(), rows.data_ptr<scalar_t>(),
         mean.data_ptr<scalar_t>(), sum_grad.data_ptr<scalar_t>(),
         sum_grad_x.data_ptr<scalar_t>(), rows.size(0), rows.size(1));
  });
  return {sum_grad, sum_grad_x};
}

at::Tensor grad_rows(const at::Tensor& grad, const at::Tensor& rows,
                     const at::Tensor& mean, const at::Tensor& a,
                     const at::Tensor& p, const at::Tensor& q) {
  check(rows, {grad, mean, a, p, q});
  auto out = at::empty_like(rows);
  AT_DISPATCH_FLOATING_TYPES(rows.scalar_type(), "grad_rows", [&] {
    gradient(grad.data_ptr<scalar_t>(), rows.data_ptr<scalar_t>(),
             mean.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(),
             p.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(),
             out.data_ptr<scalar_t>(), rows.size(0), rows.size(1));
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("row_moments", &row_moments, "mean and biased variance per row");
  m.def("row_affine", &row_affine, "a * (rows - mean) + b per row");
  m.def("row_sums", &row_sums, "sums of grad and grad * (rows - mean)");
  m.def("grad_rows", &grad_rows, "a * grad + p * (rows - mean) + q");
}
