/*
 * iwd-sidecar provisioning body validation (see provisioning.h). Every rule a body must follow lives
 * here, so that the route (routes_provisioning.c) only acts on a request already known to be sound.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "iwd.h"
#include "provisioning.h"

#define PATH_MAX_DEPTH 4

/* Format an error message into err. */
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return IWD_ERR;
}

bool iwd_ccid_valid(const char *ccid)
{
    size_t n = strlen(ccid);

    if (n == 0 || n > IWD_CCID_MAX)
        return false;
    for (const char *p = ccid; *p != '\0'; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '.' ||
              *p == '_' || *p == '-'))
            return false;
    return true;
}

/* Whether every byte of s is printable ASCII other than a space (an API key travels in a header). */
static bool key_chars_valid(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            return false;
    return true;
}

/* Whether s holds a control character (none belongs in a name, a host or a URL). */
static bool has_control(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
        if (*p < 0x20 || *p == 0x7f)
            return true;
    return false;
}

/*
 * The value at a dotted path of fixed names ("iwd.db.host"); NULL when it or an object on the way is
 * absent or null. -1 after an error when an object on the way is something else.
 */
static int lookup(json_t *doc, const char *path, json_t **value, char *err, size_t errlen)
{
    const char *start = path;
    json_t *v = doc;

    *value = NULL;
    for (int depth = 0; depth < PATH_MAX_DEPTH; depth++) {
        const char *dot = strchr(start, '.');
        size_t n = dot != NULL ? (size_t)(dot - start) : strlen(start);

        v = json_object_getn(v, start, n);
        if (v == NULL || json_is_null(v))
            return IWD_OK;
        if (dot == NULL) {
            *value = v;
            return IWD_OK;
        }
        if (!json_is_object(v))
            return fail(err, errlen, "%.*s must be an object", (int)(dot - path), path);
        start = dot + 1;
    }
    return IWD_OK;
}

/*
 * A string member at path, copied into *out (NULL when absent, null or, unless required, empty); -1 after
 * an error when it is required and missing, not a string, longer than max or holds a control character
 * (allow_control: passwords may).
 */
static int string_at(json_t *doc, const char *path, bool required, size_t max, bool allow_control, char **out,
                     char *err, size_t errlen)
{
    json_t *v;

    *out = NULL;
    if (lookup(doc, path, &v, err, errlen) != IWD_OK)
        return IWD_ERR;
    if (v != NULL && !json_is_string(v))
        return fail(err, errlen, "%s must be a string", path);
    if (v == NULL || json_string_length(v) == 0)
        return required ? fail(err, errlen, "%s is required", path) : IWD_OK;
    if (json_string_length(v) > max)
        return fail(err, errlen, "%s is longer than %zu characters", path, max);
    if (strlen(json_string_value(v)) != json_string_length(v) || (!allow_control && has_control(json_string_value(v))))
        return fail(err, errlen, "%s must not contain control characters", path);
    if ((*out = strdup(json_string_value(v))) == NULL)
        return fail(err, errlen, "out of memory");
    return IWD_OK;
}

/* iwd.db.port: an integer or a string of digits within 1..65535; 5432 when absent. */
static int port_at(json_t *doc, int *port, char *err, size_t errlen)
{
    json_t *v;
    long long n = -1;

    *port = 5432;
    if (lookup(doc, "iwd.db.port", &v, err, errlen) != IWD_OK)
        return IWD_ERR;
    if (v == NULL)
        return IWD_OK;
    if (json_is_integer(v)) {
        n = json_integer_value(v);
    } else if (json_is_string(v) && json_string_length(v) > 0 && json_string_length(v) <= 5 &&
               strspn(json_string_value(v), "0123456789") == json_string_length(v)) {
        n = strtoll(json_string_value(v), NULL, 10);
    }
    if (n < 1 || n > 65535)
        return fail(err, errlen, "iwd.db.port must be a port number (1 to 65535)");
    *port = (int)n;
    return IWD_OK;
}

