/*
 * iwd-sidecar email (email.h): the mailbox poller.
 *
 * One thread of its own, so that no worker thread's loop ever waits for a mail server. It reads the
 * registry's tenants every IWD_WORK_REGISTRY_INTERVAL_MS (tenant_work.c) and asks each whether it has
 * mailboxes (then every PROBE_INTERVAL_MS for those without, at once for a tenant a route woke through
 * tenant_work.h); over a connection of its own to each tenant that has, every POLL_TICK_MS it claims the
 * mailboxes due for a poll (iwd.claim_mailboxes: a lease under the replica's id, so that one replica at a
 * time polls a mailbox) and the replies due for sending
 * (iwd.claim_replies), and works through them one after the other with libcurl's blocking API: every
 * connection and transfer is bounded (MAIL_CONNECT_TIMEOUT_S, a transfer slower than 1 byte/s for
 * MAIL_STALL_S is ended, MAIL_TRANSFER_TIMEOUT_S in all), so a server that does not answer delays the other
 * mailboxes by those bounds at most and never the API.
 *
 * A poll. UID SEARCH UNSEEN lists the new messages; iwd.mailbox_fetching records the first
 * MESSAGES_PER_POLL of them (with those a previous poll left unfinished) as being fetched before any is
 * fetched, and says which were captured already (only their flag was missing) or kept aside. Each message
 * is fetched by UID (libcurl's IMAP fetch, which sets \Seen on the server as a side effect: one UID STORE
 * -FLAGS per batch takes it back before the batch's capture, so that a message shows unread until its task
 * exists but for the moments its batch is being fetched) and decoded (mime.c); up to CAPTURE_BATCH decoded
 * messages are captured in one transaction (iwd.capture_emails, idempotent on the Message-ID: a commit costs
 * more than a capture); only after that transaction committed are they flagged \Seen. A poller killed
 * anywhere in between leaves the message's row "fetching": the next poll
 * fetches it again whatever its flags, and the capture finds its task if it committed. A message that
 * cannot be captured (malformed, larger than MAX_MESSAGE_BYTES, refused by the capture's checks) is kept
 * aside (iwd.email_failed: its error in the mailbox's status), flagged, and the poll goes on. IMAP and SMTP
 * through libcurl (TLS verified against the system's CAs and IWD_CA_FILE; STARTTLS or implicit TLS
 * required when configured), MIME through GMime: no protocol or MIME parsing of our own.
 *
 * A reply: its message composed by mime.c (In-Reply-To and References set), sent with libcurl's SMTP, then
 * iwd.reply_sent (history, completion) or iwd.reply_failed (back-off, failed for good on a 5xx refusal).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "clock.h"
#include "config.h"
#include "email.h"
#include "iwd.h"
#include "log.h"
#include "mime.h"
#include "pg.h"
#include "secret.h"
#include "tenant_work.h"
#include "text.h"

#define POLL_TICK_MS 1000         /* a tenant with mailboxes is asked this often for due polls and replies */
#define PROBE_INTERVAL_MS 60000   /* a tenant without mailboxes is asked again after this */
#define CONNECT_TIMEOUT_S 3
#define STATEMENT_TIMEOUT_MS 10000
#define DEADLINE_MS 15000         /* the poller's own bound on one answer of the database */
#define BACKOFF_MAX_MS 60000
#define LEASE_S 120               /* a poll's lease (renewed before each message) or a reply's: longer than a
                                     * message's transfer takes; a replica killed leaves its mailboxes this long */
#define MAILBOXES_PER_CLAIM 4
#define REPLIES_PER_CLAIM 20
#define MESSAGES_PER_POLL 200     /* fetched in one poll; the next poll comes at once when more wait */
#define MAX_MESSAGE_BYTES (64L * 1024 * 1024)
#define MAIL_CONNECT_TIMEOUT_S 10
#define MAIL_STALL_S 30
#define MAIL_TRANSFER_TIMEOUT_S 100 /* within a lease */
#define FLAG_CHUNK 100            /* UIDs per UID STORE */
#define CAPTURE_BATCH 50          /* messages captured in one transaction */
#define CAPTURE_BATCH_BYTES (8 * 1024 * 1024)
#define WAKE_GRACE_MS 10000       /* a woken tenant is probed every tick this long */

/* A tenant the poller knows, from the registry or a wake-up. */
typedef struct watched {
    iwd_tenant_t tenant;
    PGconn *conn;
    bool listed;
    bool has_mail;
    bool broken; /* a statement got no answer in time: the connection is closed */
    int64_t next_ms;
    int64_t woken_until_ms; /* probed every tick until then: the route that woke it may not have committed */
    int backoff_ms;
    struct watched *next;
} watched_t;

