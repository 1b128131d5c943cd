/*
 * Connection slots per database server (server_slots.c): how many tenant connections this sidecar holds
 * to each PostgreSQL server (host and port of the tenants' conninfo), capped by
 * IWD_PG_MAX_CONNECTIONS_PER_SERVER across all worker threads, which calls wait for a slot, and the idle
 * connections that may be closed to make room. Shared by every worker thread; the state is guarded by one
 * mutex that is held for a few list operations and never across I/O.
 *
 * Waking: a slot freed on one thread is granted under the lock to a thread whose calls wait for that
 * server, and that thread's loop is woken by a message (h2o_multithread_receiver, one message in flight
 * per thread); its loop then claims the grant for its first waiting call. An idle connection marked for
 * eviction wakes its owner the same way. No thread polls.
 */
#ifndef IWD_SERVER_SLOTS_H
#define IWD_SERVER_SLOTS_H

#include <stdbool.h>
#include <stdint.h>

#include <h2o/linklist.h>
#include <h2o/memory.h>

#define IWD_SLOTS_MAX_THREADS 64 /* worker threads (IWD_THREADS is at most this) */

typedef struct iwd_server iwd_server_t;

/* A tenant connection's part in its server's accounting. The connection belongs to one worker thread. */
typedef struct iwd_slot_conn {
    iwd_server_t *server; /* the server whose slot the connection holds; NULL: it holds none */
    int thread;           /* the index of the worker thread that owns the connection */
    h2o_linklist_t idle;  /* in the server's idle list (least recently used first) while the connection is idle */
    bool evict;           /* another call wants the slot: the owner closes the connection (under the lock) */
} iwd_slot_conn_t;

/*
 * Set the cap of every server and the function that wakes a worker thread's loop (called without the lock
 * held, from any thread). Before any other call.
 */
void iwd_slots_init(int cap_per_server, void (*wake)(int thread));

/* The server of a conninfo (created on first use, never freed); NULL when the conninfo cannot be parsed. */
iwd_server_t *iwd_slots_server(const char *conninfo);

/* The server's label in metrics and logs: "host:port". */
const char *iwd_slots_server_name(const iwd_server_t *server);

/* Write the "host:port" of a conninfo into out (at most size bytes); false when it cannot be parsed. */
bool iwd_slots_server_key(const char *conninfo, char *out, size_t size);

/*
 * Take a free slot of the server for a new connection of the thread. False when the cap is reached: the
 * caller queues its call and counts it in its next round of wants (below), after which a release grants
 * the thread a slot and wakes it. Slots granted to the thread are not taken here: they go to the calls
 * that waited for them, in their order, at the thread's next round.
 */
bool iwd_slots_acquire(iwd_server_t *server, int thread);

/*
 * iwd_slots_acquire for a connection that does not wait in a thread's round of wants (an event hub's): when
 * the cap is reached, the least recently used idle connection of the server is marked for eviction (unless
 * one is on its way out already beyond the calls that wait), so that the caller's next attempt finds a slot.
 */
bool iwd_slots_acquire_evicting(iwd_server_t *server, int thread);

/*
 * A connection holding a slot is closed (or was never opened): the slot goes to a thread that waits for
 * one of this server (round robin over the threads; that thread is woken), or back to the server.
 */
void iwd_slots_release(iwd_server_t *server);

/*
 * A round of wants: the thread's calls waiting for a slot, counted again from zero. Between
 * iwd_slots_begin_wants and iwd_slots_end_wants the lock is held (no I/O in between): iwd_slots_claim
 * gives each waiting call a slot (granted or free) or counts it as waiting, which marks as many idle
 * connections of the server for eviction, least recently used first (their owners are woken to close
 * them). iwd_slots_end_wants gives back the slots granted to the thread that no call claimed.
 */
void iwd_slots_begin_wants(int thread);
bool iwd_slots_claim(iwd_server_t *server, int thread);
void iwd_slots_end_wants(int thread);

/*
 * The idle list of the connection's server: iwd_slots_idle when the connection becomes idle (most recently
 * used; false when calls of the server wait for a slot: close it now instead), iwd_slots_take before it is
 * used again (false when it is being evicted: close it instead), iwd_slots_evicting to find the ones to
 * close, iwd_slots_forget when it is closed (before iwd_slots_release).
 */
bool iwd_slots_idle(iwd_slot_conn_t *conn);
bool iwd_slots_take(iwd_slot_conn_t *conn);
bool iwd_slots_evicting(iwd_slot_conn_t *conn);
void iwd_slots_forget(iwd_slot_conn_t *conn);

/* Counters of the metrics (evictions are counted by iwd_slots_forget): an idle timeout, a wait that timed out. */
void iwd_slots_count_idle_timeout(iwd_server_t *server);
void iwd_slots_count_wait_timeout(iwd_server_t *server);

/*
 * Tenants the API served lately, remembered by the hash of their ccid (a collision only makes a tenant
 * look active): iwd_slots_touch at each call (now_ms on the caller's clock), iwd_slots_active whether the
 * tenant was served at or after since_ms. The metrics collector reads active tenants more often.
 */
void iwd_slots_touch(const char *ccid, int64_t now_ms);
bool iwd_slots_active(const char *ccid, int64_t since_ms);

/* The slots' families in the Prometheus text format (malloc'd). */
char *iwd_slots_metrics(void);

#endif
