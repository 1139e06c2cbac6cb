# queue_engine: PGXS build, plus the two commands (make demo, make test)

EXTENSION   = queue_engine
EXTVERSION  = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" $(EXTENSION).control)
MODULE_big  = $(EXTENSION)
OBJS        = $(patsubst %.c,%.o,$(wildcard src/*.c))
PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS  += -Wall -Wextra -Werror -Wno-unused-parameter -Wno-sign-compare -Wno-missing-field-initializers
DATA        = $(wildcard sql/$(EXTENSION)--*.sql)

# pg_regress inputs are the sql/ files that are not install scripts.
REGRESS      = $(sort $(patsubst sql/%.sql,%,$(filter-out sql/$(EXTENSION)--%,$(wildcard sql/*.sql))))
REGRESS_OPTS = --load-extension=$(EXTENSION)

# Isolation specs live in test/isolation/specs, outputs in test/isolation/expected.
ISOLATION      = $(sort $(patsubst test/isolation/specs/%.spec,%,$(wildcard test/isolation/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test/isolation --load-extension=$(EXTENSION)

EXTRA_CLEAN = output_iso results regression.diffs regression.out

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)

.DEFAULT_GOAL := all

# On a machine without the server headers yet, only demo and test work:
# they install what is missing and call make again.
ifneq ($(wildcard $(PGXS)),)
include $(PGXS)
else
all:
	@echo "PostgreSQL server headers not found; run 'make test' or 'make demo' (they install them), or apt-get install postgresql-server-dev-15" >&2
	@exit 1
endif

# Every source includes the shared header: rebuild them all when it changes.
$(OBJS): $(wildcard src/*.h)

.PHONY: test demo bench

# Every test suite on a throwaway cluster (installs packages when missing).
test:
	bash test/run_tests.sh

# A realistic multi-tenant workload on a throwaway cluster.
demo:
	bash test/demo.sh

# Benchmarks against a raw-SQL baseline on a throwaway cluster, then
# side by side with graphile-worker and pg-boss (test/bench/README.md).
bench:
	bash test/bench/run.sh
	BENCH_PEERS_BUILD=0 bash test/bench/peers.sh
