// oneDNN int8 matmul for tsir's approximate mode, a tvm-ffi global function in destination-passing style:
//
//   tsir.dnnl.int8_matmul(x, wq, scale, inv, out)
//       out[m, n] = scale[n] * sum_k q(x)[m, k] * wq[k, n],  q(x)[m, k] = clamp(round(x[m, k] * inv[k]), -127, 127)
//   tsir.dnnl.int8_conv2d_nhwc(x, wq, bias, scale, inv, sh, sw, pt, pl, pb, pr, dh, dw, relu, out)
//       out[n, h, w, o] = act(scale[o] * conv(q(x), wq)[n, h, w, o] + bias[o]), x and out NHWC float32, wq int8
//       OIHW (groups 1), padding (top, left, bottom, right), act ReLU when relu != 0; q as above, inv [C]
//   tsir.dnnl.int8_impl() -> str            oneDNN's implementation of the latest int8 primitive
//   tsir.dnnl.int8_packed_weights() -> int  how many int8 weight tensors are held pre-packed
//
// inv: float32 [K], the inverse activation step per input channel (one value repeated, or divided by
// SmoothQuant factors migrated into the weight).
// x: float32 [..., K] (flattened to [M, K]); wq: int8 [K, N]; scale: float32 [N] (activation step times the
// per-output-channel weight step); out: float32 [..., N]. The activation is quantized here (s8, a loop that
// vectorizes (-fno-trapping-math): no libm call per element; threads for large activations), the product
// is s8 x s8 -> s32 in oneDNN (VNNI on AVX512-VNNI CPUs) with the per-channel scale applied to the f32 output.
// Weights are given to oneDNN in its preferred (packed) layout, like the fp32 path's constant weights
// (dnnl_ops.cc): `wq` must be a constant of the calling module (never written); its packed copy is kept keyed by
// the buffer's address and shape, and the entry holds a reference to the tensor, so that address cannot be
// reused by another tensor while the entry lives; an entry whose tensor nobody else holds (its module was freed)
// is dropped.
#include <oneapi/dnnl/dnnl.hpp>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/reflection/registry.h>
#include <tvm/ffi/string.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

