// oneDNN kernels as tvm-ffi global functions, in destination-passing style for Relax call_dps_packed.
//
//   tsir.dnnl.matmul(a, b, out)                       out = a @ b              (batch dims broadcast)
//   tsir.dnnl.linear(x, w, bias, relu, const_w, out)  out = act(x @ w + bias)  (x: [..., K], w: [K, N])
//   tsir.dnnl.conv2d(x, w, bias, sh, sw, pt, pl, pb, pr, dh, dw, groups, act, low, high, const_w, out)
//                                                     out = act(conv2d(x, w) + bias), NCHW / OIHW; act 0: none,
//                                                     1: ReLU, 2: clip to [low, high] (ReLU6); low and high are
//                                                     float64 bit patterns in int64 (int arguments are constants
//                                                     of the Relax VM, a float one is computed by a host function
//                                                     on every call)
//   tsir.dnnl.conv2d_nhwc(x, w, bias, ..., out)       the same with x and out NHWC (w still OIHW): oneDNN's
//                                                     brgemm kernels compute in NHWC, so no reorders per call
//   tsir.dnnl.conv2d_nhwc_add(x, w, bias, r, ..., out)
//                                                     out = act(conv2d(x, w) + bias + r), NHWC, r shaped as out:
//                                                     a residual added by a oneDNN binary post-op before act
//   tsir.dnnl.layer_norm(x, gamma, beta, eps, out)    out = (x - mean) / sqrt(var + eps) * gamma + beta over the
//                                                     last axis, any rank (gamma, beta: one value per element of
//                                                     it; eps a float64 bit pattern, as conv2d's low and high)
//   tsir.dnnl.impl(name) -> str                       oneDNN's implementation of the last `name` primitive
//   tsir.dnnl.packed_weights() -> int                 how many weight tensors are held pre-packed
//
// A primitive with less work than kSerialFlops runs on the calling thread alone: waking OpenMP's other threads
// costs more than they save there (tens of µs with a passive wait policy or a loaded machine).
//
// All tensors are fp32, dense, row-major, on the CPU. Primitives are created once per shape and
// attribute set and cached (oneDNN's own primitive cache also applies).
//
// `const_w != 0` promises that `w` is a constant of the calling module (a Relax constant: the same buffer,
// never written, for the module's lifetime). Then the primitive is created with the weight layout oneDNN
// prefers (`format_tag::any`: blocked for its brgemm / jit kernels), and `w` is reordered into it once, on the
// first call, and kept keyed by the buffer's address; later calls use the packed copy. Without the promise the
// weights are read as they are (linear) or reordered on every call (conv2d, only where that pays).
#include <omp.h>
#include <oneapi/dnnl/dnnl.hpp>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/reflection/registry.h>
#include <tvm/ffi/string.h>

#include <cstring>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

using tvm::ffi::TensorView;
using dims = dnnl::memory::dims;

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// A primitive with the layouts it computes in. When oneDNN picks a blocked layout for src, weights or dst
// (conv2d with `any`), `to_*` reorder the caller's plain tensor into it (and `from_dst` back).
struct Cached {
  int threads = 0;  // OpenMP threads it was created for and runs on
  dnnl::primitive prim;
  dnnl::memory::desc src, weights, bias, dst, residual;
  dnnl::memory::desc user_src, user_weights, user_dst;
  dnnl::primitive to_src, to_weights, from_dst;
  bool pack_weights = false;  // const_w: reorder the weights once and keep them (see PackedWeights)
};

constexpr double kSerialFlops = 4e6;

// Sets the calling thread's OpenMP thread count for the scope (oneDNN sizes its work by it at creation, and a
// primitive must run with the count it was created with).
class Threads {
 public:
  explicit Threads(int n) : saved_(omp_get_max_threads()) {
    if (n != saved_) omp_set_num_threads(n);
  }
  ~Threads() {
    if (omp_get_max_threads() != saved_) omp_set_num_threads(saved_);
  }
  static int For(double flops) { return flops < kSerialFlops ? 1 : omp_get_max_threads(); }

