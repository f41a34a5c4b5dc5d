/* clock.h -- the clock that measures waits.
 *
 * Leases, retry deadlines, intervals between checks and timings all read
 * CLOCK_BOOTTIME, which a step of the wall clock (NTP, an admin's date(1))
 * cannot stretch or cut short, and which, unlike CLOCK_MONOTONIC, goes on
 * while the machine is suspended: a lease held across a suspend must be
 * seen to have run out, as Redis sees its lock expire.  (Condition
 * variables wait on CLOCK_MONOTONIC, pthread's only steady clock: a
 * deadline for one is made by clock_in, never from these.)  Wall time, for
 * what users see (mtimes, expiries), is now_ns (store_int.h). */
#ifndef NADB_CLOCK_H
#define NADB_CLOCK_H

#include <stdint.h>
#include <time.h>

/* ns since boot, suspends included: never decreases. */
static inline uint64_t monotonic_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The same in ms. */
static inline uint64_t monotonic_ms(void)
{
	return monotonic_ns() / 1000000u;
}

#endif
