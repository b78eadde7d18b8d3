#include "embtable/vectors.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include "embtable/parallel.hpp"
#include "embtable/tuning.hpp"
#include "radix_sort.hpp"

namespace embtable {

namespace {

// Python's bytes.rstrip() / str.split() whitespace (ASCII only).
inline bool is_space(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

// Offset of the first byte that makes [p, p + n) invalid UTF-8 (Python's strict
// decoder: no overlong forms, no surrogates, nothing past U+10FFFF), or -1.
int64_t utf8_error(const char* p, int64_t n) noexcept {
  const auto* s = reinterpret_cast<const unsigned char*>(p);
  int64_t i = 0;
  while (i < n) {
    const unsigned c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;  // U+D800..U+DFFF are surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (i + len > n) return i;
    if (s[i + 1] < lo || s[i + 1] > hi) return i;
    for (int k = 2; k < len; ++k)
      if (s[i + k] < 0x80 || s[i + k] > 0xBF) return i;
    i += len;
  }
  return -1;
}

// (2 - 2^-24) * 2^127: halfway between FLT_MAX and the next power of two; a double
// at or past it rounds to infinity (round half to even: FLT_MAX is odd).
constexpr double kFloatOverflow = 340282356779733661637539395458142568448.0;

template <class Scalar>
inline Scalar narrow(double d) noexcept {
  if constexpr (std::is_same_v<Scalar, double>) {
    return d;
  } else {
    const double a = std::fabs(d);
    if (a > static_cast<double>(std::numeric_limits<float>::max()) && !std::isnan(d)) {
      if (a >= kFloatOverflow)
        return std::signbit(d) ? -std::numeric_limits<float>::infinity()
                               : std::numeric_limits<float>::infinity();
      return std::signbit(d) ? -std::numeric_limits<float>::max()
                             : std::numeric_limits<float>::max();
    }
    return static_cast<float>(d);
  }
}

// from_chars reported result_out_of_range for the number [p, e): it is past the
// double range either way; Python's float() then gives +-inf or +-0.
double out_of_range_value(const char* p, const char* e) noexcept {
  bool neg = false;
  if (p < e && (*p == '-' || *p == '+')) neg = *p++ == '-';
  int64_t lead = 0;  // power of ten of the first nonzero digit, before the exponent
  bool seen_nonzero = false, after_point = false;
  int64_t int_digits = 0, frac_zeros = 0;
  for (; p < e && ((*p >= '0' && *p <= '9') || *p == '.'); ++p) {
    if (*p == '.') {
      after_point = true;
    } else if (!seen_nonzero) {
      if (*p != '0') {
        seen_nonzero = true;
        if (after_point)
          lead = -(frac_zeros + 1);
        else
          int_digits = 1;
      } else if (after_point) {
        ++frac_zeros;
      }
    } else if (!after_point) {
      ++int_digits;
    }
  }
  if (seen_nonzero && int_digits > 0) lead = int_digits - 1;
  int64_t exp = 0;
  if (p < e && (*p == 'e' || *p == 'E')) {
    ++p;
    bool eneg = false;
    if (p < e && (*p == '-' || *p == '+')) eneg = *p++ == '-';
    for (; p < e && *p >= '0' && *p <= '9'; ++p)
      exp = std::min<int64_t>(exp * 10 + (*p - '0'), int64_t{1} << 40);
    if (eneg) exp = -exp;
  }
  const double mag = lead + exp >= 0 ? std::numeric_limits<double>::infinity() : 0.0;
  return neg ? -mag : mag;
}

// Case-insensitive: does [p, e) spell exactly `word` (lower case)?
bool spells(const char* p, const char* e, std::string_view word) noexcept {
  if (e - p != static_cast<std::ptrdiff_t>(word.size())) return false;
  for (size_t i = 0; i < word.size(); ++i)
    if ((p[i] | 0x20) != word[i]) return false;
  return true;
}

constexpr double kPow10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                               1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                               1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

inline bool is_digit(char c) noexcept { return static_cast<unsigned>(c - '0') < 10u; }

// Clinger's fast path for the common short decimal ("-0.123456", "1e-05"): with at
// most 15 digits the mantissa is an exact double, and so is 10^k for k <= 22, so
// one IEEE multiply or divide gives the correctly rounded double, the same as
// from_chars. Anything else returns nullptr and goes to from_chars.
inline const char* parse_simple(const char* p, const char* e, double* out) noexcept {
  const char* q = p;
  const bool neg = q < e && *q == '-';
  if (neg) ++q;
  uint64_t m = 0;
  const char* s = q;
  while (q < e && is_digit(*q)) m = m * 10 + static_cast<uint64_t>(*q++ - '0');
  int64_t digits = q - s, frac = 0;
  if (q < e && *q == '.') {
    const char* f = ++q;
    while (q < e && is_digit(*q)) m = m * 10 + static_cast<uint64_t>(*q++ - '0');
    frac = q - f;
    digits += frac;
  }
  if (digits == 0 || digits > 15) return nullptr;
  int64_t e10 = -frac;
  if (q < e && (*q == 'e' || *q == 'E')) {
    const char* x = q + 1;
    bool eneg = false;
    if (x < e && (*x == '+' || *x == '-')) eneg = *x++ == '-';
    const char* xs = x;
    int64_t ev = 0;
    while (x < e && is_digit(*x) && x - xs < 4) ev = ev * 10 + (*x++ - '0');
    if (x == xs || (x < e && is_digit(*x))) return nullptr;
    e10 += eneg ? -ev : ev;
    q = x;
  }
  if (e10 < -22 || e10 > 22) return nullptr;
  double d = static_cast<double>(m);
  d = e10 < 0 ? d / kPow10[-e10] : d * kPow10[e10];
  *out = neg ? -d : d;
  return q;
}

// One value starting at p (the token runs to the next ' ' or e). Returns the end of
// the number, or nullptr when it is not a number numpy.float32(str) accepts in the
// grammar we keep: [+-] digits [. digits] [e [+-] digits], inf, infinity, nan.
inline const char* parse_number(const char* p, const char* e, double* out) noexcept {
  const char* q = p;
  if (q < e && *q == '+') {
    ++q;
    if (q < e && (*q == '+' || *q == '-')) return nullptr;
  }
  double d = 0.0;
  if (const char* r = parse_simple(q, e, &d)) {
    *out = d;
    return r;
  }
  const auto [r, ec] = std::from_chars(q, e, d, std::chars_format::general);
  if (ec == std::errc::invalid_argument) return nullptr;
  if (ec == std::errc::result_out_of_range) d = out_of_range_value(q, r);
  if (std::isnan(d)) {  // from_chars also takes "nan(chars)"; Python does not
    const char* s = (*q == '-') ? q + 1 : q;
    if (!spells(s, r, "nan")) return nullptr;
  }
  *out = d;
  return r;
}

enum class RowErr : int { none, blank, count, number, utf8 };

struct RowError {
  RowErr kind = RowErr::none;
  int64_t row = 0;     // global row index
  int64_t value = 0;   // RowErr::number: 1-based value; RowErr::count: values found
  int64_t column = 0;  // 1-based byte column in the line
  std::string token;
};

std::string quote(std::string_view s) {
  std::string out = "'";
  for (const char c : s.substr(0, 40)) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7F || c == '\'' || c == '\\') {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[u >> 4];
      out += hex[u & 15];
    } else {
      out += c;
    }
  }
  if (s.size() > 40) out += "...";
  return out + "'";
}

// Parses the line [p, e) (no '\n') into its word and D values. `out` may be null
// (format detection). Returns false and fills err (but its row) on a bad line.
template <class Scalar>
bool parse_row(const char* p, const char* e, int64_t D, Scalar* out,
               const char** word_end, RowError* err) {
  const char* line = p;
  while (e > p && is_space(e[-1])) --e;
  if (e == p) {
    err->kind = RowErr::blank;
    return false;
  }
  const char* sp =
      static_cast<const char*>(std::memchr(p, ' ', static_cast<size_t>(e - p)));
  const char* wend = sp ? sp : e;
  *word_end = wend;
  if (const int64_t bad = utf8_error(p, wend - p); bad >= 0) {
    err->kind = RowErr::utf8;
    err->column = bad + 1;
    err->token.assign(p, wend);
    return false;
  }
  const char* q = wend;
  int64_t j = 0;
  for (; j < D; ++j) {
    if (q == e) break;  // too few values
    ++q;                // the ' ' before value j
    double d = 0.0;
    const char* r = parse_number(q, e, &d);
    if (r == nullptr || (r != e && *r != ' ')) {
      const char* te =
          static_cast<const char*>(std::memchr(q, ' ', static_cast<size_t>(e - q)));
      err->kind = RowErr::number;
      err->value = j + 1;
      err->column = (q - line) + 1;
      err->token.assign(q, te ? te : e);
      return false;
    }
    if (out) out[j] = narrow<Scalar>(d);
    q = r;
  }
  if (j < D || q != e) {
    int64_t found = j;
    if (q != e) found += std::count(q, e, ' ');
    err->kind = RowErr::count;
    err->value = found;
    return false;
  }
  return true;
}

std::string line_prefix(const std::string& display, int64_t line) {
  return display + ", line " + std::to_string(line) + ": ";
}

std::string describe(const RowError& err, const std::string& display, int64_t line,
                     int64_t D) {
  const std::string where = line_prefix(display, line);
  switch (err.kind) {
    case RowErr::blank:
      return where + "the line is empty (expected a word and " + std::to_string(D) +
             " values)";
    case RowErr::count:
      return where + "expected " + std::to_string(D) +
             " values after the word, found " + std::to_string(err.value);
    case RowErr::number:
      return where + "value " + std::to_string(err.value) + " (column " +
             std::to_string(err.column) +
             "): could not convert string to float: " + quote(err.token);
    case RowErr::utf8:
      return where + "the word is not valid UTF-8 (byte " + std::to_string(err.column) +
             " of " + quote(err.token) + ")";
    case RowErr::none:
      break;
  }
  return where + "malformed line";
}

struct Piece {
  const char* begin = nullptr;
  const char* end = nullptr;
  int64_t row0 = 0;
  int64_t rows = 0;
  WordList words;
  RowError err;
};

int64_t count_rows_in(const char* b, const char* e) noexcept {
  if (b == e) return 0;
  int64_t n = 0;
  for (const char* p = b;;) {
    const void* nl = std::memchr(p, '\n', static_cast<size_t>(e - p));
    if (!nl) break;
    ++n;
    p = static_cast<const char*>(nl) + 1;
    if (p == e) break;
  }
  return e[-1] == '\n' ? n : n + 1;
}

// End of the first `k` lines of [b, e).
const char* after_lines(const char* b, const char* e, int64_t k) noexcept {
  const char* p = b;
  for (int64_t i = 0; i < k && p < e; ++i) {
    const void* nl = std::memchr(p, '\n', static_cast<size_t>(e - p));
    p = nl ? static_cast<const char*>(nl) + 1 : e;
  }
  return p;
}

// ---------------------------------------------------------------------------
// Format detection (binary = -1): both readings are tried on the first bytes after
// the header (the prefix), record by record, as the readers would parse them.

// Is [p, e) -- the prefix ends inside this line -- the start of a text row of D
// values? Only what is already certain counts: the word's UTF-8, each value that a
// ' ' closes, and the number of values so far.
bool partial_text_row(const char* p, const char* e, int64_t D) noexcept {
  while (e > p && is_space(e[-1])) --e;  // may be the line's trailing whitespace
  const char* sp =
      static_cast<const char*>(std::memchr(p, ' ', static_cast<size_t>(e - p)));
  if (sp == nullptr) return true;  // the word goes on
  if (utf8_error(p, sp - p) >= 0) return false;
  int64_t values = 0;
  for (const char* q = sp + 1;;) {
    const char* next =
        static_cast<const char*>(std::memchr(q, ' ', static_cast<size_t>(e - q)));
    if (++values > D) return false;
    if (next == nullptr) return true;  // [q, e) may be cut: not judged
    double d = 0.0;
    if (parse_number(q, next, &d) != next) return false;
    q = next + 1;
  }
}

// Does the prefix [p, e) read as the text format: `rows` lines of a word and D
// values, then only whitespace? `eof`: e is the end of the file.
bool reads_as_text(const char* p, const char* e, int64_t D, int64_t rows, bool eof) {
  for (int64_t r = 0; r < rows; ++r) {
    const void* hit = std::memchr(p, '\n', static_cast<size_t>(e - p));
    if (hit == nullptr && !eof) return partial_text_row(p, e, D);
    const char* le = hit ? static_cast<const char*>(hit) : e;
    RowError err;
    const char* wend = nullptr;
    if (!parse_row<double>(p, le, D, nullptr, &wend, &err)) return false;
    if (hit == nullptr) return r + 1 == rows;  // the last line, without '\n'
    p = le + 1;
  }
  return std::all_of(p, e, is_space);
}

// Does the prefix [p, e) read as the binary format: `rows` records of a UTF-8 word,
// ' ' and 4 * D bytes (leading '\n's dropped), then only whitespace?
bool reads_as_binary(const char* p, const char* e, int64_t D, int64_t rows, bool eof) {
  const auto vec_bytes = static_cast<uint64_t>(D) * 4;
  for (int64_t r = 0; r < rows; ++r) {
    while (p < e && *p == '\n') ++p;
    const char* sp =
        static_cast<const char*>(std::memchr(p, ' ', static_cast<size_t>(e - p)));
    if (sp == nullptr) return !eof;  // the word goes on past the prefix
    if (utf8_error(p, sp - p) >= 0) return false;
    if (static_cast<uint64_t>(e - (sp + 1)) < vec_bytes) return !eof;
    p = sp + 1 + vec_bytes;
  }
  return std::all_of(p, e, is_space);
}

// Neither reading fits (a malformed file): binary when the bytes after the words
// hold what text never has, a NUL byte or invalid UTF-8; else text, so that the
// error names the line and the bad value.
bool looks_binary(const char* p, const char* e, bool eof) noexcept {
  while (p < e) {
    const void* hit = std::memchr(p, '\n', static_cast<size_t>(e - p));
    const char* le = hit ? static_cast<const char*>(hit) : e;
    if (const void* sp = std::memchr(p, ' ', static_cast<size_t>(le - p))) {
      const char* v = static_cast<const char*>(sp) + 1;
      if (std::memchr(v, '\0', static_cast<size_t>(le - v))) return true;
      const int64_t bad = utf8_error(v, le - v);
      // A character cut by the end of the prefix is not an error.
      if (bad >= 0 && (eof || hit != nullptr || le - (v + bad) >= 4)) return true;
    }
    p = hit ? le + 1 : e;
  }
  return false;
}

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

}  // namespace

