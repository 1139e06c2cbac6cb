/*-------------------------------------------------------------------------
 *
 * segments.h
 *	  The run families of storage 0.2 (ready, delayed, executing), each a
 *	  parent table with two segments, and which segment new rows of a
 *	  family go to (segments.c).  See src/README.md, "Run storage 0.2".
 *
 *	  The current segment is only where writers insert: every reader reads
 *	  a family through its parent (both segments), and rotation carries
 *	  the other segment's rows over under its lock before it truncates it,
 *	  so a writer that inserts into either segment at any time loses
 *	  nothing.
 *
 *-------------------------------------------------------------------------
 */
#ifndef QE_SEGMENTS_H
#define QE_SEGMENTS_H

#include "queue_engine.h"

typedef enum QeFamily
{
	QE_FAMILY_READY,
	QE_FAMILY_DELAYED,
	QE_FAMILY_EXECUTING,
	QE_FAMILY_COUNT
} QeFamily;

/* "ready", "delayed", "executing": the parent tables' names. */
extern const char *const qe_family_names[QE_FAMILY_COUNT];

/* "ready_0", ...: qe_segment_names[family][segment]. */
extern const char *const qe_segment_names[QE_FAMILY_COUNT][2];

/* The segment (0 or 1) new rows of the family go to in this database. */
extern int	qe_current_segment(QeFamily family);
extern void qe_set_current_segment(QeFamily family, int segment);

/*
 * The segment of a family that holds every row, when the other one has no
 * pages at all (both empty: the current one); -1 when both have pages, or
 * the segments are missing (a schema older than the library: the caller's
 * statement through the parent reports it).
 * Both segments stay locked (AccessShareLock, as a statement through the
 * parent locks them), so the segment returned cannot be truncated under
 * the caller; rows may still come to the other one meanwhile (an insert,
 * a carry), which a caller that comes up short must look for.
 */
extern int	qe_sole_segment(QeFamily family);

/*
 * A saved plan for a statement that inserts into the current segment of a
 * family: sql_fmt names the segment table as %1$s (the plan of each
 * segment is kept in plans[segment]).
 */
extern SPIPlanPtr qe_plan_segment(SPIPlanPtr plans[2], QeFamily family,
								  const char *sql_fmt, int nargs,
								  const Oid *argtypes);

/*
 * A saved plan for a statement on one given segment of a family: sql_fmt
 * names it as %1$s (kept in plans[segment]).
 */
extern SPIPlanPtr qe_plan_in_segment(SPIPlanPtr plans[2], QeFamily family,
									 int segment, const char *sql_fmt,
									 int nargs, const Oid *argtypes);

/*
 * CTEs that delete the rows of a ready or delayed family ("ready",
 * "delayed") that an earlier CTE named picked lists (columns t: tableoid,
 * c: ctid, its rows locked), each from its own segment by a TID scan; and
 * a CTE taken of the deleted rows with all their columns.  (These families
 * have no index on run_id but a BRIN: a locked row's ctid is how to reach
 * it.)  Statements using it must run with enable_seqscan off (the API
 * functions are declared so, and the worker and run_maintenance set it),
 * so that a plan made while a segment was empty stays a TID scan.
 */
#define QE_SQL_TAKE_PICKED(family) \
	" taken_0 AS (DELETE FROM queue_engine." family "_0 r" \
	"   WHERE r.ctid = ANY (ARRAY(SELECT c FROM picked" \
	"                              WHERE t = 'queue_engine." family "_0'::pg_catalog.regclass))" \
	"   RETURNING r.*)," \
	" taken_1 AS (DELETE FROM queue_engine." family "_1 r" \
	"   WHERE r.ctid = ANY (ARRAY(SELECT c FROM picked" \
	"                              WHERE t = 'queue_engine." family "_1'::pg_catalog.regclass))" \
	"   RETURNING r.*)," \
	" taken AS (SELECT * FROM taken_0 UNION ALL SELECT * FROM taken_1)"

/* The current segment's table name. */
static inline const char *
qe_current_segment_name(QeFamily family)
{
	return qe_segment_names[family][qe_current_segment(family)];
}

#endif							/* QE_SEGMENTS_H */
