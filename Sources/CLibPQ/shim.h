#ifndef DANG_CLIBPQ_SHIM_H
#define DANG_CLIBPQ_SHIM_H
#include <libpq-fe.h>
#endif
