/*
 * libFuzzer-driven client of the extension's parsers of client JSON (task, agent, rule, category
 * validation, rule conditions, queue filters). They run inside PostgreSQL, so each input is sent over
 * libpq to a throwaway cluster that preloads iwd (IWD_FUZZ_CONNINFO; scripts/fuzz.sh makes one), inside a
 * transaction that is rolled back, so every input meets the same fixtures (regress/fuzz/fixtures.sql).
 *
 * Input: byte 0 picks the call, the rest is the JSON document. The custom mutator rewrites documents that
 * parse structurally (known field names and operators, boundary numbers and timestamps, long strings, many
 * keys, deep nesting) and leaves the others to libFuzzer's byte mutations, so both raw bytes and
 * well-formed, plausible documents reach the parsers.
 *
 * Each answer must be a result or an error of an expected class: 22 (data exception: the document is
 * invalid), 23 (integrity constraint), P0002 (no such row) or 55000 (not allowed in the task's state).
 * Anything else aborts, so that libFuzzer keeps the input: another SQLSTATE (a 42 would mean client text
 * reached SQL syntax, a 54 a limit the validation should have caught, XX000 an internal error), a
 * statement timeout (a stall), a lost connection (a backend crash), or the backend's private memory above
 * IWD_FUZZ_MEMORY_MB. libFuzzer's coverage of this client says little, so the kinds of answers the server
 * gives (call, SQLSTATE, message without its values) are fed back to it as extra features.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <libpq-fe.h>

#define STATEMENT_TIMEOUT_MS_DEFAULT 5000
#define MEMORY_MB_DEFAULT 512
#define MEMORY_CHECK_EVERY 200 /* inputs between two readings of the backend's memory */
#define FIXTURE_TASKS_MAX 64
#define MUTATION_NODES_MAX 256
#define GENERATE_DEPTH_MAX 3

size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);

/* What the server answered, as features libFuzzer counts (see the top comment). */
__attribute__((section("__libfuzzer_extra_counters"))) static uint8_t server_features[1 << 14];

static PGconn *conn;
static int backend_pid;
static long memory_limit_kb;
static long long fixture_tasks[FIXTURE_TASKS_MAX];
static int nfixture_tasks;
static unsigned long inputs;

enum call { CREATE_TASK, AGENT_NEXT_TASK, RULE_THEN_TASK, CATEGORY_THEN_TASK, QUEUE, UPDATE_TASK, CREATE_TASKS,
            NCALLS };

static const char *const call_names[NCALLS] = {"create_task", "upsert_agent+next_task", "upsert_rule+create_task",
                                               "upsert_category+create_task", "queue+search_tasks", "update_task",
                                               "create_tasks"};

/* A task that the rules and categories under test classify, prioritize and route. */
#define PROBE_TASK                                                                                                 \
    "{\"externalId\": \"fuzz-probe\", \"capturePoint\": \"erp\", \"subject\": \"Refund claim for invoice 7\","    \
    " \"mediaType\": \"workitem\", \"attributes\": {\"amount\": 150, \"type\": \"invoice\","                     \
    " \"customer\": {\"tier\": \"platinum\"}}}"

/* The statements of each call: $1 is the document; update_task's $2 is a fixture task id. */
static const char *const call_sql[NCALLS][2] = {
    [CREATE_TASK] = {"SELECT iwd.create_task($1::jsonb)", NULL},
    [AGENT_NEXT_TASK] = {"SELECT iwd.upsert_agent($1::jsonb)",
                         "SELECT iwd.next_task($1::jsonb->>'id', 30) WHERE jsonb_typeof($1::jsonb->'id') = 'string'"},
    [RULE_THEN_TASK] = {"SELECT iwd.upsert_rule($1::jsonb)", "SELECT iwd.create_task('" PROBE_TASK "')"},
    [CATEGORY_THEN_TASK] = {"SELECT iwd.upsert_category($1::jsonb)",
                            "SELECT iwd.create_task(jsonb_build_object('externalId', 'fuzz-category', 'capturePoint',"
                            " 'erp', 'category', $1::jsonb->>'name'))"
                            " WHERE jsonb_typeof($1::jsonb->'name') = 'string'"},
    [QUEUE] = {"SELECT count(*) FROM iwd.queue($1::jsonb, 50)",
               "SELECT count(*) FROM iwd.search_tasks('refund invoice', $1::jsonb, 50)"},
    [UPDATE_TASK] = {"SELECT iwd.update_task($2::bigint, $1::jsonb)", NULL},
    [CREATE_TASKS] = {"SELECT iwd.create_tasks($1::jsonb)", NULL},
};

