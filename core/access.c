/* access.c -- permission checks the kernel cannot make for us.
 *
 * With default_permissions the kernel checks every request against the
 * mode bits it sees: unlink needs write and search permission on the
 * directory (and the sticky-bit rule), setxattr only write permission on
 * the file.  An expiry, though, deletes the key later, behind the
 * kernel's back: a user allowed to write a key but not to remove it
 * must not be able to give it one.  So whatever deletes or replaces a key
 * without an unlink or rename of its own asks here first, as POSIX would
 * ask for the unlink: for every name the key has.
 */
#include "log.h"
#include "store_int.h"

#include <assert.h>
#include <errno.h>
#include <sys/stat.h>

bool caller_in_group(const struct nadb_caller *who, uint32_t gid)
{
	if (who->gid == gid)
		return true;
	for (int i = 0; i < who->ngroups; i++)
		if (who->groups && who->groups[i] == gid)
			return true;
	return false;
}

/* The rwx bits of MODE that apply to WHO (owner, group or other). */
static uint32_t bits_for(uint32_t mode, uint32_t uid, uint32_t gid,
			 const struct nadb_caller *who)
{
	if (who->uid == uid)
		return (mode >> 6) & 7;
	if (caller_in_group(who, gid))
		return (mode >> 3) & 7;
	return mode & 7;
}

int nadb_may_access(uint32_t mode, uint32_t uid, uint32_t gid,
		    const struct nadb_caller *who, unsigned want)
{
	assert((want & ~(ACCESS_R | ACCESS_W | ACCESS_X)) == 0);
	if (!who)
		return 0;
	if (who->uid == 0) /* CAP_DAC_OVERRIDE, but search needs some x bit */
		return (want & ACCESS_X) && !S_ISDIR(mode) && !(mode & 0111) ? -EACCES : 0;
	return (bits_for(mode, uid, gid, who) & want) == want ? 0 : -EACCES;
}

int access_check(const struct inode_rec *r, const struct nadb_caller *who, unsigned want)
{
	return nadb_may_access(r->mode, r->uid, r->gid, who, want);
}

/* May WHO remove the entry of KEY (owned by KEY_UID) from directory DIR? */
static int may_unlink_from(const struct inode_rec *dir, uint32_t key_uid,
			   const struct nadb_caller *who)
{
	if ((bits_for(dir->mode, dir->uid, dir->gid, who) & 3) != 3) /* write and search */
		return -EACCES;
	if ((dir->mode & S_ISVTX) && who->uid != key_uid && who->uid != dir->uid)
		return -EPERM;
	return 0;
}

int access_may_remove(struct nadb_store *st, uint64_t ino,
		      const struct nadb_caller *who, const char *what)
{
	if (!who || who->uid == 0) /* a tool, or root: CAP_DAC_OVERRIDE, CAP_FOWNER */
		return 0;
	struct inode key;
	int rc = inode_get(st, ino, &key);
	if (rc)
		return rc;
	uint32_t key_uid = key.r.uid;
	inode_release(&key);
	struct link_list l;
	rc = inode_links(st, ino, &l);
	for (size_t i = 0; !rc && i < l.n; i++) {
		struct inode dir;
		rc = inode_get(st, l.parents[i], &dir);
		if (rc)
			break;
		rc = may_unlink_from(&dir.r, key_uid, who);
		inode_release(&dir);
		if (rc)
			nadb_log("%s on '%s': uid %u may not remove that key (%s), so may "
				 "not give it an expiry either", what, l.names[i], who->uid,
				 rc == -EPERM ? "sticky directory" : "no write permission on its directory");
	}
	link_list_free(&l);
	return rc;
}
