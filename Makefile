# nadb -- a content-addressed key-value store served as a FUSE filesystem.
#
#   make run         install missing Debian packages, build, mount ./data on ./mnt
#   make test        build and run every test (C unit tests, then bats)
#   make sanitize    the same tests with ASan + UBSan builds
#   make bench       nadbfs side by side with passthrough_ll and the bare disk

CC      ?= cc
BUILD   ?= build
PKGS     = fuse3 lmdb libxxhash zlib hiredis
CFLAGS  ?= -O2 -g
override CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -pthread \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
override LDLIBS += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -pthread

CORE_SRC = $(wildcard core/*.c)
CORE_OBJ = $(CORE_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC = $(wildcard tests/unit/*.c)
UNIT_BIN = $(UNIT_SRC:tests/unit/%.c=$(BUILD)/unit/%)

DEB_PKGS = build-essential pkg-config fuse3 libfuse3-dev liblmdb-dev \
           libxxhash-dev zlib1g-dev bats attr rsync gnuplot-nox \
           libhiredis-dev redis-server redis-tools
STORE   ?= data
MNT     ?= mnt

.PHONY: all test unit bats sanitize run deps stop bench bench-quick clean

all: $(BUILD)/nadbfs $(BUILD)/nadb $(UNIT_BIN)

$(BUILD)/%.o: %.c $(wildcard core/*.h fs/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Icore -c -o $@ $<

$(BUILD)/libnadb.a: $(CORE_OBJ)
	$(AR) rcs $@ $^

FS_OBJ   = $(patsubst %.c,$(BUILD)/%.o,$(wildcard fs/*.c))

$(BUILD)/nadbfs: $(FS_OBJ) $(BUILD)/libnadb.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# The command-line tool: a file per idea in tools/nadb/, sharing nadb_tool.h.
NADB_OBJ = $(patsubst %.c,$(BUILD)/%.o,$(wildcard tools/nadb/*.c))

$(NADB_OBJ): tools/nadb/nadb_tool.h

$(BUILD)/nadb: $(NADB_OBJ) $(BUILD)/libnadb.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/unit/%: tests/unit/%.c $(BUILD)/libnadb.a $(wildcard core/*.h) $(wildcard tests/unit/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Icore -o $@ $< $(BUILD)/libnadb.a $(LDLIBS)

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

bench-quick: all
	tools/bench.sh --quick

clean:
	rm -rf build build-san