static watched_t *watched;
static PGconn *control;

/*
 * Run one statement on the tenant's connection, its answer awaited DEADLINE_MS at most; NULL when none came
 * (the connection is then marked broken: a late answer would be read as the next one's).
 */
static PGresult *query(watched_t *w, const char *command, const char *sql, int nparams, const char *const *values)
{
    PGresult *res = iwd_pg_exec_within(w->conn, w->tenant.ccid, command, sql, nparams, values,
                                       iwd_now_ms() + DEADLINE_MS);

    if (res == NULL || PQstatus(w->conn) != CONNECTION_OK)
        w->broken = true;
    return res;
}

/* Whether a statement succeeded (else it is cleared, with the reason in why). */
static bool succeeded(PGresult *res, char *why, size_t size, const char *what)
{
    if (res != NULL && (PQresultStatus(res) == PGRES_TUPLES_OK || PQresultStatus(res) == PGRES_COMMAND_OK))
        return true;
    snprintf(why, size, "%s: %s", what, res == NULL ? "no answer in time" : PQresultErrorMessage(res));
    if (res != NULL)
        PQclear(res);
    return false;
}

/* Run one statement whose answer is not needed; false with why when it failed. */
static bool run(watched_t *w, const char *command, const char *sql, int nparams, const char *const *values,
                char *why, size_t size)
{
    PGresult *res = query(w, command, sql, nparams, values);

    if (!succeeded(res, why, size, command))
        return false;
    PQclear(res);
    return true;
}

/* Close a tenant's connection after a failure; the next attempt waits longer each time. */
static void tenant_failed(watched_t *w, const char *why)
{
    w->backoff_ms = w->backoff_ms == 0 ? POLL_TICK_MS : (w->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                                                                              : w->backoff_ms * 2);
    w->next_ms = iwd_now_ms() + w->backoff_ms;
    iwd_log(IWD_LOG_WARN, "mailboxes not polled", "%s: %s; next attempt in %d ms", w->tenant.ccid, why,
            w->backoff_ms);
    if (w->conn != NULL) {
        PQfinish(w->conn);
        w->conn = NULL;
    }
    w->broken = false;
}

/* The tenant's connection, opened when needed; false when it cannot be. */
static bool tenant_connect(watched_t *w)
{
    char conninfo[IWD_CONNINFO_SIZE + 64];

    if (w->conn != NULL && PQstatus(w->conn) == CONNECTION_OK && !w->broken)
        return true;
    w->broken = false;
    if (w->conn != NULL)
        PQfinish(w->conn);
    snprintf(conninfo, sizeof(conninfo), "%s application_name=iwd-sidecar-email", w->tenant.conninfo);
    w->conn = iwd_pg_connect_bounded(conninfo, CONNECT_TIMEOUT_S, STATEMENT_TIMEOUT_MS);
    if (PQstatus(w->conn) != CONNECTION_OK) {
        char why[512];
        snprintf(why, sizeof(why), "%s", PQerrorMessage(w->conn));
        tenant_failed(w, why);
        return false;
    }
    return true;
}

/* --- mail servers ------------------------------------------------------------------------------ */

/* A transfer's output (bytes, NUL-terminated), bounded by max. */
typedef struct output {
    struct {
        char *buf;
        size_t len, cap;
    } text;
    size_t max;
    bool too_large;
} output_t;

static output_t output_new(size_t cap, size_t max)
{
    output_t out = {.text = {malloc(cap + 1), 0, cap}, .max = max};

    out.text.buf[0] = '\0';
    return out;
}

static size_t on_output(char *data, size_t size, size_t n, void *clientp)
{
    output_t *out = clientp;
    size_t add = size * n;

    if (out->text.len + add > out->max) {
        out->too_large = true;
        return 0; /* ends the transfer */
    }
    if (out->text.len + add > out->text.cap) {
        size_t cap = out->text.cap * 2 > out->text.len + add ? out->text.cap * 2 : out->text.len + add;
        out->text.buf = realloc(out->text.buf, cap + 1);
        out->text.cap = cap;
    }
    memcpy(out->text.buf + out->text.len, data, add);
    out->text.len += add;
    out->text.buf[out->text.len] = '\0';
    return add;
}

/* A server's settings: {host, port, tls, user[, folder | from]}, and its password in clear (or NULL). */
typedef struct server {
    const char *host, *tls, *user;
    int port;
    const char *password;
} server_t;