bool parse_vector_value(const std::string& text, double* as_double, float* as_float) {
  const char* b = text.data();
  const char* e = b + text.size();
  double d = 0.0;
  const char* r = parse_number(b, e, &d);
  if (r != e) return false;
  *as_double = d;
  *as_float = narrow<float>(d);
  return true;
}

namespace {
std::atomic<int64_t> g_piece_override{0}, g_buffer_override{0};
}  // namespace

void set_vectors_io_override(int64_t piece_bytes,
                             int64_t binary_buffer_bytes) noexcept {
  g_piece_override.store(std::max<int64_t>(piece_bytes, 0));
  g_buffer_override.store(std::max<int64_t>(binary_buffer_bytes, 0));
}

VectorsIoConfig vectors_io_config() noexcept {
  const int64_t threads = std::max(1, get_num_threads());
  const int64_t piece_override = g_piece_override.load();
  const int64_t buffer_override = g_buffer_override.load();
  // A piece of text is parsed by one task: twice the pool's grain (tuning.hpp).
  const int64_t piece =
      piece_override > 0 ? piece_override
                         : std::max<int64_t>(2 * tuning().parallel_bytes.value, 4096);
  int64_t l2 = tuning().l2_bytes.value;
  if (l2 <= 0) l2 = int64_t{1} << 20;
  l2 = std::clamp<int64_t>(l2, int64_t{256} << 10, int64_t{8} << 20);
  if (buffer_override > 0) l2 = std::max<int64_t>(buffer_override, 2);
  return VectorsIoConfig{piece * 4 * threads, piece, l2};
}

