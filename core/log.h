/* log.h -- one line per event worth a user's attention, on stderr.
 *
 * The daemon points stderr at STORE/nadbfs.log once it runs in the
 * background, so the engine needs no logging state of its own. */
#ifndef NADB_LOG_H
#define NADB_LOG_H

/* Each call site (format string) writes at most a burst of lines a
 * minute; the rest are counted, and the count is written later. */
__attribute__((format(printf, 1, 2))) void nadb_log(const char *fmt, ...);
/* Write the counts of lines not written yet (at exit). */
void nadb_log_flush(void);

#endif
