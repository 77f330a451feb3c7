// One training epoch of the paper's network, for a stack of seeds, in one call.
//
// The eager PyTorch step costs ~30 operator calls per batch of 32; for a network this small that
// overhead, and RMSprop's extra passes over the hidden kernel, cost more than the matrix products.
// Here a whole epoch runs without leaving C++:
// - the products go to the BLAS PyTorch itself links (its exported Fortran-style sgemm_);
// - pixels that are zero in every image of a batch (about 42% of MNIST's 784 for 32 images) add
//   nothing to the first layer's product and get no gradient from the data, so both large
//   products run over the others only (with inputs that have no zeros, nothing is skipped);
// - RMSprop runs as one pass over each parameter, the L2 penalty's gradient and the batch's
//   sum(W1^2) folded in; with AVX-512 the division comes from a refined reciprocal (below).
//
// Otherwise the arithmetic is the eager step's in train.py (float32; Keras' RMSprop, epsilon
// outside the square root; Keras' running loss and accuracy), so results agree to floating-point
// tolerance: tests/test_fused.py holds it to autograd + torch.optim.RMSprop and to the eager step.

#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc);

namespace {

constexpr int kLanes = 16;  // independent partial sums in the portable update, so that it vectorises

// Row-major C (m x n) = op(A) (m x k) . op(B) (k x n), through column-major BLAS: C^T = op(B)^T op(A)^T.
void matmul(bool a_transposed, bool b_transposed, int64_t m, int64_t n, int64_t k, const float* a,
            int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc) {
  const char ta = b_transposed ? 'T' : 'N', tb = a_transposed ? 'T' : 'N';
  const int m_ = static_cast<int>(n), n_ = static_cast<int>(m), k_ = static_cast<int>(k);
  const int lda_ = static_cast<int>(ldb), ldb_ = static_cast<int>(lda), ldc_ = static_cast<int>(ldc);
  const float one = 1.0f, zero = 0.0f;
  sgemm_(&ta, &tb, &m_, &n_, &k_, &one, b, &lda_, a, &ldb_, &zero, c, &ldc_);
}

struct RMSprop {
  float lr, rho, epsilon;

#ifdef __AVX512F__
  // The same update, 16 lanes at a time, the tail by masked loads.
  double update_avx512(float* w, float* v, const float* grad, float penalty, int64_t n) const {
    const __m512 keep = _mm512_set1_ps(rho), add = _mm512_set1_ps(1.0f - rho), pen = _mm512_set1_ps(penalty);
    const __m512 neg_lr = _mm512_set1_ps(-lr), eps = _mm512_set1_ps(epsilon);
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 squares = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
      const __m512 old = _mm512_maskz_loadu_ps(m, w + i);
      const __m512 g = grad ? _mm512_fmadd_ps(pen, old, _mm512_maskz_loadu_ps(m, grad + i)) : _mm512_mul_ps(pen, old);
      const __m512 vel = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, v + i), keep), _mm512_mul_ps(add, _mm512_mul_ps(g, g)));
      _mm512_mask_storeu_ps(v + i, m, vel);
      // g / (sqrt(v) + eps): the divider is the loop's bottleneck, so the quotient comes from the
      // reciprocal estimate, one Newton step, and one correction of the quotient itself (within
      // an ulp of the IEEE division, which the scalar path uses).
      const __m512 denom = _mm512_add_ps(_mm512_sqrt_ps(vel), eps);
      __m512 r = _mm512_rcp14_ps(denom);
      r = _mm512_fmadd_ps(r, _mm512_fnmadd_ps(denom, r, one), r);
      const __m512 q0 = _mm512_mul_ps(g, r);
      const __m512 q = _mm512_fmadd_ps(r, _mm512_fnmadd_ps(denom, q0, g), q0);
      _mm512_mask_storeu_ps(w + i, m, _mm512_add_ps(old, _mm512_mul_ps(neg_lr, q)));
      squares = _mm512_fmadd_ps(old, old, squares);
    }
    return _mm512_reduce_add_ps(squares);
  }
