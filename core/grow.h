/* grow.h -- the one way an array grows here, as git's ALLOC_GROW.
 *
 * ARRAY_GROW(a, n, cap) makes room for element N of array A (so for N + 1
 * elements), doubling its capacity CAP (a size_t) from GROW_FIRST, so that
 * appending N elements costs O(N) copies.  0, or -ENOMEM with A and CAP
 * as they were. */
#ifndef NADB_GROW_H
#define NADB_GROW_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define GROW_FIRST 8 /* elements of a new array */

/* *ARRAYP (any object pointer, reached through memcpy so that its type
 * does not matter) gets room for NEED elements of ELEM bytes. */
static inline int grow_array(void *arrayp, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return 0;
	size_t c = *cap ? *cap : GROW_FIRST;
	while (c < need) {
		if (c > SIZE_MAX / 2 / elem)
			return -ENOMEM;
		c *= 2;
	}
	void *old, *grown;
	memcpy(&old, arrayp, sizeof(old));
	if (!(grown = realloc(old, c * elem)))
		return -ENOMEM;
	memcpy(arrayp, &grown, sizeof(grown));
	*cap = c;
	return 0;
}

#define ARRAY_GROW(a, n, cap) grow_array(&(a), &(cap), (size_t)(n) + 1, sizeof(*(a)))

#endif
