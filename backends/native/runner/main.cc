// tsir_runner: run an exported Relax VM library without Python.
//
//   tsir_runner MODEL.so [INPUT.npy ...] [--out DIR] [--warmup N] [--repeat N]
//
// Loads MODEL.so (an `export_library` output of a Relax VM executable) through tvm-ffi, feeds the
// inputs in order to `main` on the CPU, writes each output as DIR/output_<i>.npy (tuples are
// flattened in order), and prints one JSON line with the timing of `main`: `warmup` untimed calls
// (at least one; the first gives the outputs written), then `repeat` timed calls, and their median.
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "npy.h"

namespace ffi = tvm::ffi;

namespace {

constexpr int kPooledAllocator = 2;  // tvm.runtime.vm.VirtualMachine.POOLED_ALLOCATOR
constexpr size_t kAlignment = 64;    // TVM kernels assume 64-byte aligned buffers

struct AlignedCPUAlloc {
  void AllocData(DLTensor* tensor) {
    size_t size = (ffi::GetDataSize(*tensor) + kAlignment - 1) / kAlignment * kAlignment;
    tensor->data = std::aligned_alloc(kAlignment, std::max(size, kAlignment));
    if (tensor->data == nullptr) throw std::bad_alloc();
  }
  void FreeData(DLTensor* tensor) { std::free(tensor->data); }
};

struct Options {
  std::string library;
  std::vector<std::string> inputs;
  std::string out_dir = ".";
  int warmup = 1;
  int repeat = 10;
};

[[noreturn]] void Usage(const std::string& problem) {
  std::cerr << "tsir_runner: " << problem << "\n"
            << "usage: tsir_runner MODEL.so [INPUT.npy ...] [--out DIR] [--warmup N] [--repeat N]\n";
  std::exit(2);
}

int PositiveInt(const std::string& flag, const char* text, int minimum) {
  char* end = nullptr;
  long value = std::strtol(text, &end, 10);
  if (*end != '\0' || value < minimum) Usage(flag + " needs an integer >= " + std::to_string(minimum));
  return static_cast<int>(value);
}

Options Parse(int argc, char** argv) {
  Options opts;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    bool has_value = i + 1 < argc;
    if (arg == "--out" && has_value) {
      opts.out_dir = argv[++i];
    } else if (arg == "--warmup" && has_value) {
      opts.warmup = PositiveInt(arg, argv[++i], 1);
    } else if (arg == "--repeat" && has_value) {
      opts.repeat = PositiveInt(arg, argv[++i], 1);
    } else if (arg.rfind("--", 0) == 0) {
      Usage("unknown or incomplete option " + arg);
    } else if (opts.library.empty()) {
      opts.library = arg;
    } else {
      opts.inputs.push_back(arg);
    }
  }
  if (opts.library.empty()) Usage("no model library given");
  return opts;
}

ffi::Tensor ToTensor(const tsir::NpyArray& array) {
  ffi::Tensor tensor = ffi::Tensor::FromNDAlloc(AlignedCPUAlloc(), ffi::Shape(array.shape), array.dtype,
                                                DLDevice{kDLCPU, 0});
  std::memcpy(tensor.data_ptr(), array.data.data(), array.data.size());
  return tensor;
}

void Flatten(const ffi::Any& value, std::vector<ffi::Tensor>* out) {
  if (auto tensor = value.as<ffi::Tensor>()) {
    out->push_back(*tensor);
  } else if (auto items = value.as<ffi::Array<ffi::Any>>()) {
    for (const ffi::Any& item : *items) Flatten(item, out);
  } else {
    throw std::runtime_error("main returned a value that is neither a tensor nor a tuple: " + value.GetTypeKey());
  }
}

void WriteOutput(const std::string& path, const ffi::Tensor& tensor) {
  const DLTensor& dl = *tensor.GetDLTensorPtr();
  if (dl.device.device_type != kDLCPU || !ffi::IsContiguous(dl)) {
    throw std::runtime_error(path + ": output is not a contiguous CPU tensor");
  }
  std::vector<int64_t> shape(dl.shape, dl.shape + dl.ndim);
  const char* data = static_cast<const char*>(dl.data) + dl.byte_offset;
  tsir::WriteNpy(path, shape, dl.dtype, data, ffi::GetDataSize(dl));
}

int Run(const Options& opts) {
  // An absolute path: dlopen would search the library path for a bare file name.
  ffi::Module library = ffi::Module::LoadFromFile(std::filesystem::absolute(opts.library).string());
  auto load = library->GetFunction("vm_load_executable");
  if (!load) throw std::runtime_error(opts.library + " is not a Relax VM library (no vm_load_executable)");
  ffi::Module vm = (*load)().cast<ffi::Module>();
  (*vm->GetFunction("vm_initialization"))(static_cast<int>(kDLCPU), 0, kPooledAllocator);
  ffi::Optional<ffi::Function> found = vm->GetFunction("main");
  if (!found) throw std::runtime_error(opts.library + " has no function 'main'");
  ffi::Function main_fn = *found;

  std::vector<ffi::Tensor> inputs;
  for (const std::string& path : opts.inputs) inputs.push_back(ToTensor(tsir::ReadNpy(path)));
  std::vector<ffi::AnyView> args(inputs.begin(), inputs.end());
  auto call = [&]() {
    ffi::Any result;
    main_fn.CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
    return result;
  };

  ffi::Any result = call();
  for (int i = 1; i < opts.warmup; ++i) call();
  std::vector<double> times_ms;
  for (int i = 0; i < opts.repeat; ++i) {
    auto start = std::chrono::steady_clock::now();
    call();
    times_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }

  std::vector<ffi::Tensor> outputs;
  Flatten(result, &outputs);
  for (size_t i = 0; i < outputs.size(); ++i) {
    WriteOutput(opts.out_dir + "/output_" + std::to_string(i) + ".npy", outputs[i]);
  }
  std::vector<double> sorted = times_ms;
  std::sort(sorted.begin(), sorted.end());
  size_t n = sorted.size();
  double median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
  std::printf("{\"warmup\": %d, \"repeat\": %d, \"median_ms\": %.6f, \"min_ms\": %.6f, \"max_ms\": %.6f, "
              "\"outputs\": %zu}\n",
              opts.warmup, opts.repeat, median, sorted.front(), sorted.back(), outputs.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opts = Parse(argc, argv);
  try {
    return Run(opts);
  } catch (const std::exception& err) {
    std::cerr << "tsir_runner: " << err.what() << "\n";
    return 1;
  }
}