/* Append text of length n and a comma before it unless the list is empty; false when it does not fit. */
static bool list_add(char *list, size_t size, const char *text, size_t n)
{
    size_t o = strlen(list), sep = o > 0 ? 1 : 0;

    if (o + sep + n + 1 > size)
        return false;
    if (sep)
        list[o++] = ',';
    memcpy(list + o, text, n);
    list[o + n] = '\0';
    return true;
}

int iwd_db_hosts_split(const char *hosts, int default_port, char *host_list, size_t host_size, char *port_list,
                       size_t port_size, int *count, char *err, size_t errlen)
{
    const char *entry = hosts;
    char port_s[16];

    host_list[0] = port_list[0] = '\0';
    *count = 0;
    for (;;) {
        size_t len = strcspn(entry, ","), host_len = len;
        const char *host = entry, *colon = NULL;
        long long n = default_port;

        (*count)++;
        if (host[0] == '[' && memchr(host, ']', len) != NULL) { /* [IPv6] or [IPv6]:port */
            const char *close = memchr(host, ']', len);

            host++;
            host_len = close - host;
            colon = close + 1 < entry + len ? close + 1 : NULL;
            if (colon != NULL && *colon != ':')
                return fail(err, errlen, "iwd.db.host: entry %d must be host, host:port or [address]:port", *count);
        } else if (memchr(host, ':', len) != NULL && memchr(host, ':', len) == memrchr(host, ':', len)) {
            colon = memchr(host, ':', len); /* host:port; more than one colon is an IPv6 address alone */
            host_len = colon - host;
        }
        if (colon != NULL) {
            size_t digits = entry + len - (colon + 1);
            bool numeric = digits > 0 && digits <= 5 && strspn(colon + 1, "0123456789") >= digits;

            n = numeric ? strtoll(colon + 1, NULL, 10) : -1;
            if (n < 1 || n > 65535)
                return fail(err, errlen, "iwd.db.host: the port of entry %d must be a port number (1 to 65535)",
                            *count);
        }
        if (host_len == 0 || memchr(host, ' ', host_len) != NULL)
            return fail(err, errlen, "iwd.db.host: entry %d must name a host (no spaces)", *count);
        snprintf(port_s, sizeof(port_s), "%lld", n);
        if (!list_add(host_list, host_size, host, host_len) || !list_add(port_list, port_size, port_s, strlen(port_s)))
            return fail(err, errlen, "iwd.db.host names too many hosts");
        if (entry[len] == '\0')
            return IWD_OK;
        entry += len + 1;
    }
}

/* iwd.db.host: one host or a list of them, as iwd_db_hosts_split reads it. */
static int hosts_valid(const char *hosts, int default_port, char *err, size_t errlen)
{
    /* at most one port of 6 characters per character of the hosts */
    char host_list[IWD_DB_HOST_MAX + 1], port_list[IWD_DB_HOST_MAX * 6 + 1];
    int count;

    return iwd_db_hosts_split(hosts, default_port, host_list, sizeof(host_list), port_list, sizeof(port_list),
                              &count, err, errlen);
}

/* An API key: length and characters. */
static int key_valid(const char *path, const char *key, char *err, size_t errlen)
{
    if (strlen(key) < IWD_API_KEY_MIN)
        return fail(err, errlen, "%s must be at least %d characters", path, IWD_API_KEY_MIN);
    if (!key_chars_valid(key))
        return fail(err, errlen, "%s must be printable ASCII without spaces", path);
    return IWD_OK;
}

void iwd_provisioning_free(iwd_provisioning_t *out)
{
    char *owned[] = {out->ccid,    out->tenant_id,  out->name,   out->host,    out->database,  out->user, out->password,
                     out->tenant_key, out->dm_key, out->iwd_url, out->email_url, out->gws};

    for (size_t i = 0; i < sizeof(owned) / sizeof(owned[0]); i++)
        free(owned[i]);
    *out = (iwd_provisioning_t){0};
}