static void fail(const char *what, const char *sqlstate, const char *message, const char *document)
{
    fprintf(stderr, "fuzz_sql: %s\n  SQLSTATE: %s\n  message: %s\n  document: %s\n", what,
            sqlstate != NULL ? sqlstate : "-", message != NULL ? message : "-", document != NULL ? document : "-");
    abort();
}

static bool expected_sqlstate(const char *code)
{
    return strncmp(code, "22", 2) == 0 || strncmp(code, "23", 2) == 0 || strcmp(code, "P0002") == 0 ||
           strcmp(code, "55000") == 0;
}

/* Count an answer as a feature: the call, the statement, the status and the message stripped of values. */
static void count_feature(int call, int statement, const PGresult *res)
{
    uint32_t h = 2166136261u;
    const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *message = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    bool quoted = false;

    h = (h ^ (uint32_t)call) * 16777619u;
    h = (h ^ (uint32_t)statement) * 16777619u;
    h = (h ^ (uint32_t)PQresultStatus(res)) * 16777619u;
    for (const char *p = code != NULL ? code : ""; *p != '\0'; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    /* up to the first ':' outside quotes ("invalid byte sequence for encoding "UTF8": 0xff" is one kind) */
    for (const char *p = message != NULL ? message : ""; *p != '\0' && (quoted || *p != ':'); p++) {
        if (*p == '"')
            quoted = !quoted;
        else if (!quoted && !isdigit((unsigned char)*p))
            h = (h ^ (uint8_t)*p) * 16777619u;
    }
    if (server_features[h % sizeof(server_features)] < 255)
        server_features[h % sizeof(server_features)]++;
}

static void exec_simple(const char *sql)
{
    PGresult *res = PQexec(conn, sql);

    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        fail(PQstatus(conn) == CONNECTION_OK ? "a setup statement failed"
                                             : "the connection was lost (a backend crash?)",
             PQresultErrorField(res, PG_DIAG_SQLSTATE), PQerrorMessage(conn), sql);
    PQclear(res);
}

/* The backend's private resident memory in kB (RssAnon: shared buffers are not counted). */
static long backend_private_kb(void)
{
    char path[64], line[256];
    long kb = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", backend_pid);
    if ((f = fopen(path, "r")) == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "RssAnon: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *conninfo = getenv("IWD_FUZZ_CONNINFO");
    const char *timeout = getenv("IWD_FUZZ_STATEMENT_TIMEOUT_MS"), *memory = getenv("IWD_FUZZ_MEMORY_MB");
    char sql[128];
    PGresult *res;

    (void)argc;
    (void)argv;
    if (conninfo == NULL) {
        fprintf(stderr, "fuzz_sql: set IWD_FUZZ_CONNINFO to a database with iwd and regress/fuzz/fixtures.sql\n");
        exit(2);
    }
    conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "fuzz_sql: cannot connect: %s", PQerrorMessage(conn));
        exit(2);
    }
    memory_limit_kb = (memory != NULL ? atol(memory) : MEMORY_MB_DEFAULT) * 1024L;
    backend_pid = PQbackendPID(conn);
    snprintf(sql, sizeof(sql), "SET statement_timeout = %d",
             timeout != NULL ? atoi(timeout) : STATEMENT_TIMEOUT_MS_DEFAULT);
    exec_simple(sql);
    exec_simple("SET client_min_messages = error");
    res = PQexec(conn, "SELECT id FROM iwd.task ORDER BY id");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) == 0) {
        fprintf(stderr, "fuzz_sql: no fixture tasks (regress/fuzz/fixtures.sql): %s", PQerrorMessage(conn));
        exit(2);
    }
    for (int i = 0; i < PQntuples(res) && nfixture_tasks < FIXTURE_TASKS_MAX; i++)
        fixture_tasks[nfixture_tasks++] = atoll(PQgetvalue(res, i, 0));
    PQclear(res);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int call;
    char *document, task_id[24];
    const char *values[2];

    if (size == 0)
        return 0;
    call = data[0] % NCALLS;
    document = malloc(size);
    memcpy(document, data + 1, size - 1);
    document[size - 1] = '\0';
    if (strlen(document) != size - 1) { /* a text parameter ends at NUL: such bytes are not a document */
        free(document);
        return 0;
    }
    snprintf(task_id, sizeof(task_id), "%lld", fixture_tasks[(data[0] / NCALLS) % nfixture_tasks]);
    values[0] = document;
    values[1] = task_id;
    exec_simple("BEGIN");
    for (int statement = 0; statement < 2 && call_sql[call][statement] != NULL; statement++) {
        const char *sql = call_sql[call][statement];
        PGresult *res = PQexecParams(conn, sql, strstr(sql, "$2") ? 2 : strstr(sql, "$1") ? 1 : 0, NULL, values, NULL,
                                     NULL, 0);
        ExecStatusType status = PQresultStatus(res);
        const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);

        if (PQstatus(conn) != CONNECTION_OK)
            fail("the connection was lost (a backend crash?)", code, PQerrorMessage(conn), document);
        count_feature(call, statement, res);
        if (status == PGRES_FATAL_ERROR) {
            char what[128];
            snprintf(what, sizeof(what), "%s: %s", call_names[call],
                     code != NULL && strcmp(code, "57014") == 0 ? "a statement timeout (a stall)"
                                                                : "an unexpected SQLSTATE");
            if (code == NULL || !expected_sqlstate(code))
                fail(what, code, PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY), document);
            PQclear(res);
            break;
        }
        if (status != PGRES_TUPLES_OK)
            fail("an unexpected result status", PQresStatus(status), PQerrorMessage(conn), document);
        PQclear(res);
    }
    exec_simple("ROLLBACK");
    if (++inputs % MEMORY_CHECK_EVERY == 0) {
        long kb = backend_private_kb();
        exec_simple("SELECT 1");
        if (kb > memory_limit_kb) {
            char what[128];
            snprintf(what, sizeof(what), "the backend holds %ld kB of private memory (limit %ld kB)", kb,
                     memory_limit_kb);
            fail(what, NULL, NULL, document);
        }
    }
    free(document);
    return 0;
}

