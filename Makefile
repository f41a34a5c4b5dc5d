# nadb -- a content-addressed key-value store served as a FUSE filesystem.
#
#   make run         install missing Debian packages, build, mount ./data on ./mnt
#   make test        build and run every test (C unit tests, then bats)
#   make sanitize    the same tests with ASan + UBSan builds
#   make bench       nadbfs side by side with passthrough_ll and the bare disk
#   make bench-statafter   stat and read right after write, and set (< 1 min;
#                    BENCH_AGAINST=DIR puts another build's nadbfs beside it)
#   make install     nadbfs, nadb, their man pages and examples under PREFIX
#                    (default /usr/local), staged in DESTDIR if set
#   make uninstall   remove what make install put there
#
# The build takes CPPFLAGS, CFLAGS and LDFLAGS from the environment or the
# command line, as dpkg-buildflags sets them; the flags nadb itself needs
# are added to them.  Warnings are errors only with WERROR=1 (CI and
# development), so that a newer compiler's new warning does not break a
# user's or a packager's build.

CC      ?= cc
BUILD   ?= build
CFLAGS  ?= -O2 -g
WERROR  ?=
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
DOCDIR  ?= $(PREFIX)/share/doc/nadb

# Only the daemon speaks FUSE: the engine (libnadb.a), the tool and the
# unit tests link the storage libraries alone.
CORE_PKGS = lmdb libxxhash zlib hiredis
FUSE_PKGS = fuse3
CORE_CFLAGS := $(shell pkg-config --cflags $(CORE_PKGS) 2>/dev/null)
CORE_LIBS   := $(shell pkg-config --libs $(CORE_PKGS) 2>/dev/null) -lm -pthread
FUSE_CFLAGS := $(shell pkg-config --cflags $(FUSE_PKGS) 2>/dev/null)
FUSE_LIBS   := $(shell pkg-config --libs $(FUSE_PKGS) 2>/dev/null)

# What every object needs, whatever the caller's flags: -MMD writes each
# object's header dependencies beside it (the .d files included below).
NADB_CPPFLAGS = -D_GNU_SOURCE -Icore
NADB_CFLAGS   = -std=c11 -Wall -Wextra $(if $(filter 1,$(WERROR)),-Werror) -pthread -MMD -MP
COMPILE = $(CC) $(NADB_CPPFLAGS) $(PKG_CFLAGS) $(CPPFLAGS) $(NADB_CFLAGS) $(CFLAGS)
LINK    = $(CC) $(NADB_CFLAGS) $(CFLAGS) $(LDFLAGS)