#endif

  // w <- w - lr * g / (sqrt(v) + eps) with v <- rho * v + (1 - rho) * g^2 and g = grad + penalty * w,
  // in the operation order of the eager foreach update. Returns sum(w^2) of the weights *before*
  // the update (the batch's L2 penalty term). `grad` may be null: a zero gradient.
  double update(float* w, float* v, const float* grad, float penalty, int64_t n) const {
#ifdef __AVX512F__
    return update_avx512(w, v, grad, penalty, n);
#endif
    const float keep = rho, add = 1.0f - rho;
    float squares[kLanes] = {0};
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
      for (int l = 0; l < kLanes; ++l) {
        const float old = w[i + l];
        const float g = (grad ? grad[i + l] : 0.0f) + penalty * old;
        const float vel = v[i + l] * keep + add * (g * g);
        v[i + l] = vel;
        w[i + l] = old + (-lr) * (g / (std::sqrt(vel) + epsilon));
        squares[l] += old * old;
      }
    }
    double total = 0.0;
    for (; i < n; ++i) {
      const float old = w[i];
      const float g = (grad ? grad[i] : 0.0f) + penalty * old;
      const float vel = v[i] * keep + add * (g * g);
      v[i] = vel;
      w[i] = old + (-lr) * (g / (std::sqrt(vel) + epsilon));
      total += static_cast<double>(old) * old;
    }
    for (int l = 0; l < kLanes; ++l) total += squares[l];
    return total;
  }
};

// y[0:n] += a * x[0:n]
inline void axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] += a * x[j];
}

struct Network {  // one seed's parameters and optimiser state, as raw views into the stacks
  float *w1, *b1, *w2, *b2, *v1, *vb1, *v2, *vb2;
};

// Which of each image's pixels are non-zero: one 16-bit mask per run of 16 pixels, (N, ceil(D / 16)).
// Made once per training set (pixel_masks below) and read every step.
struct PixelMasks {
  const uint16_t* masks;
  int64_t chunks;
  const uint16_t* of(int64_t row) const { return masks + row * chunks; }
};

at::Tensor pixel_masks(const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.is_contiguous() && x.dim() == 2,
              "x must be a contiguous float32 (N, D) CPU tensor");
  const int64_t n = x.size(0), d = x.size(1), chunks = (d + 15) / 16;
  auto out = at::zeros({n, chunks}, at::kShort);
  auto* masks = reinterpret_cast<uint16_t*>(out.data_ptr<int16_t>());
  const float* data = x.data_ptr<float>();
  for (int64_t r = 0; r < n; ++r) {
    const float* row = data + r * d;
    uint16_t* m = masks + r * chunks;
#ifdef __AVX512F__
    for (int64_t q = 0; q < chunks; ++q) {
      const __mmask16 tail = d - q * 16 >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (d - q * 16)) - 1);
      m[q] = _mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(tail, row + q * 16), _mm512_setzero_ps(), _CMP_NEQ_UQ);
    }
#else
    for (int64_t p = 0; p < d; ++p) m[p / 16] |= uint16_t(row[p] != 0.0f) << (p % 16);
#endif
  }
  return out;
}

class EpochTrainer {
 public:
  EpochTrainer(int64_t d, int64_t h, int64_t c, int64_t batch)
      : d_(d), h_(h), c_(c), x_(batch * d + 16), w1_(d * h), z1_(batch * h), z2_(batch * c), dh_(batch * h),
        gw2_(h * c), gb1_(h), gb2_(c), grad_rows_(d * h), active_(d), mask_((d + 15) / 16) {}

