// tierkv's one error currency: Status for operations that return nothing, Result<T> for those
// that return a value. Every public function that can fail returns one of the two; exceptions
// never cross the API, and aborts are kept for broken internal invariants.
//
// Thread safety: Status and Result are values; distinct objects may be used from different
// threads, one object needs external synchronization like any value.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace tierkv {

enum class StatusCode : std::uint8_t {
  kOk = 0,
  kInvalidArgument,     // the caller passed something malformed; fix the call
  kNotFound,            // the thing asked for is not there (a miss is not an error)
  kAlreadyExists,       // the thing to create is there already
  kOutOfRange,          // an index, size or length beyond what is supported
  kResourceExhausted,   // a budget or memory pool is full
  kFailedPrecondition,  // the object is not in a state that allows the call
  kUnavailable,         // a device or remote peer cannot be reached right now; retry may help
  kDeadlineExceeded,    // a timeout expired
  kDataLoss,            // bytes were corrupted, truncated or are foreign
  kDeviceError,         // a CUDA (or other device) call failed
  kIoError,             // a file or socket operation failed
  kUnimplemented,       // the combination is not supported by this build or backend
  kInternal,            // a bug in tierkv
};

// Name of a code, e.g. "InvalidArgument".
std::string_view status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  // An OK status.
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "OK" or "<CodeName>: <message>".
  std::string to_string() const;

  // Returns a copy whose message is prefixed with `context` and ": ".
  Status with_context(std::string_view context) const;

  // Marks a status as deliberately ignored.
  void ignore() const {}

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline bool operator==(const Status& a, const Status& b) {
  return a.code() == b.code() && a.message() == b.message();
}

Status invalid_argument(std::string message);
Status not_found(std::string message);
Status already_exists(std::string message);
Status out_of_range(std::string message);
Status resource_exhausted(std::string message);
Status failed_precondition(std::string message);
Status unavailable(std::string message);
Status deadline_exceeded(std::string message);
Status data_loss(std::string message);
Status device_error(std::string message);
Status io_error(std::string message);
Status unimplemented(std::string message);
Status internal_error(std::string message);

// A value of type T or the Status that explains why there is none. Constructing a Result from an
// OK Status is a bug and aborts.
template <typename T>
class [[nodiscard]] Result {
  static_assert(!std::is_same_v<std::remove_cvref_t<T>, Status>, "use Status directly");

 public:
  Result(T value) : v_(std::in_place_index<1>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::in_place_index<0>, std::move(status)) {  // NOLINT
    if (std::get<0>(v_).ok()) abort_ok_status();
  }

  bool ok() const { return v_.index() == 1; }

  // The error; OK when a value is held.
  Status status() const { return ok() ? Status() : std::get<0>(v_); }

  // REQUIRES: ok(). Accessing the value of an error aborts with the error's message.
  T& value() & {
    check();
    return std::get<1>(v_);
  }
  const T& value() const& {
    check();
    return std::get<1>(v_);
  }
  T&& value() && {
    check();
    return std::get<1>(std::move(v_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  [[noreturn]] static void abort_ok_status();
  [[noreturn]] static void abort_no_value(const Status& s);
  void check() const {
    if (!ok()) abort_no_value(std::get<0>(v_));
  }

  std::variant<Status, T> v_;
};

namespace detail {
[[noreturn]] void abort_with(std::string_view what);
}  // namespace detail

template <typename T>
void Result<T>::abort_ok_status() {
  detail::abort_with("tierkv: Result constructed from an OK Status");
}
template <typename T>
void Result<T>::abort_no_value(const Status& s) {
  detail::abort_with("tierkv: value() of a failed Result: " + s.to_string());
}

}  // namespace tierkv

#define TIERKV_CONCAT_INNER_(a, b) a##b
#define TIERKV_CONCAT_(a, b) TIERKV_CONCAT_INNER_(a, b)

// Returns the Status of `expr` from the enclosing function when it is not OK.
#define TIERKV_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    ::tierkv::Status tierkv_status_ = (expr);        \
    if (!tierkv_status_.ok()) return tierkv_status_; \
  } while (0)

// `lhs = value of expr`, or returns its Status from the enclosing function. `lhs` may declare a
// variable: TIERKV_ASSIGN_OR_RETURN(auto buf, backend.allocate(...));
#define TIERKV_ASSIGN_OR_RETURN(lhs, expr) \
  TIERKV_ASSIGN_OR_RETURN_IMPL_(TIERKV_CONCAT_(tierkv_result_, __LINE__), lhs, expr)
#define TIERKV_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(tmp).value()
