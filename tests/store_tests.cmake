# Links the store libraries (src/tiers/{memory,fault,disk}) into the store tests registered in
# CMakeLists.txt, and into tierkv_all_tests, which is made after this file is read.
set(tierkv_store_test_libs tierkv_memory_store tierkv_fault_store tierkv_disk tierkv_disk_fault)
foreach(t IN ITEMS store_test disk_store_test disk_crash_test disk_fault_test disk_corruption_test)
  if(TARGET ${t})
    target_link_libraries(${t} PRIVATE ${tierkv_store_test_libs})
    target_link_libraries(${t}_objects PRIVATE ${tierkv_store_test_libs})
  endif()
endforeach()
cmake_language(DEFER CALL target_link_libraries tierkv_all_tests PRIVATE ${tierkv_store_test_libs})