static void server_of(json_t *settings, const char *password, server_t *s)
{
    s->host = json_string_value(json_object_get(settings, "host"));
    s->tls = json_string_value(json_object_get(settings, "tls"));
    s->user = json_string_value(json_object_get(settings, "user"));
    s->port = (int)json_integer_value(json_object_get(settings, "port"));
    s->password = password;
}

/* The URL of a server ("imap", "smtp"), with path (escaped already) after it. */
static void server_url(const server_t *s, const char *protocol, const char *path, char *out, size_t size)
{
    bool implicit = s->tls != NULL && strcmp(s->tls, "implicit") == 0;
    bool v6 = strchr(s->host, ':') != NULL;

    snprintf(out, size, "%s%s://%s%s%s:%d/%s", protocol, implicit ? "s" : "", v6 ? "[" : "", s->host, v6 ? "]" : "",
             s->port, path);
}

/* A handle with what every transfer to a mail server shares: bounds, TLS, credentials, protocols. */
static CURL *mail_handle(const server_t *s, const char *protocols, char *errbuf)
{
    CURL *h = curl_easy_init();

    if (h == NULL)
        return NULL;
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, protocols);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, (long)MAIL_CONNECT_TIMEOUT_S);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)MAIL_TRANSFER_TIMEOUT_S);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)MAIL_STALL_S);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_USE_SSL, s->tls != NULL && strcmp(s->tls, "starttls") == 0 ? CURLUSESSL_ALL
                                                                                            : CURLUSESSL_NONE);
    if (iwd_conf.ca_file != NULL) {
        /* with OpenSSL, libcurl reads both: the file's CAs and the system's directory */
        curl_easy_setopt(h, CURLOPT_CAINFO, iwd_conf.ca_file);
        curl_easy_setopt(h, CURLOPT_CAPATH, "/etc/ssl/certs");
    }
    if (s->user != NULL)
        curl_easy_setopt(h, CURLOPT_USERNAME, s->user);
    if (s->password != NULL)
        curl_easy_setopt(h, CURLOPT_PASSWORD, s->password);
    return h;
}

/* Why a transfer failed, in words for the mailbox's status. */
static void transfer_error(CURLcode rc, const char *errbuf, char *why, size_t size)
{
    snprintf(why, size, "%s%s%s", curl_easy_strerror(rc), *errbuf != '\0' ? ": " : "", errbuf);
}

/* Run an IMAP command on the folder (the handle keeps its connection); its untagged answers in out. */
static CURLcode imap_command(CURL *h, const char *folder_url, const char *command, output_t *out)
{
    out->text.len = 0;
    out->text.buf[0] = '\0';
    curl_easy_setopt(h, CURLOPT_URL, folder_url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, command);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_output);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    return curl_easy_perform(h);
}

/* The UIDs of a SEARCH answer ("* SEARCH 1 2 3"), ascending as the server lists them, appended to uids. */
static void parse_search(const char *text, json_t *uids)
{
    const char *line = text;

    while (line != NULL && *line != '\0') {
        if (strncmp(line, "* SEARCH", 8) == 0) {
            const char *p = line + 8;
            while (*p == ' ') {
                char *end;
                unsigned long long uid = strtoull(p + 1, &end, 10);
                if (end == p + 1)
                    break;
                json_array_append_new(uids, json_integer((json_int_t)uid));
                p = end;
            }
        }
        line = strchr(line, '\n');
        if (line != NULL)
            line++;
    }
}

/*
 * Open a sealed password; one sealed under the previous secret (a rotation) is sealed again under the
 * current one and stored (iwd.mailbox_reseal; a failure is only logged: it is tried at the next use).
 */
static char *open_password(watched_t *w, const char *mailbox, const char *which, const char *sealed)
{
    bool current;
    char *plain = iwd_secret_open(sealed, &current), *again, why[512];

    if (plain != NULL && !current) {
        const char *values[4] = {mailbox, which, sealed, again = iwd_secret_seal(plain)};
        if (!run(w, "mailbox_reseal", "SELECT iwd.mailbox_reseal($1, $2, $3, $4)", 4, values, why, sizeof(why)))
            iwd_log(IWD_LOG_WARN, "mailbox password not sealed again", "%s: mailbox %s: %s", w->tenant.ccid, mailbox,
                    why);
        free(again);
    }
    return plain;
}

/* --- a poll ------------------------------------------------------------------------------------- */

/* A mailbox being polled. */
typedef struct poll {
    watched_t *w;
    const char *name;
    CURL *h;
    char folder_url[1024];
    char errbuf[CURL_ERROR_SIZE];
    json_t *flag;        /* UIDs to flag \Seen: captured, threaded or kept aside */
    json_t *fetched;     /* UIDs fetched whose \Seen flag (set by the fetch) is not taken back yet */
    json_t *batch;       /* decoded messages waiting for their capture: [{uid, email}] */
    size_t batch_bytes;  /* about what the batch holds */
    int64_t renewed_ms;  /* when the lease was last renewed */
} poll_t;

