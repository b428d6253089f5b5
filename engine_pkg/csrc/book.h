/* Supernoba order book: public C API (also the cffi cdef, see engine_pkg/_book_build.py).
 *
 * Everything outside this header is private to book.c.  The API has two doors:
 *   - sb_process(): JSON order commands in (SPEC section 2), JSON events out (SPEC section 3);
 *     the door the Python Engine uses.
 *   - sb_core_cmd(): an already-decoded binary command, events only counted; the door the
 *     C benchmark uses to time the book without JSON.
 */
#ifndef SUPERNOBA_BOOK_H
#define SUPERNOBA_BOOK_H

#include <stddef.h>
#include <stdint.h>

typedef struct sb_engine sb_engine;

/* Result of the last sb_process() call; the pointers stay valid until the next call. */
typedef struct {
    const char *fills;       /* fill events, each followed by '\n' */
    size_t fills_len;
    uint32_t n_fills;
    const char *statuses;    /* order-status events, each followed by '\n' */
    size_t statuses_len;
    uint32_t n_statuses;
    const char *users;       /* user_id of each status (JSON-escaped body), each followed by '\n' */
    size_t users_len;
    int users_escaped;       /* 1 if any user id in `users` contains a JSON escape */
    const char *kinds;       /* one byte per event in global order: 'f' fill, 's' status */
    size_t n_events;
    const uint64_t *touched; /* pairs (book index, last seq) of books that took a seq */
    uint32_t n_touched;
    const uint32_t *dropped; /* pairs (record index, why): 1 unreadable JSON, 2 ids unreadable */
    uint32_t n_dropped;
    uint32_t n_books;        /* books that exist now */
} sb_result;

/* A decoded command for sb_core_cmd (benchmarks). action: 0 ADD, 1 CANCEL, 2 REPLACE;
 * type: 0 LIMIT, 1 MARKET; tif: 0 GTC, 1 IOC, 2 FOK; has_price/has_qty for REPLACE. */
typedef struct {
    uint8_t action, is_buy, type, tif, has_price, has_qty;
    uint32_t book;
    const char *order_id;
    uint32_t order_id_len;
    const char *user_id;
    uint32_t user_id_len;
    uint64_t price, qty;
    int64_t t;
} sb_cmd;

sb_engine *sb_new(void);
void sb_free(sb_engine *e);

/* Process n records.  With lens == NULL the records are separated by one '\0' byte each;
 * otherwise lens[i] is the length of record i, laid end to end.  now = clock (ms) for
 * commands without a ts.  Returns 0, -1 when out of memory (engine state unchanged for
 * the record that failed; later records are not processed), or -2 (lens == NULL only) when
 * the buffer holds more than n - 1 separators: some record contains a NUL byte; nothing was
 * processed, call again with lens. */
int sb_process(sb_engine *e, const char *buf, size_t len, const uint32_t *lens, uint32_t n, int64_t now);
/* The same over n records given as pointers and lengths (read in place, nothing joined). */
int sb_process_vec(sb_engine *e, const char *const *recs, const size_t *lens, uint32_t n, int64_t now);
const sb_result *sb_last(sb_engine *e);

/* Event output straight into memory the caller owns (the CPython glue writes each batch's
 * events into the bytes objects Python receives, instead of copying the engine's buffers
 * after the batch).  sb_out_set(e, k, buf, cap, grow, ctx): output k (0 fills, 1 statuses,
 * 2 status users, 3 event kinds) of the next batch goes to buf[0..cap); when it needs more
 * room, grow(ctx, k, newcap) returns a buffer of at least newcap bytes that holds the bytes
 * written so far, or NULL (out of memory: the batch stops and returns -1).  A NULL grow or
 * a k out of range is ignored.  sb_out_reset(e) goes back to the engine's own buffers: call it
 * after the batch; sb_last()'s lengths stay right, its four output pointers must not be read. */
typedef char *(*sb_out_grow)(void *ctx, int k, size_t newcap);
void sb_out_set(sb_engine *e, int k, char *buf, size_t cap, sb_out_grow grow, void *ctx);
void sb_out_reset(sb_engine *e);

