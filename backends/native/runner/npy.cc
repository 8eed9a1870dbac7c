// .npy reading and writing: just enough of the format for dense numeric tensors.
#include "npy.h"

#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace tsir {
namespace {

struct DtypeName {
  const char* descr;
  DLDataType dtype;
};

const DtypeName kDtypes[] = {
    {"<f4", {kDLFloat, 32, 1}}, {"<f8", {kDLFloat, 64, 1}}, {"<f2", {kDLFloat, 16, 1}},
    {"<i8", {kDLInt, 64, 1}},   {"<i4", {kDLInt, 32, 1}},   {"<i2", {kDLInt, 16, 1}},
    {"|i1", {kDLInt, 8, 1}},    {"|u1", {kDLUInt, 8, 1}},   {"|b1", {kDLBool, 8, 1}},
};

std::runtime_error Bad(const std::string& path, const std::string& what) {
  return std::runtime_error(path + ": " + what);
}

// The value text after `'key':` in the header dict.
std::string Field(const std::string& header, const std::string& key, const std::string& path) {
  size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) throw Bad(path, "npy header has no '" + key + "'");
  at = header.find(':', at);
  size_t start = header.find_first_not_of(' ', at + 1);
  char open = header[start];
  if (open == '\'') return header.substr(start + 1, header.find('\'', start + 1) - start - 1);
  if (open == '(') return header.substr(start + 1, header.find(')', start) - start - 1);
  return header.substr(start, header.find_first_of(",}", start) - start);
}

}  // namespace

NpyArray ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Bad(path, "cannot open input file");
  char magic[8];
  if (!in.read(magic, 8) || std::string(magic, 6) != "\x93NUMPY") throw Bad(path, "not a .npy file");
  uint32_t header_len = 0;
  unsigned char len_bytes[4] = {0, 0, 0, 0};
  int len_size = magic[6] == 1 ? 2 : 4;
  in.read(reinterpret_cast<char*>(len_bytes), len_size);
  for (int i = len_size - 1; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  std::string header(header_len, '\0');
  if (!in.read(header.data(), header_len)) throw Bad(path, "truncated npy header");

  NpyArray array;
  std::string descr = Field(header, "descr", path);
  bool found = false;
  for (const DtypeName& d : kDtypes) {
    if (descr == d.descr) {
      array.dtype = d.dtype;
      found = true;
    }
  }
  if (!found) throw Bad(path, "unsupported dtype '" + descr + "' (use float16/32/64, int8/16/32/64, uint8 or bool)");
  if (Field(header, "fortran_order", path) != "False") {
    throw Bad(path, "Fortran-ordered array; save it with np.ascontiguousarray first");
  }
  std::stringstream dims(Field(header, "shape", path));
  std::string dim;
  size_t numel = 1;
  while (std::getline(dims, dim, ',')) {
    if (dim.find_first_not_of(' ') == std::string::npos) continue;
    array.shape.push_back(std::stoll(dim));
    numel *= static_cast<size_t>(array.shape.back());
  }
  array.data.resize(numel * array.dtype.bits / 8);
  if (!in.read(array.data.data(), static_cast<std::streamsize>(array.data.size()))) {
    throw Bad(path, "truncated data: expected " + std::to_string(array.data.size()) + " bytes");
  }
  return array;
}

void WriteNpy(const std::string& path, const std::vector<int64_t>& shape, DLDataType dtype, const void* data,
              size_t nbytes) {
  const char* descr = nullptr;
  for (const DtypeName& d : kDtypes) {
    if (d.dtype.code == dtype.code && d.dtype.bits == dtype.bits) descr = d.descr;
  }
  if (descr == nullptr) throw Bad(path, "output dtype has no .npy equivalent");
  std::string dims;
  for (int64_t s : shape) dims += std::to_string(s) + ",";
  if (shape.size() > 1) dims.pop_back();
  std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    if (!out) throw Bad(path, "cannot write output file");
    uint16_t len = static_cast<uint16_t>(header.size());
    out.write("\x93NUMPY\x01\x00", 8);
    char len_bytes[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
    out.write(len_bytes, 2);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(nbytes));
    if (!out) throw Bad(path, "write failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw Bad(path, "cannot rename the finished file into place");
}

}  // namespace tsir
