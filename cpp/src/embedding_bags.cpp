#include "embtable/embedding_bags.hpp"

#include <algorithm>
#include <climits>
#include <functional>
#include <stdexcept>
#include <string>

#include "bag_kernels.hpp"
#include "embtable/parallel.hpp"
#include "embtable/tuning.hpp"
#include "embtable/validate.hpp"
#include "qbag_kernels.hpp"

namespace embtable {
namespace {

std::string table_name(size_t t) { return "tables[" + std::to_string(t) + "]: "; }

// Checks table t (padding_idx, weights, indices) and rethrows with its name.
void check_table(const BagsTable& tb, size_t t, BagMode mode, int64_t B) {
  try {
    if (tb.bags.num_bags != B)
      throw std::invalid_argument("has " + std::to_string(tb.bags.num_bags) +
                                  " bags but tables[0] has " + std::to_string(B));
    if (tb.padding_idx >= tb.V)
      throw std::invalid_argument("padding_idx " + std::to_string(tb.padding_idx) +
                                  " is out of bounds for a table with " +
                                  std::to_string(tb.V) + " rows; it must be in [0, V)");
    if (tb.weights && mode != BagMode::sum)
      throw std::invalid_argument(
          "per_sample_weights are only supported with mode='sum'");
    if (tb.indices_i64)
      check_indices(static_cast<const int64_t*>(tb.indices), tb.index_shape, tb.V);
    else
      check_indices(static_cast<const int32_t*>(tb.indices), tb.index_shape, tb.V);
  } catch (const std::out_of_range& e) {
    throw std::out_of_range(table_name(t) + e.what());
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(table_name(t) + e.what());
  }
}

// Pools bags [b0, b1) of one table into its columns of out.
using Run = std::function<void(int64_t, int64_t)>;

template <class Scalar, class Index>
Run float_run(const BagsTable& tb, BagMode mode, Scalar* out, int64_t stride) {
  const kernels::BagArgs<Scalar, Index> args{
      static_cast<const Scalar*>(tb.table),
      tb.D,
      static_cast<const Index*>(tb.indices),
      &tb.bags,
      mode,
      static_cast<const Scalar*>(tb.weights),
      tb.padding_idx,
      out,
      nullptr,
      sizeof(Scalar) == 8 || tb.V <= int64_t{INT32_MAX} + 1,
      kernels::bag_prefetch_ids<Scalar>(tb.D),
      stride};
  const auto fn = kernels::bag_forward<Scalar, Index>();
  return [args, fn](int64_t b0, int64_t b1) { fn(args, b0, b1); };
}

template <class Index>
Run quant_run(const BagsTable& tb, BagMode mode, float* out, int64_t stride) {
  const kernels::QBagArgs<Index> args{tb.q,
                                      static_cast<const Index*>(tb.indices),
                                      &tb.bags,
                                      mode,
                                      static_cast<const float*>(tb.weights),
                                      tb.padding_idx,
                                      out,
                                      stride};
  const auto fn = kernels::qkernels().bag<Index>();
  return [args, fn](int64_t b0, int64_t b1) { fn(args, b0, b1); };
}

template <class Scalar>
Run table_run(const BagsTable& tb, BagMode mode, Scalar* out, int64_t stride) {
  if (tb.kind == BagsTable::Kind::quantized) {
    if constexpr (std::is_same_v<Scalar, float>) {
      return tb.indices_i64 ? quant_run<int64_t>(tb, mode, out, stride)
                            : quant_run<int32_t>(tb, mode, out, stride);
    } else {
      throw std::invalid_argument("a quantized table gives float32 output");
    }
  }
  return tb.indices_i64 ? float_run<Scalar, int64_t>(tb, mode, out, stride)
                        : float_run<Scalar, int32_t>(tb, mode, out, stride);
}

int64_t row_bytes_of(const BagsTable& tb) {
  if (tb.kind == BagsTable::Kind::quantized) return tb.q.row_bytes;
  return tb.D * (tb.kind == BagsTable::Kind::f64 ? 8 : 4);
}

struct Item {
  size_t table;
  int64_t b0, b1;
};

}  // namespace

template <class Scalar>
void embedding_bags(std::span<const BagsTable> tables, BagMode mode, Scalar* out) {
  if (tables.empty()) return;
  const int64_t B = tables[0].bags.num_bags;
  int64_t stride = 0;
  for (size_t t = 0; t < tables.size(); ++t) {
    check_table(tables[t], t, mode, B);
    stride += tables[t].D;
  }
  if (B == 0 || stride == 0) return;

  std::vector<Run> runs;
  runs.reserve(tables.size());
  // Work of each table (bytes of rows read, plus one row written per bag).
  std::vector<int64_t> per_bag(tables.size());
  int64_t total = 0, col = 0;
  for (size_t t = 0; t < tables.size(); ++t) {
    const BagsTable& tb = tables[t];
    runs.push_back(table_run<Scalar>(tb, mode, out + col, stride));
    col += tb.D;
    const int64_t ids = tb.bags.num_indices / B + 1;
    per_bag[t] = tb.D == 0 ? 0 : ids * std::max<int64_t>(row_bytes_of(tb), 1);
    total += per_bag[t] * B;
  }
  const int threads = get_num_threads();
  const int64_t grain_bytes = std::max<int64_t>(tuning().parallel_bytes.value, 1);
  if (threads == 1 || total <= grain_bytes) {
    for (size_t t = 0; t < tables.size(); ++t)
      if (tables[t].D > 0) runs[t](0, B);
    return;
  }
  // Items of about total / (8 threads) bytes (at least a tenth of the grain):
  // small enough to balance tables of very different widths and bag sizes.
  const int64_t target =
      std::max<int64_t>(grain_bytes / 10, total / (8 * static_cast<int64_t>(threads)));
  std::vector<Item> items;
  for (size_t t = 0; t < tables.size(); ++t) {
    if (per_bag[t] == 0) continue;
    const int64_t chunk = std::max<int64_t>(1, target / per_bag[t]);
    for (int64_t b = 0; b < B; b += chunk)
      items.push_back({t, b, std::min(B, b + chunk)});
  }
  parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const Item& it = items[static_cast<size_t>(i)];
      runs[it.table](it.b0, it.b1);
    }
  });
}

