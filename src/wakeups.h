/*-------------------------------------------------------------------------
 *
 * wakeups.h
 *	  Blocking dequeue's sleep and the wakeups that end it (wakeups.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef QE_WAKEUPS_H
#define QE_WAKEUPS_H

#include "queue_engine.h"

/* This transaction made nruns runs of queue_id startable (or freed slots). */
extern void qe_wakeup_note(int32 queue_id, int32 nruns);

/* At transaction end (xact.c). */
extern void qe_wakeups_xact_end(bool committed);

/* A waiting dequeue: take a slot, sleep (repeatedly), give it back. */
extern bool qe_wait_begin(const int32 *queue_ids, int n);
extern void qe_wait_sleep(long timeout_ms);
extern void qe_wait_end(void);

#endif							/* QE_WAKEUPS_H */
