# Checks one benchmark tool's refusals, run as a CTest script:
#   cmake -DTOOL=<binary> -DWORK_DIR=<scratch dir> [-DREPORT=ON] [-DHUGE_ARGS=<a;b;...>]
#         -P tools_test.cmake
# Each refusal must come with the usage exit code (2), within seconds, before anything is measured
# (nothing on stdout, no output file left behind), and with a message naming what was wrong:
#   - a --json (and, with REPORT, a --report) path in a directory that does not exist;
#   - an unknown flag;
#   - with HUGE_ARGS, sizes no machine's memory holds: the message says what is needed and what is
#     available.
# --help must exit 0. Every run uses the cpu backend, so the checks need no GPU.
cmake_minimum_required(VERSION 3.20)

if(NOT TOOL OR NOT WORK_DIR)
  message(FATAL_ERROR "usage: cmake -DTOOL=<binary> -DWORK_DIR=<dir> -P tools_test.cmake")
endif()
get_filename_component(name "${TOOL}" NAME)
set(failures 0)

# Runs TOOL with the given arguments (at most 60 s) into out_code, out_stdout, out_stderr, out_s.
function(run_tool)
  string(TIMESTAMP start "%s")
  execute_process(COMMAND "${TOOL}" ${ARGN}
                  RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 60)
  string(TIMESTAMP end "%s")
  math(EXPR seconds "${end} - ${start}")
  set(out_code "${code}" PARENT_SCOPE)
  set(out_stdout "${out}" PARENT_SCOPE)
  set(out_stderr "${err}" PARENT_SCOPE)
  set(out_s "${seconds}" PARENT_SCOPE)
endfunction()

function(fail what)
  message(SEND_ERROR "${name}: ${what}")
  math(EXPR n "${failures} + 1")
  set(failures ${n} PARENT_SCOPE)
endfunction()

# Expects the last run to be a refusal with `code`, fast and before any measuring, whose stderr
# holds every one of ARGN.
function(expect_refusal case code)
  if(NOT "${out_code}" STREQUAL "${code}")
    fail("${case}: exit code '${out_code}', expected ${code}; stderr: ${out_stderr}")
  endif()
  if(out_s GREATER 20)
    fail("${case}: took ${out_s} s; a refusal must come before anything is measured")
  endif()
  if(NOT "${out_stdout}" STREQUAL "")
    fail("${case}: printed on stdout before refusing: ${out_stdout}")
  endif()
  foreach(needle IN LISTS ARGN)
    string(FIND "${out_stderr}" "${needle}" at)
    if(at EQUAL -1)
      fail("${case}: stderr does not say '${needle}': ${out_stderr}")
    endif()
  endforeach()
  set(failures ${failures} PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
set(missing_dir "${WORK_DIR}/no-such-dir")
set(common --backend cpu --quiet)

run_tool(${common} --json "${missing_dir}/out.jsonl")
expect_refusal("bad --json path" 2 "--json" "${missing_dir}/out.jsonl" "No such file or directory")

if(REPORT)
  run_tool(${common} --json "${WORK_DIR}/out.jsonl" --report "${missing_dir}/report.txt")
  expect_refusal("bad --report path" 2 "--report" "${missing_dir}/report.txt")
  if(EXISTS "${WORK_DIR}/out.jsonl")
    fail("bad --report path: the --json file opened before it was left behind")
  endif()
endif()

run_tool(${common} --no-such-flag)
expect_refusal("unknown flag" 2 "--no-such-flag")

if(HUGE_ARGS)
  run_tool(${common} --json "${WORK_DIR}/huge.jsonl" ${HUGE_ARGS})
  expect_refusal("sizes beyond the machine's memory" 2 "ResourceExhausted" "needs" "available")
  if(EXISTS "${WORK_DIR}/huge.jsonl")
    fail("sizes beyond the machine's memory: left an empty --json file behind")
  endif()
endif()

run_tool(--help)
if(NOT "${out_code}" STREQUAL "0")
  fail("--help: exit code '${out_code}', expected 0")
endif()

file(REMOVE_RECURSE "${WORK_DIR}")
if(failures GREATER 0)
  message(FATAL_ERROR "${name}: ${failures} check(s) failed")
endif()
message(STATUS "${name}: refusals exit 2 before measuring, --help exits 0")