struct VectorsReader::Impl {
  std::string path, display;
  int fd = -1;
  VectorsFormat fmt = VectorsFormat::text;
  int64_t header_V = -1;  // -1: GloVe
  int64_t V = 0, D = 0;
  int64_t alloc = 0;     // rows of the table (<= V, see open)
  bool limited = false;  // V is a limit: stop there, check nothing after
  int64_t first_line = 2;
  int64_t file_size = -1;  // -1: not a regular file

  std::vector<char> buf;
  size_t beg = 0, end = 0;  // unconsumed bytes buf[beg, end)
  int64_t consumed = 0;     // file offset of buf[beg]... kept as offset of buf[0]
  bool eof = false;

  ~Impl() {
    if (fd >= 0) ::close(fd);
  }

  // Reads more bytes: at least until [beg, end) holds `want` bytes or EOF.
  void fill(size_t want) {
    if (end - beg >= want || eof) return;
    if (beg > 0 && (buf.size() - beg < want || beg >= buf.size() / 2)) {
      std::memmove(buf.data(), buf.data() + beg, end - beg);
      consumed += static_cast<int64_t>(beg);
      end -= beg;
      beg = 0;
    }
    if (buf.size() < beg + want) buf.resize(beg + want);
    while (end - beg < want && !eof) {
      const ssize_t n = ::read(fd, buf.data() + end, buf.size() - end);
      if (n < 0) {
        if (errno == EINTR) continue;
        throw_errno(display);
      }
      if (n == 0) eof = true;
      end += static_cast<size_t>(n);
    }
  }
  int64_t offset_of(size_t i) const { return consumed + static_cast<int64_t>(i); }

