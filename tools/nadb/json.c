/* json.c -- the little JSON the tool needs, both ways.  Writing is only
 * strings (numbers and punctuation are printf'd by the callers), quoted so
 * that names which are not UTF-8 survive the trip.  Reading turns a whole
 * document -- the daemon's .stats -- into flat (path, value) pairs, which
 * is all the stats table wants from it.
 */
#include "nadb_tool.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at S (N bytes left), 0 if invalid. */
static size_t utf8_sequence_length(const unsigned char *s, size_t n)
{
	unsigned char lo = 0x80, hi = 0xBF;
	size_t len;
	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xC2 && s[0] <= 0xDF)
		len = 2;
	else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
		len = 3;
		lo = s[0] == 0xE0 ? 0xA0 : lo;
		hi = s[0] == 0xED ? 0x9F : hi;
	} else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
		len = 4;
		lo = s[0] == 0xF0 ? 0x90 : lo;
		hi = s[0] == 0xF4 ? 0x8F : hi;
	} else
		return 0;
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if ((s[i] & 0xC0) != 0x80)
			return 0;
	return len;
}

/* Append S as a JSON string.  Key names are bytes, not necessarily UTF-8:
 * a byte that is not part of valid UTF-8 becomes \udcXX, which is how
 * Python's surrogateescape reads it, so os.fsencode() gives the name back. */
int json_quote(struct buf *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s);
	int rc = buf_add(b, "\"", 1);
	while (!rc && n) {
		size_t len = utf8_sequence_length(p, n);
		if (*p == '"' || *p == '\\')
			rc = buf_printf(b, "\\%c", *p);
		else if (*p == '\n')
			rc = buf_add(b, "\\n", 2);
		else if (*p < 0x20)
			rc = buf_printf(b, "\\u%04x", *p);
		else if (!len)
			rc = buf_printf(b, "\\udc%02x", *p);
		else
			rc = buf_add(b, p, len);
		len = len ? len : 1;
		p += len;
		n -= len;
	}
	return rc ? rc : buf_add(b, "\"", 1);
}

int json_print_string(FILE *f, const char *s)
{
	struct buf b = {0};
	int rc = json_quote(&b, s);
	if (!rc)
		fwrite(b.s, 1, b.len, f);
	buf_free(&b);
	return rc;
}

/* ---- a small JSON reader: the document flattened to (path, value) pairs,
 * "ops.read.p99_us" -> "12", in document order. */

void pairs_free(struct pairs *p)
{
	for (size_t i = 0; i < p->n; i++) {
		free(p->v[i].key);
		free(p->v[i].value);
	}
	free(p->v);
	*p = (struct pairs){0};
}

static int pairs_add(struct pairs *p, const char *key, const char *value, size_t len)
{
	if (ARRAY_GROW(p->v, p->n, p->cap))
		return -ENOMEM;
	struct pair *v = p->v;
	v[p->n].key = strdup(key);
	v[p->n].value = strndup(value, len);
	if (!v[p->n].key || !v[p->n].value) {
		free(v[p->n].key);
		free(v[p->n].value);
		return -ENOMEM;
	}
	p->n++;
	return 0;
}

const char *pairs_get(const struct pairs *p, const char *key)
{
	for (size_t i = 0; i < p->n; i++)
		if (!strcmp(p->v[i].key, key))
			return p->v[i].value;
	return NULL;
}

struct json_reader {
	const char *p, *end;
	struct pairs *out;
	struct buf path;
	int depth;
};

static void jr_skip_space(struct json_reader *r)
{
	while (r->p < r->end && isspace((unsigned char)*r->p))
		r->p++;
}

static bool jr_take(struct json_reader *r, char c)
{
	jr_skip_space(r);
	if (r->p < r->end && *r->p == c) {
		r->p++;
		return true;
	}
	return false;
}

