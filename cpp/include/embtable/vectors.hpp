// Word vectors on disk: the word2vec text and C binary formats and GloVe text.
//
//   word2vec text:    "V D\n", then V lines "word x_1 ... x_D\n"
//   word2vec binary:  "V D\n", then V records "word " + D little-endian float32
//                     (the C tool adds "\n" after each vector; gensim does not)
//   GloVe text:       lines "word x_1 ... x_D\n", no header
//
// Reading is gensim's KeyedVectors.load_word2vec_format, bit for bit:
//   text line:  strip trailing ASCII whitespace (" \t\n\r\v\f"), split on single
//               ' ': word = first field, values = the others. Each value is parsed
//               as a double (correctly rounded, std::from_chars) and then rounded
//               to Scalar, which is what numpy.float32(str) does (double rounding
//               included), so the bits equal gensim's.
//   binary:     word = the bytes up to the next ' ', leading '\n's dropped; then
//               4*D bytes of float32.
//   limit >= 0: only the first `limit` vectors are read; the rest of the file is
//               neither read nor checked (a header below the limit: all its vectors,
//               strictly checked, as without a limit).
//   binary -1:  detect on the first 64 KiB after the header (more for a large D):
//                 text    if it parses as text rows (the header's count, up to the
//                         prefix's end; a cut last row judged on its complete values)
//                 binary  else if it parses as binary records (word ' ' 4*D bytes)
//                 binary  else if the bytes after a row's first ' ' hold a NUL or
//                         invalid UTF-8 (a malformed file either way)
//                 text    else
//               so a file valid both ways (a few rows whose values part takes
//               exactly 4*D bytes) is text; binary=1 reads it as binary.
// Stricter than gensim: a row with the wrong number of values, a header that
// disagrees with the rows (too few or too many), a bad number, a duplicate word, a
// word that is not UTF-8, or a truncated binary vector throws std::invalid_argument
// naming the file and the line (text, 1-based, the header is line 1) or the vector
// (binary, 1-based). A first line of exactly two unsigned integers is a header;
// trailing whitespace-only lines at the end of a file are ignored.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace embtable {

enum class VectorsFormat : int { text = 0, binary = 1, glove = 2 };

// Words back to back as UTF-8 (validated): word i is bytes[offsets[i], offsets[i+1]).
struct WordList {
  std::string bytes;
  std::vector<int64_t> offsets{0};
  int64_t size() const noexcept { return static_cast<int64_t>(offsets.size()) - 1; }
  void clear() {
    bytes.clear();
    offsets.assign(1, 0);
  }
};

// Read buffer sizes, derived from the thread count and the cache (show_config()).
struct VectorsIoConfig {
  int64_t text_block_bytes;     // text: parsed in parallel one block at a time
  int64_t text_piece_bytes;     // text: one task of a block
  int64_t binary_buffer_bytes;  // binary: read buffer (about the L2 cache)
};
VectorsIoConfig vectors_io_config() noexcept;
// Tests only: tiny blocks and buffers reach every boundary of the streaming code
// with small files. 0 restores the derived sizes.
void set_vectors_io_override(int64_t piece_bytes, int64_t binary_buffer_bytes) noexcept;

// Streaming reader: opening reads the header (and, for GloVe, counts the rows);
// read() then parses the whole file block by block, in parallel for text.
class VectorsReader {
 public:
  // binary: -1 detects the format, 0 text (word2vec with a header, else GloVe),
  // 1 word2vec binary. limit < 0 reads every vector. `display` names the file in
  // messages. A file that cannot be opened or read throws std::system_error.
  VectorsReader(const std::string& path, const std::string& display, int binary,
                int64_t limit);
  ~VectorsReader();
  VectorsReader(const VectorsReader&) = delete;
  VectorsReader& operator=(const VectorsReader&) = delete;

  VectorsFormat format() const noexcept;
  int64_t rows() const noexcept;  // vectors read() returns (after the limit)
  int64_t dim() const noexcept;   // D

  // Fills table (rows() x dim(), row-major) and words; Scalar is float or double.
  template <class Scalar>
  void read(Scalar* table, WordList& words);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// The first word of `words` that cannot be written: -1 if none, else its index and
// a reason in *why: it is empty, contains ' ' or '\n' (which would split the row or
// record), or ends with ASCII whitespace (which the text reader strips when D = 0).
// The same words are refused in both formats.
int64_t find_unwritable_word(const char* bytes, const int64_t* offsets, int64_t V,
                             std::string* why);

// Writes the word2vec text (values in the shortest form that reads back to the
// same Scalar, through gensim's double-then-round path too) or C binary format
// (float32, "\n" after each vector as the C tool) to the open file descriptor fd.
// Words must have passed find_unwritable_word. Throws std::system_error on a
// write error.
template <class Scalar>
void write_vectors(int fd, const char* word_bytes, const int64_t* word_offsets,
                   const Scalar* table, int64_t V, int64_t D, bool binary);

// Parses one value as the reader does (tests): returns false when `text` is not a
// number the reader accepts.
bool parse_vector_value(const std::string& text, double* as_double, float* as_float);

}  // namespace embtable
