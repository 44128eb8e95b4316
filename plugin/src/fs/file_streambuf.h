#pragma once

// A std::streambuf over a WritableFile, for APIs that write to std::ostream
// (torch::jit::Module::save). Failures are remembered instead of thrown, so
// they never unwind through C code inside those APIs; the stream then reports
// failure and the caller rethrows error().

#include <exception>
#include <streambuf>

#include "autosnap/fs.h"

namespace autosnap {

class WritableFileStreambuf final : public std::streambuf {
 public:
  explicit WritableFileStreambuf(WritableFile& out) : out_(out) {}
  std::exception_ptr error() const { return error_; }

 protected:
  std::streamsize xsputn(const char* data, std::streamsize size) override {
    if (error_) return 0;
    try {
      out_.append(data, static_cast<size_t>(size));
      return size;
    } catch (...) {
      error_ = std::current_exception();
      return 0;
    }
  }
  int_type overflow(int_type ch) override {
    if (traits_type::eq_int_type(ch, traits_type::eof())) return traits_type::not_eof(ch);
    const char c = traits_type::to_char_type(ch);
    return xsputn(&c, 1) == 1 ? ch : traits_type::eof();
  }

 private:
  WritableFile& out_;
  std::exception_ptr error_;
};

}  // namespace autosnap