/* \uXXXX as UTF-8 (the \udcXX of json_quote as its raw byte). */
static int jr_unicode(struct json_reader *r, struct buf *s)
{
	if (r->end - r->p < 4)
		return -EINVAL;
	char hex[5] = {r->p[0], r->p[1], r->p[2], r->p[3], 0};
	char *endp;
	unsigned long u = strtoul(hex, &endp, 16);
	if (*endp)
		return -EINVAL;
	r->p += 4;
	unsigned char o[3];
	if (u >= 0xDC80 && u <= 0xDCFF)
		return buf_add(s, (char[]){(char)(u & 0xFF)}, 1);
	if (u < 0x80)
		return buf_add(s, (char[]){(char)u}, 1);
	if (u < 0x800) {
		o[0] = (unsigned char)(0xC0 | u >> 6);
		o[1] = (unsigned char)(0x80 | (u & 0x3F));
		return buf_add(s, o, 2);
	}
	o[0] = (unsigned char)(0xE0 | u >> 12);
	o[1] = (unsigned char)(0x80 | ((u >> 6) & 0x3F));
	o[2] = (unsigned char)(0x80 | (u & 0x3F));
	return buf_add(s, o, 3);
}

static int jr_string(struct json_reader *r, struct buf *s)
{
	static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
	int rc = buf_add(s, "", 0);
	if (!jr_take(r, '"'))
		return -EINVAL;
	while (!rc && r->p < r->end && *r->p != '"') {
		char c = *r->p++;
		if (c != '\\') {
			rc = buf_add(s, &c, 1);
			continue;
		}
		if (r->p >= r->end)
			return -EINVAL;
		c = *r->p++;
		const char *k = c ? strchr(from, c) : NULL;
		rc = c == 'u' ? jr_unicode(r, s) : k ? buf_add(s, &to[k - from], 1) : -EINVAL;
	}
	if (rc || r->p >= r->end)
		return rc ? rc : -EINVAL;
	r->p++;
	return 0;
}

static int jr_value(struct json_reader *r);

/* Parse the value of member SEGMENT with SEGMENT appended to the path. */
static int jr_member(struct json_reader *r, const char *segment)
{
	size_t len = r->path.len;
	int rc = buf_printf(&r->path, "%s%s", len ? "." : "", segment);
	if (!rc)
		rc = jr_value(r);
	buf_truncate(&r->path, len);
	return rc;
}

static int jr_object(struct json_reader *r)
{
	if (jr_take(r, '}'))
		return 0;
	int rc = 0;
	do {
		struct buf key = {0};
		rc = jr_string(r, &key);
		if (!rc)
			rc = jr_take(r, ':') ? jr_member(r, key.s) : -EINVAL;
		buf_free(&key);
	} while (!rc && jr_take(r, ','));
	return rc ? rc : jr_take(r, '}') ? 0 : -EINVAL;
}

static int jr_array(struct json_reader *r)
{
	if (jr_take(r, ']'))
		return 0;
	int rc = 0;
	size_t i = 0;
	do {
		char index[24];
		snprintf(index, sizeof(index), "%zu", i++);
		rc = jr_member(r, index);
	} while (!rc && jr_take(r, ','));
	return rc ? rc : jr_take(r, ']') ? 0 : -EINVAL;
}

static int jr_value(struct json_reader *r)
{
	if (++r->depth > 32)
		return -EINVAL;
	int rc;
	jr_skip_space(r);
	if (jr_take(r, '{'))
		rc = jr_object(r);
	else if (jr_take(r, '['))
		rc = jr_array(r);
	else if (r->p < r->end && *r->p == '"') {
		struct buf s = {0};
		rc = jr_string(r, &s);
		if (!rc)
			rc = pairs_add(r->out, r->path.s ? r->path.s : "", s.s, s.len);
		buf_free(&s);
	} else {
		const char *start = r->p;
		while (r->p < r->end && (isalnum((unsigned char)*r->p) || strchr("+-.", *r->p)))
			r->p++;
		rc = r->p == start ? -EINVAL
				   : pairs_add(r->out, r->path.s ? r->path.s : "", start,
					       (size_t)(r->p - start));
	}
	r->depth--;
	return rc;
}

int parse_json(const char *text, size_t len, struct pairs *out)
{
	struct json_reader r = {.p = text, .end = text + len, .out = out};
	int rc = jr_value(&r);
	jr_skip_space(&r);
	if (!rc && r.p != r.end)
		rc = -EINVAL;
	buf_free(&r.path);
	return rc;
}