/* --- the structure-aware mutator ------------------------------------------------------------------ */

static uint64_t next_random(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

#define PICK(state, array) (array[next_random(state) % (sizeof(array) / sizeof(array[0]))])

/* The documents' vocabulary: field names, then values the validators compare against. */
static const char *const field_names[] = {
    "externalId", "capturePoint", "subject", "description", "priority", "businessValue", "category", "department",
    "process", "queue", "mediaType", "customerSegment", "customerId", "attributes", "dueAt", "activationAt",
    "expiresAt", "sourceCreatedDateTime", "sourceDueDateTime", "sourceProcessType", "skills", "requestedAgent",
    "status", "assignedTo", "overdue", "afterId", "id", "name", "state", "capacity", "kind", "order", "enabled",
    "when", "set", "all", "any", "not", "field", "op", "value", "slaMinutes", "calendar", "reprioritize", "step",
    "max", "everyMinutes", "urgency", "withinMinutes", "timeZone", "workDays", "workStart", "workEnd", "holidays",
    "holdReason", "reason", "agent", "tasks", "amount", "type", "customer", "tier", "invoices", "claims",
    "workitem", "email", "chat"};
static const char *const string_values[] = {
    "erp", "crm", "mail", "Invoices", "Finance", "Claims", "Invoice approval", "classification", "prioritization",
    "ready", "not_ready", "busy", "new", "queued", "assigned", "held", "errorHeld", "completed", "canceled",
    "rejected", "workitem", "email", "chat", "=", "!=", "<", "<=", ">", ">=", "in", "notIn", "contains",
    "startsWith", "exists", "attributes.amount", "attributes.customer.tier", "attributes.", "attributes..x",
    "subject", "capturePoint", "priority", "businessValue", "dueAt", "Europe/Paris", "UTC", "Mars/Olympus",
    "09:00", "24:00", "25:99", "2026-01-01T00:00:00Z", "2026-02-30T10:00:00Z", "infinity", "-infinity",
    "0001-01-01T00:00:00Z", "294277-01-01T00:00:00Z", "epoch", "now", "1970-01-01", "", " ", "a17", "fuzz",
    "'; SELECT pg_sleep(10); --", "%s%n", "\\", "\"", "$1", "\xc3\xa9t\xc3\xa9", "\xe2\x80\xae", "\xf0\x9f\x98\x80",
    "NaN", "1e309", "-0", "true", "null", "{}", "[]"};
static const double real_values[] = {0.5, -1.5, 1e300, -1e300, 1e-300, 2147483647.5, 9007199254740993.0};
static const json_int_t integer_values[] = {0, 1, -1, 2, 10, 100, 1000, 32767, 32768, 65535, 65536, 2147483647,
                                            2147483648LL, -2147483648LL, -2147483649LL, 4294967296LL,
                                            9007199254740993LL, INT64_MAX, INT64_MIN};

/* A plausible document of each call, for inputs that are not JSON (any more) to start again from. */
static const char *const templates[NCALLS] = {
    [CREATE_TASK] = PROBE_TASK,
    [AGENT_NEXT_TASK] = "{\"id\": \"b1\", \"state\": \"ready\", \"skills\": {\"invoices\": 5, \"claims\": 2},"
                        " \"capacity\": {\"workitem\": 2, \"email\": 1}}",
    [RULE_THEN_TASK] = "{\"kind\": \"classification\", \"name\": \"f\", \"order\": 1, \"when\": {\"any\": [{\"field\":"
                       " \"subject\", \"op\": \"contains\", \"value\": \"refund\"}, {\"not\": {\"field\":"
                       " \"attributes.amount\", \"op\": \"in\", \"value\": [150, 200]}}]}, \"set\": {\"category\":"
                       " \"Claim\"}}",
    [CATEGORY_THEN_TASK] = "{\"name\": \"F\", \"department\": \"Finance\", \"queue\": \"f\", \"priority\": 30,"
                           " \"slaMinutes\": 120, \"calendar\": \"office\", \"skills\": {\"invoices\": 2},"
                           " \"reprioritize\": {\"everyMinutes\": 10, \"step\": 5, \"max\": 90}}",
    [QUEUE] = "{\"department\": \"Finance\", \"status\": [\"queued\", \"assigned\"], \"mediaType\": \"workitem\","
              " \"overdue\": false, \"afterId\": 1}",
    [UPDATE_TASK] = "{\"subject\": \"changed\", \"priority\": 60, \"attributes\": {\"k\": 1},"
                    " \"dueAt\": \"2027-01-01T00:00:00Z\"}",
    [CREATE_TASKS] = "[" PROBE_TASK ", {\"externalId\": \"B-2\", \"capturePoint\": \"crm\"}]",
};

static json_t *generate(uint64_t *state, int depth);

/*
 * A long value (index rows, tsvector, identifiers): one character repeated, or letters and digits drawn at
 * random, which no compression shrinks (an index row of a repeated character fits where random text does not).
 */
static json_t *long_string(uint64_t *state)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -";
    size_t n = (size_t)1 << (next_random(state) % 13);
    char *s = malloc(n + 1);
    json_t *value;

    if (next_random(state) % 2 == 0) {
        memset(s, "aZ9 -"[next_random(state) % 5], n);
    } else {
        for (size_t i = 0; i < n; i++)
            s[i] = alphabet[next_random(state) % (sizeof(alphabet) - 1)];
    }
    s[n] = '\0';
    value = json_string(s);
    free(s);
    return value;
}

