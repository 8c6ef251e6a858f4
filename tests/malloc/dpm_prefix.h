/*
 * dpm_prefix.h -- sanitizer builds only: the drop-in malloc under dpm_
 * names.  ASan and TSan interpose malloc themselves, so an instrumented
 * test program cannot also interpose it.  tests/malloc/meson.build
 * compiles lib/malloc.c and the malloc tests with -include of this file:
 * the library defines dpm_malloc, dpm_free, ... and the tests call them,
 * while libc, Criterion and the sanitizer runtime keep the sanitizer's
 * allocator.  What is left out: memory handed out by libc (strdup,
 * open_memstream, ...) must go back with mt_libc_free(), and programs
 * run under LD_PRELOAD (test_malloc_programs, test_malloc_thp) need the
 * real libdeferpool-malloc.so, which sanitizer builds do not build.
 */
#ifndef DP_DPM_PREFIX_H
#define DP_DPM_PREFIX_H

#define DP_MALLOC_PREFIXED 1

#define malloc dpm_malloc
#define free dpm_free
#define calloc dpm_calloc
#define realloc dpm_realloc
#define reallocarray dpm_reallocarray
#define posix_memalign dpm_posix_memalign
#define aligned_alloc dpm_aligned_alloc
#define memalign dpm_memalign
#define valloc dpm_valloc
#define pvalloc dpm_pvalloc
#define malloc_usable_size dpm_malloc_usable_size
#define free_sized dpm_free_sized
#define free_aligned_sized dpm_free_aligned_sized
#define malloc_trim dpm_malloc_trim
#define mallinfo dpm_mallinfo
#define mallinfo2 dpm_mallinfo2
#define malloc_stats dpm_malloc_stats
#define mallopt dpm_mallopt

#endif