 private:
  int saved_;
};

// A primitive's key: its kind, the shapes and attributes it was created for (cheap to build on every call).
using Key = std::vector<int64_t>;
struct KeyHash {
  size_t operator()(const Key& key) const {
    size_t h = key.size();
    for (int64_t v : key) h ^= std::hash<int64_t>()(v) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    return h;
  }
};

std::mutex cache_mutex;
std::unordered_map<Key, Cached, KeyHash> cache;  // entries are never erased: references to them stay valid
std::map<std::string, std::string> last_impl;

void CheckTensor(const TensorView& t, const char* fn, const char* name) {
  DLDataType dt = t.dtype();
  if (dt.code != kDLFloat || dt.bits != 32 || dt.lanes != 1) {
    TVM_FFI_THROW(TypeError) << fn << ": " << name << " must be float32";
  }
  if (t.device().device_type != kDLCPU) {
    TVM_FFI_THROW(ValueError) << fn << ": " << name << " must be on the CPU";
  }
  int64_t expected = 1;
  for (int i = t.ndim() - 1; i >= 0; --i) {
    if (t.size(i) != 1 && t.stride(i) != expected) {
      TVM_FFI_THROW(ValueError) << fn << ": " << name << " must be contiguous (row-major)";
    }
    expected *= t.size(i);
  }
}

dims Shape(const TensorView& t) {
  dims out;
  for (int i = 0; i < t.ndim(); ++i) out.push_back(t.size(i));
  return out;
}

dims RowMajorStrides(const dims& shape) {
  dims strides(shape.size(), 1);
  for (int i = static_cast<int>(shape.size()) - 2; i >= 0; --i) strides[i] = strides[i + 1] * shape[i + 1];
  return strides;
}

dnnl::memory::desc Plain(const dims& shape) {
  return dnnl::memory::desc(shape, dnnl::memory::data_type::f32, RowMajorStrides(shape));
}

Key MakeKey(int64_t kind, std::initializer_list<dims> shapes, std::initializer_list<int64_t> attrs) {
  Key key{kind};
  for (const dims& shape : shapes) {
    key.push_back(static_cast<int64_t>(shape.size()));
    key.insert(key.end(), shape.begin(), shape.end());
  }
  key.insert(key.end(), attrs.begin(), attrs.end());
  return key;
}

std::string KeyText(const Key& key) {
  std::ostringstream text;
  for (int64_t v : key) text << v << ',';
  return text.str();
}

// The post-ops: a residual added (binary add of a tensor laid out as `residual`, when given), then the
// activation: 0 none, 1 ReLU, 2 clip to [low, high].
dnnl::primitive_attr Attr(int64_t act, double low = 0.0, double high = 0.0,
                          const dnnl::memory::desc* residual = nullptr) {
  dnnl::primitive_attr attr;
  if (act < 0 || act > 2) TVM_FFI_THROW(ValueError) << "activation code must be 0, 1 or 2, got " << act;
  dnnl::post_ops ops;
  if (residual != nullptr) ops.append_binary(dnnl::algorithm::binary_add, *residual);
  if (act == 1) {
    ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
  } else if (act == 2) {
    ops.append_eltwise(dnnl::algorithm::eltwise_clip, static_cast<float>(low), static_cast<float>(high));
  }
  if (ops.len() > 0) attr.set_post_ops(ops);
  return attr;
}