  // One optimiser step on rows `rows[0:b]` of x; adds the batch's summed cross-entropy to *ce_sum,
  // the count of right answers to *correct, and returns sum(W1^2) before the update.
  double step(const Network& net, const RMSprop& opt, float penalty, const float* x, const PixelMasks& masks,
              const int64_t* labels, const int64_t* rows, int64_t b, double* ce_sum, int64_t* correct) {
    const int64_t d = d_, h = h_, c = c_;
    const int64_t k = gather(x, masks, rows, b);

    // Forward, first layer: z1 = x W1 + b1 over the active pixels, kept as h = relu(z1) (the mask is h > 0).
    const float* w1 = net.w1;
    if (k < d) {
      for (int64_t j = 0; j < k; ++j) std::memcpy(&w1_[j * h], net.w1 + active_[j] * h, h * sizeof(float));
      w1 = w1_.data();
    }
    const int64_t ldx = std::max<int64_t>(k, 1);  // BLAS wants leading dimensions >= 1, even for a blank batch
    matmul(false, false, b, h, k, x_.data(), ldx, w1, h, z1_.data(), h);
    for (int64_t i = 0; i < b; ++i)
      for (int64_t j = 0; j < h; ++j) z1_[i * h + j] = std::max(z1_[i * h + j] + net.b1[j], 0.0f);

    // Second layer, softmax, Keras' running metrics, and d(mean CE)/d logits = (p - onehot) / b.
    matmul(false, false, b, c, h, z1_.data(), h, net.w2, c, z2_.data(), c);
    const float inv_b = 1.0f / static_cast<float>(b);
    for (int64_t i = 0; i < b; ++i) {
      float* z = &z2_[i * c];
      int64_t best = 0;
      for (int64_t j = 0; j < c; ++j) {
        z[j] += net.b2[j];
        if (z[j] > z[best]) best = j;
      }
      const float top = z[best];
      float total = 0.0f;
      for (int64_t j = 0; j < c; ++j) total += (z[j] = std::exp(z[j] - top));
      const int64_t label = labels[rows[i]];
      for (int64_t j = 0; j < c; ++j) z[j] /= total;
      *ce_sum -= std::log(static_cast<double>(z[label]));
      *correct += best == label;
      z[label] -= 1.0f;
      for (int64_t j = 0; j < c; ++j) z[j] *= inv_b;
    }

    // Output layer's gradients, then the hidden layer's error (with the output kernel before its update).
    matmul(true, false, h, c, b, z1_.data(), h, z2_.data(), c, gw2_.data(), c);
    std::fill(gb2_.begin(), gb2_.end(), 0.0f);
    for (int64_t i = 0; i < b; ++i) axpy(1.0f, &z2_[i * c], gb2_.data(), c);
    matmul(false, true, b, h, c, z2_.data(), c, net.w2, c, dh_.data(), h);
    std::fill(gb1_.begin(), gb1_.end(), 0.0f);
    for (int64_t i = 0; i < b; ++i) {
      float* g = &dh_[i * h];
      const float* a = &z1_[i * h];
      for (int64_t j = 0; j < h; ++j) g[j] = a[j] > 0.0f ? g[j] : 0.0f;
      axpy(1.0f, g, gb1_.data(), h);
    }
    opt.update(net.w2, net.v2, gw2_.data(), 0.0f, h * c);
    opt.update(net.b2, net.vb2, gb2_.data(), 0.0f, c);
    opt.update(net.b1, net.vb1, gb1_.data(), 0.0f, h);

    // dW1 = x^T dh for the active pixels; the others' gradient is the penalty's alone. The update
    // walks W1 in runs of active and inactive rows.
    matmul(true, false, k, h, b, x_.data(), ldx, dh_.data(), h, grad_rows_.data(), h);
    double squares = 0.0;
    const int64_t* next = active_.data();
    const int64_t* end = next + k;
    for (int64_t p = 0; p < d;) {
      if (next < end && *next == p) {  // a run of active rows, contiguous in grad_rows_ too
        const int64_t* run = next;
        while (next < end && *next == p + (next - run)) ++next;
        const int64_t len = next - run;
        squares += opt.update(net.w1 + p * h, net.v1 + p * h, &grad_rows_[(run - active_.data()) * h], penalty, len * h);
        p += len;
      } else {
        const int64_t q = next < end ? *next : d;
        squares += opt.update(net.w1 + p * h, net.v1 + p * h, nullptr, penalty, (q - p) * h);
        p = q;
      }
    }
    return squares;
  }

 private:
  // Pixels that are zero in every image of the batch add nothing to the first layer's product and
  // get no gradient from the data (about 42% of MNIST's 784 for 32 images): lists the others in
  // active_ and packs the batch's values of just those into x_ (b x k). Returns k.
  int64_t gather(const float* x, const PixelMasks& masks, const int64_t* rows, int64_t b) {
    const int64_t d = d_, chunks = masks.chunks;
    std::fill(mask_.begin(), mask_.end(), 0);
    for (int64_t i = 0; i < b; ++i) {
      const uint16_t* m = masks.of(rows[i]);
      for (int64_t q = 0; q < chunks; ++q) mask_[q] |= m[q];
    }
    int64_t k = 0;
    for (int64_t q = 0; q < chunks; ++q)
      for (uint32_t bits = mask_[q]; bits; bits &= bits - 1) active_[k++] = q * 16 + __builtin_ctz(bits);
    for (int64_t i = 0; i < b; ++i) {
      const float* row = x + rows[i] * d;
      float* out = &x_[i * k];
#ifdef __AVX512F__
      // Compress each run of 16 pixels to its active ones; the full-width store may spill up to 15
      // floats past the row, which the next row (or x_'s 16 floats of slack) overwrites.
      for (int64_t q = 0; q < chunks; ++q) {
        const __mmask16 tail = d - q * 16 >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (d - q * 16)) - 1);
        const __m512 values = _mm512_maskz_loadu_ps(tail, row + q * 16);
        _mm512_storeu_ps(out, _mm512_maskz_compress_ps(mask_[q], values));
        out += __builtin_popcount(mask_[q]);
      }
#else
      for (int64_t j = 0; j < k; ++j) out[j] = row[active_[j]];
#endif
    }
    return k;
  }

  int64_t d_, h_, c_;
  std::vector<float> x_, w1_, z1_, z2_, dh_, gw2_, gb1_, gb2_, grad_rows_;
  std::vector<int64_t> active_;
  std::vector<uint16_t> mask_;
};