namespace {

using tvm::ffi::TensorView;
using dims = dnnl::memory::dims;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

struct Prim {
  dnnl::matmul prim;
  dnnl::memory::desc src, weights, dst, scale;
  std::string impl;
};

std::mutex mutex;
std::map<std::tuple<int64_t, int64_t, int64_t>, Prim> prims;
struct Packed {
  tvm::ffi::Tensor owner;
  dnnl::memory mem;
};
std::map<std::tuple<const void*, int64_t, int64_t>, Packed> packed;  // weight address, K, N
const std::string* last_impl = nullptr;  // of the latest primitive (std::map nodes never move)

void Check(const TensorView& t, uint8_t code, int bits, const char* name) {
  DLDataType d = t.dtype();
  if (d.code != code || d.bits != bits || d.lanes != 1) {
    TVM_FFI_THROW(TypeError) << "tsir.dnnl int8: " << name << " has the wrong dtype";
  }
  if (t.device().device_type != kDLCPU) TVM_FFI_THROW(ValueError) << "tsir.dnnl int8: CPU tensors only";
  int64_t expected = 1;
  for (int i = t.ndim() - 1; i >= 0; --i) {
    if (t.size(i) != 1 && t.stride(i) != expected) {
      TVM_FFI_THROW(ValueError) << "tsir.dnnl int8: " << name << " must be contiguous";
    }
    expected *= t.size(i);
  }
}

void* Data(const TensorView& t) { return static_cast<char*>(t.data_ptr()) + t.byte_offset(); }

const Prim& Primitive(int64_t m, int64_t k, int64_t n) {
  auto key = std::make_tuple(m, k, n);
  auto it = prims.find(key);
  if (it != prims.end()) return it->second;
  Prim p;
  p.src = dnnl::memory::desc({m, k}, dt::s8, tag::ab);
  p.dst = dnnl::memory::desc({m, n}, dt::f32, tag::ab);
  p.scale = dnnl::memory::desc({n}, dt::f32, tag::a);
  dnnl::primitive_attr attr;
  attr.set_scales_mask(DNNL_ARG_WEIGHTS, 1 << 1);  // one scale per output column
  dnnl::memory::desc any_weights({k, n}, dt::s8, tag::any);
  try {
    dnnl::matmul::primitive_desc pd(Engine(), p.src, any_weights, p.dst, attr);
    p.weights = pd.weights_desc();
    p.prim = dnnl::matmul(pd);
    p.impl = pd.impl_info_str();
  } catch (const dnnl::error& err) {
    TVM_FFI_THROW(RuntimeError) << "oneDNN cannot create an int8 matmul " << m << "x" << k << "x" << n << ": "
                                << err.what();
  }
  return prims.emplace(key, p).first->second;
}

// q(x) = clamp(round_half_even(x * inv), -127, 127). Adding then subtracting 1.5 * 2^23 rounds a float of
// magnitude below 2^22 to the nearest integer (ties to even) without std::nearbyint, which is a libm call
// per element on baseline x86-64 code and cost more than the int8 matmul itself.
void Quantize(const float* xs, int8_t* xq, int64_t m, int64_t k, const float* inv) {
  constexpr float kRound = 12582912.0f;
#pragma omp parallel for schedule(static) if (m * k >= (1 << 16))
  for (int64_t r = 0; r < m; ++r) {
    const float* row = xs + r * k;
    int8_t* qrow = xq + r * k;
#pragma omp simd
    for (int64_t i = 0; i < k; ++i) {
      float v = row[i] * inv[i];
      v = v < -127.0f ? -127.0f : (v > 127.0f ? 127.0f : v);
      qrow[i] = static_cast<int8_t>(static_cast<int32_t>((v + kRound) - kRound));
    }
  }
}

// `wq` (the caller's int8 weights, laid out as `user`) in the primitive's layout `md`: reordered on first use and
// kept, keyed by the buffer's address and the two sizes `rows`, `cols`. Call with `mutex` held.
dnnl::memory PackedInt8(const tvm::ffi::Tensor& wq_ref, const dnnl::memory::desc& user_md, const dnnl::memory::desc& md,
                        int64_t rows, int64_t cols, dnnl::stream& stream) {
  auto key = std::make_tuple(static_cast<const void*>(Data(TensorView(wq_ref))), rows, cols);
  auto it = packed.find(key);
  if (it == packed.end() || it->second.mem.get_desc() != md) {
    for (auto e = packed.begin(); e != packed.end();) e = e->second.owner.use_count() == 1 ? packed.erase(e) : ++e;
    dnnl::memory user(user_md, Engine(), Data(TensorView(wq_ref)));
    dnnl::memory mem(md, Engine());
    dnnl::reorder(user, mem).execute(stream, user, mem);
    stream.wait();
    it = packed.insert_or_assign(key, Packed{wq_ref, mem}).first;
  }
  return it->second.mem;
}

void Int8Matmul(TensorView x, tvm::ffi::Tensor wq_ref, TensorView scale, TensorView inv, TensorView out) {
  TensorView wq(wq_ref);
  Check(x, kDLFloat, 32, "x");
  Check(wq, kDLInt, 8, "wq");
  Check(scale, kDLFloat, 32, "scale");
  Check(inv, kDLFloat, 32, "inv");
  Check(out, kDLFloat, 32, "out");
  if (wq.ndim() != 2 || x.ndim() < 1 || x.size(x.ndim() - 1) != wq.size(0)) {
    TVM_FFI_THROW(ValueError) << "tsir.dnnl.int8_matmul: x [..., K] and wq [K, N] do not contract";
  }
  int64_t k = wq.size(0), n = wq.size(1), m = x.numel() / k;
  if (scale.numel() != n || inv.numel() != k || out.numel() != m * n || out.size(out.ndim() - 1) != n) {
    TVM_FFI_THROW(ValueError) << "tsir.dnnl.int8_matmul: scale must have N elements, inv K and out [..., N]";
  }
  dnnl::engine& eng = Engine();
  thread_local dnnl::stream stream(eng);
  thread_local std::vector<int8_t> xq;
  xq.resize(m * k);
  Quantize(static_cast<const float*>(Data(x)), xq.data(), m, k, static_cast<const float*>(Data(inv)));
  const Prim* prim;
  dnnl::memory weights;
  {
    std::lock_guard<std::mutex> lock(mutex);
    prim = &Primitive(m, k, n);
    const Prim& p = *prim;
    last_impl = &p.impl;
    weights = PackedInt8(wq_ref, {{k, n}, dt::s8, tag::ab}, p.weights, k, n, stream);
  }
  const Prim& p = *prim;
  p.prim.execute(stream, {{DNNL_ARG_SRC, dnnl::memory(p.src, eng, xq.data())},
                          {DNNL_ARG_WEIGHTS, weights},
                          {DNNL_ARG_DST, dnnl::memory(p.dst, eng, Data(out))},
                          {DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS, dnnl::memory(p.scale, eng, Data(scale))}});
  stream.wait();
}

struct ConvPrim {
  dnnl::convolution_forward prim;
  dnnl::memory::desc src, weights, user_weights, bias, dst, scale;
  std::string impl;
};
std::map<std::vector<int64_t>, ConvPrim> conv_prims;

const ConvPrim& ConvPrimitive(const dims& src, const dims& weights, const dims& dst, const dims& strides,
                              const dims& dilation, const dims& pad_l, const dims& pad_r, bool relu) {
  std::vector<int64_t> key;
  for (const dims* d : {&src, &weights, &dst, &strides, &dilation, &pad_l, &pad_r}) {
    key.insert(key.end(), d->begin(), d->end());
  }
  key.push_back(relu);
  auto it = conv_prims.find(key);
  if (it != conv_prims.end()) return it->second;
  ConvPrim p;
  p.src = dnnl::memory::desc(src, dt::s8, tag::nhwc);
  p.dst = dnnl::memory::desc(dst, dt::f32, tag::nhwc);
  p.bias = dnnl::memory::desc({weights[0]}, dt::f32, tag::a);
  p.scale = dnnl::memory::desc({weights[0]}, dt::f32, tag::a);
  p.user_weights = dnnl::memory::desc(weights, dt::s8, tag::oihw);
  dnnl::primitive_attr attr;
  attr.set_scales_mask(DNNL_ARG_WEIGHTS, 1 << 0);  // one scale per output channel
  if (relu) {
    dnnl::post_ops ops;
    ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(ops);
  }
  try {
    dnnl::convolution_forward::primitive_desc pd(
        Engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, p.src,
        dnnl::memory::desc(weights, dt::s8, tag::any), p.bias, p.dst, strides, dilation, pad_l, pad_r, attr);
    p.weights = pd.weights_desc();
    p.prim = dnnl::convolution_forward(pd);
    p.impl = pd.impl_info_str();
  } catch (const dnnl::error& err) {
    TVM_FFI_THROW(RuntimeError) << "oneDNN cannot create an int8 convolution: " << err.what();
  }
  return conv_prims.emplace(key, p).first->second;
}

void Int8Conv2dNhwc(TensorView x, tvm::ffi::Tensor wq_ref, TensorView bias, TensorView scale, TensorView inv,
                    int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t pb, int64_t pr, int64_t dh, int64_t dw,
                    int64_t relu, TensorView out) {
  TensorView wq(wq_ref);
  for (auto [t, name] : {std::pair{&x, "x"}, {&bias, "bias"}, {&scale, "scale"}, {&inv, "inv"}, {&out, "out"}}) {
    Check(*t, kDLFloat, 32, name);
  }
  Check(wq, kDLInt, 8, "wq");
  if (x.ndim() != 4 || wq.ndim() != 4 || x.size(3) != wq.size(1) || out.ndim() != 4) {
    TVM_FFI_THROW(ValueError) << "tsir.dnnl.int8_conv2d_nhwc: x (NHWC) and wq (OIHW, groups 1) do not match";
  }
  int64_t n = x.size(0), c = x.size(3), o = wq.size(0);
  dims src = {n, c, x.size(1), x.size(2)}, weights = {o, c, wq.size(2), wq.size(3)};
  dims dst = {n, o, 0, 0};
  for (int i = 0; i < 2; ++i) {
    int64_t stride = i ? sw : sh, dil = i ? dw : dh, before = i ? pl : pt, after = i ? pr : pb;
    dst[2 + i] = (src[2 + i] + before + after - dil * (weights[2 + i] - 1) - 1) / stride + 1;
  }
  if (bias.numel() != o || scale.numel() != o || inv.numel() != c || out.size(0) != n || out.size(1) != dst[2] ||
      out.size(2) != dst[3] || out.size(3) != o) {
    TVM_FFI_THROW(ValueError) << "tsir.dnnl.int8_conv2d_nhwc: bias and scale must have O elements, inv C, and out "
                              << "the convolution's NHWC shape";
  }
  dnnl::engine& eng = Engine();
  thread_local dnnl::stream stream(eng);
  thread_local std::vector<int8_t> xq;
  xq.resize(x.numel());
  Quantize(static_cast<const float*>(Data(x)), xq.data(), x.numel() / c, c, static_cast<const float*>(Data(inv)));
  const ConvPrim* prim;
  dnnl::memory weights_mem;
  {
    std::lock_guard<std::mutex> lock(mutex);
    prim = &ConvPrimitive(src, weights, dst, {sh, sw}, {dh - 1, dw - 1}, {pt, pl}, {pb, pr}, relu != 0);
    const ConvPrim& p = *prim;
    last_impl = &p.impl;
    weights_mem = PackedInt8(wq_ref, p.user_weights, p.weights, o, c * weights[2] * weights[3], stream);
  }
  const ConvPrim& p = *prim;
  p.prim.execute(stream, {{DNNL_ARG_SRC, dnnl::memory(p.src, eng, xq.data())},
                          {DNNL_ARG_WEIGHTS, weights_mem},
                          {DNNL_ARG_BIAS, dnnl::memory(p.bias, eng, Data(bias))},
                          {DNNL_ARG_DST, dnnl::memory(p.dst, eng, Data(out))},
                          {DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS, dnnl::memory(p.scale, eng, Data(scale))}});
  stream.wait();
}

int64_t Int8PackedCount() {
  std::lock_guard<std::mutex> lock(mutex);
  return static_cast<int64_t>(packed.size());
}

tvm::ffi::String Int8Impl() {
  std::lock_guard<std::mutex> lock(mutex);
  return tvm::ffi::String(last_impl == nullptr ? std::string() : *last_impl);
}

}  // namespace

TVM_FFI_STATIC_INIT_BLOCK() {
  namespace refl = tvm::ffi::reflection;
  refl::GlobalDef()
      .def("tsir.dnnl.int8_matmul", Int8Matmul)
      .def("tsir.dnnl.int8_conv2d_nhwc", Int8Conv2dNhwc)
      .def("tsir.dnnl.int8_impl", Int8Impl)
      .def("tsir.dnnl.int8_packed_weights", Int8PackedCount);
}