/* The validation proper, on a parsed document; out may be partly filled on failure. */
static int validate(json_t *doc, iwd_provisioning_t *out, char *err, size_t errlen)
{
    json_t *v;

    if (!json_is_object(doc))
        return fail(err, errlen, "the body must be a JSON object");
    if (string_at(doc, "tenant.ccid", true, IWD_CCID_MAX, false, &out->ccid, err, errlen) != IWD_OK ||
        string_at(doc, "tenant.id", true, IWD_NAME_MAX, false, &out->tenant_id, err, errlen) != IWD_OK ||
        string_at(doc, "iwd.db.host", true, IWD_DB_HOST_MAX, false, &out->host, err, errlen) != IWD_OK ||
        string_at(doc, "iwd.db.database", true, IWD_DB_IDENT_MAX, false, &out->database, err, errlen) != IWD_OK ||
        string_at(doc, "iwd.db.user", true, IWD_DB_IDENT_MAX, false, &out->user, err, errlen) != IWD_OK ||
        string_at(doc, "iwd.apiKeys.IWD_APIKEY_TENANT", true, IWD_API_KEY_MAX, false, &out->tenant_key, err,
                  errlen) != IWD_OK ||
        string_at(doc, "iwd.apiKeys.IWD_APIKEY_IWDDM", false, IWD_API_KEY_MAX, false, &out->dm_key, err,
                  errlen) != IWD_OK ||
        string_at(doc, "iwd.db.password", false, IWD_DB_PASSWORD_MAX, true, &out->password, err, errlen) != IWD_OK ||
        string_at(doc, "tenant.name", false, IWD_NAME_MAX, false, &out->name, err, errlen) != IWD_OK ||
        string_at(doc, "iwd.url", false, IWD_URL_MAX, false, &out->iwd_url, err, errlen) != IWD_OK ||
        string_at(doc, "iwdEmail.url", false, IWD_URL_MAX, false, &out->email_url, err, errlen) != IWD_OK)
        return IWD_ERR;
    if (!iwd_ccid_valid(out->ccid))
        return fail(err, errlen, "tenant.ccid must be 1 to %d of the characters A-Z a-z 0-9 . _ -", IWD_CCID_MAX);
    if (key_valid("iwd.apiKeys.IWD_APIKEY_TENANT", out->tenant_key, err, errlen) != IWD_OK ||
        (out->dm_key != NULL && key_valid("iwd.apiKeys.IWD_APIKEY_IWDDM", out->dm_key, err, errlen) != IWD_OK))
        return IWD_ERR;
    if (out->dm_key != NULL && strcmp(out->dm_key, out->tenant_key) == 0)
        return fail(err, errlen, "iwd.apiKeys.IWD_APIKEY_IWDDM must differ from IWD_APIKEY_TENANT");
    if (port_at(doc, &out->port, err, errlen) != IWD_OK)
        return IWD_ERR;
    if (hosts_valid(out->host, out->port, err, errlen) != IWD_OK)
        return IWD_ERR;
    if (lookup(doc, "iwd.db.ssl", &v, err, errlen) != IWD_OK)
        return IWD_ERR;
    if (v != NULL && !json_is_boolean(v))
        return fail(err, errlen, "iwd.db.ssl must be true or false");
    out->ssl = json_is_true(v);
    if (lookup(doc, "tenant.gws", &v, err, errlen) != IWD_OK)
        return IWD_ERR;
    if (v != NULL) {
        if (!json_is_object(v))
            return fail(err, errlen, "tenant.gws must be an object");
        if ((out->gws = json_dumps(v, JSON_COMPACT)) == NULL)
            return fail(err, errlen, "out of memory");
        if (strlen(out->gws) > IWD_GWS_MAX)
            return fail(err, errlen, "tenant.gws is larger than %d bytes", IWD_GWS_MAX);
    }
    return IWD_OK;
}

int iwd_provisioning_parse(const char *body, size_t len, iwd_provisioning_t *out, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *doc;
    int rc;

    *out = (iwd_provisioning_t){0};
    if (errlen > 0)
        err[0] = '\0';
    if (body == NULL || len == 0)
        return fail(err, errlen, "a JSON body is required");
    /* JSON_REJECT_DUPLICATES: two values of one member must not be read one way here and another elsewhere */
    if ((doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr)) == NULL)
        return fail(err, errlen, "malformed JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
    rc = validate(doc, out, err, errlen);
    json_decref(doc);
    if (rc != IWD_OK)
        iwd_provisioning_free(out);
    return rc;
}
