/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  Every PostgreSQL version difference queue_engine cares about, in one
 *	  place.  Built and tested on PostgreSQL 15.
 *
 *-------------------------------------------------------------------------
 */
#ifndef QE_COMPAT_H
#define QE_COMPAT_H

#include "postgres.h"

#if PG_VERSION_NUM < 150000
#error "queue_engine requires PostgreSQL 15 or later"
#endif

/* PostgreSQL 18 wants a name and version in the module magic. */
#if PG_VERSION_NUM >= 180000
#define QE_MODULE_MAGIC PG_MODULE_MAGIC_EXT(.name = "queue_engine", .version = "0.1.1")
#else
#define QE_MODULE_MAGIC PG_MODULE_MAGIC
#endif

#endif							/* QE_COMPAT_H */