// A float64 passed as its bit pattern.
double FromBits(int64_t bits) {
  double value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

template <typename Make>
const Cached& Lookup(const Key& key, const char* kind, double flops, Make make) {
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  Cached entry;
  entry.threads = Threads::For(flops);
  Threads scope(entry.threads);
  std::string impl;
  try {
    impl = make(&entry);
  } catch (const dnnl::error& err) {
    TVM_FFI_THROW(RuntimeError) << "oneDNN cannot create " << kind << " for key " << KeyText(key) << ": "
                                << err.what();
  }
  last_impl[kind] = impl;
  return cache.emplace(key, entry).first->second;
}

// Constant weights reordered into a primitive's layout, keyed by primitive and the caller's buffer address.
// The entry holds a reference to the caller's tensor, so that address cannot be reused by another tensor while
// the entry lives; an entry whose tensor nobody else holds any more (its module was freed) is dropped.
struct Packed {
  tvm::ffi::Tensor owner;
  dnnl::memory mem;
};
std::mutex packed_mutex;
std::map<std::pair<const Cached*, const void*>, Packed> packed;

dnnl::memory PackedWeights(const Cached& c, const tvm::ffi::Tensor& w, void* weights, dnnl::stream& stream) {
  std::lock_guard<std::mutex> lock(packed_mutex);
  auto it = packed.find({&c, weights});
  if (it != packed.end()) return it->second.mem;
  for (auto e = packed.begin(); e != packed.end();) e = e->second.owner.use_count() == 1 ? packed.erase(e) : ++e;
  dnnl::memory mem(c.weights, Engine());  // owns its buffer
  c.to_weights.execute(stream, {{DNNL_ARG_FROM, dnnl::memory(c.user_weights, Engine(), weights)},
                                {DNNL_ARG_TO, mem}});
  stream.wait();
  packed.emplace(std::make_pair(&c, static_cast<const void*>(weights)), Packed{w, mem});
  return mem;
}

// A thread's scratch buffer for reordered tensors (slot 0: src, 1: weights, 2: dst).
void* Scratch(int slot, size_t bytes) {
  thread_local std::vector<char> buffers[3];
  if (buffers[slot].size() < bytes) buffers[slot].resize(bytes);
  return buffers[slot].data();
}

// A thread's memory objects for one primitive, pointed at each call's buffers (oneDNN memory objects and the
// argument map are created once, not per call).
struct Bound {
  dnnl::memory src, user_src, weights, user_weights, bias, dst, user_dst, residual;
  std::unordered_map<int, dnnl::memory> args;
};

dnnl::memory& Bind(dnnl::memory& slot, const dnnl::memory::desc& md, void* data) {
  if (!slot) {
    slot = dnnl::memory(md, Engine(), data);
  } else if (slot.get_data_handle() != data) {
    slot.set_data_handle(data);
  }
  return slot;
}

// `owner` is the weights' tensor when they may be packed once (const_w), else null; `residual` the first post-op's
// tensor (a binary add), when the primitive has one.
void Run(const Cached& c, void* src, void* weights, void* bias, void* dst, const tvm::ffi::Tensor* owner = nullptr,
         void* residual = nullptr) {
  thread_local dnnl::stream stream(Engine());
  thread_local std::unordered_map<const Cached*, Bound> bound;
  Threads scope(c.threads);
  Bound& b = bound[&c];
  auto in = [&](const dnnl::primitive& reorder, dnnl::memory& user, const dnnl::memory::desc& user_md,
                dnnl::memory& mem, const dnnl::memory::desc& md, void* data, int slot) -> dnnl::memory& {
    if (!reorder) return Bind(mem, md, data);
    Bind(mem, md, Scratch(slot, md.get_size()));
    reorder.execute(stream, {{DNNL_ARG_FROM, Bind(user, user_md, data)}, {DNNL_ARG_TO, mem}});
    return mem;
  };
  b.args[DNNL_ARG_SRC] = in(c.to_src, b.user_src, c.user_src, b.src, c.src, src, 0);
  if (owner && c.pack_weights && c.to_weights) {
    b.args[DNNL_ARG_WEIGHTS] = Bind(b.weights, c.weights, PackedWeights(c, *owner, weights, stream).get_data_handle());
  } else {
    b.args[DNNL_ARG_WEIGHTS] = in(c.to_weights, b.user_weights, c.user_weights, b.weights, c.weights, weights, 1);
  }
  b.args[DNNL_ARG_DST] = Bind(b.dst, c.dst, c.from_dst ? Scratch(2, c.dst.get_size()) : dst);
  if (bias != nullptr) b.args[DNNL_ARG_BIAS] = Bind(b.bias, c.bias, bias);
  if (residual != nullptr) {
    b.args[DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1] = Bind(b.residual, c.residual, residual);
  }
  c.prim.execute(stream, b.args);
  if (c.from_dst) {
    c.from_dst.execute(stream, {{DNNL_ARG_FROM, b.dst}, {DNNL_ARG_TO, Bind(b.user_dst, c.user_dst, dst)}});
  }
  stream.wait();
}

// The reorder from layout `from` to `to`, or an empty primitive when they are the same.
dnnl::primitive Reorder(const dnnl::memory::desc& from, const dnnl::memory::desc& to) {
  if (from == to) return dnnl::primitive();
  return dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), from, Engine(), to));
}

