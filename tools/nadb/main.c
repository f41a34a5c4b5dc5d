/* main.c -- the nadb command-line tool: inspect, query, maintain, dump and
 * load an nadb store.  This file is the front door: the command table,
 * option parsing, help, and how failures are said and turned into an exit
 * status.
 *
 *   nadb ls|get|put|rm|setx|getx STORE PATH ...   one key or directory
 *   nadb stats|compact STORE|MOUNTPOINT           counters, reclaiming space
 *   nadb keys|count STORE|MOUNTPOINT PATTERN      glob over key paths
 *   nadb fsck [--repair] STORE                    check the invariants
 *   nadb dump STORE [PATH] > ARCHIVE              pax tar of a store/subtree
 *   nadb load STORE [PATH] < ARCHIVE              and back
 *   nadb umount MOUNTPOINT                        unmount, wait for the daemon
 *
 * Offline, the tool opens the store exclusively, like the daemon, so it
 * refuses a mounted store instead of corrupting it under the daemon's feet.
 * The commands that also accept the MOUNTPOINT of a running nadbfs (stats,
 * compact, keys, count) then go through the daemon: its .stats and .ctl
 * files and the mounted tree.
 *
 * Exit status, for scripts: 0 ok, 1 failure or problems found, 2 usage
 * error or the command could not run (no store, store in use, ...).
 * Each error is one plain line on stderr, "nadb: WHAT: WHY"; the engine's
 * own lines are held and given as the WHY (log.h), never printed beside.
 * Human output by default; --json where a machine reads it.
 *
 * Where the rest is: target.c opens a STORE or recognises a MOUNTPOINT;
 * listing.c lists a directory of either; tree_cmds.c is ls, get, put, rm,
 * setx, getx; admin.c is stats, compact, fsck; keys.c is keys and count,
 * over glob.c's patterns; dump.c and load.c write and read tar.c's format.
 * umount.c unmounts and waits; buf.c, json.c and progress.c are the
 * helpers; nadb_tool.h declares what
 * crosses files.
 */
#include "nadb_tool.h"

#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <errno.h>
#include <string.h>

