/* glob.c -- Redis-style patterns over key paths, for keys and count.
 * '*' and '?' stay within one name, '**' crosses '/' (and between two
 * slashes may also match no directory at all), [abc] [a-z] [!x] [^x]
 * never match '/', '\' escapes, {a,b} alternatives nest.  Braces are
 * expanded first, so the matcher itself only knows stars, classes and
 * escapes; a group without a comma ("{123}", a Redis hash tag) is literal,
 * as in the shell.  A pattern that cannot mean what was typed (empty, not
 * starting with '/', a '[' or '{' that never closes, a trailing '\') is
 * refused with a reason: matching nothing would hide the typo.
 */
#include "nadb_tool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define GLOB_MAX_ALTS 4096     /* brace expansion bound: a typo must not eat RAM */

void glob_free(struct glob *g)
{
	for (size_t i = 0; i < g->n; i++)
		free(g->alt[i]);
	free(g->alt);
	*g = (struct glob){0};
}

/* Length of the bracket expression at P ('['), or 0 if it never closes. */
static size_t class_length(const char *p)
{
	size_t i = 1;
	if (p[i] == '!' || p[i] == '^')
		i++;
	if (p[i] == ']')
		i++;
	for (; p[i]; i++) {
		if (p[i] == '\\' && p[i + 1])
			i++;
		else if (p[i] == ']')
			return i + 1;
	}
	return 0;
}

/* How many bytes of P (from its start) to step over as one unit while
 * scanning for braces: an escape pair, a bracket expression, or one byte. */
static size_t scan_step(const char *p)
{
	if (p[0] == '\\' && p[1])
		return 2;
	size_t n = p[0] == '[' ? class_length(p) : 0;
	return n ? n : 1;
}

/* P[0] == '{': the offset of its matching '}' in *close and whether it has
 * a comma of its own; false when it never closes. */
static bool brace_group_at(const char *p, size_t *close, bool *comma)
{
	int depth = 0;
	*comma = false;
	for (size_t i = 0; p[i]; i += scan_step(p + i)) {
		if (p[i] == '{')
			depth++;
		else if (p[i] == '}' && --depth == 0) {
			*close = i;
			return true;
		} else if (p[i] == ',' && depth == 1)
			*comma = true;
	}
	return false;
}

/* The first group with alternatives: its braces at *open and *close. */
static bool find_alternatives(const char *p, size_t *open, size_t *close)
{
	bool comma;
	for (size_t i = 0; p[i]; i += scan_step(p + i))
		if (p[i] == '{' && brace_group_at(p + i, close, &comma) && comma) {
			*open = i;
			*close += i;
			return true;
		}
	return false;
}

static int glob_add(struct glob *g, char *alt)
{
	int rc = g->n >= GLOB_MAX_ALTS ? -E2BIG : ARRAY_GROW(g->alt, g->n, g->cap);
	if (rc) {
		free(alt);
		return rc;
	}
	g->alt[g->n++] = alt;
	return 0;
}

/* PATTERN with the group [open, close] replaced by P[from, to). */
static char *splice_alternative(const char *p, size_t open, size_t close, size_t from, size_t to)
{
	struct buf b = {0};
	if (buf_add(&b, p, open) || buf_add(&b, p + from, to - from) ||
	    buf_add(&b, p + close + 1, strlen(p + close + 1))) {
		buf_free(&b);
		return NULL;
	}
	return b.s;
}

static int glob_expand(struct glob *g, const char *p)
{
	size_t open, close;
	if (!find_alternatives(p, &open, &close)) {
		char *copy = strdup(p);
		return copy ? glob_add(g, copy) : -ENOMEM;
	}
	int depth = 0, rc = 0;
	size_t from = open + 1;
	for (size_t i = open + 1; !rc && i <= close; i += i < close ? scan_step(p + i) : 1) {
		if (i < close && p[i] == '{')
			depth++;
		else if (i < close && p[i] == '}')
			depth--;
		if (i < close && !(p[i] == ',' && depth == 0))
			continue;
		char *alt = splice_alternative(p, open, close, from, i);
		rc = alt ? glob_expand(g, alt) : -ENOMEM;
		free(alt);
		from = i + 1;
	}
	return rc;
}