void* Data(const TensorView& t) { return static_cast<char*>(t.data_ptr()) + t.byte_offset(); }

void CheckOut(const TensorView& out, const dims& expected, const char* fn) {
  if (Shape(out) != expected) {
    std::ostringstream msg;
    msg << fn << ": output shape does not match; expected [";
    for (auto d : expected) msg << d << ' ';
    msg << "]";
    TVM_FFI_THROW(ValueError) << msg.str();
  }
}

// a: [..., M, K], b: [..., K, N]; batch dims broadcast (oneDNN needs equal rank: pad with 1s).
void Matmul(TensorView a, TensorView b, TensorView out) {
  const char* fn = "tsir.dnnl.matmul";
  CheckTensor(a, fn, "a");
  CheckTensor(b, fn, "b");
  CheckTensor(out, fn, "out");
  dims sa = Shape(a), sb = Shape(b);
  if (sa.size() < 2 || sb.size() < 2 || sa.back() != sb[sb.size() - 2]) {
    TVM_FFI_THROW(ValueError) << fn << ": a and b do not contract";
  }
  size_t rank = std::max(sa.size(), sb.size());
  if (rank > 6) TVM_FFI_THROW(ValueError) << fn << ": rank " << rank << " > 6 is not supported";
  sa.insert(sa.begin(), rank - sa.size(), 1);
  sb.insert(sb.begin(), rank - sb.size(), 1);
  dims so(rank);
  for (size_t i = 0; i + 2 < rank; ++i) {
    if (sa[i] != sb[i] && sa[i] != 1 && sb[i] != 1) TVM_FFI_THROW(ValueError) << fn << ": batch dims differ";
    so[i] = std::max(sa[i], sb[i]);
  }
  so[rank - 2] = sa[rank - 2];
  so[rank - 1] = sb[rank - 1];
  CheckOut(out, so, fn);
  Key key = MakeKey(0, {sa, sb}, {});
  double flops = 2.0 * so[rank - 2] * so[rank - 1] * sa[rank - 1];
  for (size_t i = 0; i + 2 < rank; ++i) flops *= so[i];
  const Cached& c = Lookup(key, "matmul", flops, [&](Cached* e) {
    e->src = Plain(sa);
    e->weights = Plain(sb);
    e->dst = Plain(so);
    dnnl::matmul::primitive_desc pd(Engine(), e->src, e->weights, e->dst);
    e->prim = dnnl::matmul(pd);
    return std::string(pd.impl_info_str());
  });
  Run(c, Data(a), Data(b), nullptr, Data(out));
}

