/* ThreadSanitizer driver for the parse thread of the C order book (csrc/book.c).
 *
 * Built with gcc -fsanitize=thread by tests/engine_pkg/test_parse_thread.py.  Batches of 1 to
 * 700 pseudo-random records (ADD, CANCEL, REPLACE over three symbols, escaped ids, unreadable
 * records) run through two engines, one parsing inline and one with its parse thread on every
 * batch; their events must be byte-identical.  Pauses between some batches let the thread go to
 * sleep and be woken; the thread is switched off and on again midway.  TSan reports any data
 * race; the exit code is 0 only for a clean, identical run ("ok" on stdout).
 */
#define _DEFAULT_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "book.h"

static uint64_t rng = 88172645463325252ULL;
static uint64_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Writes record text at p; returns its length. */
static int record(char *p) {
    uint64_t r = rnd();
    int sym = (int)(r >> 40) % 3, k = (int)(r % 10);
    unsigned id = (unsigned)((r >> 20) % 5000), user = id % 17;
    if (k < 6)
        return sprintf(p, "{\"action\":\"ADD\",\"symbol\":\"S%d\",\"order_id\":\"o%u\",\"user_id\":\"u%u\","
                          "\"is_buy\":%s,\"price\":%u,\"quantity\":%u}",
                       sym, id, user, (r >> 8) & 1 ? "true" : "false", 100 + (unsigned)((r >> 30) % 9),
                       1 + (unsigned)((r >> 12) % 9));
    if (k < 8)
        return sprintf(p, "{\"action\":\"CANCEL\",\"symbol\":\"S%d\",\"order_id\":\"o%u\",\"user_id\":\"u%u\"}", sym,
                       id, user);
    if (k < 9)
        return sprintf(p, "{\"symbol\":\"S%d\",\"action\":\"REPLACE\",\"order_id\":\"o%u\",\"user_id\":\"u%u\","
                          "\"quantity\":3}",
                       sym, id, user);
    return sprintf(p, (r >> 9) & 1 ? "{\"action\":\"ADD\",\"order_id\":\"x\\u00e9%u\"" : "{\"action\":\"ADD\",\"symbol\":\"S1\",\"order_id\":\"q\\\"%u\",\"user_id\":\"w\\\\\",\"is_buy\":true,\"price\":104,\"quantity\":1}", id);
}

static int same(const char *a, size_t na, const char *b, size_t nb) { return na == nb && memcmp(a, b, na) == 0; }

int main(void) {
    sb_engine *one = sb_new(), *two = sb_new();
    char *buf = malloc(1 << 20);
    uint32_t *lens = malloc(700 * sizeof *lens);
    if (!one || !two || !buf || !lens) return 2;
    sb_set_parse_thread(two, 1);
    for (int round = 0; round < 300; round++) {
        size_t pos = 0;
        uint32_t n = (uint32_t)(round * 37) % 700 + 1;
        for (uint32_t i = 0; i < n; i++) {
            lens[i] = (uint32_t)record(buf + pos);
            pos += lens[i];
        }
        if (sb_process(one, buf, pos, lens, n, 1) != 0 || sb_process(two, buf, pos, lens, n, 1) != 0) {
            printf("out of memory at batch %d\n", round);
            return 1;
        }
        const sb_result *a = sb_last(one), *b = sb_last(two);
        if (!same(a->fills, a->fills_len, b->fills, b->fills_len) ||
            !same(a->statuses, a->statuses_len, b->statuses, b->statuses_len) ||
            !same(a->users, a->users_len, b->users, b->users_len) || a->n_dropped != b->n_dropped) {
            printf("events differ at batch %d\n", round);
            return 1;
        }
        if (round % 50 == 49) { /* past the thread's spin: it sleeps and must be woken */
            struct timespec t = {0, 2000000};
            nanosleep(&t, NULL);
        }
        if (round == 150) sb_set_parse_thread(two, 0);
        if (round == 170) sb_set_parse_thread(two, 1);
    }
    sb_free(one);
    sb_free(two);
    free(buf);
    free(lens);
    puts("ok");
    return 0;
}