void check_stack(const at::Tensor& t, const char* name, int64_t seeds) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous(), name,
              " must be a contiguous float32 CPU tensor");
  TORCH_CHECK(t.dim() == 3 && t.size(0) == seeds, name, " must have shape (seeds, rows, cols)");
}

// Trains every seed of the stack for one epoch, in place. `perms` (S, N) is each seed's batch order.
// Returns (summed cross-entropy + l2 * batch size * sum(W1^2) over batches, as float64 (S,);
//          number of right answers, int64 (S,)).
std::tuple<at::Tensor, at::Tensor> train_epoch(
    const at::Tensor& x, const at::Tensor& masks,
    const at::Tensor& labels, const at::Tensor& perms, std::vector<at::Tensor> params,
    std::vector<at::Tensor> velocity, int64_t batch, double lr, double rho, double epsilon, double l2) {
  TORCH_CHECK(params.size() == 4 && velocity.size() == 4, "expected 4 parameters and 4 velocities");
  const int64_t seeds = perms.size(0), n = perms.size(1);
  const char* names[] = {"hidden.kernel", "hidden.bias", "output.kernel", "output.bias"};
  for (int i = 0; i < 4; ++i) {
    check_stack(params[i], names[i], seeds);
    check_stack(velocity[i], names[i], seeds);
    TORCH_CHECK(params[i].sizes() == velocity[i].sizes(), "velocity of ", names[i], " has the wrong shape");
  }
  const int64_t d = params[0].size(1), h = params[0].size(2), c = params[2].size(2);
  TORCH_CHECK(x.is_contiguous() && x.scalar_type() == at::kFloat && x.dim() == 2 && x.size(1) == d,
              "x must be a contiguous float32 (N, ", d, ") tensor");
  TORCH_CHECK(labels.scalar_type() == at::kLong && perms.scalar_type() == at::kLong && perms.is_contiguous(),
              "labels and perms must be int64");
  TORCH_CHECK(masks.scalar_type() == at::kShort && masks.is_contiguous() && masks.dim() == 2 &&
                  masks.size(0) == x.size(0) && masks.size(1) == (d + 15) / 16,
              "masks must be pixel_masks(x)");
  TORCH_CHECK(batch > 0, "batch must be positive");
  TORCH_CHECK(labels.numel() == x.size(0) && labels.is_contiguous(), "labels must be (N,), one per row of x");
  TORCH_CHECK(n == 0 || (perms.min().item<int64_t>() >= 0 && perms.max().item<int64_t>() < x.size(0)),
              "perms must index rows of x");
  TORCH_CHECK(x.size(0) == 0 || (labels.min().item<int64_t>() >= 0 && labels.max().item<int64_t>() < c),
              "labels must lie in [0, ", c, ")");

  auto ce = at::zeros({seeds}, at::kDouble);
  auto correct = at::zeros({seeds}, at::kLong);
  const RMSprop opt{static_cast<float>(lr), static_cast<float>(rho), static_cast<float>(epsilon)};
  const float penalty = static_cast<float>(2.0 * l2);  // d(l2 * sum W1^2)/dW1
  {
    pybind11::gil_scoped_release no_gil;
    const PixelMasks pixels{reinterpret_cast<const uint16_t*>(masks.data_ptr<int16_t>()), masks.size(1)};
    EpochTrainer trainer(d, h, c, batch);
    for (int64_t s = 0; s < seeds; ++s) {  // seed after seed: one network's state stays in cache
      auto seed_of = [s](const at::Tensor& t) { return t.data_ptr<float>() + s * t.stride(0); };
      const Network net{seed_of(params[0]), seed_of(params[1]), seed_of(params[2]), seed_of(params[3]),
                        seed_of(velocity[0]), seed_of(velocity[1]), seed_of(velocity[2]),
                        seed_of(velocity[3])};
      double ce_sum = 0.0, penalty_sum = 0.0;
      int64_t right = 0;
      const int64_t* order = perms.data_ptr<int64_t>() + s * n;
      for (int64_t start = 0; start < n; start += batch) {
        const int64_t b = std::min(batch, n - start);
        const double squares = trainer.step(
            net, opt, penalty, x.data_ptr<float>(), pixels, labels.data_ptr<int64_t>(), order + start, b, &ce_sum, &right);
        penalty_sum += static_cast<double>(b) * squares;
      }
      ce.data_ptr<double>()[s] = ce_sum + l2 * penalty_sum;
      correct.data_ptr<int64_t>()[s] = right;
    }
  }
  return {ce, correct};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("pixel_masks", &pixel_masks, "Non-zero pixels of each row of x, as 16-bit masks per 16 pixels");
  m.def("train_epoch", &train_epoch, "One training epoch for a stack of seeds, in place");
}