  // True when everything from buf[from] to the end of the file is whitespace; else
  // *newlines = the '\n's before the first other byte and *at = its file offset.
  bool rest_is_space(size_t from, int64_t* newlines, int64_t* at) {
    *newlines = 0;
    beg = from;
    for (;;) {
      for (size_t i = beg; i < end; ++i) {
        if (!is_space(buf[i])) {
          *at = offset_of(i);
          return false;
        }
        if (buf[i] == '\n') ++*newlines;
      }
      beg = end;
      if (eof) return true;
      fill(std::min<size_t>(buf.size(), size_t{1} << 20));
      if (beg == end) return true;
    }
  }

  [[noreturn]] void fail(const std::string& msg) const {
    throw std::invalid_argument(msg);
  }

  void open(int binary, int64_t limit);
  void count_glove_rows(int64_t limit);
  template <class Scalar>
  void read_text(Scalar* table, WordList& words);
  template <class Scalar>
  void read_binary(Scalar* table, WordList& words);
};

namespace {

// "V D" with both unsigned integers (ASCII whitespace around and between).
bool parse_header(const char* b, const char* e, int64_t* V, int64_t* D, bool* too_big) {
  int64_t vals[2];
  int n = 0;
  *too_big = false;
  const char* p = b;
  while (true) {
    while (p < e && is_space(*p)) ++p;
    if (p == e) break;
    const char* t = p;
    while (p < e && !is_space(*p)) ++p;
    if (n == 2) return false;
    for (const char* c = t; c < p; ++c)
      if (*c < '0' || *c > '9') return false;
    if (p - t > 15) {
      *too_big = true;
      vals[n++] = 0;
      continue;
    }
    int64_t v = 0;
    for (const char* c = t; c < p; ++c) v = v * 10 + (*c - '0');
    vals[n++] = v;
  }
  if (n != 2) return false;
  *V = vals[0];
  *D = vals[1];
  return true;
}

}  // namespace

void VectorsReader::Impl::open(int binary, int64_t limit) {
  fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_errno(display);
  struct stat st{};
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
    file_size = static_cast<int64_t>(st.st_size);
#ifdef POSIX_FADV_SEQUENTIAL
    (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
  }
  buf.resize(size_t{1} << 16);
  // The first line.
  size_t nl = 0;
  for (;;) {
    const void* hit = std::memchr(buf.data() + beg, '\n', end - beg);
    if (hit) {
      nl = static_cast<size_t>(static_cast<const char*>(hit) - buf.data());
      break;
    }
    if (eof) {
      nl = end;
      break;
    }
    fill(std::max<size_t>(2 * (end - beg), size_t{1} << 16));
  }
  if (end == 0) fail(display + ": the file is empty (no header, no vectors)");
  bool too_big = false;
  int64_t hv = 0, hd = 0;
  const bool header = parse_header(buf.data(), buf.data() + nl, &hv, &hd, &too_big);
  if (header && too_big)
    fail(line_prefix(display, 1) + "the header's numbers are too large");
  if (!header) {
    if (binary == 1)
      fail(line_prefix(display, 1) +
           "a word2vec binary file starts with a 'V D' header line; this line is " +
           quote(std::string_view(buf.data(), nl)));
    fmt = VectorsFormat::glove;
    first_line = 1;
    // D from the first row: the values after the word.
    const char* b = buf.data();
    const char* e = b + nl;
    while (e > b && is_space(e[-1])) --e;
    if (e == b)
      fail(line_prefix(display, 1) + "the line is empty (expected a word and values)");
    const char* sp =
        static_cast<const char*>(std::memchr(b, ' ', static_cast<size_t>(e - b)));
    D = sp ? std::count(sp, e, ' ') : 0;
    count_glove_rows(limit);
    return;
  }
  header_V = hv;
  D = hd;
  first_line = 2;
  beg = std::min(nl + 1, end);
  V = limit >= 0 ? std::min(hv, limit) : hv;
  limited = limit >= 0 && limit <= hv;  // stop after `limit` vectors, check no more
  if (binary == -1) {
    // Read the first 64 KiB after the header (more when D is large: a binary record
    // and a bit) and parse it both ways, over the header's records (the limit aside:
    // detection only looks). A reading that fails on the prefix is out; when both
    // fit (a few short rows whose values take 4 * D bytes) the file is text; when
    // neither does, its bytes decide, so the error comes from the right reader.
    const size_t want = (size_t{1} << 16) +
                        8 * static_cast<size_t>(std::min<int64_t>(D, int64_t{1} << 20));
    fill(want);
    const char* b = buf.data() + beg;
    const char* e = buf.data() + std::min(end, beg + want);
    const bool whole = eof && e == buf.data() + end;
    if (reads_as_text(b, e, D, hv, whole))
      fmt = VectorsFormat::text;
    else if (reads_as_binary(b, e, D, hv, whole))
      fmt = VectorsFormat::binary;
    else
      fmt = looks_binary(b, e, whole) ? VectorsFormat::binary : VectorsFormat::text;
  } else {
    fmt = binary == 1 ? VectorsFormat::binary : VectorsFormat::text;
  }
  // A header that promises more rows than the file can hold (a corrupt header would
  // otherwise allocate a huge table): only the rows that can exist get memory; the
  // others are parsed without storing them, and parsing fails on or before them
  // with the row's own error (or "the file ends after ...").
  alloc = V;
  if (file_size >= 0 && V > 0) {
    const int64_t left = file_size - offset_of(beg);
    const int64_t min_row = fmt == VectorsFormat::binary ? 4 * D + 1 : 2 * D + 1;
    alloc = std::min<int64_t>(V, (left + 1) / min_row);
  }
}