void complain(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("nadb: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

const char *failure_reason(int rc)
{
	static char line[1024]; /* the tool is one thread */
	return nadb_log_reason(rc, line, sizeof(line));
}

/* ==== command-line arguments ============================================= */

int usage_error(const struct command *c, const char *why, const char *what)
{
	complain("%s: %s%s%s", c->name, why, what ? ": " : "", what ? what : "");
	fprintf(stderr, "usage: nadb %s\n(nadb help %s for details)\n", c->synopsis, c->name);
	return EXIT_USAGE;
}

/* Options may come anywhere; "--" ends them (for a PATTERN starting with
 * '-').  Returns 0 or the exit status of a usage error. */
static int parse_args(const struct command *c, int argc, char **argv, struct cmd_args *a)
{
	*a = (struct cmd_args){.cmd = c};
	bool options_done = false;
	for (int i = 1; i < argc; i++) {
		const char *s = argv[i];
		/* "-5" is a number (incr's BY), not an option */
		if (!options_done && s[0] == '-' && s[1] && !(s[1] >= '0' && s[1] <= '9')) {
			if (!strcmp(s, "--"))
				options_done = true;
			else if (!strcmp(s, "--help") || !strcmp(s, "-h"))
				a->help = true;
			else if (!strcmp(s, "--json") && (c->options & OPT_JSON))
				a->json = true;
			else if (!strcmp(s, "--repair") && (c->options & OPT_REPAIR))
				a->repair = true;
			else if (!strcmp(s, "--ttl") && (c->options & OPT_TTL))
				a->ttl = true;
			else
				return usage_error(c, "unknown option", s);
			continue;
		}
		if (a->n == MAX_ARGS || a->n == c->max_args)
			return usage_error(c, "too many arguments", s);
		a->arg[a->n++] = s;
	}
	if (!a->help && a->n < c->min_args)
		return usage_error(c, "missing arguments", NULL);
	return 0;
}

/* ==== the command table ==================================================== */

static const struct command commands[] = {
	{"ls", "ls STORE [PATH]", "list a directory (default /), one name a line",
	 "Names in the directory PATH, one per line, in byte order; directories\n"
	 "end in '/'.  A key's PATH prints its own name.\n",
	 READS_ONLY, 1, 2, run_ls},
	{"get", "get STORE PATH", "write a key's value to stdout",
	 "Write the value of the key PATH to stdout, byte for byte.\n", READS_ONLY, 2, 2, run_get},
	{"put", "put STORE PATH < FILE", "store stdin as a key's value",
	 "Store stdin as the value of the key PATH, replacing it if it exists and\n"
	 "making missing databases, namespaces and directories (like mkdir -p).\n"
	 "Creates STORE if it does not exist.  Durable when it returns.\n",
	 0, 2, 2, run_put},
	{"rm", "rm STORE PATH", "delete a key or an empty directory",
	 "Delete the key PATH, or the directory PATH if it is empty.\n", 0, 2, 2, run_rm},
	{"setx", "setx STORE PATH NAME VALUE", "set an extended attribute (tags, expiry, ...)",
	 "Set the user.* extended attribute NAME of PATH to VALUE, as setfattr\n"
	 "does on a mount.  The engine's own: user.tags \"a,b\" (all tags),\n"
	 "user.tag.NAME (one tag), user.ttl SECONDS (on a directory: the default\n"
	 "for keys made in it), user.expires UNIX-TIME.\n",
	 0, 4, 4, run_setx},
	{"getx", "getx STORE PATH NAME", "print an extended attribute's value",
	 "Write the value of the user.* extended attribute NAME of PATH to\n"
	 "stdout, as is (no newline added).  Exit 1 if PATH has no NAME.\n",
	 READS_ONLY, 3, 3, run_getx},
	{"incr", "incr STORE|MOUNTPOINT PATH [BY]", "add to a key's integer value, atomically",
	 "Add BY (default 1, may be negative) to the decimal integer value of\n"
	 "the key PATH and print the new value, as Redis INCRBY does.  A missing\n"
	 "(or empty) key counts as 0 and is made, with its namespace's default\n"
	 "TTL.  The value is stored as the number and a newline.  Exit 1, and\n"
	 "nothing changes, if the value is not a decimal integer (an optional\n"
	 "trailing newline) or the sum does not fit in 64 bits.\n",
	 0, 2, 3, run_incr},
	{"cas", "cas STORE|MOUNTPOINT PATH EXPECTED_HASH < VALUE",
	 "replace a value only if it has not changed",
	 "Replace the value of the key PATH with stdin only if its user.nadb.hash\n"
	 "still is EXPECTED_HASH (\"-\": only if there is no such key), and print\n"
	 "the new hash.  Otherwise exit 1, print the current hash (\"-\" for no\n"
	 "key) and change nothing: read, compute, cas, and retry on exit 1.\n",
	 0, 3, 3, run_cas},
	{"mset", "mset STORE|MOUNTPOINT PATH=FILE...", "set several keys in one atomic step",
	 "Set each key PATH to the contents of FILE (- for stdin), all in one\n"
	 "step: a reader, and the store after a crash, sees all the old values\n"
	 "or all the new ones.  If any part fails (a bad path, a missing\n"
	 "namespace, no space), nothing changes.  At most 64 MiB in all on a\n"
	 "MOUNTPOINT.\n",
	 0, 2, MAX_ARGS, run_mset},
	{"mget", "mget STORE|MOUNTPOINT PATH...", "read several keys at one point in time",
	 "Write the values of the keys PATH... as they were at one moment, in\n"
	 "order, one record each: \"PATH LEN\\n\", the LEN bytes of the value and\n"
	 "\"\\n\"; or \"PATH -\\n\" for no such key.  In PATH, spaces, control\n"
	 "characters and % are written %XX.\n",
	 0, 2, MAX_ARGS, run_mget},
	{"stats", "stats [--json] STORE|MOUNTPOINT", "counters: keys, bytes, dedup, space",
	 "What the store holds: keys, databases, namespaces, directories, tags,\n"
	 "logical and stored bytes, chunks, pack and garbage bytes, the dedup\n"
	 "ratio (logical / chunk bytes) and compression ratio (chunk / stored\n"
	 "bytes), write buffers, expiring and reaped keys.  Offline, also one row\n"
	 "per database and namespace.  On a MOUNTPOINT it reads the daemon's\n"
	 ".stats (with uptime and per-operation latencies); --json prints that\n"
	 "document as is, or the same fields offline (plus \"scopes\").\n",
	 OPT_JSON | READS_ONLY, 1, 1, run_stats},
	{"compact", "compact [--json] STORE|MOUNTPOINT", "reclaim the space of deleted values",
	 "Copy the live chunks out of every pack segment holding garbage and\n"
	 "delete the segment, then print what was reclaimed.  On a MOUNTPOINT\n"
	 "it asks the daemon (writes \"compact\" to MOUNTPOINT/.ctl).\n",
	 OPT_JSON, 1, 1, run_compact},
	{"fsck", "fsck [--repair] [--json] STORE", "check (and fix) the store's invariants",
	 "Check every reference, refcount, counter and chunk hash.  --repair\n"
	 "fixes what is safe to fix.  The metadata file is first walked in a\n"
	 "child process: damaged, fsck says so and exits 1, and --repair saves\n"
	 "every record it can read into a new file (the old one is kept as\n"
	 "meta/data.mdb.damaged-TIME) before repairing the rest.  A damaged\n"
	 "chunk is reported with the keys that hold it.\n"
	 "--json prints {\"lines\":[...],\"inodes\":N,\n"
	 "\"problems\":N,\"repaired\":N,...}.  Exit 0 clean (or all repaired),\n"
	 "1 problems found, 2 could not run.\n",
	 OPT_JSON | OPT_REPAIR, 1, 1, run_fsck},
	{"keys", "keys [--json] [--ttl] STORE|MOUNTPOINT PATTERN", "key paths matching a glob",
	 "Print the paths (from the root: /DB/NS/KEY) of the keys matching\n"
	 "PATTERN, one a line in tree order, or a JSON array with --json.\n"
	 "--ttl adds each key's seconds left (user.ttl), -1 for none: \"PATH\\tTTL\"\n"
	 "lines, or with --json objects {\"path\":...,\"ttl\":N or null}.\n"
	 "  *  ?      any name bytes, one byte (never '/')\n"
	 "  **        anything, '/' included; \"/**/\" also matches \"/\"\n"
	 "  [abc] [a-z] [!x]   one byte of a set (never '/')\n"
	 "  {a,b}     alternatives (may nest); \"{x}\" is literal\n"
	 "  \\c        the byte c itself\n"
	 "Directories that cannot hold a match are not walked.  Quote PATTERN.\n"
	 "A PATTERN that is empty, does not start with '/', leaves a '[' or '{'\n"
	 "open or ends in a lone '\\' exits 2 with the reason.\n",
	 OPT_JSON | OPT_TTL | READS_ONLY, 2, 2, run_keys},
	{"count", "count STORE|MOUNTPOINT PATTERN", "how many keys match a glob",
	 "Print the number of keys matching PATTERN (see nadb help keys).\n",
	 OPT_JSON | READS_ONLY, 2, 2, run_count},
	{"dump", "dump STORE [PATH] > ARCHIVE", "write a store or subtree as a pax tar archive",
	 "Write the subtree PATH (default: all) to stdout as a POSIX pax tar\n"
	 "archive: values, directories, symlinks, hard links, FIFOs, modes,\n"
	 "owners, times (ns) and every user.* xattr -- tags and expiry included --\n"
	 "as SCHILY.xattr records.  A directory's members are ./ and ./NAME...;\n"
	 "a key's is its name.  tar -tvf lists it; tar --xattrs -xf can restore\n"
	 "it into a mount.  Sockets have no tar form: each is skipped with a\n"
	 "warning and the exit status is 1.\n",
	 READS_ONLY, 1, 2, run_dump},
	{"load", "load [--json] STORE [PATH] < ARCHIVE", "load a tar archive into a store",
	 "Load a tar archive (nadb dump's, or tar's) from stdin below PATH\n"
	 "(default /), making missing directories.  Existing keys are replaced\n"
	 "whole, directories are merged.  Modes, times, xattrs (tags, expiry)\n"
	 "are restored; owners only when run as root.  Keys already expired are\n"
	 "skipped.  Members with a '..' component are refused.  Creates STORE\n"
	 "if it does not exist.  Exit 1 if any member failed.\n",
	 OPT_JSON, 1, 2, run_load},
	{"umount", "umount MOUNTPOINT", "unmount, and return once the daemon has exited",
	 "Unmount the nadbfs mounted on MOUNTPOINT (with fusermount3 -u) and wait\n"
	 "until its daemon has made everything durable, let go of the store and\n"
	 "exited (at most 60 s), so that the store can be used at once.  Exit 1\n"
	 "if the unmount fails (busy: a process uses the mount) or the daemon is\n"
	 "still running after 60 s; 2 if MOUNTPOINT is no nadbfs mountpoint.\n",
	 0, 1, 1, run_umount},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (!strcmp(commands[i].name, name))
			return &commands[i];
	return NULL;
}

static int print_overview(FILE *to)
{
	fputs("usage: nadb COMMAND [ARGS]\n\n"
	      "Work on an nadb store.  A mounted store is refused (unmount it first),\n"
	      "except by the commands taking STORE|MOUNTPOINT, which then ask the daemon.\n\n",
	      to);
	for (size_t i = 0; i < NCOMMANDS; i++)
		fprintf(to, "  %-40s %s\n", commands[i].synopsis, commands[i].summary);
	fputs("  help COMMAND                             details of one command\n"
	      "  --version                                the version\n\n"
	      "STORE is a directory or a Redis server: redis://[[USER]:PASSWORD@]HOST[:PORT][/NAME].\n"
	      "PATH is /DB/NAMESPACE/KEY; KEY may contain '/' (directories).\n"
	      "Exit status: 0 ok, 1 failure or problems found, 2 usage error or could not run.\n",
	      to);
	return to == stdout ? 0 : EXIT_USAGE;
}

static int print_command_help(const struct command *c)
{
	printf("usage: nadb %s\n\n%s", c->synopsis, c->details);
	return 0;
}

static int run_command(int argc, char **argv)
{
	if (argc < 2)
		return print_overview(stderr);
	const char *name = argv[1];
	if (!strcmp(name, "--help") || !strcmp(name, "-h") || (!strcmp(name, "help") && argc == 2))
		return print_overview(stdout);
	if (!strcmp(name, "--version")) {
		printf("nadb " NADB_VERSION "\n");
		return 0;
	}
	if (!strcmp(name, "help")) {
		const struct command *c = find_command(argv[2]);
		if (c && argc == 3)
			return print_command_help(c);
		complain("help: no command '%s'", argv[2]);
		return print_overview(stderr);
	}
	const struct command *c = find_command(name);
	if (!c) {
		complain("no command '%s'", name);
		return print_overview(stderr);
	}
	struct cmd_args a;
	int status = parse_args(c, argc - 1, argv + 1, &a);
	if (status)
		return status;
	return a.help ? print_command_help(c) : c->run(&a);
}

int main(int argc, char **argv)
{
	/* The engine's lines are no log here: each error is said once, in
	 * the command's own line, with the engine's line as its reason. */
	nadb_log_to(NADB_LOG_HOLD, "nadb");
	int status = run_command(argc, argv);
	/* What a command printed is its result: output that did not all get
	 * out (a full disk, a closed pipe) is a failure, said, not exit 0. */
	if ((fflush(stdout) || ferror(stdout)) && !status) {
		complain("writing the output: %s", strerror(errno ? errno : EIO));
		status = EXIT_PROBLEMS;
	}
	nadb_log_flush();
	return status;
}