/* Whether a capture's error is the message's (kept aside) rather than the database's (the poll stops). */
static bool message_error(PGresult *res)
{
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    return state != NULL && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0 ||
                             strncmp(state, "54", 2) == 0);
}

/* Keep a message aside with its error; false when the database did not take it (why). */
static bool keep_aside(poll_t *p, json_int_t uid, const char *message_id, const char *error, char *why, size_t size)
{
    char uid_text[32];
    const char *values[4] = {p->name, uid_text, message_id, error};

    snprintf(uid_text, sizeof(uid_text), "%lld", (long long)uid);
    if (!run(p->w, "email_failed", "SELECT iwd.email_failed($1, $2::bigint, $3, $4)", 4, values, why, size))
        return false;
    iwd_log(IWD_LOG_WARN, "email kept aside", "%s: mailbox %s, message %lld: %s", p->w->tenant.ccid, p->name,
            (long long)uid, error);
    json_array_append_new(p->flag, json_integer(uid));
    return true;
}

/*
 * Set (change "+") or take back ("-") the \Seen flag of the messages of uids, FLAG_CHUNK UIDs per command (a
 * flag change costs the server a write of its index: one per chunk, not per message), and empty the list.
 * Failures are logged only: a message left unread is found by the next search and only flagged then, one
 * left read is still "fetching" and fetched again whatever its flags.
 */
static void store_flags(poll_t *p, json_t *uids, char change)
{
    output_t ignored = output_new(256, 64 * 1024);
    size_t i = 0, n = json_array_size(uids);

    while (i < n) {
        iwd_text_t command = iwd_text_new(256);
        CURLcode rc;
        iwd_text_put(&command, "UID STORE ");
        for (size_t k = 0; k < FLAG_CHUNK && i < n; k++, i++)
            iwd_text_put(&command, "%s%lld", k > 0 ? "," : "", (long long)json_integer_value(json_array_get(uids, i)));
        iwd_text_put(&command, " %cFLAGS.SILENT (\\Seen)", change);
        if ((rc = imap_command(p->h, p->folder_url, command.buf, &ignored)) != CURLE_OK)
            iwd_log(IWD_LOG_WARN, "emails not flagged \\Seen", "%s: mailbox %s: %s", p->w->tenant.ccid, p->name,
                    curl_easy_strerror(rc));
        free(command.buf);
    }
    free(ignored.text.buf);
    json_array_clear(uids);
}

/* Capture one decoded message on its own (a batch that failed on a message's error); false: the poll stops. */
static bool capture_alone(poll_t *p, json_t *item, char *why, size_t size)
{
    json_t *doc = json_object_get(item, "email");
    json_int_t uid = json_integer_value(json_object_get(item, "uid"));
    char *text = json_dumps(doc, JSON_COMPACT), uid_text[32], error[512];
    const char *values[3] = {p->name, uid_text, text};
    PGresult *res;
    bool ok = true;

    snprintf(uid_text, sizeof(uid_text), "%lld", (long long)uid);
    res = query(p->w, "capture_email", "SELECT iwd.capture_email($1, $2::bigint, $3::jsonb)", 3, values);
    if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK) {
        json_array_append_new(p->flag, json_integer(uid));
        PQclear(res);
    } else if (message_error(res)) {
        snprintf(error, sizeof(error), "%s", PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
        PQclear(res);
        ok = keep_aside(p, uid, json_string_value(json_object_get(doc, "messageId")), error, why, size);
    } else {
        ok = succeeded(res, why, size, "capture_email");
    }
    free(text);
    return ok;
}

/*
 * Capture the decoded messages waiting in p->batch in one transaction (one commit for many: the commit is
 * the cost of a capture); when a message's own error undoes it, each is captured alone, so that only that
 * one is kept aside. Their UIDs join p->flag once committed. False: the poll stops (why).
 */
static bool capture_batch(poll_t *p, char *why, size_t size)
{
    char *text;
    const char *values[2];
    PGresult *res;
    json_t *item;
    size_t i;
    bool ok = true;

    store_flags(p, p->fetched, '-');
    if (json_array_size(p->batch) == 0)
        return true;
    text = json_dumps(p->batch, JSON_COMPACT);
    values[0] = p->name;
    values[1] = text;
    res = query(p->w, "capture_emails", "SELECT iwd.capture_emails($1, $2::jsonb)", 2, values);
    free(text);
    if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK) {
        json_array_foreach(p->batch, i, item)
            json_array_append(p->flag, json_object_get(item, "uid"));
        PQclear(res);
    } else if (message_error(res)) {
        PQclear(res);
        json_array_foreach(p->batch, i, item) {
            if (!(ok = capture_alone(p, item, why, size)))
                break;
        }
    } else {
        ok = succeeded(res, why, size, "capture_emails");
    }
    json_array_clear(p->batch);
    p->batch_bytes = 0;
    return ok;
}