// x: [..., K] (flattened to [M, K]), w: [K, N], bias: N elements; out: [..., N].
void Linear(TensorView x, tvm::ffi::Tensor w_ref, TensorView bias, int64_t relu, int64_t const_w,
            TensorView out) {
  const char* fn = "tsir.dnnl.linear";
  TensorView w(w_ref);
  CheckTensor(x, fn, "x");
  CheckTensor(w, fn, "w");
  CheckTensor(bias, fn, "bias");
  CheckTensor(out, fn, "out");
  if (w.ndim() != 2 || x.ndim() < 1 || x.size(x.ndim() - 1) != w.size(0)) {
    TVM_FFI_THROW(ValueError) << fn << ": x [..., K] and w [K, N] do not contract";
  }
  int64_t k = w.size(0), n = w.size(1), m = x.numel() / k;
  if (bias.numel() != n) TVM_FFI_THROW(ValueError) << fn << ": bias must have N = " << n << " elements";
  if (out.numel() != m * n || out.size(out.ndim() - 1) != n) {
    TVM_FFI_THROW(ValueError) << fn << ": output must have shape [..., " << n << "] with " << m * n << " elements";
  }
  Key key = MakeKey(1, {{m, k, n}}, {relu, const_w != 0});
  const Cached& c = Lookup(key, "linear", 2.0 * m * k * n, [&](Cached* e) {
    e->src = Plain({m, k});
    e->user_weights = Plain({k, n});
    e->bias = Plain({1, n});
    e->dst = Plain({m, n});
    dnnl::memory::desc weights =
        const_w ? dnnl::memory::desc({k, n}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::any)
                : e->user_weights;
    dnnl::matmul::primitive_desc pd(Engine(), e->src, weights, e->bias, e->dst, Attr(relu != 0 ? 1 : 0));
    e->weights = pd.weights_desc();
    e->to_weights = Reorder(e->user_weights, e->weights);
    e->pack_weights = const_w != 0;
    e->prim = dnnl::matmul(pd);
    return std::string(pd.impl_info_str());
  });
  Run(c, Data(x), Data(w), Data(bias), Data(out), &w_ref);
}