/* The mappings freed engines left for the next ones (book.c's map_cache, at most 256 MiB):
 * sb_cache_bytes() how many bytes it holds, sb_cache_trim() unmaps them. */
size_t sb_cache_bytes(void);
void sb_cache_trim(void);

/* The JSON reader's fast path for the router's canonical key order (on by default; off sends
 * every record through the general reader -- the results are identical, tests compare them).
 * sb_json_check parses one record both ways: 1 the fast path took it and read exactly what the
 * general reader reads, 0 the fast path declined it, -1 they differ (a bug), -2 out of memory. */
void sb_set_json_fast(sb_engine *e, int on);
/* A second thread that parses the records of a batch ahead of matching them, for batches of at
 * least min_batch records (0, the default: never; the thread is started by the first such
 * batch and stopped by 0 or sb_free).  The events are identical either way. */
void sb_set_parse_thread(sb_engine *e, uint32_t min_batch);
int sb_json_check(const char *buf, size_t len);
uint64_t sb_dropped_total(sb_engine *e);

/* Active symbols: restrict = 0 treats every valid symbol as active (the default and replay). */
void sb_active_clear(sb_engine *e, int restrict_active);
int sb_active_add(sb_engine *e, const char *sym, uint32_t len);

/* Books: index by symbol (-1 if none), symbol and seq of a book, depth of one side
 * (side 0 bids high->low, 1 asks low->high) as pairs (price, total) into out[2*levels]. */
int64_t sb_book_find(sb_engine *e, const char *sym, uint32_t len);
int64_t sb_book_get(sb_engine *e, const char *sym, uint32_t len); /* creates it; -1 bad symbol */
uint32_t sb_book_count(sb_engine *e);
const char *sb_book_symbol(sb_engine *e, uint32_t book, uint32_t *len);
uint64_t sb_book_seq(sb_engine *e, uint32_t book);
uint32_t sb_depth(sb_engine *e, uint32_t book, int side, uint32_t levels, uint64_t *out);
uint64_t sb_open_orders(sb_engine *e);

/* Snapshot into an engine-owned buffer (valid until the next call); restore into a fresh
 * engine.  sb_restore returns 0, or -1 for a malformed or truncated snapshot. */
int sb_snapshot(sb_engine *e, const char **out, size_t *len);
int sb_restore(sb_engine *e, const char *buf, size_t len);

/* Handle door (the book core alone, benchmarks): orders are dense handles minted by the pool
 * (index | generation << 32), users interned indices (sb_user), no string ids and no duplicate
 * check; events are counted, not written (sb_set_emit(e, 0) first).  sb_hcore_cmd returns the
 * order's handle while it rests in the book, SB_HNONE when it does not (filled, expired,
 * cancelled, rejected), SB_HERR on misuse or out of memory.  A stale handle (the order left)
 * is UNKNOWN_ORDER. */
typedef struct {
    uint8_t action, is_buy, type, tif, has_price, has_qty;
    uint32_t book, user;
    uint64_t handle; /* CANCEL / REPLACE */
    uint64_t price, qty;
} sb_hcmd;
#define SB_HNONE 0xFFFFFFFFFFFFFFFFULL
#define SB_HERR 0xFFFFFFFFFFFFFFFEULL
uint32_t sb_user(sb_engine *e, const char *uid, uint32_t len);
uint64_t sb_hcore_cmd(sb_engine *e, const sb_hcmd *c);
/* Look-ahead hint for a later CANCEL/REPLACE (any handle value is harmless): stage 0 prefetches
 * the order the handle names, stage 1 (issued later, when the order is in cache) its FIFO
 * neighbours, which unlinking it writes. */
void sb_hprefetch(const sb_engine *e, uint64_t handle, int stage);

/* String-id binary door for benchmarks: the id layer + core, events counted, not written. */
void sb_set_emit(sb_engine *e, int emit_json);
int sb_core_cmd(sb_engine *e, const sb_cmd *c);
int sb_core_batch(sb_engine *e, const sb_cmd *cmds, uint32_t n); /* with software prefetch */
uint64_t sb_event_count(sb_engine *e);

#endif