/*
 * Fetch and decode one message into p->batch (a message that cannot be read is kept aside at once); the
 * batch is captured when full. The lease is renewed first when a quarter of it went by. False: the poll
 * stops (why).
 */
static bool fetch_one(poll_t *p, json_int_t uid, char *why, size_t size)
{
    char url[1200], error[512], lease[16];
    const char *renew[3] = {p->name, iwd_work_replica(), lease};
    output_t out = output_new(64 * 1024, MAX_MESSAGE_BYTES);
    CURLcode rc;
    json_t *doc;
    bool ok = true;

    if (iwd_now_ms() - p->renewed_ms > LEASE_S * 1000 / 4) {
        snprintf(lease, sizeof(lease), "%d s", LEASE_S);
        if (!run(p->w, "mailbox_renew", "SELECT iwd.mailbox_renew($1, $2, $3::interval)", 3, renew, why, size))
            return false;
        p->renewed_ms = iwd_now_ms();
    }
    snprintf(url, sizeof(url), "%s/;UID=%lld", p->folder_url, (long long)uid);
    curl_easy_setopt(p->h, CURLOPT_URL, url);
    curl_easy_setopt(p->h, CURLOPT_CUSTOMREQUEST, NULL);
    curl_easy_setopt(p->h, CURLOPT_WRITEFUNCTION, on_output);
    curl_easy_setopt(p->h, CURLOPT_WRITEDATA, &out);
    p->errbuf[0] = '\0';
    rc = curl_easy_perform(p->h);
    /* the fetch flagged it \Seen: unread again before its batch is captured (store_flags) */
    if (rc == CURLE_OK || out.too_large)
        json_array_append_new(p->fetched, json_integer(uid));
    if (out.too_large) {
        snprintf(error, sizeof(error), "the message is larger than %ld bytes", MAX_MESSAGE_BYTES);
        ok = keep_aside(p, uid, NULL, error, why, size);
    } else if (rc == CURLE_REMOTE_FILE_NOT_FOUND) {
        ok = keep_aside(p, uid, NULL, "the message is no longer in the folder", why, size);
    } else if (rc != CURLE_OK) {
        transfer_error(rc, p->errbuf, why, size);
        ok = false;
    } else if ((doc = iwd_mime_decode(out.text.buf, out.text.len, error, sizeof(error))) == NULL) {
        ok = keep_aside(p, uid, NULL, error, why, size);
    } else {
        /* what the batch holds is the decoded text, bounded (mime.h), not the message */
        p->batch_bytes += json_string_length(json_object_get(doc, "body")) + 4096;
        json_array_append_new(p->batch, json_pack("{s:I, s:o}", "uid", uid, "email", doc));
        if (json_array_size(p->batch) >= CAPTURE_BATCH || p->batch_bytes >= CAPTURE_BATCH_BYTES)
            ok = capture_batch(p, why, size);
    }
    free(out.text.buf);
    return ok;
}

/* The end of a poll, reported; false when the database did not take it. */
static bool report_poll(poll_t *p, const char *error, bool more)
{
    const char *values[4] = {p->name, iwd_work_replica(), error, more ? "true" : "false"};
    char why[512];

    if (error != NULL)
        iwd_log(IWD_LOG_WARN, "mailbox poll failed", "%s: mailbox %s: %s", p->w->tenant.ccid, p->name, error);
    return run(p->w, "mailbox_polled", "SELECT iwd.mailbox_polled($1, $2, $3, $4::boolean)", 4, values, why,
               sizeof(why));
}

/*
 * Poll one claimed mailbox: row of iwd.claim_mailboxes (name, imap, imap_password, category, unfinished);
 * *more is set when messages are left for the next poll. False when the database connection failed.
 */