void VectorsReader::Impl::count_glove_rows(int64_t limit) {
  // Rows = lines up to the last non-whitespace byte of the file.
  int64_t nl_total = 0, nl_at_last = -1;
  const size_t block = static_cast<size_t>(vectors_io_config().text_block_bytes);
  for (;;) {
    const char* b = buf.data() + beg;
    const char* e = buf.data() + end;
    const char* last = e;
    while (last > b && is_space(last[-1])) --last;
    if (last > b) {
      nl_at_last = nl_total + std::count(b, last, '\n');
      nl_total = nl_at_last + std::count(last, e, '\n');
    } else {
      nl_total += std::count(b, e, '\n');
    }
    beg = end;
    if (limit >= 0 && nl_at_last + 1 >= limit) break;
    if (eof) break;
    fill(block);
    if (beg == end) break;
  }
  const int64_t rows = nl_at_last + 1;
  V = limit >= 0 ? std::min(rows, limit) : rows;
  alloc = V;
  limited = true;  // the count is the file's: nothing past it to check
  if (::lseek(fd, 0, SEEK_SET) != 0) throw_errno(display);
  beg = end = 0;
  consumed = 0;
  eof = false;
}

template <class Scalar>
void VectorsReader::Impl::read_text(Scalar* table, WordList& words) {
  const VectorsIoConfig cfg = vectors_io_config();
  const size_t block = static_cast<size_t>(cfg.text_block_bytes);
  const size_t piece_bytes = static_cast<size_t>(cfg.text_piece_bytes);
  std::vector<Piece> pieces;
  int64_t done = 0;
  const auto too_few = [&](int64_t rows) {
    fail(line_prefix(display, rows + first_line) + "the file ends after " +
         std::to_string(rows) + " vectors, but the header (line 1) says " +
         std::to_string(header_V) +
         (V < header_V ? " (and limit asks for " + std::to_string(V) + ")"
                       : std::string()));
  };
  if (V == 0 && header_V == 0 && !limited) {  // "0 D": nothing may follow
    int64_t nls = 0, at = 0;
    if (!rest_is_space(beg, &nls, &at))
      fail(line_prefix(display, first_line + nls) +
           "a row past the 0 vectors the header (line 1) announces");
  }
  while (done < V) {
    fill(block);
    const char* base = buf.data() + beg;
    const size_t n = end - beg;
    size_t region = 0;
    if (eof) {
      region = n;
      while (region > 0 && is_space(base[region - 1])) --region;
    } else {
      const char* p = base + n;
      while (p > base && p[-1] != '\n') --p;
      if (p == base) {  // a line longer than the buffer
        fill(2 * n);
        continue;
      }
      region = static_cast<size_t>(p - base);
    }
    if (region == 0) too_few(done);
    // Pieces of whole lines.
    pieces.resize(0);
    for (size_t start = 0; start < region;) {
      size_t stop = std::min(start + piece_bytes, region);
      if (stop < region) {
        const void* hit = std::memchr(base + stop - 1, '\n', region - (stop - 1));
        stop = hit ? static_cast<size_t>(static_cast<const char*>(hit) - base) + 1
                   : region;
      }
      Piece pc;
      pc.begin = base + start;
      pc.end = base + stop;
      pieces.push_back(std::move(pc));
      start = stop;
    }
    const int64_t np = static_cast<int64_t>(pieces.size());
    parallel_for(0, np, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        pieces[static_cast<size_t>(i)].rows = count_rows_in(
            pieces[static_cast<size_t>(i)].begin, pieces[static_cast<size_t>(i)].end);
    });
    int64_t row = done;
    size_t used = region;
    for (int64_t i = 0; i < np; ++i) {
      Piece& pc = pieces[static_cast<size_t>(i)];
      pc.row0 = row;
      if (row + pc.rows >= V) {
        if (row + pc.rows > V || i + 1 < np) {
          pc.end = after_lines(pc.begin, pc.end, V - row);
          used = static_cast<size_t>(pc.end - base);
        }
        pc.rows = V - row;
        pieces.resize(static_cast<size_t>(i) + 1);
        row = V;
        break;
      }
      row += pc.rows;
    }
    const int64_t np2 = static_cast<int64_t>(pieces.size());
    const int64_t Dl = D;
    const int64_t alloc_rows = alloc;
    parallel_for(0, np2, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        Piece& pc = pieces[static_cast<size_t>(i)];
        const char* p = pc.begin;
        for (int64_t r = 0; r < pc.rows; ++r) {
          const void* hit = std::memchr(p, '\n', static_cast<size_t>(pc.end - p));
          const char* le = hit ? static_cast<const char*>(hit) : pc.end;
          const char* wend = nullptr;
          const int64_t at = pc.row0 + r;
          Scalar* dst = at < alloc_rows ? table + at * Dl : nullptr;
          if (!parse_row<Scalar>(p, le, Dl, dst, &wend, &pc.err)) {
            pc.err.row = pc.row0 + r;
            break;
          }
          pc.words.bytes.append(p, wend);
          pc.words.offsets.push_back(static_cast<int64_t>(pc.words.bytes.size()));
          p = le + 1;
        }
      }
    });
    for (Piece& pc : pieces) {
      if (pc.err.kind != RowErr::none) {
        if (pc.err.kind == RowErr::blank && header_V >= 0) {
          // Only whitespace from here on: the file simply has too few rows.
          const char* lb = after_lines(pc.begin, pc.end, pc.err.row - pc.row0);
          int64_t nls = 0, at = 0;
          if (rest_is_space(static_cast<size_t>(lb - buf.data()), &nls, &at))
            too_few(pc.err.row);
        }
        fail(describe(pc.err, display, pc.err.row + first_line, D));
      }
      const int64_t base_off = static_cast<int64_t>(words.bytes.size());
      words.bytes += pc.words.bytes;
      for (size_t k = 1; k < pc.words.offsets.size(); ++k)
        words.offsets.push_back(base_off + pc.words.offsets[k]);
    }
    done = row;
    beg += used;
    if (done == V) {
      if (!limited) {
        int64_t nls = 0, at = 0;
        if (!rest_is_space(beg, &nls, &at))
          fail(line_prefix(display, V + first_line + nls) + "a row past the " +
               std::to_string(header_V) + " vectors the header (line 1) announces");
      }
      break;
    }
    if (eof && beg >= end) too_few(done);
  }
}