/* An object of keys s0..sn (a few, now and then hundreds) with small integer values (skills, capacity). */
static json_t *many_keys(uint64_t *state)
{
    json_t *object = json_object();
    size_t n = 1 + next_random(state) % (next_random(state) % 8 == 0 ? 400 : 8);

    for (size_t i = 0; i < n; i++) {
        char key[24];
        snprintf(key, sizeof(key), "s%zu", i);
        json_object_set_new(object, key, json_integer((json_int_t)(next_random(state) % 12)));
    }
    return object;
}

static json_t *generate(uint64_t *state, int depth)
{
    switch (next_random(state) % (depth < GENERATE_DEPTH_MAX ? 12 : 8)) {
    case 0: case 1: case 2: return json_string(PICK(state, string_values));
    case 3: return json_integer(PICK(state, integer_values));
    case 4: return json_real(PICK(state, real_values));
    case 5: return json_boolean(next_random(state) % 2);
    case 6: return next_random(state) % 2 ? json_null() : long_string(state);
    case 7: return json_integer((json_int_t)(next_random(state) % 200) - 50);
    case 8: {
        json_t *object = json_object();
        for (uint64_t n = next_random(state) % 4; n > 0; n--)
            json_object_set_new(object, PICK(state, field_names), generate(state, depth + 1));
        return object;
    }
    case 9: {
        json_t *array = json_array();
        for (uint64_t n = next_random(state) % 4; n > 0; n--)
            json_array_append_new(array, generate(state, depth + 1));
        return array;
    }
    case 10: return many_keys(state);
    default: {
        json_t *value = generate(state, GENERATE_DEPTH_MAX);
        for (uint64_t n = 1 + next_random(state) % 64; n > 0; n--) {
            json_t *wrapper = next_random(state) % 2 ? json_array() : json_object();
            if (json_is_array(wrapper))
                json_array_append_new(wrapper, value);
            else
                json_object_set_new(wrapper, PICK(state, field_names), value);
            value = wrapper;
        }
        return value;
    }
    }
}