template <class Scalar>
void embedding_bags_ref(std::span<const BagsTable> tables, BagMode mode, Scalar* out) {
  int64_t stride = 0;
  for (const auto& tb : tables) stride += tb.D;
  int64_t col = 0;
  for (const auto& tb : tables) {
    const int64_t B = tb.bags.num_bags;
    if (tb.kind == BagsTable::Kind::quantized) {
      if constexpr (std::is_same_v<Scalar, float>) {
        if (tb.indices_i64)
          qembedding_bag_ref(tb.q, static_cast<const int64_t*>(tb.indices), tb.bags,
                             mode, static_cast<const float*>(tb.weights),
                             tb.padding_idx, out + col, stride);
        else
          qembedding_bag_ref(tb.q, static_cast<const int32_t*>(tb.indices), tb.bags,
                             mode, static_cast<const float*>(tb.weights),
                             tb.padding_idx, out + col, stride);
      }
    } else {
      std::vector<Scalar> tmp(static_cast<size_t>(B * tb.D));
      if (tb.indices_i64)
        embedding_bag_ref(static_cast<const Scalar*>(tb.table), tb.D,
                          static_cast<const int64_t*>(tb.indices), tb.bags, mode,
                          static_cast<const Scalar*>(tb.weights), tb.padding_idx,
                          tmp.data(), nullptr);
      else
        embedding_bag_ref(static_cast<const Scalar*>(tb.table), tb.D,
                          static_cast<const int32_t*>(tb.indices), tb.bags, mode,
                          static_cast<const Scalar*>(tb.weights), tb.padding_idx,
                          tmp.data(), nullptr);
      for (int64_t b = 0; b < B; ++b)
        std::copy_n(tmp.data() + b * tb.D, tb.D, out + b * stride + col);
    }
    col += tb.D;
  }
}

template void embedding_bags<float>(std::span<const BagsTable>, BagMode, float*);
template void embedding_bags<double>(std::span<const BagsTable>, BagMode, double*);
template void embedding_bags_ref<float>(std::span<const BagsTable>, BagMode, float*);
template void embedding_bags_ref<double>(std::span<const BagsTable>, BagMode, double*);

}  // namespace embtable
