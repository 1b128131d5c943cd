# iwd: PostgreSQL extension (PGXS) + iwd-sidecar. `make` and `make install` build and install the extension
# alone (iwd.so and its SQL scripts: what a PGXN user needs); `make sidecar`, `make test` and `make run` build
# the sidecar too. `make installcheck` runs regress/ against a running cluster that preloads iwd (README,
# Install).
# EXTVERSION is the one source of the version: passed to the C sources and the sidecar's build, and checked
# against iwd.control, META.json, chart/Chart.yaml and sidecar/openapi.yaml (scripts/check-version.sh).
EXTENSION  = iwd
EXTVERSION = 0.2.0
# The release the upgrade script sql/iwd--$(UPGRADE_FROM)--$(EXTVERSION).sql starts from. The next release
# commits this release's built upgrade script in sql/ as it shipped (DATA installs it), keeps this
# release's install script in regress/upgrade/ and its commit in scripts/test-upgrade.sh, and starts
# sql/upgrade/$(EXTVERSION)--<next>.sql.
UPGRADE_FROM = 0.1.0

PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
# the scripts make runs (scripts/lib.sh) use the same one
export PG_CONFIG

MODULE_big = iwd
OBJS       = $(patsubst %.c,%.o,$(sort $(wildcard extension/*.c)))
# The install script is assembled from the per-subsystem SQL sources, in this order: each part uses only
# what the parts before it define (SQL-language bodies are checked when created); sql/security.sql comes
# last (its grants and search_path settings cover every table and function defined before it).
SQL_PARTS  = sql/iwd.sql sql/common.sql sql/calendar.sql sql/config.sql sql/tasks.sql sql/lifecycle.sql \
             sql/queue.sql sql/scheduler.sql sql/datamart.sql sql/reports.sql sql/workers.sql sql/events.sql \
             sql/router.sql sql/email.sql sql/security.sql
UPGRADE    = sql/$(EXTENSION)--$(UPGRADE_FROM)--$(EXTVERSION).sql
DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql $(UPGRADE)
# upgrade scripts of earlier releases, kept as they shipped
DATA       = $(filter-out $(DATA_built),$(wildcard sql/$(EXTENSION)--*--*.sql))
EXTRA_CLEAN = $(DATA_built)
PG_CPPFLAGS = -DIWD_EXTVERSION='"$(EXTVERSION)"'

# make installcheck: the pg_regress suites (regress/sql, regress/expected) and the isolation specs
# (regress/specs) in the databases "regression" and "isolation_regression"; REGRESS_OUTDIR receives the
# results and the differences (results/, regression.diffs, output_iso/).
REGRESS        = $(sort $(basename $(notdir $(wildcard regress/sql/*.sql))))
ISOLATION      = $(sort $(basename $(notdir $(wildcard regress/specs/*.spec))))
REGRESS_OUTDIR ?= .
REGRESS_OPTS   = --inputdir=regress --outputdir=$(REGRESS_OUTDIR)
ISOLATION_OPTS = --inputdir=regress --outputdir=$(REGRESS_OUTDIR)/output_iso
REGRESS_PREP   = installcheck-cluster

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

# the tests' expected output names the database "regression" (its per-database roles)
CONTRIB_TESTDB = regression

# make installcheck needs a cluster that preloads iwd and runs none of its workers (README, Install).
installcheck-cluster:
	@settings=$$('$(bindir)/psql' -XAtq -d postgres -c "SELECT current_setting('shared_preload_libraries') \
	    || '|' || coalesce(current_setting('iwd.max_workers', true), '')") || exit 1; \
	preload=$${settings%|*}; workers=$${settings##*|}; \
	case ",$$preload," in *[,\ ]iwd[,\ ]*) ;; \
	    *) echo "make installcheck: the cluster must preload iwd, not '$$preload'" >&2; exit 1;; esac; \
	[ "$$workers" = 0 ] || { echo "make installcheck: the cluster must set iwd.max_workers = 0, not $$workers" >&2; \
	    exit 1; }

# Every object depends on every header (PGXS tracks no header dependencies without --enable-depend).
$(OBJS): $(wildcard extension/*.h)

sql/$(EXTENSION)--$(EXTVERSION).sql: $(SQL_PARTS)
	cat $^ > $@

# The upgrade script: the hand-written prelude (what changed in tables, indexes, types and roles, and the
# functions dropped or whose signature or result changed) followed by every function, view, trigger,
# grant and comment of the parts above, as CREATE OR REPLACE (sql/upgrade/rerun.awk). The upgrade then
# defines them exactly as a fresh install does; scripts/test-upgrade.sh compares the two catalogs.
$(UPGRADE): sql/upgrade/$(UPGRADE_FROM)--$(EXTVERSION).sql sql/upgrade/rerun.awk $(SQL_PARTS)
	{ cat $<; awk -f sql/upgrade/rerun.awk $(SQL_PARTS); } > $@.tmp && mv $@.tmp $@

.PHONY: deps sidecar test run stop bench bench-soak dist check-version fuzz test-faults test-ha faults-long \
        installcheck-cluster

deps:
	@scripts/deps.sh

sidecar:
	$(MAKE) -C sidecar EXTVERSION=$(EXTVERSION)

test: deps
	$(MAKE) all sidecar
	$(MAKE) install
	scripts/test.sh

run: deps
	$(MAKE) all sidecar
	$(MAKE) install
	scripts/run.sh start

stop:
	scripts/run.sh stop

bench:
	@scripts/deps.sh bench
	$(MAKE) all sidecar
	$(MAKE) install
	bench/run.sh

bench-soak:
	@scripts/deps.sh bench
	$(MAKE) all sidecar
	$(MAKE) install
	bench/soak.sh

# Long fuzzing runs of every target (FUZZ_SECONDS per sidecar target, FUZZ_SQL_SECONDS for the SQL one,
# FUZZ_RUNS to stop each after that many inputs); make test runs a short one.
fuzz: deps
	$(MAKE) all sidecar
	$(MAKE) install
	scripts/fuzz.sh long

# The fault suite (kill -9 under load) and the hostile-input suite alone; make test runs them too.
test-faults: deps
	$(MAKE) all sidecar
	$(MAKE) install
	tests/faults/run.sh
	tests/hostile/run.sh

# The high-availability suite (tests/ha): the hot standby, IWD_HA_CYCLES failover cycles (default 5) on a
# pg_auto_failover formation, a tenant moved between two servers; make test runs it with 2 cycles.
test-ha: deps
	$(MAKE) all sidecar
	$(MAKE) install
	tests/ha/run.sh --long

# The fault suite with IWD_FAULT_ROUNDS rounds of every fault (default 10: 70 faults, about 20 minutes).
faults-long: deps
	$(MAKE) all sidecar
	$(MAKE) install
	tests/faults/run.sh --long

check-version:
	@scripts/check-version.sh $(EXTVERSION)

dist:
	git archive --format zip --prefix=$(EXTENSION)-$(EXTVERSION)/ -o $(EXTENSION)-$(EXTVERSION).zip HEAD
