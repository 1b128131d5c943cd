/*
 * libFuzzer target: what a Redis server sends, which the sidecar treats as untrusted. The bytes go through
 * hiredis's reply reader as redis_conn.c creates it (an array's element count bounded) and feeds it; every reply
 * is then read as a CLUSTER SLOTS slot map, as a MOVED/ASK redirection and as a node address (redis_cluster.c),
 * whose results must stay in range. The bytes are also a key: its slot is below 16384 and a key with a hash tag
 * has the tag's slot. CRC16 itself is checked against the XMODEM check value.
 */
#include <stdbool.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "fuzz.h"
#include "redis_cluster.h"
#include "redis_conn.h"

#define REPLIES_MAX 64

typedef struct {
    int ranges;
} walk_t;

static int each_range(void *arg, unsigned first, unsigned last, const char *host, int port)
{
    walk_t *w = arg;

    FUZZ_REQUIRE(first <= last && last < IWD_REDIS_SLOTS, "range %u-%u", first, last);
    FUZZ_REQUIRE(*host != '\0' && strlen(host) < IWD_REDIS_HOST_SIZE, "host of %zu bytes", strlen(host));
    FUZZ_REQUIRE(port >= 1 && port <= 65535, "port %d", port);
    w->ranges++;
    return IWD_OK;
}

static void check_text(const char *text)
{
    char host[IWD_REDIS_HOST_SIZE];
    unsigned slot;
    bool ask;
    int port;

    if (iwd_redis_parse_redirect(text, "seed.example", &ask, &slot, host, &port) == IWD_OK) {
        FUZZ_REQUIRE(slot < IWD_REDIS_SLOTS, "redirect to slot %u", slot);
        FUZZ_REQUIRE(*host != '\0' && port >= 1 && port <= 65535, "redirect to '%s' port %d", host, port);
    }
    if (iwd_redis_parse_address(text, NULL, host, &port) == IWD_OK)
        FUZZ_REQUIRE(*host != '\0' && strlen(host) < sizeof(host) && port >= 1 && port <= 65535, "address '%s' %d",
                     host, port);
}

static void check_reply(const redisReply *reply)
{
    walk_t w = {0};

    if (iwd_redis_cluster_slots(reply, "seed.example", each_range, &w) == IWD_OK)
        FUZZ_REQUIRE(w.ranges > 0, "a slot map accepted without a range");
    if ((reply->type == REDIS_REPLY_ERROR || reply->type == REDIS_REPLY_STATUS ||
         reply->type == REDIS_REPLY_STRING) && reply->str != NULL)
        check_text(reply->str);
}

static void check_key(const uint8_t *data, size_t size)
{
    char *key = fuzz_copy(data, size);
    unsigned slot = iwd_redis_key_slot(key, size);
    const char *open = memchr(key, '{', size), *close = NULL;

    FUZZ_REQUIRE(slot < IWD_REDIS_SLOTS, "slot %u", slot);
    if (open != NULL)
        close = memchr(open + 1, '}', size - (size_t)(open - key) - 1);
    if (close != NULL && close > open + 1)
        FUZZ_REQUIRE(slot == iwd_redis_key_slot(open + 1, (size_t)(close - open - 1)),
                     "a key's slot differs from its hash tag's");
    free(key);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool checked;
    redisReader *reader;
    char *bytes;

    if (!checked) {
        /* CRC16-XMODEM("123456789") = 0x31C3, the check value of the algorithm Redis Cluster uses */
        FUZZ_REQUIRE(iwd_redis_key_slot("123456789", 9) == 0x31C3 % IWD_REDIS_SLOTS, "CRC16 check value");
        FUZZ_REQUIRE(iwd_redis_key_slot("{user1000}.following", 21) == iwd_redis_key_slot("user1000", 8),
                     "hash tag");
        checked = true;
    }
    check_key(data, size);
    reader = iwd_redis_reader_create();
    bytes = fuzz_copy(data, size);
    if (reader == NULL || redisReaderFeed(reader, bytes, size) != REDIS_OK)
        abort();
    for (int i = 0; i < REPLIES_MAX; i++) {
        void *reply = NULL;

        if (redisReaderGetReply(reader, &reply) != REDIS_OK || reply == NULL)
            break;
        check_reply(reply);
        freeReplyObject(reply);
    }
    redisReaderFree(reader);
    free(bytes);
    return 0;
}
