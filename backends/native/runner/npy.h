// Minimal .npy (format 1.0/2.0/3.0) reader and writer for C-ordered little-endian arrays.
#pragma once

#include <dlpack/dlpack.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tsir {

struct NpyArray {
  std::vector<int64_t> shape;
  DLDataType dtype;
  std::vector<char> data;
};

// Reads `path`; throws std::runtime_error naming the file and the problem.
NpyArray ReadNpy(const std::string& path);

// Writes `array` to `path` atomically (a temporary file renamed into place).
void WriteNpy(const std::string& path, const std::vector<int64_t>& shape, DLDataType dtype, const void* data,
              size_t nbytes);

}  // namespace tsir
