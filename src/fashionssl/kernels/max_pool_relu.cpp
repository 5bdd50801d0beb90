// relu(max_pool2d(x, 2)) on channels-last CPU tensors (bfloat16 or float32), forward and backward, in
// one pass each over the maps; in floor mode (an odd map's last row and column dropped) or ceil mode
// (kept, as windows of one row, one column or one pixel). PyTorch runs it as four: the max-pool's forward writes int64 indices
// (8 bytes per output, more than the bf16 input itself), its backward zero-fills the input-sized
// gradient and scatters into it, and ReLU passes over the output both ways. Here the forward writes
// one byte per output (which window position won, or 4 where ReLU zeroed it) and the backward
// writes each input's gradient once, densely. Same results bit for bit as PyTorch's: the same
// maximum (the first of a window, row by row, or the last NaN), the same zeros.
//
// Vectors of 16 (AVX-512) or 8 (AVX2) channels, in GCC/Clang vector extensions; parallel over
// output rows with ATen's thread pool (needs -fopenmp). Built by fashionssl/kernels/__init__.py.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

#include <cstring>

namespace {

#ifdef __AVX512F__
constexpr int64_t kLanes = 16;
#else
constexpr int64_t kLanes = 8;
#endif
typedef float vf __attribute__((vector_size(4 * kLanes)));
typedef int32_t vi32 __attribute__((vector_size(4 * kLanes)));
typedef uint32_t vu32 __attribute__((vector_size(4 * kLanes)));
typedef int16_t vi16 __attribute__((vector_size(2 * kLanes)));
typedef uint16_t vu16 __attribute__((vector_size(2 * kLanes)));
typedef uint8_t vu8 __attribute__((vector_size(kLanes)));

template <typename V> inline V load_vec(const void* p) { V v; std::memcpy(&v, p, sizeof(V)); return v; }
template <typename V> inline void store_vec(void* p, V v) { std::memcpy(p, &v, sizeof(V)); }

#ifdef __AVX512F__
inline vu16 narrow16(vu32 v) { return __builtin_convertvector(v, vu16); }
inline vu8 narrow8(vi32 v) { return __builtin_convertvector(v, vu8); }
#else  // AVX2 has no 32-to-16 or 32-to-8 bit moves (the compiler would go element by element): packs
inline vu16 narrow16(vu32 v) {
  const __m256i w = load_vec<__m256i>(&v);
  return load_vec<vu16>(&(const __m128i&)_mm_packus_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1)));
}
inline vu8 narrow8(vi32 v) {
  const __m256i w = load_vec<__m256i>(&v);
  const __m128i half = _mm_packs_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
  return load_vec<vu8>(&(const __m128i&)_mm_packus_epi16(half, half));
}
#endif

// bf16 is the upper half of a float32; the results are inputs (or 0), so converting back is exact.
inline vf load_float(const c10::BFloat16* p) { return load_vec<vf>(&(const vu32&)(__builtin_convertvector(load_vec<vu16>(p), vu32) << 16)); }
inline vf load_float(const float* p) { return load_vec<vf>(p); }
inline void store_float(c10::BFloat16* p, vf v) { store_vec(p, narrow16(load_vec<vu32>(&v) >> 16)); }
inline void store_float(float* p, vf v) { store_vec(p, v); }

template <typename T> struct Lanes;  // the integer lanes of T's width, for the backward's selects
template <> struct Lanes<c10::BFloat16> { typedef vi16 mask; typedef int16_t lane; typedef vu16 bits; };
template <> struct Lanes<float> { typedef vi32 mask; typedef int32_t lane; typedef vu32 bits; };

constexpr int kZeroed = 4;  // code of an output that ReLU zeroed: no gradient flows to its window

// The pooled size of a map side: ceil mode adds the one-row (or one-column) windows of an odd side.
inline int64_t pooled(int64_t side, bool ceil) { return ceil ? (side + 1) / 2 : side / 2; }

template <typename T>
void forward_kernel(const T* x, T* y, uint8_t* code, int64_t batch, int64_t channels, int64_t height, int64_t width, bool ceil) {
  const int64_t out_height = pooled(height, ceil), out_width = pooled(width, ceil), row = width * channels;
  at::parallel_for(0, batch * out_height, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* top = x + ((r / out_height) * height + 2 * (r % out_height)) * row;
      const bool bottom = 2 * (r % out_height) + 1 < height;  // false only for ceil mode's last row
      for (int64_t ow = 0; ow < out_width; ++ow) {
        const T* window = top + 2 * ow * channels;
        const int64_t out = (r * out_width + ow) * channels;
        const bool right = 2 * ow + 1 < width;
        for (int64_t c = 0; c < channels; c += kLanes) {
          // PyTorch's rule, window row by row: take a value if it is larger, or NaN.
          vf best = load_float(window + c);
          vi32 which = vi32{};
          const auto consider = [&](const T* p, int position) {
            const vf value = load_float(p);
            const vi32 take = (value > best) | (value != value);
            best = take ? value : best, which = take ? position : which;
          };
          if (right) consider(window + channels + c, 1);
          if (bottom) consider(window + row + c, 2);
          if (bottom && right) consider(window + row + channels + c, 3);
          const vi32 zeroed = best <= 0.f;  // ReLU's gradient is 0 there (and NaN passes, as in PyTorch)
          store_float(y + out + c, zeroed ? vf{} : best);
          store_vec(code + out + c, narrow8(zeroed ? kZeroed : which));
        }
      }
    }
  });
}

