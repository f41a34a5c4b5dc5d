"""randwrite.py KEY REF SIZE OPS SEED: the same random writes (aligned
pages, small unaligned runs, some past the end), reads and truncates
through one open of KEY and of the reference file REF, each read
compared.  Exits non-zero on the first difference."""
import os, random, sys

path, ref, size, ops, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
r = random.Random(seed)
fa = os.open(path, os.O_RDWR); fb = os.open(ref, os.O_RDWR)
for i in range(ops):
    kind = r.random()
    if kind < 0.05:  # a whole 128 KiB chunk, in place
        off = r.randrange(size // 131072) * 131072; n = 131072
    elif kind < 0.6: # aligned page
        off = r.randrange(size // 4096) * 4096; n = 4096
    elif kind < 0.9: # unaligned small
        off = r.randrange(size); n = r.randrange(1, 9000)
    else:            # past the end sometimes
        off = r.randrange(size + 300000); n = r.randrange(1, 5000)
    data = os.urandom(n)
    os.pwrite(fa, data, off); os.pwrite(fb, data, off)
    if r.random() < 0.2:  # read back a random range through the same fd
        o2 = r.randrange(size); n2 = r.randrange(1, 20000)
        # from the daemon, not the kernel's copy of what was written
        os.posix_fadvise(fa, 0, 0, os.POSIX_FADV_DONTNEED)
        a = os.pread(fa, n2, o2); b = os.pread(fb, n2, o2)
        assert a == b, ("mismatch at", o2, n2, i)
    if r.random() < 0.01:
        t = r.randrange(size + 100000)
        os.ftruncate(fa, t); os.ftruncate(fb, t)
os.close(fa); os.close(fb)