template <class Scalar>
void VectorsReader::Impl::read_binary(Scalar* table, WordList& words) {
  const size_t bufsize = static_cast<size_t>(vectors_io_config().binary_buffer_bytes);
  // Unread bytes to the front, then a buffer of bufsize (or what they need).
  std::memmove(buf.data(), buf.data() + beg, end - beg);
  consumed += static_cast<int64_t>(beg);
  end -= beg;
  beg = 0;
  buf.resize(std::max(bufsize, end));
  buf.shrink_to_fit();
  const size_t max_word = size_t{1} << 20;
  const size_t vec_bytes = static_cast<size_t>(D) * 4;
  std::vector<float> scratch;
  const auto where = [&](int64_t i) {
    return display + ", vector " + std::to_string(i + 1) + " (byte " +
           std::to_string(offset_of(beg)) + "): ";
  };
  for (int64_t i = 0; i < V; ++i) {
    // Leading '\n's (the C tool's newline after the previous vector).
    for (;;) {
      while (beg < end && buf[beg] == '\n') ++beg;
      if (beg < end || eof) break;
      fill(bufsize / 2);
    }
    if (beg == end)
      fail(where(i) + "the file ends after " + std::to_string(i) +
           " vectors, but the header says " + std::to_string(header_V));
    size_t sp = 0;
    for (;;) {
      const void* hit = std::memchr(buf.data() + beg, ' ', end - beg);
      if (hit) {
        sp = static_cast<size_t>(static_cast<const char*>(hit) - buf.data());
        break;
      }
      if (eof) fail(where(i) + "truncated: the file ends inside the word");
      if (end - beg > max_word)
        fail(where(i) + "no ' ' after the word in its first " +
             std::to_string(max_word) + " bytes: not a word2vec binary file?");
      fill(std::max(bufsize / 2, 2 * (end - beg)));
    }
    if (const int64_t bad =
            utf8_error(buf.data() + beg, static_cast<int64_t>(sp - beg));
        bad >= 0)
      fail(where(i) + "the word is not valid UTF-8 (byte " + std::to_string(bad + 1) +
           " of " + quote(std::string_view(buf.data() + beg, sp - beg)) + ")");
    words.bytes.append(buf.data() + beg, sp - beg);
    words.offsets.push_back(static_cast<int64_t>(words.bytes.size()));
    beg = sp + 1;
    // The vector: from the buffer, refilled as needed.
    Scalar* row = i < alloc ? table + i * D : nullptr;  // nullptr: see open()
    constexpr bool direct =
        std::is_same_v<Scalar, float> && std::endian::native == std::endian::little;
    char* dst = nullptr;
    if (direct && row != nullptr) {
      dst = reinterpret_cast<char*>(row);
    } else {
      scratch.resize(static_cast<size_t>(D));
      dst = reinterpret_cast<char*>(scratch.data());
    }
    size_t got = 0;
    while (got < vec_bytes) {
      if (beg == end) {
        if (eof) {
          beg = end;
          fail(display + ", vector " + std::to_string(i + 1) +
               ": truncated: the file ends " + std::to_string(got) +
               " bytes into its " + std::to_string(vec_bytes) + "-byte vector");
        }
        if (vec_bytes - got >= bufsize) {  // a long vector: read it in place
          const ssize_t n = ::read(fd, dst + got, vec_bytes - got);
          if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno(display);
          }
          if (n == 0) eof = true;
          got += static_cast<size_t>(n);
          consumed += n;
          continue;
        }
        fill(bufsize / 2);
        continue;
      }
      const size_t take = std::min(vec_bytes - got, end - beg);
      std::memcpy(dst + got, buf.data() + beg, take);
      beg += take;
      got += take;
    }
    if (!direct || row == nullptr) {
      if (row == nullptr) continue;
      if constexpr (std::endian::native != std::endian::little) {
        for (float& f : scratch)
          f = std::bit_cast<float>(__builtin_bswap32(std::bit_cast<uint32_t>(f)));
      }
      for (int64_t d = 0; d < D; ++d)
        row[d] = static_cast<Scalar>(scratch[static_cast<size_t>(d)]);
    }
  }
  if (!limited) {
    int64_t nls = 0, at = 0;
    if (!rest_is_space(beg, &nls, &at))
      fail(display + ", vector " + std::to_string(V + 1) + " (byte " +
           std::to_string(at) + "): more vectors than the " + std::to_string(header_V) +
           " the header announces");
  }
}