static bool poll_mailbox(watched_t *w, PGresult *claimed, int row, bool *more_left)
{
    poll_t p = {.w = w, .name = PQgetvalue(claimed, row, 0), .flag = json_array(), .fetched = json_array(),
                .batch = json_array(),
                .renewed_ms = iwd_now_ms()};
    json_t *imap = json_loads(PQgetvalue(claimed, row, 1), 0, NULL), *uids = json_array(), *plan = NULL;
    output_t out = output_new(4096, 16L * 1024 * 1024);
    char why[1024] = "", *password, *escaped, *text;
    bool more = false, db_ok;
    const char *values[4];
    char lease[16];
    server_t server;
    CURLcode rc;
    PGresult *res;

    password = open_password(w, p.name, "imap", PQgetvalue(claimed, row, 2));
    if (imap == NULL || password == NULL) {
        snprintf(why, sizeof(why), "the IMAP password cannot be opened with this sidecar's IWD_SECRET_KEY: "
                                   "give it again (PUT)");
        goto done;
    }
    server_of(imap, password, &server);
    escaped = curl_easy_escape(NULL, json_string_value(json_object_get(imap, "folder")), 0);
    server_url(&server, "imap", escaped, p.folder_url, sizeof(p.folder_url));
    curl_free(escaped);
    if ((p.h = mail_handle(&server, "imap,imaps", p.errbuf)) == NULL) {
        snprintf(why, sizeof(why), "out of memory");
        goto done;
    }
    /* the messages a previous poll left unfinished (an array literal "{1,2}"), then the unread ones */
    {
        char *list = strdup(PQgetvalue(claimed, row, 4)), *save = NULL;
        for (char *tok = strtok_r(list, "{,}", &save); tok != NULL; tok = strtok_r(NULL, "{,}", &save))
            json_array_append_new(uids, json_integer(strtoll(tok, NULL, 10)));
        free(list);
    }
    p.errbuf[0] = '\0';
    if ((rc = imap_command(p.h, p.folder_url, "UID SEARCH UNSEEN", &out)) != CURLE_OK) {
        transfer_error(rc, p.errbuf, why, sizeof(why));
        goto done;
    }
    parse_search(out.text.buf, uids);
    if (json_array_size(uids) == 0)
        goto done;
    /* at most MESSAGES_PER_POLL: the unfinished first, then the oldest unread */
    while (json_array_size(uids) > MESSAGES_PER_POLL) {
        json_array_remove(uids, json_array_size(uids) - 1);
        more = true;
    }
    text = json_dumps(uids, JSON_COMPACT);
    values[0] = p.name;
    values[1] = iwd_work_replica();
    values[2] = text;
    snprintf(lease, sizeof(lease), "%d s", LEASE_S);
    values[3] = lease;
    res = query(w, "mailbox_fetching",
                "SELECT iwd.mailbox_fetching($1, $2, ARRAY(SELECT jsonb_array_elements_text($3::jsonb)::bigint),"
                " $4::interval)",
                4, values);
    free(text);
    if (!succeeded(res, why, sizeof(why), "mailbox_fetching"))
        goto done;
    plan = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
    PQclear(res);
    json_array_extend(p.flag, json_object_get(plan, "flag"));
    {
        json_t *fetch = json_object_get(plan, "fetch"), *uid;
        size_t i;
        json_array_foreach(fetch, i, uid) {
            if (!fetch_one(&p, json_integer_value(uid), why, sizeof(why)))
                break;
        }
        if (why[0] == '\0')
            capture_batch(&p, why, sizeof(why));
    }
done:
    if (p.h != NULL) {
        store_flags(&p, p.fetched, '-');
        store_flags(&p, p.flag, '+');
        curl_easy_cleanup(p.h);
    }
    /* a poll that lost its lease reports nothing: the mailbox is another replica's now */
    db_ok = !w->broken && (strstr(why, "is lost") != NULL || report_poll(&p, why[0] != '\0' ? why : NULL, more));
    free(password);
    free(out.text.buf);
    json_decref(imap);
    json_decref(uids);
    json_decref(plan);
    json_decref(p.flag);
    json_decref(p.fetched);
    json_decref(p.batch);
    *more_left |= more && why[0] == '\0';
    return db_ok;
}

/* --- replies ------------------------------------------------------------------------------------ */

/* What libcurl's SMTP upload reads: the message text. */
typedef struct upload {
    const char *text;
    size_t len, at;
} upload_t;

static size_t on_read(char *buffer, size_t size, size_t n, void *clientp)
{
    upload_t *u = clientp;
    size_t left = u->len - u->at, take = size * n < left ? size * n : left;

    memcpy(buffer, u->text + u->at, take);
    u->at += take;
    return take;
}