CORE_SRC = $(wildcard core/*.c)
CORE_OBJ = $(CORE_SRC:%.c=$(BUILD)/%.o)
FS_OBJ   = $(patsubst %.c,$(BUILD)/%.o,$(wildcard fs/*.c))
# The command-line tool: a file per idea in tools/nadb/, sharing nadb_tool.h.
NADB_OBJ = $(patsubst %.c,$(BUILD)/%.o,$(wildcard tools/nadb/*.c))
UNIT_SRC = $(wildcard tests/unit/*.c)
UNIT_BIN = $(UNIT_SRC:tests/unit/%.c=$(BUILD)/unit/%)
# tools/bench.sh runs it from here.
BENCH_BIN = $(BUILD)/bench/bench

DEB_PKGS = build-essential pkg-config fuse3 libfuse3-dev liblmdb-dev \
           libxxhash-dev zlib1g-dev bats attr rsync gnuplot-nox \
           libhiredis-dev redis-server redis-tools man-db groff-base
STORE   ?= data
MNT     ?= mnt

.PHONY: all test unit bats sanitize run deps stop bench bench-quick bench-statafter clean \
        install uninstall

all: $(BUILD)/nadbfs $(BUILD)/nadb $(UNIT_BIN) $(BENCH_BIN)

PKG_CFLAGS = $(CORE_CFLAGS)
$(BUILD)/fs/%.o: PKG_CFLAGS += $(FUSE_CFLAGS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(COMPILE) -c -o $@ $<

$(BUILD)/libnadb.a: $(CORE_OBJ)
	$(AR) rcs $@ $^

$(BUILD)/nadbfs: $(FS_OBJ) $(BUILD)/libnadb.a
	$(LINK) -o $@ $^ $(FUSE_LIBS) $(CORE_LIBS) $(LDLIBS)

$(BUILD)/nadb: $(NADB_OBJ) $(BUILD)/libnadb.a
	$(LINK) -o $@ $^ $(CORE_LIBS) $(LDLIBS)

$(BUILD)/unit/%: tests/unit/%.c $(BUILD)/libnadb.a
	@mkdir -p $(dir $@)
	$(COMPILE) $(LDFLAGS) -o $@ $< $(BUILD)/libnadb.a $(CORE_LIBS) $(LDLIBS)

$(BENCH_BIN): tools/bench.c
	@mkdir -p $(dir $@)
	$(COMPILE) $(LDFLAGS) -o $@ $< $(LDLIBS)

-include $(CORE_OBJ:.o=.d) $(FS_OBJ:.o=.d) $(NADB_OBJ:.o=.d) $(UNIT_BIN:=.d) $(BENCH_BIN).d

unit: $(UNIT_BIN)
	@for t in $(UNIT_BIN); do echo "# $$t"; $$t || exit 1; done

bats: $(BUILD)/nadbfs $(BUILD)/nadb
	NADB_BUILD=$(abspath $(BUILD)) bats tests/

test: all
	tools/run-tests $(abspath $(BUILD))

sanitize:
	$(MAKE) BUILD=build-san CFLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" all
	NADB_SANITIZED=1 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1$(SAN_LOG) \
	UBSAN_OPTIONS=print_stacktrace=1$(SAN_LOG) \
	  tools/run-tests $(abspath build-san)

# With NADB_ASAN_DIR set (CI), sanitizer reports of every process -- the
# daemon's too, whose stderr is its log -- land there, to be checked after.
SAN_LOG = $(if $(NADB_ASAN_DIR),:log_path=$(NADB_ASAN_DIR)/report)

deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ $$(id -u) = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing; \
	fi

run: deps
	$(MAKE) all
	@mkdir -p $(MNT)
	$(BUILD)/nadbfs $(STORE) $(MNT)
	@echo "mounted $(STORE) on $(MNT); unmount with: make stop"

stop:
	fusermount3 -u $(MNT)

bench: all
	tools/bench.sh
	tools/bench-statafter.py --build this=$(BUILD) | tee $(BUILD)/bench/statafter.txt
	@if command -v redis-server >/dev/null; then \
		tools/bench-cluster.sh --build $(BUILD) --out $(BUILD)/bench/cluster.md; \
	else echo "bench: no redis-server: skipping tools/bench-cluster.sh"; fi

bench-quick: all
	tools/bench.sh --quick

bench-statafter: all
	tools/bench-statafter.py --build this=$(BUILD) \
		$(if $(BENCH_AGAINST),--build other=$(BENCH_AGAINST))

# What make install puts where; make uninstall removes exactly these.
MAN1      = fs/nadbfs.1 tools/nadb.1
EXAMPLES  = $(wildcard tools/dist/*)
INSTALLED = $(BINDIR)/nadbfs $(BINDIR)/nadb \
            $(addprefix $(MANDIR)/man1/,$(notdir $(MAN1))) \
            $(addprefix $(DOCDIR)/,$(notdir $(EXAMPLES)))

install: $(BUILD)/nadbfs $(BUILD)/nadb
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(DOCDIR)
	install -m 755 $(BUILD)/nadbfs $(BUILD)/nadb $(DESTDIR)$(BINDIR)/
	install -m 644 $(MAN1) $(DESTDIR)$(MANDIR)/man1/
	install -m 644 $(EXAMPLES) $(DESTDIR)$(DOCDIR)/

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
	rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null || true

clean:
	rm -rf $(BUILD) build-san
