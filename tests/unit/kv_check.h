/* kv_check.h -- what the backend tests share: writing and checking a
 * text row of a kv table. */
#ifndef NADB_KV_CHECK_H
#define NADB_KV_CHECK_H

#include "backend.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

static inline int put_s(struct kv *kv, enum kv_table t, const char *k, const char *v)
{
	return kv->ops->put(kv, t, k, strlen(k), v, strlen(v));
}

/* Is K in table T with exactly value V (V NULL: absent)? */
static inline bool holds(struct kv *kv, enum kv_table t, const char *k, const char *v)
{
	struct kv_val got;
	int rc = kv->ops->get(kv, t, k, strlen(k), &got);
	if (!v)
		return rc == -ENOENT;
	return rc == 0 && got.len == strlen(v) && !memcmp(got.data, v, got.len);
}

#endif