VectorsReader::VectorsReader(const std::string& path, const std::string& display,
                             int binary, int64_t limit)
    : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  impl_->display = display;
  impl_->open(binary, limit);
}

VectorsReader::~VectorsReader() = default;

VectorsFormat VectorsReader::format() const noexcept { return impl_->fmt; }
int64_t VectorsReader::rows() const noexcept { return impl_->alloc; }
int64_t VectorsReader::dim() const noexcept { return impl_->D; }

namespace {

std::string_view word_at(const WordList& words, int64_t i) noexcept {
  const auto b = static_cast<size_t>(words.offsets[static_cast<size_t>(i)]);
  const auto e = static_cast<size_t>(words.offsets[static_cast<size_t>(i) + 1]);
  return {words.bytes.data() + b, e - b};
}

// The smallest i whose word equals an earlier one's (and *first, that word's first
// position), or -1. The words' hashes are radix-sorted with their positions (one
// contiguous pass each; a hash map of 400,000 words spent most of its time on
// cache misses and node allocations), so equal words end up in runs of equal
// hash, positions ascending; only those runs compare bytes.
int64_t first_repeat(const WordList& words, int64_t* first) {
  const int64_t n = words.size();
  if (n < 2) return -1;
  const int pos_bits = radix::bit_width(static_cast<uint64_t>(n - 1));
  const int key_bits = 64 - pos_bits;
  std::vector<uint64_t> buf(2 * static_cast<size_t>(n));
  const std::hash<std::string_view> hash;
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t h = static_cast<uint64_t>(hash(word_at(words, i)));
    buf[static_cast<size_t>(i)] =
        ((h >> pos_bits) << pos_bits) | static_cast<uint64_t>(i);  // key above, i below
  }
  const uint64_t* v = radix::sort(buf.data(), buf.data() + n, n, pos_bits, key_bits);
  const uint64_t pos_mask = (uint64_t{1} << pos_bits) - 1;
  int64_t best = -1;
  std::vector<int64_t> run;
  for (int64_t a = 0; a < n;) {
    int64_t b = a + 1;
    while (b < n && (v[b] >> pos_bits) == (v[a] >> pos_bits)) ++b;
    if (b - a > 1) {
      // A run of equal hashes, positions ascending: within it, by word, then
      // position; each word's second position is its first repeat.
      run.clear();
      for (int64_t k = a; k < b; ++k)
        run.push_back(static_cast<int64_t>(v[k] & pos_mask));
      std::stable_sort(run.begin(), run.end(), [&](int64_t x, int64_t y) {
        return word_at(words, x) < word_at(words, y);
      });
      for (size_t k = 0; k < run.size();) {
        size_t m = k + 1;
        while (m < run.size() && word_at(words, run[m]) == word_at(words, run[k])) ++m;
        if (m - k > 1 && (best < 0 || run[k + 1] < best)) {
          best = run[k + 1];
          *first = run[k];
        }
        k = m;
      }
    }
    a = b;
  }
  return best;
}

}  // namespace

template <class Scalar>
void VectorsReader::read(Scalar* table, WordList& words) {
  Impl& im = *impl_;
  words.clear();
  words.offsets.reserve(static_cast<size_t>(im.alloc) + 1);
  if (im.fmt == VectorsFormat::binary) {
    im.read_binary(table, words);
  } else {
    im.read_text(table, words);
  }
  if (words.size() != im.alloc)  // cannot happen: open() sized alloc from the file
    throw std::logic_error(im.display + ": read " + std::to_string(words.size()) +
                           " vectors into a table of " + std::to_string(im.alloc));
  // Duplicate words, named by their lines / vectors: the first vector whose word
  // came before, and where that word first was.
  int64_t first = -1;
  const int64_t again = first_repeat(words, &first);
  if (again >= 0) {
    const std::string_view w = word_at(words, again);
    if (im.fmt == VectorsFormat::binary)
      im.fail(im.display + ", vector " + std::to_string(again + 1) +
              ": duplicate word " + quote(w) + " (first at vector " +
              std::to_string(first + 1) + ")");
    im.fail(line_prefix(im.display, again + im.first_line) + "duplicate word " +
            quote(w) + " (first on line " + std::to_string(first + im.first_line) +
            ")");
  }
}

template void VectorsReader::read<float>(float*, WordList&);
template void VectorsReader::read<double>(double*, WordList&);

// ---------------------------------------------------------------------------
// Writing