/* Send one claimed reply: row of iwd.claim_replies (id, smtp, smtp_password, message_id, body, mail). */
static bool send_reply(watched_t *w, PGresult *claimed, int row)
{
    json_t *smtp = json_loads(PQgetvalue(claimed, row, 1), 0, NULL);
    json_t *mail = json_loads(PQgetvalue(claimed, row, 5), 0, NULL);
    const char *from = json_string_value(json_object_get(smtp, "from"));
    char why[1024] = "", errbuf[CURL_ERROR_SIZE] = "", url[1024], from_path[512], to_path[512], *password = NULL,
         *text = NULL;
    bool permanent = false;
    const char *values[4] = {PQgetvalue(claimed, row, 0), iwd_work_replica(), why, "false"};
    struct curl_slist *rcpt = NULL;
    server_t server;
    PGresult *res;
    CURL *h = NULL;

    if (!PQgetisnull(claimed, row, 2) &&
        (password = open_password(w, PQgetvalue(claimed, row, 6), "smtp", PQgetvalue(claimed, row, 2))) == NULL) {
        snprintf(why, sizeof(why), "the SMTP password cannot be opened with this sidecar's IWD_SECRET_KEY");
    } else if ((text = iwd_mime_reply(from, json_object_get(mail, "to"),
                                      json_string_value(json_object_get(mail, "subject")), PQgetvalue(claimed, row, 3),
                                      json_string_value(json_object_get(mail, "inReplyTo")),
                                      json_object_get(mail, "references"), PQgetvalue(claimed, row, 4), why,
                                      sizeof(why))) == NULL) {
        permanent = true;
    } else {
        upload_t u = {text, strlen(text), 0};
        CURLcode rc;
        long code = 0;
        server_of(smtp, password, &server);
        server_url(&server, "smtp", "", url, sizeof(url));
        snprintf(from_path, sizeof(from_path), "<%s>", from);
        snprintf(to_path, sizeof(to_path), "<%s>",
                 json_string_value(json_object_get(json_object_get(mail, "to"), "address")));
        rcpt = curl_slist_append(NULL, to_path);
        h = mail_handle(&server, "smtp,smtps", errbuf);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_MAIL_FROM, from_path);
        curl_easy_setopt(h, CURLOPT_MAIL_RCPT, rcpt);
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(h, CURLOPT_READDATA, &u);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)u.len);
        if ((rc = curl_easy_perform(h)) != CURLE_OK) {
            transfer_error(rc, errbuf, why, sizeof(why));
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
            permanent = code >= 500; /* the server refused the sender, the recipient or the message */
        }
    }
    if (why[0] == '\0') {
        res = query(w, "reply_sent", "SELECT iwd.reply_sent($1::bigint, $2)", 2, values);
    } else {
        iwd_log(IWD_LOG_WARN, "email reply not sent", "%s: reply %s: %s", w->tenant.ccid, values[0], why);
        values[3] = permanent ? "true" : "false";
        res = query(w, "reply_failed", "SELECT iwd.reply_failed($1::bigint, $2, $3, $4::boolean)",
                    4, values);
    }
    if (h != NULL)
        curl_easy_cleanup(h);
    curl_slist_free_all(rcpt);
    free(password);
    free(text);
    json_decref(smtp);
    json_decref(mail);
    return succeeded(res, why, sizeof(why), "reply report") ? (PQclear(res), true) : false;
}

/* --- the thread --------------------------------------------------------------------------------- */

/* Whether the tenant has mailboxes (an extension without email has none); false with why when unknown. */
static bool probe(watched_t *w, char *why, size_t size)
{
    PGresult *res = query(w, "mailbox_probe",
                          "SELECT to_regclass('iwd.mailbox') IS NOT NULL"
                          " AND EXISTS (SELECT FROM iwd.mailbox WHERE enabled)"
                          " OR to_regclass('iwd.email_reply') IS NOT NULL"
                          " AND EXISTS (SELECT FROM iwd.email_reply WHERE status = 'pending')",
                          0, NULL);

    if (!succeeded(res, why, size, "mailbox_probe"))
        return false;
    w->has_mail = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    return true;
}