// x: [N, C, H, W] (nhwc: [N, H, W, C]), w: [O, C/groups, KH, KW], bias: O elements; padding (top, left, bottom,
// right); out: [N, O, OH, OW] (nhwc: [N, OH, OW, O]); residual (nhwc only, may be null): shaped as out.
void Conv2dIn(bool nhwc, TensorView x, tvm::ffi::Tensor w_ref, TensorView bias, const TensorView* residual,
              int64_t sh, int64_t sw, int64_t pt, int64_t pl, int64_t pb, int64_t pr, int64_t dh, int64_t dw,
              int64_t groups, int64_t act, int64_t low_bits, int64_t high_bits, int64_t const_w, TensorView out) {
  double low = FromBits(low_bits), high = FromBits(high_bits);
  const char* fn = residual ? "tsir.dnnl.conv2d_nhwc_add" : nhwc ? "tsir.dnnl.conv2d_nhwc" : "tsir.dnnl.conv2d";
  TensorView w(w_ref);
  CheckTensor(x, fn, "x");
  CheckTensor(w, fn, "w");
  CheckTensor(bias, fn, "bias");
  CheckTensor(out, fn, "out");
  dims sx = Shape(x);  // logical NCHW
  if (nhwc && sx.size() == 4) sx = {sx[0], sx[3], sx[1], sx[2]};
  if (sx.size() != 4 || w.ndim() != 4 || groups < 1 || sx[1] != w.size(1) * groups || w.size(0) % groups) {
    TVM_FFI_THROW(ValueError) << fn << ": x (" << (nhwc ? "NHWC" : "NCHW") << ") and w (OIHW) do not match with groups="
                              << groups;
  }
  if (bias.numel() != w.size(0)) TVM_FFI_THROW(ValueError) << fn << ": bias must have O elements";
  dims so = {sx[0], w.size(0), 0, 0};
  for (int i = 0; i < 2; ++i) {
    int64_t stride = i ? sw : sh, dil = i ? dw : dh, before = i ? pl : pt, after = i ? pr : pb;
    so[2 + i] = (sx[2 + i] + before + after - dil * (w.size(2 + i) - 1) - 1) / stride + 1;
  }
  CheckOut(out, nhwc ? dims{so[0], so[2], so[3], so[1]} : so, fn);
  if (residual != nullptr) {
    CheckTensor(*residual, fn, "r");
    if (Shape(*residual) != Shape(out)) TVM_FFI_THROW(ValueError) << fn << ": r must have the output's shape";
  }
  dims swt = Shape(w);
  dims wdims = groups == 1 ? swt : dims{groups, swt[0] / groups, swt[1], swt[2], swt[3]};
  Key key = MakeKey(residual ? 4 : nhwc ? 3 : 2, {sx, swt},
                    {sh, sw, pt, pl, pb, pr, dh, dw, groups, act, low_bits, high_bits, const_w != 0});
  double flops = 2.0 * out.numel() * w.size(1) * w.size(2) * w.size(3);
  const Cached& c = Lookup(key, "conv2d", flops, [&](Cached* e) {
    auto nhwc_md = [](const dims& shape) {
      return dnnl::memory::desc(shape, dnnl::memory::data_type::f32, dnnl::memory::format_tag::nhwc);
    };
    e->user_src = nhwc ? nhwc_md(sx) : Plain(sx);
    e->user_weights = Plain(wdims);
    e->user_dst = nhwc ? nhwc_md(so) : Plain(so);
    e->bias = Plain({swt[0]});
    if (residual != nullptr) e->residual = e->user_dst;
    // Constant weights are packed once, so oneDNN picks blocked layouts (its direct / brgemm kernels) and NCHW
    // activations are reordered on every call (NHWC ones are computed in place: brgemm's own layout). Otherwise,
    // where activations outweigh the weights, the same; else reordering the weights each call costs more than it
    // saves, and the plain layouts (im2col + gemm) run as they are.
    bool blocked = const_w != 0 || dnnl::memory::dim(w.numel()) <= x.numel() + out.numel();
    auto any = [blocked](const dims& shape) {
      return blocked ? dnnl::memory::desc(shape, dnnl::memory::data_type::f32, dnnl::memory::format_tag::any)
                     : Plain(shape);
    };
    dnnl::convolution_forward::primitive_desc pd(
        Engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
        nhwc ? e->user_src : any(sx), any(wdims), e->bias, nhwc ? e->user_dst : any(so), {sh, sw}, {dh - 1, dw - 1},
        {pt, pl}, {pb, pr}, Attr(act, low, high, residual ? &e->residual : nullptr));
    e->src = pd.src_desc();
    e->weights = pd.weights_desc();
    e->dst = pd.dst_desc();
    e->to_src = Reorder(e->user_src, e->src);
    e->to_weights = Reorder(e->user_weights, e->weights);
    e->from_dst = Reorder(e->dst, e->user_dst);
    e->pack_weights = const_w != 0;
    e->prim = dnnl::convolution_forward(pd);
    return std::string(pd.impl_info_str());
  });
  Run(c, Data(x), Data(w), Data(bias), Data(out), &w_ref, residual ? Data(*residual) : nullptr);
}

void Conv2d(TensorView x, tvm::ffi::Tensor w, TensorView bias, int64_t sh, int64_t sw, int64_t pt, int64_t pl,
            int64_t pb, int64_t pr, int64_t dh, int64_t dw, int64_t groups, int64_t act, int64_t low, int64_t high,
            int64_t const_w, TensorView out) {
  Conv2dIn(false, x, w, bias, nullptr, sh, sw, pt, pl, pb, pr, dh, dw, groups, act, low, high, const_w, out);
}

void Conv2dNhwc(TensorView x, tvm::ffi::Tensor w, TensorView bias, int64_t sh, int64_t sw, int64_t pt, int64_t pl,
                int64_t pb, int64_t pr, int64_t dh, int64_t dw, int64_t groups, int64_t act, int64_t low,
                int64_t high, int64_t const_w, TensorView out) {
  Conv2dIn(true, x, w, bias, nullptr, sh, sw, pt, pl, pb, pr, dh, dw, groups, act, low, high, const_w, out);
}

