// cuBLASLt errors become Status values naming the call, the file and the line.
#pragma once

#include <cublasLt.h>

#include <string>

#include "tierkv/status.h"

namespace tierkv::cuda {

inline Status cublas_error(cublasStatus_t st, const char* call, const char* file, int line) {
  return device_error(std::string(call) + " failed: " + cublasLtGetStatusName(st) + " (" +
                      cublasLtGetStatusString(st) + ") at " + file + ":" + std::to_string(line));
}

}  // namespace tierkv::cuda

// Evaluates a cuBLASLt call; returns its error as a Status from the enclosing function.
#define TIERKV_CUBLAS_RETURN_IF_ERROR(call)                                              \
  do {                                                                                   \
    const cublasStatus_t tierkv_cublas_st_ = (call);                                     \
    if (tierkv_cublas_st_ != CUBLAS_STATUS_SUCCESS) {                                    \
      return ::tierkv::cuda::cublas_error(tierkv_cublas_st_, #call, __FILE__, __LINE__); \
    }                                                                                    \
  } while (0)
