/*-------------------------------------------------------------------------
 * iwd.c
 *	  Module entry point: _PG_init only dispatches to the subsystems.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "config.h"
#include "datamart.h"
#include "events.h"
#include "iwd.h"
#include "launcher.h"
#include "pool.h"
#include "stats.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* Define GUCs, shared state and background workers of every subsystem. */
void
_PG_init(void)
{
	if (IsBinaryUpgrade)
		return;

	GucInit();
	DatamartInit();
	ConfigCacheInit();
	StatsInit();
	PoolInit();
	EventsInit();
	LauncherInit();
}
