// sgns_step: the fused skip-gram negative-sampling SGD step.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "checks.hpp"
#include "embtable/sgns.hpp"
#include "register.hpp"

namespace embtable::binding {
namespace {

void check_aligned(const py::array& a, const char* name) {
  // std::atomic_ref needs naturally aligned elements (NumPy's ALIGNED flag).
  if (reinterpret_cast<uintptr_t>(a.data()) % static_cast<uintptr_t>(a.itemsize()) != 0)
    throw py::value_error(std::string(name) + " is not aligned; copy it with " +
                          "np.ascontiguousarray(" + name + ") and use the copy");
}

struct SgnsArgs {
  py::array in_table, out_table, centers, contexts, negatives;
  FloatKind fk;
  IndexKind ik;
  int64_t V_in, V_out, D, N, K;
};

SgnsArgs check_sgns(const py::object& in_obj, const py::object& out_obj,
                    const py::array& centers, const py::array& contexts,
                    const py::array& negatives) {
  SgnsArgs a;
  a.in_table = inplace_array(in_obj, "in_table");
  a.out_table = inplace_array(out_obj, "out_table");
  a.fk = float_kind(a.in_table, "in_table");
  check_same_float(a.out_table, "out_table", a.in_table, "in_table");
  check_table(a.in_table, "in_table", true);
  check_table(a.out_table, "out_table", true);
  check_aligned(a.in_table, "in_table");
  check_aligned(a.out_table, "out_table");
  if (a.in_table.shape(1) != a.out_table.shape(1))
    throw py::value_error("in_table has shape " + shape_str(a.in_table) +
                          " but out_table has "
                          "shape " +
                          shape_str(a.out_table) + "; both need the same D");
  check_no_overlap(a.in_table, "in_table", a.out_table, "out_table");
  a.ik = index_kind(centers, "centers");
  if (index_kind(contexts, "contexts") != a.ik ||
      index_kind(negatives, "negatives") != a.ik)
    throw py::type_error(
        "centers, contexts and negatives must share one index dtype (int32 or "
        "int64)");
  if (centers.ndim() != 1)
    throw py::value_error("centers must be 1-D (N,), got shape " + shape_str(centers));
  a.N = centers.shape(0);
  check_shape(contexts, "contexts", {a.N}, "centers has shape");
  if (negatives.ndim() != 2 || negatives.shape(0) != a.N)
    throw py::value_error(
        "negatives has shape " + shape_str(negatives) +
        " but must be (N, K) with N = len(centers) = " + std::to_string(a.N));
  for (const auto* idx : {&centers, &contexts, &negatives}) {
    check_no_overlap(*idx, "an index array", a.in_table, "in_table");
    check_no_overlap(*idx, "an index array", a.out_table, "out_table");
  }
  a.centers = centers;
  a.contexts = contexts;
  a.negatives = negatives;
  a.V_in = a.in_table.shape(0);
  a.V_out = a.out_table.shape(0);
  a.D = a.in_table.shape(1);
  a.K = negatives.shape(1);
  return a;
}

double sgns_step_py(const py::object& in_obj, const py::object& out_obj,
                    const py::array& centers, const py::array& contexts,
                    const py::array& negatives, double lr, bool ref) {
  SgnsArgs a = check_sgns(in_obj, out_obj, centers, contexts, negatives);
  return dispatch(a.fk, a.ik, [&](auto s, auto i) {
    using Scalar = decltype(s);
    using Index = decltype(i);
    Scalar* in = mutable_ptr<Scalar>(a.in_table);
    Scalar* out = mutable_ptr<Scalar>(a.out_table);
    const Index* c = const_ptr<Index>(a.centers);
    const Index* x = const_ptr<Index>(a.contexts);
    const Index* n = const_ptr<Index>(a.negatives);
    const auto step = static_cast<Scalar>(lr);
    py::gil_scoped_release nogil;
    if (ref) {  // the oracle validates too, so tests can't corrupt memory through it
      sgns_check_indices<Index>(a.V_in, a.V_out, c, x, a.N, n, a.K);
      return sgns_step_ref<Scalar, Index>(in, out, a.D, c, x, a.N, n, a.K, step);
    }
    return sgns_step<Scalar, Index>(in, a.V_in, out, a.V_out, a.D, c, x, a.N, n, a.K,
                                    step);
  });
}

// tokens and noise: one native int32/int64 dtype; sentences: int64 or None.
struct StreamArgs {
  IndexKind ik;
  int64_t n, noise_len;
  const int64_t* sentences = nullptr;
};

StreamArgs check_stream(const py::array& tokens, const py::object& sentences_obj,
                        const py::array& noise, py::array& sentences_keep) {
  StreamArgs s;
  s.ik = index_kind(tokens, "tokens");
  if (index_kind(noise, "noise") != s.ik)
    throw py::type_error(
        "tokens and noise must share one index dtype (int32 or int64)");
  if (tokens.ndim() != 1)
    throw py::value_error("tokens must be 1-D, got shape " + shape_str(tokens));
  if (noise.ndim() != 1)
    throw py::value_error("noise must be 1-D, got shape " + shape_str(noise));
  s.n = tokens.shape(0);
  s.noise_len = noise.shape(0);
  if (!sentences_obj.is_none()) {
    sentences_keep = py::reinterpret_borrow<py::array>(sentences_obj);
    const py::dtype dt = sentences_keep.dtype();
    if (dt.kind() != 'i' || dt.itemsize() != 8 ||
        !(sentences_keep.flags() & py::array::c_style))
      throw py::type_error("sentences must be a C-contiguous int64 array here");
    check_shape(sentences_keep, "sentences", {s.n}, "tokens has shape");
    s.sentences = static_cast<const int64_t*>(sentences_keep.data());
  }
  return s;
}

py::tuple sgns_train_py(const py::object& in_obj, const py::object& out_obj,
                        const py::array& tokens, const py::object& sentences_obj,
                        const py::array& noise, int64_t start, int64_t stop,
                        int64_t window, int64_t negative, double lr, double end_lr,
                        uint64_t seed) {
  py::array in_table = inplace_array(in_obj, "in_table");
  py::array out_table = inplace_array(out_obj, "out_table");
  const FloatKind fk = float_kind(in_table, "in_table");
  check_same_float(out_table, "out_table", in_table, "in_table");
  check_table(in_table, "in_table", true);
  check_table(out_table, "out_table", true);
  if (shape_of(in_table) != shape_of(out_table))
    throw py::value_error("in_table has shape " + shape_str(in_table) +
                          " but out_table has "
                          "shape " +
                          shape_str(out_table) + "; sgns_train needs one (V, D)");
  check_no_overlap(in_table, "in_table", out_table, "out_table");
  py::array sentences;
  const StreamArgs s = check_stream(tokens, sentences_obj, noise, sentences);
  for (const py::array* a :
       {&tokens, &noise, static_cast<const py::array*>(&sentences)}) {
    check_no_overlap(*a, "an index array", in_table, "in_table");
    check_no_overlap(*a, "an index array", out_table, "out_table");
  }
  const int64_t V = in_table.shape(0), D = in_table.shape(1);
  const SgnsTrainResult r = dispatch(fk, s.ik, [&](auto f, auto i) {
    using Scalar = decltype(f);
    using Index = decltype(i);
    Scalar* in = mutable_ptr<Scalar>(in_table);
    Scalar* out = mutable_ptr<Scalar>(out_table);
    const Index* tok = const_ptr<Index>(tokens);
    const Index* nz = const_ptr<Index>(noise);
    py::gil_scoped_release nogil;
    return sgns_train<Scalar, Index>(
        in, out, V, D, tok, s.sentences, s.n, start, stop, window, negative, nz,
        s.noise_len, static_cast<Scalar>(lr), static_cast<Scalar>(end_lr), seed);
  });
  return py::make_tuple(r.loss, r.pairs);
}

py::tuple sgns_pairs_py(const py::array& tokens, const py::object& sentences_obj,
                        const py::array& noise, int64_t start, int64_t stop,
                        int64_t window, int64_t negative, uint64_t seed) {
  py::array sentences;
  const StreamArgs s = check_stream(tokens, sentences_obj, noise, sentences);
  std::vector<int64_t> inputs, targets, negs;
  auto run = [&](auto i) {
    using Index = decltype(i);
    const Index* tok = const_ptr<Index>(tokens);
    const Index* nz = const_ptr<Index>(noise);
    // Generating the pairs touches no Python object (a long stream takes seconds).
    py::gil_scoped_release nogil;
    sgns_pairs<Index>(tok, s.sentences, s.n, start, stop, window, negative, nz,
                      s.noise_len, seed, inputs, targets, negs);
  };
  if (s.ik == IndexKind::i32)
    run(int32_t{});
  else
    run(int64_t{});
  const auto N = static_cast<py::ssize_t>(inputs.size());
  py::array_t<int64_t> a(N), b(N), c(std::vector<py::ssize_t>{N, negative});
  std::copy(inputs.begin(), inputs.end(), a.mutable_data());
  std::copy(targets.begin(), targets.end(), b.mutable_data());
  std::copy(negs.begin(), negs.end(), c.mutable_data());
  return py::make_tuple(a, b, c);
}

}  // namespace

void register_sgns(py::module_& m) {
  m.def("sgns_step", &sgns_step_py, py::arg("in_table"), py::arg("out_table"),
        py::arg("centers"), py::arg("contexts"), py::arg("negatives"), py::arg("lr"),
        py::kw_only(), py::arg("ref") = false,
        "Fused skip-gram negative-sampling SGD step in place on both tables; returns "
        "the mean "
        "loss. ref=True runs the scalar single-threaded oracle.");
  m.def("sgns_train", &sgns_train_py, py::arg("in_table"), py::arg("out_table"),
        py::arg("tokens"), py::arg("sentences"), py::arg("noise"), py::arg("start"),
        py::arg("stop"), py::arg("window"), py::arg("negative"), py::arg("lr"),
        py::arg("end_lr"), py::arg("seed"),
        "word2vec skip-gram over a token stream, fused; returns (mean loss, pairs).");
  m.def("sgns_pairs", &sgns_pairs_py, py::arg("tokens"), py::arg("sentences"),
        py::arg("noise"), py::arg("start"), py::arg("stop"), py::arg("window"),
        py::arg("negative"), py::arg("seed"),
        "The (inputs, targets, negatives) pairs sgns_train trains, in order (for "
        "tests).");
}

}  // namespace embtable::binding
