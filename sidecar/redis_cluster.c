/*
 * iwd-sidecar Redis Cluster arithmetic (redis_cluster.h), after the Redis Cluster specification: a key's
 * slot is CRC16-XMODEM(key or its hash tag) mod 16384; a node that does not serve a slot answers MOVED (the
 * slot has a new owner: the map is stale) or ASK (the slot is migrating: ask the target once, after ASKING).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iwd.h"
#include "redis_cluster.h"

/* CRC16-CCITT (XMODEM): polynomial 0x1021, initial value 0, no reflection. */
static uint16_t crc16(const unsigned char *p, size_t len)
{
    uint16_t crc = 0;

    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        for (int bit = 0; bit < 8; bit++)
            crc = (crc & 0x8000) != 0 ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

unsigned iwd_redis_key_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len), *close;

    if (open != NULL) {
        size_t rest = len - (size_t)(open - key) - 1;
        close = memchr(open + 1, '}', rest);
        if (close != NULL && close > open + 1)
            return crc16((const unsigned char *)open + 1, (size_t)(close - open - 1)) % IWD_REDIS_SLOTS;
    }
    return crc16((const unsigned char *)key, len) % IWD_REDIS_SLOTS;
}

/* A port from text: 1..65535 and nothing else; -1 otherwise. */
static int parse_port(const char *s, size_t n)
{
    int port = 0;

    if (n == 0 || n > 5)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        port = port * 10 + (s[i] - '0');
    }
    return port >= 1 && port <= 65535 ? port : -1;
}

int iwd_redis_parse_address(const char *text, const char *default_host, char host[IWD_REDIS_HOST_SIZE], int *port)
{
    const char *p = text, *end, *colon;
    size_t n;

    if (strncmp(p, "redis://", 8) == 0)
        p += 8;
    else if (strncmp(p, "rediss://", 9) == 0)
        p += 9;
    end = p + strlen(p);
    while (end > p && end[-1] == '/')
        end--;
    *port = 6379;
    if (*p == '[') { /* [v6 address]:port */
        const char *bracket = memchr(p, ']', (size_t)(end - p));
        if (bracket == NULL)
            return IWD_ERR;
        if (bracket + 1 < end) {
            if (bracket[1] != ':' || (*port = parse_port(bracket + 2, (size_t)(end - bracket - 2))) < 0)
                return IWD_ERR;
        }
        p++;
        n = (size_t)(bracket - p);
    } else {
        colon = memrchr(p, ':', (size_t)(end - p));
        if (colon != NULL && (*port = parse_port(colon + 1, (size_t)(end - colon - 1))) < 0)
            return IWD_ERR;
        n = colon != NULL ? (size_t)(colon - p) : (size_t)(end - p);
    }
    if (n == 0) {
        if (default_host == NULL)
            return IWD_ERR;
        p = default_host;
        n = strlen(default_host);
    }
    if (n == 0 || n >= IWD_REDIS_HOST_SIZE || memchr(p, '/', n) != NULL || memchr(p, ' ', n) != NULL)
        return IWD_ERR;
    memcpy(host, p, n);
    host[n] = '\0';
    return IWD_OK;
}

int iwd_redis_parse_redirect(const char *error, const char *asked_host, bool *ask, unsigned *slot,
                             char host[IWD_REDIS_HOST_SIZE], int *port)
{
    const char *p, *address;
    char *end;
    unsigned long n;

    if (strncmp(error, "MOVED ", 6) == 0) {
        *ask = false;
        p = error + 6;
    } else if (strncmp(error, "ASK ", 4) == 0) {
        *ask = true;
        p = error + 4;
    } else {
        return IWD_ERR;
    }
    if (*p < '0' || *p > '9')
        return IWD_ERR;
    n = strtoul(p, &end, 10);
    if (*end != ' ' || n >= IWD_REDIS_SLOTS)
        return IWD_ERR;
    address = end + 1;
    if (strchr(address, ' ') != NULL || iwd_redis_parse_address(address, asked_host, host, port) != IWD_OK)
        return IWD_ERR;
    *slot = (unsigned)n;
    return IWD_OK;
}

int iwd_redis_cluster_slots(const redisReply *reply, const char *asked_host, iwd_redis_range_fn each, void *arg)
{
    int ranges = 0;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY)
        return IWD_ERR;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *r = reply->element[i], *master;
        char host[IWD_REDIS_HOST_SIZE];
        const char *name;

        if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 || r->element[0]->type != REDIS_REPLY_INTEGER ||
            r->element[1]->type != REDIS_REPLY_INTEGER || r->element[2]->type != REDIS_REPLY_ARRAY)
            return IWD_ERR;
        master = r->element[2];
        if (r->element[0]->integer < 0 || r->element[1]->integer < r->element[0]->integer ||
            r->element[1]->integer >= IWD_REDIS_SLOTS || master->elements < 2 ||
            master->element[0]->type != REDIS_REPLY_STRING || master->element[1]->type != REDIS_REPLY_INTEGER ||
            master->element[1]->integer < 1 || master->element[1]->integer > 65535)
            return IWD_ERR;
        name = master->element[0]->str;
        if (strcmp(name, "?") == 0) /* the master's address is not known yet */
            continue;
        if (*name == '\0')
            name = asked_host;
        if (strlen(name) >= sizeof(host) || strchr(name, ' ') != NULL)
            return IWD_ERR;
        snprintf(host, sizeof(host), "%s", name);
        if (each(arg, (unsigned)r->element[0]->integer, (unsigned)r->element[1]->integer, host,
                 (int)master->element[1]->integer) != IWD_OK)
            return IWD_ERR;
        ranges++;
    }
    return ranges > 0 ? IWD_OK : IWD_ERR;
}