/* Why PATTERN cannot be a pattern of key paths, or NULL if it can. */
static const char *malformed(const char *p)
{
	if (!*p)
		return "the pattern is empty";
	size_t close;
	bool comma;
	for (size_t i = 0; p[i]; i += scan_step(p + i)) {
		if (p[i] == '\\' && !p[i + 1])
			return "a '\\' at the end escapes nothing";
		if (p[i] == '[' && !class_length(p + i))
			return "a '[' without its ']' (write '\\[' for the character)";
		if (p[i] == '{' && !brace_group_at(p + i, &close, &comma))
			return "a '{' without its '}' (write '\\{' for the character)";
	}
	return *p == '/' ? NULL : "a pattern starts with '/' (keys are /DB/NS/KEY)";
}

int glob_compile(const char *pattern, struct glob *g, const char **why)
{
	*g = (struct glob){0};
	*why = malformed(pattern);
	if (*why)
		return -EINVAL;
	int rc = glob_expand(g, pattern);
	if (rc == -E2BIG)
		*why = "the pattern has too many {,} alternatives";
	if (rc)
		glob_free(g);
	return rc;
}

/* Does C fall in the bracket expression P of length LEN? */
static bool class_has(const char *p, size_t len, unsigned char c)
{
	size_t i = 1, last = len - 1; /* last: the closing ']' */
	bool negate = p[i] == '!' || p[i] == '^', hit = false;
	i += negate;
	while (i < last) {
		unsigned char lo = (unsigned char)p[i], hi;
		if (lo == '\\' && i + 1 < last)
			lo = (unsigned char)p[++i];
		hi = lo;
		i++;
		if (p[i] == '-' && i + 1 < last) {
			hi = (unsigned char)p[++i];
			if (hi == '\\' && i + 1 < last)
				hi = (unsigned char)p[++i];
			i++;
		}
		if (lo > hi) {
			unsigned char t = lo;
			lo = hi;
			hi = t;
		}
		hit |= c >= lo && c <= hi;
	}
	return hit != negate;
}

/* One attempt to match a path.  Stars backtrack, so a pattern like
 * "**a**a**a**a**b" is exponential in the path's length: the budget of
 * steps turns that into an error rather than a hang. */
struct glob_match {
	const char *start; /* the whole pattern */
	bool prefix;       /* could the path be the beginning of a match? */
	unsigned long budget;
};

#define GLOB_BUDGET 50000000UL

static bool match_from(struct glob_match *m, const char *p, const char *t)
{
	for (;;) {
		if (!m->budget || !--m->budget)
			return false;
		if (!*p)
			return !*t;
		if (!*t && m->prefix)
			return true;
		if (*p == '*') {
			bool cross = p[1] == '*';
			bool dir_slot = cross && (p == m->start || p[-1] == '/');
			while (*p == '*')
				p++;
			if (dir_slot && *p == '/' && match_from(m, p + 1, t))
				return true; /* a slash-star-star-slash matching one "/" */
			for (;; t++) {
				if (match_from(m, p, t))
					return true;
				if (!*t || (!cross && *t == '/'))
					return false;
			}
		}
		size_t cl = *p == '[' ? class_length(p) : 0;
		if (*p == '?' || cl) {
			if (!*t || *t == '/' || (cl && !class_has(p, cl, (unsigned char)*t)))
				return false;
			p += cl ? cl : 1;
			t++;
			continue;
		}
		if (*p == '\\' && p[1])
			p++;
		if (*p != *t)
			return false;
		p++;
		t++;
	}
}

/* 1 if PATH matches (with PREFIX: may lead to a match), 0 if not,
 * -E2BIG if the pattern is too costly to decide. */
int glob_matches(const struct glob *g, const char *path, bool prefix)
{
	struct glob_match m = {.prefix = prefix, .budget = GLOB_BUDGET};
	for (size_t i = 0; i < g->n; i++) {
		m.start = g->alt[i];
		if (match_from(&m, g->alt[i], path))
			return 1;
	}
	return m.budget ? 0 : -E2BIG;
}