/* Look at one tenant: its due polls and replies. */
static void serve(watched_t *w)
{
    char why[1024], lease[16], lim[16];
    const char *values[3] = {iwd_work_replica(), lease, lim};
    PGresult *res;
    bool more = false;

    if (!tenant_connect(w))
        return;
    if (!probe(w, why, sizeof(why))) {
        tenant_failed(w, why);
        return;
    }
    if (!w->has_mail) {
        PQfinish(w->conn); /* an idle tenant costs no connection */
        w->conn = NULL;
        w->next_ms = iwd_now_ms() + (iwd_now_ms() < w->woken_until_ms ? POLL_TICK_MS : PROBE_INTERVAL_MS);
        return;
    }
    snprintf(lease, sizeof(lease), "%d s", LEASE_S);
    snprintf(lim, sizeof(lim), "%d", MAILBOXES_PER_CLAIM);
    res = query(w, "claim_mailboxes",
                "SELECT name, imap::text, imap_password, category, unfinished::text"
                " FROM iwd.claim_mailboxes($1, $2::interval, $3::int)",
                3, values);
    if (!succeeded(res, why, sizeof(why), "claim_mailboxes")) {
        tenant_failed(w, why);
        return;
    }
    for (int i = 0; i < PQntuples(res); i++)
        if (!poll_mailbox(w, res, i, &more)) {
            PQclear(res);
            tenant_failed(w, "the database did not take a poll's outcome");
            return;
        }
    PQclear(res);
    snprintf(lim, sizeof(lim), "%d", REPLIES_PER_CLAIM);
    res = query(w, "claim_replies",
                "SELECT id, smtp::text, smtp_password, message_id, body, mail::text, mailbox"
                " FROM iwd.claim_replies($1, $2::interval, $3::int)",
                3, values);
    if (!succeeded(res, why, sizeof(why), "claim_replies")) {
        tenant_failed(w, why);
        return;
    }
    for (int i = 0; i < PQntuples(res); i++)
        if (!send_reply(w, res, i)) {
            PQclear(res);
            tenant_failed(w, "the database did not take a reply's outcome");
            return;
        }
    PQclear(res);
    w->backoff_ms = 0;
    w->next_ms = more ? 0 : iwd_now_ms() + POLL_TICK_MS; /* a mailbox with more messages is polled on at once */
}

/* The poller's entry for a tenant, created when new; its connection is closed when its conninfo changed. */
static watched_t *watched_entry(const iwd_tenant_t *tenant)
{
    watched_t *w;

    for (w = watched; w != NULL; w = w->next)
        if (strcmp(w->tenant.ccid, tenant->ccid) == 0)
            break;
    if (w == NULL) {
        w = calloc(1, sizeof(*w));
        w->next = watched;
        watched = w;
    } else if (strcmp(w->tenant.conninfo, tenant->conninfo) != 0 && w->conn != NULL) {
        PQfinish(w->conn);
        w->conn = NULL;
    }
    w->tenant = *tenant;
    w->listed = true;
    return w;
}

/* Read the registry again: new tenants are watched, those no longer provisioned forgotten. */
static void refresh_registry(void)
{
    iwd_tenant_t *tenants;
    int n = iwd_work_tenants(&control, "email", &tenants);

    if (n < 0)
        return; /* keep watching the tenants known */
    for (watched_t *w = watched; w != NULL; w = w->next)
        w->listed = false;
    for (int i = 0; i < n; i++)
        watched_entry(&tenants[i]);
    iwd_work_tenants_free(tenants, n);
    for (watched_t **link = &watched; *link != NULL;) {
        watched_t *w = *link;
        if (w->listed) {
            link = &w->next;
            continue;
        }
        *link = w->next;
        if (w->conn != NULL)
            PQfinish(w->conn);
        free(w);
    }
}

static void *poller_main(void *arg)
{
    int64_t registry_at = 0;

    (void)arg;
    for (;;) {
        int64_t now = iwd_now_ms(), next = now + POLL_TICK_MS;
        iwd_tenant_t woken[IWD_WORK_MAX_WAKES];
        int n;

        if (now >= registry_at) {
            refresh_registry();
            registry_at = now + IWD_WORK_REGISTRY_INTERVAL_MS;
        }
        n = iwd_work_take(IWD_WORK_EMAIL, woken);
        for (int i = 0; i < n; i++) {
            watched_t *w = watched_entry(&woken[i]);
            w->next_ms = 0;
            w->backoff_ms = 0;
            w->woken_until_ms = iwd_now_ms() + WAKE_GRACE_MS;
        }
        OPENSSL_cleanse(woken, sizeof(woken));
        for (watched_t *w = watched; w != NULL; w = w->next) {
            if (iwd_now_ms() >= w->next_ms)
                serve(w);
            if (w->next_ms < next)
                next = w->next_ms;
        }
        if (next > iwd_now_ms()) /* a wake-up taken or not, since the take: the wait ends at once */
            iwd_work_wait(IWD_WORK_EMAIL, next - iwd_now_ms());
    }
    return NULL;
}

int iwd_email_init(void)
{
    iwd_mime_init();
    return IWD_OK;
}

void iwd_email_start(void)
{
    pthread_t poller;

    pthread_create(&poller, NULL, poller_main, NULL);
    pthread_detach(poller);
    iwd_log(IWD_LOG_INFO, "mailbox poller started", "replica %s", iwd_work_replica());
}