/* Every container of the document (objects and arrays), up to MUTATION_NODES_MAX. */
static void collect(json_t *node, json_t **nodes, size_t *n)
{
    const char *key;
    json_t *child;
    size_t i;

    if (*n == MUTATION_NODES_MAX || !(json_is_object(node) || json_is_array(node)))
        return;
    nodes[(*n)++] = node;
    if (json_is_object(node)) {
        json_object_foreach(node, key, child)
            collect(child, nodes, n);
    } else {
        json_array_foreach(node, i, child)
            collect(child, nodes, n);
    }
}

/* One structural change to a container: set, replace, delete or multiply a member. */
static void mutate_container(json_t *node, uint64_t *state)
{
    if (json_is_object(node)) {
        size_t size = json_object_size(node), pick = size > 0 ? next_random(state) % size : 0;
        const char *key = NULL;
        json_t *child = NULL;
        size_t i = 0;

        json_object_foreach(node, key, child) {
            if (i++ == pick)
                break;
        }
        switch (next_random(state) % 4) {
        case 0: json_object_set_new(node, PICK(state, field_names), generate(state, 0)); break;
        case 1: if (size > 0) json_object_set_new(node, key, generate(state, 0)); break;
        case 2: if (size > 0) json_object_del(node, key); break;
        default: /* many members in a member that is an object already (skills, capacity, attributes) */
            if (size > 0 && json_is_object(child)) {
                json_t *more = many_keys(state);
                json_object_update(child, more);
                json_decref(more);
            } else
                json_object_set_new(node, PICK(state, field_names), many_keys(state));
            break;
        }
    } else {
        size_t size = json_array_size(node);
        switch (next_random(state) % 4) {
        case 0: json_array_append_new(node, generate(state, 0)); break;
        case 1: if (size > 0) json_array_set_new(node, next_random(state) % size, generate(state, 0)); break;
        case 2: if (size > 0) json_array_remove(node, next_random(state) % size); break;
        default:
            if (size > 0) {
                json_t *copy = json_deep_copy(json_array_get(node, next_random(state) % size));
                for (uint64_t n = next_random(state) % 50; n > 0; n--)
                    json_array_append(node, copy);
                json_decref(copy);
            }
            break;
        }
    }
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed)
{
    uint64_t state = 0x9e3779b97f4a7c15ULL ^ seed;
    json_t *doc, *nodes[MUTATION_NODES_MAX];
    size_t n, len;
    char *text;

    if (size == 0 || max_size < 2) {
        data[0] = (uint8_t)next_random(&state);
        return 1;
    }
    if (next_random(&state) % 8 == 0)
        data[0] = (uint8_t)next_random(&state);
    if (next_random(&state) % 8 == 0)
        return 1 + LLVMFuzzerMutate(data + 1, size - 1, max_size - 1);
    if ((doc = json_loadb((const char *)data + 1, size - 1, JSON_DECODE_ANY, NULL)) == NULL) {
        if (next_random(&state) % 2 == 0)
            return 1 + LLVMFuzzerMutate(data + 1, size - 1, max_size - 1);
        doc = json_loads(templates[data[0] % NCALLS], 0, NULL);
    }
    for (uint64_t k = 1 + next_random(&state) % 3; k > 0; k--) {
        /* collected again after each change: a change may free containers collected before it */
        n = 0;
        collect(doc, nodes, &n);
        if (n == 0) {
            json_decref(doc);
            doc = generate(&state, 0);
        } else {
            mutate_container(nodes[next_random(&state) % n], &state);
        }
    }
    text = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(doc);
    if (text == NULL || (len = strlen(text)) + 1 > max_size) {
        free(text);
        return 1 + LLVMFuzzerMutate(data + 1, size - 1, max_size - 1);
    }
    memcpy(data + 1, text, len);
    free(text);
    return len + 1;
}
