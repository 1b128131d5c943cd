# iwd: PostgreSQL extension (PGXS) + iwd-sidecar.
# EXTVERSION is the one source of the version; iwd.control and META.json are checked against it.
EXTENSION  = iwd
EXTVERSION = 0.1.0

PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config

MODULE_big = iwd
OBJS       = $(patsubst %.c,%.o,$(sort $(wildcard extension/*.c)))
# The install script is assembled from the per-subsystem SQL sources, in this order: each part uses only
# what the parts before it define (SQL-language bodies are checked when created); sql/security.sql comes
# last (its grants and search_path settings cover every table and function defined before it).
SQL_PARTS  = sql/iwd.sql sql/common.sql sql/calendar.sql sql/config.sql sql/tasks.sql sql/lifecycle.sql \
             sql/queue.sql sql/scheduler.sql sql/datamart.sql sql/workers.sql sql/security.sql
DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql
DATA       = $(wildcard sql/$(EXTENSION)--*--*.sql)
EXTRA_CLEAN = sql/$(EXTENSION)--$(EXTVERSION).sql

# -Wextra minus the three warnings that PostgreSQL's own headers and fmgr macros trigger.
PG_CFLAGS  = -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -Wno-sign-compare \
             -Wno-missing-field-initializers -Iextension

PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(wildcard $(PGXS)),)
include $(PGXS)
else
all:
	@echo "PostgreSQL server headers are missing: run 'make deps' (or 'make test' / 'make run')." >&2; exit 1
endif

# Every object depends on every header (PGXS tracks no header dependencies without --enable-depend).
$(OBJS): $(wildcard extension/*.h)

sql/$(EXTENSION)--$(EXTVERSION).sql: $(SQL_PARTS)
	cat $^ > $@

.PHONY: deps sidecar test run stop bench bench-soak dist check-version fuzz test-faults faults-long

all: sidecar

deps:
	@scripts/deps.sh

sidecar:
	@if [ -f sidecar/Makefile ]; then $(MAKE) -C sidecar; fi

test: deps
	$(MAKE) all
	$(MAKE) install
	scripts/test.sh

run: deps
	$(MAKE) all
	$(MAKE) install
	scripts/run.sh start

stop:
	scripts/run.sh stop

bench:
	@scripts/deps.sh bench
	$(MAKE) all
	$(MAKE) install
	bench/run.sh

bench-soak:
	@scripts/deps.sh bench
	$(MAKE) all
	$(MAKE) install
	bench/soak.sh

# Long fuzzing runs of every target (FUZZ_SECONDS per sidecar target, FUZZ_SQL_SECONDS for the SQL one,
# FUZZ_RUNS to stop each after that many inputs); make test runs a short one.
fuzz: deps
	$(MAKE) all
	$(MAKE) install
	scripts/fuzz.sh long

# The fault suite (kill -9 under load) and the hostile-input suite alone; make test runs them too.
test-faults: deps
	$(MAKE) all
	$(MAKE) install
	tests/faults/run.sh
	tests/hostile/run.sh

# The fault suite with IWD_FAULT_ROUNDS rounds of every fault (default 10: 70 faults, about 20 minutes).
faults-long: deps
	$(MAKE) all
	$(MAKE) install
	tests/faults/run.sh --long

check-version:
	@scripts/check-version.sh $(EXTVERSION)

dist:
	git archive --format zip --prefix=$(EXTENSION)-$(EXTVERSION)/ -o $(EXTENSION)-$(EXTVERSION).zip HEAD