int64_t find_unwritable_word(const char* bytes, const int64_t* offsets, int64_t V,
                             std::string* why) {
  static const std::string split =
      ": the word2vec format separates words from values with a space and rows with "
      "a newline";
  for (int64_t i = 0; i < V; ++i) {
    const char* b = bytes + offsets[i];
    const char* e = bytes + offsets[i + 1];
    if (b == e) {
      *why = "is empty: each row of the word2vec format starts with a word";
      return i;
    }
    if (std::memchr(b, ' ', static_cast<size_t>(e - b))) {
      *why = "contains a space" + split;
      return i;
    }
    if (std::memchr(b, '\n', static_cast<size_t>(e - b))) {
      *why = "contains a newline" + split;
      return i;
    }
    // With D = 0 the word ends its text row, whose trailing whitespace the reader
    // (and gensim) strips; refused in every case, so validity never depends on D.
    if (is_space(e[-1])) {
      *why = "ends with whitespace, which readers strip from the end of a row";
      return i;
    }
  }
  return -1;
}

namespace {

void write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    const ssize_t k = ::write(fd, p, n);
    if (k < 0) {
      if (errno == EINTR) continue;
      throw_errno("write");
    }
    p += k;
    n -= static_cast<size_t>(k);
  }
}

template <class Scalar>
char* format_value(char* p, char* e, Scalar v) {
  auto r = std::to_chars(p, e, v);
  if constexpr (std::is_same_v<Scalar, float>) {
    // Readers parse a double and round it to float (numpy.float32(str)): make sure
    // the shortest float form survives that path too, else write the double's.
    if (std::isfinite(v)) {
      double d = 0.0;
      std::from_chars(p, r.ptr, d);
      if (std::bit_cast<uint32_t>(narrow<float>(d)) != std::bit_cast<uint32_t>(v))
        r = std::to_chars(p, e, static_cast<double>(v));
    }
  }
  return r.ptr;
}

}  // namespace

template <class Scalar>
void write_vectors(int fd, const char* word_bytes, const int64_t* word_offsets,
                   const Scalar* table, int64_t V, int64_t D, bool binary) {
  const std::string header = std::to_string(V) + " " + std::to_string(D) + "\n";
  write_all(fd, header.data(), header.size());
  if (V == 0) return;
  const VectorsIoConfig cfg = vectors_io_config();
  if (binary) {
    std::string out;
    out.reserve(static_cast<size_t>(cfg.binary_buffer_bytes) * 2);
    std::vector<float> row32(static_cast<size_t>(D));
    for (int64_t i = 0; i < V; ++i) {
      out.append(word_bytes + word_offsets[i], word_bytes + word_offsets[i + 1]);
      out += ' ';
      const Scalar* row = table + i * D;
      for (int64_t d = 0; d < D; ++d) {
        float f = narrow<float>(static_cast<double>(row[d]));
        if constexpr (std::endian::native != std::endian::little)
          f = std::bit_cast<float>(__builtin_bswap32(std::bit_cast<uint32_t>(f)));
        row32[static_cast<size_t>(d)] = f;
      }
      out.append(reinterpret_cast<const char*>(row32.data()), row32.size() * 4);
      out += '\n';
      if (out.size() >= static_cast<size_t>(cfg.binary_buffer_bytes)) {
        write_all(fd, out.data(), out.size());
        out.clear();
      }
    }
    write_all(fd, out.data(), out.size());
    return;
  }
  // Text: rows formatted in parallel, a block at a time, written in order.
  constexpr int64_t kMaxChars = 32;  // a shortest double is at most 24 characters
  const int64_t threads = std::max(1, get_num_threads());
  const int64_t row_chars = D * kMaxChars + 1;
  const int64_t rows_per_piece =
      std::max<int64_t>(1, cfg.text_piece_bytes / std::max<int64_t>(row_chars, 1));
  const int64_t pieces_per_block = 4 * threads;
  std::vector<std::string> outs(static_cast<size_t>(pieces_per_block));
  for (int64_t r0 = 0; r0 < V; r0 += rows_per_piece * pieces_per_block) {
    const int64_t r1 = std::min(V, r0 + rows_per_piece * pieces_per_block);
    const int64_t np = (r1 - r0 + rows_per_piece - 1) / rows_per_piece;
    parallel_for(0, np, 1, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        std::string& s = outs[static_cast<size_t>(k)];
        const int64_t a = r0 + k * rows_per_piece;
        const int64_t z = std::min(r1, a + rows_per_piece);
        size_t cap = 0;
        for (int64_t i = a; i < z; ++i)
          cap += static_cast<size_t>(word_offsets[i + 1] - word_offsets[i] + row_chars);
        s.resize(cap);
        char* p = s.data();
        char* const lim = s.data() + s.size();
        for (int64_t i = a; i < z; ++i) {
          const size_t wl = static_cast<size_t>(word_offsets[i + 1] - word_offsets[i]);
          std::memcpy(p, word_bytes + word_offsets[i], wl);
          p += wl;
          const Scalar* row = table + i * D;
          for (int64_t d = 0; d < D; ++d) {
            *p++ = ' ';
            p = format_value(p, lim, row[d]);
          }
          *p++ = '\n';
        }
        s.resize(static_cast<size_t>(p - s.data()));
      }
    });
    for (int64_t k = 0; k < np; ++k)
      write_all(fd, outs[static_cast<size_t>(k)].data(),
                outs[static_cast<size_t>(k)].size());
  }
}

template void write_vectors<float>(int, const char*, const int64_t*, const float*,
                                   int64_t, int64_t, bool);
template void write_vectors<double>(int, const char*, const int64_t*, const double*,
                                    int64_t, int64_t, bool);

}  // namespace embtable