void Conv2dNhwcAdd(TensorView x, tvm::ffi::Tensor w, TensorView bias, TensorView r, int64_t sh, int64_t sw,
                   int64_t pt, int64_t pl, int64_t pb, int64_t pr, int64_t dh, int64_t dw, int64_t groups, int64_t act,
                   int64_t low, int64_t high, int64_t const_w, TensorView out) {
  Conv2dIn(true, x, w, bias, &r, sh, sw, pt, pl, pb, pr, dh, dw, groups, act, low, high, const_w, out);
}

// A primitive that reads `src` and writes `dst` in plain layouts, with more arguments by the caller (`extra`).
void RunPlain(const Cached& c, void* src, void* dst, std::unordered_map<int, dnnl::memory> extra = {}) {
  thread_local dnnl::stream stream(Engine());
  Threads scope(c.threads);
  extra[DNNL_ARG_SRC] = dnnl::memory(c.src, Engine(), src);
  extra[DNNL_ARG_DST] = dnnl::memory(c.dst, Engine(), dst);
  c.prim.execute(stream, extra);
  stream.wait();
}

void LayerNorm(TensorView x, TensorView gamma, TensorView beta, int64_t eps_bits, TensorView out) {
  const char* fn = "tsir.dnnl.layer_norm";
  for (auto [t, name] : {std::pair{&x, "x"}, {&gamma, "gamma"}, {&beta, "beta"}, {&out, "out"}}) {
    CheckTensor(*t, fn, name);
  }
  dims sx = Shape(x);
  if (sx.empty() || gamma.numel() != sx.back() || beta.numel() != sx.back()) {
    TVM_FFI_THROW(ValueError) << fn << ": gamma and beta must have the length of x's last axis";
  }
  CheckOut(out, sx, fn);
  dims rows = {x.numel() / std::max<int64_t>(sx.back(), 1), sx.back()};  // normalized along the last axis
  const Cached& c = Lookup(MakeKey(6, {rows}, {eps_bits}), "layer_norm", 8.0 * x.numel(), [&](Cached* e) {
    e->src = e->dst = Plain(rows);
    e->bias = Plain({sx.back()});
    dnnl::layer_normalization_forward::primitive_desc pd(
        Engine(), dnnl::prop_kind::forward_inference, e->src, e->dst, static_cast<float>(FromBits(eps_bits)),
        dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift);
    e->prim = dnnl::layer_normalization_forward(pd);
    return std::string(pd.impl_info_str());
  });
  RunPlain(c, Data(x), Data(out), {{DNNL_ARG_SCALE, dnnl::memory(c.bias, Engine(), Data(gamma))},
                                   {DNNL_ARG_SHIFT, dnnl::memory(c.bias, Engine(), Data(beta))}});
}

tvm::ffi::String Impl(const tvm::ffi::String& kind) {
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto it = last_impl.find(std::string(kind));
  return it == last_impl.end() ? tvm::ffi::String("") : tvm::ffi::String(it->second);
}

int64_t PackedCount() {
  std::lock_guard<std::mutex> lock(packed_mutex);
  return static_cast<int64_t>(packed.size());
}

}  // namespace

TVM_FFI_STATIC_INIT_BLOCK() {
  namespace refl = tvm::ffi::reflection;
  refl::GlobalDef()
      .def("tsir.dnnl.matmul", Matmul)
      .def("tsir.dnnl.linear", Linear)
      .def("tsir.dnnl.conv2d", Conv2d)
      .def("tsir.dnnl.conv2d_nhwc", Conv2dNhwc)
      .def("tsir.dnnl.conv2d_nhwc_add", Conv2dNhwcAdd)
      .def("tsir.dnnl.layer_norm", LayerNorm)
      .def("tsir.dnnl.impl", Impl)
      .def("tsir.dnnl.packed_weights", PackedCount);
}
