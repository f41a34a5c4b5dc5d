/* clock.h -- the clock that measures waits.
 *
 * Leases, retry deadlines, intervals between checks and timings all read
 * CLOCK_MONOTONIC, which a step of the wall clock (NTP, an admin's date(1))
 * cannot stretch or cut short.  Wall time, for what users see (mtimes,
 * expiries), is now_ns (store_int.h). */
#ifndef NADB_CLOCK_H
#define NADB_CLOCK_H

#include <stdint.h>
#include <time.h>

/* ns since an arbitrary start (boot): never decreases. */
static inline uint64_t monotonic_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The same in ms. */
static inline uint64_t monotonic_ms(void)
{
	return monotonic_ns() / 1000000u;
}

#endif