template <typename T>
void backward_kernel(const T* grad, const uint8_t* code, T* grad_input, int64_t batch, int64_t channels, int64_t height, int64_t width, bool ceil) {
  typedef typename Lanes<T>::mask mask;
  typedef typename Lanes<T>::bits bits;
  const int64_t out_height = pooled(height, ceil), out_width = pooled(width, ceil), row = width * channels;
  at::parallel_for(0, batch * height, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      T* out = grad_input + r * row;
      const int64_t oh = (r % height) / 2;
      if (oh >= out_height) {  // the last row of an odd height in floor mode: outside every window
        std::memset(out, 0, row * sizeof(T));
        continue;
      }
      const auto left = typename Lanes<T>::lane(2 * (r % height % 2)), right = typename Lanes<T>::lane(left + 1);
      const int64_t in = ((r / height) * out_height + oh) * out_width * channels;
      for (int64_t ow = 0; ow < out_width; ++ow) {
        const bool full = 2 * ow + 1 < width;  // false only for ceil mode's one-column window
        for (int64_t c = 0; c < channels; c += kLanes) {
          const mask which = __builtin_convertvector(load_vec<vu8>(code + in + ow * channels + c), mask);
          const bits g = load_vec<bits>(grad + in + ow * channels + c);
          store_vec(out + 2 * ow * channels + c, which == left ? g : bits{});
          if (full) store_vec(out + (2 * ow + 1) * channels + c, which == right ? g : bits{});
        }
      }
      if (width > 2 * out_width) std::memset(out + 2 * out_width * channels, 0, channels * sizeof(T));  // floor mode
    }
  });
}

void check_input(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast),
              name, ": a 4-d channels-last CPU tensor expected");
  TORCH_CHECK(t.size(1) % kLanes == 0, name, ": channels must be a multiple of ", kLanes);
}

std::tuple<at::Tensor, at::Tensor> max_pool_relu(const at::Tensor& x, bool ceil) {
  check_input(x, "max_pool_relu");
  TORCH_CHECK(x.size(2) >= 2 && x.size(3) >= 2, "max_pool_relu: maps of at least 2x2 expected");
  const auto options = x.options().memory_format(at::MemoryFormat::ChannelsLast);
  at::Tensor y = at::empty({x.size(0), x.size(1), pooled(x.size(2), ceil), pooled(x.size(3), ceil)}, options);
  at::Tensor code = at::empty(y.sizes(), options.dtype(at::kByte));
  AT_DISPATCH_SWITCH(x.scalar_type(), "max_pool_relu",
      AT_DISPATCH_CASE(at::kBFloat16, [&] { forward_kernel(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), code.mutable_data_ptr<uint8_t>(), x.size(0), x.size(1), x.size(2), x.size(3), ceil); })
      AT_DISPATCH_CASE(at::kFloat, [&] { forward_kernel(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), code.mutable_data_ptr<uint8_t>(), x.size(0), x.size(1), x.size(2), x.size(3), ceil); }));
  return {y, code};
}

at::Tensor max_pool_relu_backward(const at::Tensor& grad_output, const at::Tensor& code, int64_t height, int64_t width, bool ceil) {
  const at::Tensor grad = grad_output.contiguous(at::MemoryFormat::ChannelsLast);
  check_input(grad, "max_pool_relu_backward");
  TORCH_CHECK(code.sizes() == grad.sizes() && code.scalar_type() == at::kByte && code.is_contiguous(at::MemoryFormat::ChannelsLast),
              "max_pool_relu_backward: the forward's code expected");
  TORCH_CHECK(pooled(height, ceil) == grad.size(2) && pooled(width, ceil) == grad.size(3), "max_pool_relu_backward: input size does not match");
  at::Tensor grad_input = at::empty({grad.size(0), grad.size(1), height, width}, grad.options().memory_format(at::MemoryFormat::ChannelsLast));
  AT_DISPATCH_SWITCH(grad.scalar_type(), "max_pool_relu_backward",
      AT_DISPATCH_CASE(at::kBFloat16, [&] { backward_kernel(grad.const_data_ptr<scalar_t>(), code.const_data_ptr<uint8_t>(), grad_input.mutable_data_ptr<scalar_t>(), grad.size(0), grad.size(1), height, width, ceil); })
      AT_DISPATCH_CASE(at::kFloat, [&] { backward_kernel(grad.const_data_ptr<scalar_t>(), code.const_data_ptr<uint8_t>(), grad_input.mutable_data_ptr<scalar_t>(), grad.size(0), grad.size(1), height, width, ceil); }));
  return grad_input;
}

}  // namespace

TORCH_LIBRARY(fashionssl, m) {
  m.def("max_pool_relu(Tensor x, bool ceil=False) -> (Tensor, Tensor)", &max_pool_relu);
  m.def("max_pool_relu_backward(Tensor grad, Tensor code, int height, int width, bool ceil=False) -> Tensor", &max_pool_relu_backward);
}
