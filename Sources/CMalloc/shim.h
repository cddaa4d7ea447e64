#ifndef DANG_CMALLOC_SHIM_H
#define DANG_CMALLOC_SHIM_H
/* glibc's malloc tuning (mallopt), which the Glibc module does not export. */
#include <malloc.h>

/* The most malloc arenas the process may use; 1 on success. */
static inline int cmalloc_set_arena_max(int arenas) {
    return mallopt(M_ARENA_MAX, arenas);
}
#endif
