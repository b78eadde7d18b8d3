// Fused skip-gram negative-sampling (SGNS) SGD step, word2vec's inner loop:
//
//   for i in [0, N):                      in this order when single-threaded
//     c = centers[i]; h = in[c, :]        (a snapshot of the input row)
//     grad = 0
//     for (t, label) in [(contexts[i], 1)] + [(negatives[i, k], 0) for k in [0, K)]:
//       if label == 0 and t == contexts[i]: continue       (word2vec skips these)
//       s = dot(h, out[t, :])
//       g = (label - sigmoid(s)) * lr
//       grad += g * out[t, :]            (out[t] before its update)
//       out[t, :] += g * h
//       loss += -log(sigmoid(s)) if label else -log(sigmoid(-s))
//     in[c, :] += grad
//   return loss / N                       (0 when N == 0)
//
// Every index is checked before the first write (std::out_of_range naming the
// argument and the first bad position). The two tables must not overlap.
//
// Threads: with get_num_threads() == 1 (or N small) the pairs run in order, and
// the result is the pseudocode above exactly, up to the summation order inside
// dot (16 interleaved partial sums, the same on every SIMD level).
// With more threads the pairs are split between them Hogwild-style, as word2vec
// and gensim do: there is no ordering between the pairs of different threads, a
// pair may read a row another thread updated a moment ago, and results vary
// between runs (the standard SGNS trade-off; it does not hurt convergence at
// word2vec's sparsity). Unlike word2vec it is not a data race (undefined
// behaviour in C++): each row is read or updated while holding one of 4096
// striped spin locks (one cache line each; a waiter yields its CPU after a short
// spin), held for one vectorized dot + two axpys and never two at a time. Relaxed
// std::atomic_ref per element was the other defined option; it blocks vectorization and
// measured ~2.7x slower per thread. Concurrent calls whose tables overlap (and other
// in-place embtable ops on the same memory) run one after the other.
#pragma once

#include <cstdint>
#include <vector>

namespace embtable {

template <class Scalar, class Index>
double sgns_step(Scalar* in_table, int64_t V_in, Scalar* out_table, int64_t V_out,
                 int64_t D, const Index* centers, const Index* contexts, int64_t N,
                 const Index* negatives, int64_t K, Scalar lr);

// The checks sgns_step makes before its first write: std::out_of_range naming the
// argument and the first bad position, e.g. "negatives: index 9 at position (2, 1)
// is out of bounds for a table with 5 rows".
template <class Index>
void sgns_check_indices(int64_t V_in, int64_t V_out, const Index* centers,
                        const Index* contexts, int64_t N, const Index* negatives,
                        int64_t K);

// Scalar, single-threaded oracle of sgns_step (no validation, sequential dot).
template <class Scalar, class Index>
double sgns_step_ref(Scalar* in_table, Scalar* out_table, int64_t D,
                     const Index* centers, const Index* contexts, int64_t N,
                     const Index* negatives, int64_t K, Scalar lr);

// Word2vec's whole skip-gram loop over a token stream, fused (gensim's shape):
//
//   for i in [start, stop):                 the centers, in order when single-threaded
//     step = lr + (end_lr - lr) * (i - start) / (stop - start)
//     b = uniform in [1, window]             (word2vec's reduced window)
//     for j in [i - b, i + b], j != i, 0 <= j < n, sentences[j] == sentences[i]:
//       negs = K draws, uniform over `noise` (e.g. a unigram^0.75 table)
//       sgns_step on the one pair (tokens[j], tokens[i], negs) with step
//   return {summed loss / pairs, pairs}
//
// Both tables are (V, D); tokens index both. The draws for center i come from a
// counter-based generator keyed by (seed, i), so the pairs do not depend on the
// thread count or on how [0, n) is cut into calls. Threads as in sgns_step.
// Scratch memory grows with the pairs a center really has (its sentence), not
// with `window`.
// Every token and noise id is checked first; start/stop outside 0 <= start <=
// stop <= n, a negative window or K, or an empty noise with K > 0:
// std::invalid_argument.
struct SgnsTrainResult {
  double loss;    // mean loss per pair (0 when there were none)
  int64_t pairs;  // (center, context) pairs trained
};

template <class Scalar, class Index>
SgnsTrainResult sgns_train(Scalar* in_table, Scalar* out_table, int64_t V, int64_t D,
                           const Index* tokens, const int64_t* sentences, int64_t n,
                           int64_t start, int64_t stop, int64_t window, int64_t K,
                           const Index* noise, int64_t noise_len, Scalar lr,
                           Scalar end_lr, uint64_t seed);

// The pairs sgns_train(start, stop, ...) trains, in its single-thread order:
// input rows, output (positive) rows, and K negatives each (row-major).
template <class Index>
void sgns_pairs(const Index* tokens, const int64_t* sentences, int64_t n, int64_t start,
                int64_t stop, int64_t window, int64_t K, const Index* noise,
                int64_t noise_len, uint64_t seed, std::vector<int64_t>& inputs,
                std::vector<int64_t>& targets, std::vector<int64_t>& negatives);

}  // namespace embtable
