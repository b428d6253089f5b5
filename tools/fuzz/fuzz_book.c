/* libFuzzer target for the Supernoba C order book (make fuzz; built with ASan + UBSan).
 *
 * The input is split on '\n' into order-command records and fed to sb_process in one batch
 * (malformed JSON of every kind, plus valid commands that mutate into each other); then the
 * engine is snapshotted, restored into a fresh engine, and both must snapshot identically;
 * finally the raw input is also offered to sb_restore as a (usually malformed) snapshot.
 * The batch also runs in a second engine whose outputs go to caller-owned buffers (sb_out_set,
 * as the CPython glue does with bytes objects) that start at one byte and grow to exactly the
 * size asked, and whose records are parsed by its parse thread (sb_set_parse_thread, every
 * batch): its events must be byte-identical, and ASan sees any write past a buffer.
 * Crashes, leaks and undefined behaviour are reported by the sanitizers.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "book.h"

static char *grow_exact(void *ctx, int k, size_t newcap) {
    char **bufs = ctx;
    char *q = realloc(bufs[k], newcap);
    if (q) bufs[k] = q;
    return q;
}

/* The batch through caller-owned outputs and the parse thread in a fresh engine: the same bytes
 * as r, or abort. */
static void check_caller_outputs(const char *flat, size_t m, const uint32_t *lens, uint32_t n, const sb_result *r) {
    sb_engine *h = sb_new();
    sb_set_parse_thread(h, 1);
    char *bufs[4] = {malloc(1), malloc(1), malloc(1), malloc(1)};
    for (int k = 0; k < 4; k++) sb_out_set(h, k, bufs[k], 1, grow_exact, bufs);
    int rc = sb_process(h, flat, m, lens, n, 42);
    const sb_result *q = sb_last(h);
    size_t len[4] = {q->fills_len, q->statuses_len, q->users_len, q->n_events};
    sb_out_reset(h);
    if (rc == 0) {
        const char *want[4] = {r->fills, r->statuses, r->users, r->kinds};
        size_t wlen[4] = {r->fills_len, r->statuses_len, r->users_len, r->n_events};
        for (int k = 0; k < 4; k++)
            if (len[k] != wlen[k] || (len[k] && memcmp(bufs[k], want[k], len[k]) != 0)) abort();
    }
    for (int k = 0; k < 4; k++) free(bufs[k]);
    sb_free(h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sb_engine *e = sb_new();
    if (!e) return 0;
    /* records: split on '\n', joined with '\0' for the NUL-separated door */
    uint32_t n = 1;
    for (size_t i = 0; i < size; i++) n += data[i] == '\n';
    uint32_t *lens = malloc(n * sizeof *lens);
    uint32_t k = 0, start = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i == size || data[i] == '\n') {
            lens[k++] = (uint32_t)(i - start);
            start = (uint32_t)i + 1;
        }
    }
    char *flat = malloc(size + 1);
    size_t m = 0;
    for (size_t i = 0; i < size; i++)
        if (data[i] != '\n') flat[m++] = (char)data[i];
    /* differential: the JSON reader's fast path must read each record exactly as the general one */
    for (uint32_t i = 0, off = 0; i < n; off += lens[i++])
        if (sb_json_check(flat + off, lens[i]) == -1) abort();
    sb_process(e, flat, m, lens, n, 42);
    const sb_result *r = sb_last(e);
    /* touch every output byte so ASan checks the ranges */
    volatile unsigned acc = 0;
    for (size_t i = 0; i < r->fills_len; i++) acc += (unsigned char)r->fills[i];
    for (size_t i = 0; i < r->statuses_len; i++) acc += (unsigned char)r->statuses[i];
    for (size_t i = 0; i < r->users_len; i++) acc += (unsigned char)r->users[i];
    check_caller_outputs(flat, m, lens, n, r);
    uint64_t depth[2 * 16];
    for (uint32_t b = 0; b < sb_book_count(e); b++) {
        sb_depth(e, b, 0, 16, depth);
        sb_depth(e, b, 1, 16, depth);
    }
    /* the same records once more through the NUL-separated door */
    sb_process(e, flat, m, NULL, 1, 43);

    const char *snap;
    size_t slen;
    if (sb_snapshot(e, &snap, &slen) == 0) {
        char *copy = malloc(slen);
        memcpy(copy, snap, slen);
        sb_engine *f = sb_new();
        if (sb_restore(f, copy, slen) != 0) abort(); /* a snapshot must always restore */
        const char *snap2;
        size_t slen2;
        if (sb_snapshot(f, &snap2, &slen2) != 0 || slen2 != slen || memcmp(copy, snap2, slen) != 0) abort();
        sb_free(f);
        free(copy);
    }
    sb_engine *g = sb_new();
    sb_restore(g, (const char *)data, size);
    sb_free(g);
    sb_free(e);
    free(flat);
    free(lens);
    (void)acc;
    return 0;
}
