/* Supernoba matching engine core.
 *
 * In the spirit of the QuantCup-winning "voyager" book: flat arrays, intrusive FIFO lists,
 * a preallocated order pool, no allocation per order on the hot path, and every bad input
 * turned into a reason code, never a crash.
 *
 * DATA STRUCTURES
 *   Order pool   Fixed chunks of 65,536 Orders (64 bytes: one cache line) behind a small chunk directory,
 *                addressed by 32-bit index, free list threaded through `next`.  A chunk is
 *                never moved or reallocated (no copy stall when the pool grows); a slot's
 *                `gen` is bumped when it is freed, so a handle (index | gen << 32) of an order
 *                that left the book no longer matches.
 *   Levels       Prices go up to 10^12, so a price-indexed array (voyager's) is impossible.
 *                Each side of a book is a sorted array of Level {key, price, total, head,
 *                tail, count}, ordered worst -> best, so the best level is the LAST element:
 *                the matching loop only looks at lv[n-1] and pops a consumed level with n--.
 *                key = price for bids and UINT64_MAX - price for asks, so both sides sort
 *                ascending.  Finding a level scans the best 8 from the top, then binary-searches; inserting or removing a level
 *                moves only the levels better than it, which near the top of a dense book is a
 *                handful of 40-byte entries (the classic cost of a sorted array is paid by
 *                far-from-top levels only).
 *   FIFO         Orders at one level form an intrusive doubly linked list (prev/next indices),
 *                oldest at head: price-time priority.  Level totals are unsigned 64-bit.
 *   Strings      Order ids, user ids and symbols are interned in append-only arenas made of
 *                fixed 256 KiB chunks ([len][flags][value][bytes], 8-byte aligned, entries
 *                never move; from the ninth chunk on they come 8 at a time from one 2 MiB
 *                huge-page mapping, so a CANCEL's random read of an old id's entry costs no
 *                TLB page walk) with open-addressing hash tables of 8-byte slots (hash, arena
 *                offset; linear probing, load <= 1/2).  What a string maps to (the id's open
 *                order, a user's or symbol's index) is the value in its arena entry, so the
 *                table stays small and closing a filled order writes the entry its fill event
 *                has just read instead of probing the table.  A table grows
 *                incrementally: a 4x bigger table takes new entries while the old one is
 *                migrated 8 slots per insert (lookups try both), so no insert pays a full
 *                rehash; growing 4x, not 2x, moves a third as many slots over a table's
 *                life.  Orders refer to users by index, so self-trade and owner checks
 *                are integer compares.  The id table maps every id of an ADD that passed
 *                validation to its open order, or to NONE once the order is closed; ids are
 *                never forgotten (duplicate detection, kept in snapshots).
 *   Layers       The book core (core_add / core_cancel / core_replace) works on pool indices
 *                and user indices only; the id layer (do_add / find_own) owns the string ids
 *                (duplicate check, id -> index).  sb_hcore_cmd drives the core alone with
 *                handles, as voyager's benchmark drives its book; sb_process and sb_core_cmd
 *                go through the id layer.
 *
 * INVARIANTS (checked by the property tests through the Python API)
 *   - a book is never crossed after a command: best bid < best ask;
 *   - level.total == sum of the remaining quantities of its orders; no level is empty;
 *   - an id-table entry points to an open order iff that order rests in its book;
 *   - per book, seq increases by exactly one per command with a valid symbol and per fill.
 *
 * CANCEL SEMANTICS
 *   CANCEL unlinks the order from its level (O(1) after the level's binary search), removes
 *   the level if it became empty, marks the id closed (it stays remembered), and returns the
 *   order to the free list.  A cancel of a filled/cancelled/expired/unknown order, or of an
 *   order of another symbol, is UNKNOWN_ORDER; of another user's order NOT_OWNER.  REPLACE
 *   keeps priority only for the same price and a size that does not grow; otherwise the order
 *   leaves its level, may trade as a taker, and rests at the back of its new level.
 *
 * THREADS
 *   An engine is used by one thread at a time.  With sb_set_parse_thread, batches of at least
 *   min_batch records are parsed by a second thread of the engine's own while the calling thread
 *   matches them (see "the parse thread" below): parsing reads only the records, so the two share
 *   nothing but each record's Parsed slot and a claim counter, and the events are identical.
 *   The mappings of freed engines (map_cache) are shared by every engine under a mutex.
 *
 * EVENTS
 *   sb_process parses each JSON command with the fast reader for the router's canonical key
 *   order (jp_fast), or, when it declines, the strict general reader of sb_json.h (both read
 *   identically: sb_json_check, tests, fuzzer), and writes the
 *   events of SPEC section 3 / 3a as JSON into growable output buffers (grown before each
 *   event, amortised).  sb_core_cmd runs the same matching code with event writing disabled.
 */
#define _GNU_SOURCE /* mmap's MAP_ANONYMOUS, madvise, pthread_setname_np */
#include "book.h"

#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <pthread.h>
#include <sys/mman.h>
#endif
#include <signal.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "sb_json.h"

#define NONE 0xFFFFFFFFu
#define MAXQ 1000000000000ULL /* 10^12: largest price and quantity */
#define TS_LIMIT (1ULL << 53)
#define MAX_ID 64
#define MAX_SYM 16
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Every prefetch goes through this.  GCC's IPA marks a helper whose only effect is
 * __builtin_prefetch as pure and deletes calls to it whose result is unused: the pipeline's
 * stage-2/3 prefetches (pipe_prefetch2/3) silently compiled to nothing until the empty volatile
 * asm made each prefetch an effect it must keep. */
static inline void prefetch(const void *p) {
    __builtin_prefetch(p);
    __asm__ volatile("" : : "r"(p));
}
static inline void prefetch_w(const void *p) { /* for a line about to be written */
    __builtin_prefetch(p, 1);
    __asm__ volatile("" : : "r"(p));
}

enum { BUY = 0, SELL = 1 };
enum { A_ADD = 0, A_CANCEL = 1, A_REPLACE = 2 };
enum { T_GTC = 0, T_IOC = 1, T_FOK = 2 };
enum { ST_ACCEPTED, ST_REJECTED, ST_PARTIAL, ST_FILLED, ST_CANCELLED, ST_REPLACED, ST_EXPIRED };
enum {
    R_NONE,
    R_UNKNOWN_SYMBOL,
    R_BAD_ORDER,
    R_DUPLICATE,
    R_UNKNOWN_ORDER,
    R_NOT_OWNER,
    R_NO_LIQUIDITY,
    R_SELF_TRADE,
    R_FOK_UNFILLABLE
};

/* Padded to a fixed width so the event writer copies them with one fixed-size move. */
static const char ST_NAME[][16] = {"ACCEPTED", "REJECTED", "PARTIALLY_FILLED", "FILLED",
                                   "CANCELLED", "REPLACED", "EXPIRED"};
static const char R_NAME[][24] = {"", "UNKNOWN_SYMBOL", "BAD_ORDER", "DUPLICATE_ORDER_ID", "UNKNOWN_ORDER",
                                  "NOT_OWNER", "NO_LIQUIDITY", "SELF_TRADE", "FOK_UNFILLABLE"};
static const uint8_t ST_LEN[] = {8, 8, 16, 6, 9, 8, 7};
static const uint8_t R_LEN[] = {0, 14, 9, 18, 13, 9, 12, 10, 14};

/* ---- basic containers ------------------------------------------------------------------- */

typedef struct {
    uint64_t price, rem, filled;
    uint64_t id_off; /* offset of the id in the id arena; 0 = no id (handle-only core door) */
    uint32_t prev, next;
    uint32_t user;
    uint32_t book : 31, side : 1;
    uint32_t gen; /* bumped when the slot is freed: stale handles no longer match */
} __attribute__((aligned(64))) Order;
/* One cache line an order: at 56 bytes six orders in eight straddled two lines, so the one-line
 * prefetch of a CANCEL's order often missed the fields it reads.  Free in memory: a pool chunk
 * is rounded up to whole 2 MiB huge pages (3.5 -> 4 MiB) either way. */
_Static_assert(sizeof(Order) == 64, "an Order is one cache line");

#define OCH_BITS 16 /* order pool chunk: 65,536 orders (4 MiB), never moved once allocated */
#define OCH (1u << OCH_BITS)
#define ACH_BITS 18 /* string arena chunk: 256 KiB */
#define ACH (1u << ACH_BITS)

typedef struct {
    uint64_t key, price, total;
    uint32_t head, tail, count, pad;
} Level;

typedef struct {
    Level *lv;
    uint32_t n, cap;
} Side;

typedef struct {
    char sym[MAX_SYM + 1];
    uint8_t symlen;
    uint32_t touch_gen;
    uint64_t seq;
    Side side[2];
} Book;

/* A hash-table slot: 8 bytes (the id table is the engine's largest random-access structure;
 * half the old 16-byte slot halves its page zeroing as it doubles and its cache misses).  The
 * value a string maps to lives in its arena entry, not here. */
typedef struct {
    uint32_t hash;
    uint32_t off; /* arena offset >> 3 (entries are 8-byte aligned); 0 = empty */
} Slot;

/* Append-only string arena in fixed chunks: entries never move.  off = chunk << ACH_BITS | pos;
 * offset 0 is reserved ("empty slot"); a zero length byte ends a chunk's entries.  An entry is
 * [len u8][esc u8][2 unused][val u32][bytes], padded to 8 bytes: val is what the string maps to
 * (the id table's open order, a user's or symbol's index), so closing an order writes the entry
 * its fill event has just read instead of probing the table.  32-bit slot offsets in 8-byte
 * units address 32 GiB of arena per table (more is reported as out of memory). */
#define AR_HDR 8
#define AR_MAXCH (1u << (35 - ACH_BITS))
#define AR_SLAB 8 /* chunks per 2 MiB mapping from the ninth chunk on (the first 8 are calloc'ed) */
typedef struct {
    uint8_t **ch;
    uint32_t nch, chcap;
    uint32_t pos; /* fill of the last chunk */
} Arena;

/* Open addressing, linear probing, load <= 1/2.  Growth is incremental: the new table
 * (ST_GROW times the size) takes every insert while the old one is migrated a few slots per
 * insert; lookups try the new table, then the old one.  Growing 4x rather than 2x: a table
 * filled from empty moves a third as many slots (1/4 + 1/16 + ... of its size, not 1/2 + 1/4
 * + ...), spends a twelfth instead of a quarter of its inserts with an old table that every
 * missed lookup also probes, and runs at load 1/8..1/2 instead of 1/4..1/2 (shorter probes).
 * Engine.process on the 1M-order workloads: +5-10% (docs/benchmarks.md, eighth session); the
 * price is up to twice the slots, e.g. 32 MiB instead of 16 MiB for 1M ids. */
#define ST_GROW 4
typedef struct {
    Slot *s;
    uint32_t mask, n;
    Slot *old; /* table being migrated, or NULL */
    uint32_t omask, mpos;
    Arena a;
} StrTab;

typedef struct {
    char *b;
    size_t n, cap;
    sb_out_grow grow; /* NULL: the engine's own realloc'ed memory; else the caller's (sb_out_set) */
    void *ctx;
    int k;
} Buf;

/* One record of the batch being processed: where it is, and where its decoded strings go in
 * the scratch buffer (its offset in the batch + 16 bytes per earlier record). */
typedef struct {
    const char *p;
    size_t n, soff;
} BatchRec;

typedef struct Parsed Parsed;
typedef struct ParseWorker ParseWorker;
static void pw_stop(ParseWorker *w);

struct sb_engine {
    Order **ochunk; /* order pool: chunk directory */
    uint32_t nochunk, ochcap, ofree, onext;
    uint64_t open;
    StrTab ids, users, syms, active;
    int restrict_active;
    uint32_t sym_last1; /* 1 + book index of the last symbol seen active in sb_process, 0 = none */
    uint32_t *ucount; /* resting orders per user index */
    uint64_t *uoff;   /* arena offset of each user's id string */
    uint32_t ucap, uocap;
    Book *books;
    uint32_t nbooks, bcap;
    uint32_t gen;
    /* output of the current batch */
    Buf fills, stats, uids, kinds, snap;
    Buf own[4]; /* the engine's own output buffers while the caller's are in use (sb_out_set) */
    uint32_t nf, ns;
    int uesc;
    int64_t tc_v;    /* the last event time written, and its digits (tc_n = 0: none yet) */
    char tc_s[32];
    uint32_t tc_n;
    uint64_t *touched;
    uint32_t ntouched, tcap;
    uint32_t *dropped;
    uint32_t ndropped, dcap;
    uint64_t dropped_total;
    sb_result res;
    char *scratch;
    size_t scap;
    BatchRec *rec; /* the records of the current batch */
    uint32_t rcap;
    int emit;
    int json_slow; /* 1: every record through the general reader (tests compare both paths) */
    uint64_t events;
    int oom;
    uint32_t par_min;   /* batches of at least this many records (0: none) use the parse thread */
    ParseWorker *pw;    /* that thread, started by the first batch that uses it */
    Parsed *pa;         /* the batch's parsed records when it runs (one per record) */
    uint32_t pacap;
    uint64_t pbatch;    /* the last batch number given to the parse thread: the engine's, not the
                         * thread's, so that a new thread (after a fork, or off and on again)
                         * never takes an old slot's `ready` for one of its own batches */
};

static inline uint64_t rd64(const void *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint32_t rd32(const void *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* wyhash-style mixing; short keys read with overlapping loads, no byte loop. */
static inline uint32_t hash_bytes(const char *p, uint32_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ n;
    while (n > 8) {
        h = (h ^ rd64(p)) * 0xbf58476d1ce4e5b9ULL;
        h ^= h >> 31;
        p += 8;
        n -= 8;
    }
    uint64_t t;
    if (n >= 4) t = ((uint64_t)rd32(p) << 32) | rd32(p + n - 4);
    else if (n) t = ((uint64_t)(unsigned char)p[0] << 16) | ((uint64_t)(unsigned char)p[n >> 1] << 8) | (unsigned char)p[n - 1];
    else t = 0;
    h = (h ^ t) * 0x94d049bb133111ebULL;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 32;
    return (uint32_t)h;
}

/* Memory for the big arrays (id-table slots, order-pool chunks, big arenas' slabs), zeroed
 * unless the caller writes every byte it reads (order-pool chunks).  From 2 MiB up it is a
 * 2 MiB-aligned anonymous mapping, advised for transparent huge pages where `huge` asks: one
 * TLB entry per 2 MiB instead of per 4 KiB, so a random probe into a 32 MiB table costs a cache
 * miss but no page walk.  Pages are still faulted in lazily (no up-front zeroing stall).  The
 * order pool, allocated front to back, is not advised: with the kernel's THP defrag at
 * "madvise" a huge-page fault compacts memory synchronously when no free 2 MiB page is at hand,
 * and the pool was the largest advised region, so a fresh engine ran at 3 M orders/s in those
 * minutes and at 5 M/s otherwise; without its advice, 4.8-5.1 M/s in the same minutes.
 *
 * The mappings of a freed engine are kept for the next one (map_cache: process-wide, at most
 * MAP_CACHE_MAX bytes, reused at the exact same size, LIFO): a process that makes engine after
 * engine (replays, tests, restores, a benchmark's warm run) gets memory that is already faulted
 * in, as malloc hands a freed block back, instead of the kernel faulting and zeroing it again
 * (an order-pool chunk needs no zeroing at all).  A table an engine outgrows is unmapped at
 * once: nothing of a living engine's is kept.  sb_cache_trim() unmaps the cache.  A mutex
 * guards it: cffi calls C without the GIL, so engines in two threads may free and grow at once. */
#define HUGE_SZ ((size_t)2 << 20)
#if defined(__linux__) && defined(MADV_HUGEPAGE)
#define MAP_CACHE_MAX ((size_t)256 << 20)
#define MAP_CACHE_N 256
static struct {
    pthread_mutex_t mu;
    void *p[MAP_CACHE_N];
    size_t len[MAP_CACHE_N]; /* the mapping's size (a multiple of 2 MiB), | 1 if huge-page advised */
    int n;
    size_t bytes;
} map_cache = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void *map_cache_take(size_t len) {
    void *r = NULL;
    pthread_mutex_lock(&map_cache.mu);
    for (int i = map_cache.n - 1; i >= 0; i--) {
        if (map_cache.len[i] != len) continue;
        r = map_cache.p[i];
        map_cache.n--;
        map_cache.p[i] = map_cache.p[map_cache.n];
        map_cache.len[i] = map_cache.len[map_cache.n];
        map_cache.bytes -= len & ~(size_t)1;
        break;
    }
    pthread_mutex_unlock(&map_cache.mu);
    return r;
}

static int map_cache_put(void *p, size_t len) {
    int kept = 0;
    pthread_mutex_lock(&map_cache.mu);
    if (map_cache.n < MAP_CACHE_N && map_cache.bytes + (len & ~(size_t)1) <= MAP_CACHE_MAX) {
        map_cache.p[map_cache.n] = p;
        map_cache.len[map_cache.n++] = len;
        map_cache.bytes += len & ~(size_t)1;
        kept = 1;
    }
    pthread_mutex_unlock(&map_cache.mu);
    return kept;
}
#endif

size_t sb_cache_bytes(void) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    pthread_mutex_lock(&map_cache.mu);
    size_t b = map_cache.bytes;
    pthread_mutex_unlock(&map_cache.mu);
    return b;
#else
    return 0;
#endif
}

void sb_cache_trim(void) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    pthread_mutex_lock(&map_cache.mu);
    for (int i = 0; i < map_cache.n; i++) munmap(map_cache.p[i], map_cache.len[i] & ~(size_t)1);
    map_cache.n = 0;
    map_cache.bytes = 0;
    pthread_mutex_unlock(&map_cache.mu);
#endif
}

static void *big_alloc(size_t n, int zero, int huge) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (n >= HUGE_SZ) {
        size_t len = (n + HUGE_SZ - 1) & ~(HUGE_SZ - 1);
        void *r = map_cache_take(len | (size_t)(huge != 0)); /* keyed by size and advice */
        if (r) {
            if (zero) memset(r, 0, len);
            return r;
        }
        char *p = mmap(NULL, len + HUGE_SZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return NULL;
        char *a = (char *)(((uintptr_t)p + HUGE_SZ - 1) & ~(uintptr_t)(HUGE_SZ - 1));
        if (a > p) munmap(p, (size_t)(a - p));
        if (a + len < p + len + HUGE_SZ) munmap(a + len, (size_t)(p + len + HUGE_SZ - (a + len)));
        if (huge) madvise(a, len, MADV_HUGEPAGE);
#ifdef MADV_POPULATE_WRITE
        /* Fault the mapping in now, writable.  Otherwise a first read (a table probe, a prefetch
         * stage's check) maps the zero page and the first write replaces it: a second fault and a
         * TLB flush, which in a process with a second running thread (the parse thread) is an
         * IPI to its CPU -- that made fresh engines ~40% slower.  Kernels before 5.14 refuse it
         * (EINVAL): the pages then fault in as they are touched, as before. */
        madvise(a, len, MADV_POPULATE_WRITE);
#endif
        return a;
    }
#endif
    return zero ? calloc(1, n) : malloc(n);
}

static void *big_zalloc(size_t n) { return big_alloc(n, 1, 1); }

/* keep: the engine is being freed, its mapping may go to map_cache for the next engine;
 * huge: as it was allocated. */
static void big_free(void *p, size_t n, int keep, int huge) {
    if (!p) return;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (n >= HUGE_SZ) {
        size_t len = (n + HUGE_SZ - 1) & ~(HUGE_SZ - 1);
        if (!keep || !map_cache_put(p, len | (size_t)(huge != 0))) munmap(p, len);
        return;
    }
#endif
    free(p);
}

static int grow(void **p, size_t elem, uint32_t *cap, uint64_t need) {
    if (need <= *cap) return 0;
    uint64_t nc = *cap ? *cap : 16;
    while (nc < need) nc *= 2;
    if (nc > 0xFFFFFFF0ULL) return -1;
    void *q = realloc(*p, (size_t)(nc * elem));
    if (!q) return -1;
    *p = q;
    *cap = (uint32_t)nc;
    return 0;
}

static int buf_reserve(Buf *b, size_t extra) {
    if (LIKELY(b->n + extra <= b->cap)) return 0;
    size_t nc = b->cap ? b->cap : 4096;
    while (nc < b->n + extra) nc *= 2;
    char *q = b->grow ? b->grow(b->ctx, b->k, nc) : realloc(b->b, nc);
    if (!q) return -1;
    b->b = q;
    b->cap = nc;
    return 0;
}

static inline Order *ORD(const sb_engine *e, uint32_t i) { return &e->ochunk[i >> OCH_BITS][i & (OCH - 1)]; }

/* ---- string tables ---------------------------------------------------------------------- */

static inline uint8_t *ar_at(const Arena *a, uint64_t off) { return a->ch[off >> ACH_BITS] + (off & (ACH - 1)); }

/* Room for an entry of `bytes`; returns its offset or 0 (OOM).  Entries never straddle chunks. */
static uint64_t ar_alloc(Arena *a, uint32_t bytes) {
    bytes = (bytes + 7) & ~7u;
    if (UNLIKELY(!a->nch || a->pos + bytes > ACH)) {
        if (a->nch == AR_MAXCH) return 0;
        if (a->nch == a->chcap) {
            uint32_t nc = a->chcap ? a->chcap * 2 : 8;
            uint8_t **q = realloc(a->ch, nc * sizeof *q);
            if (!q) return 0;
            a->ch = q;
            a->chcap = nc;
        }
        /* zeroed: a zero length byte ends the chunk's entries.  A big arena's chunks come
         * AR_SLAB at a time from one 2 MiB huge-page mapping: one page fault instead of 512. */
        uint8_t *c;
        if (a->nch < AR_SLAB) {
            c = calloc(1, ACH);
        } else if (a->nch % AR_SLAB == 0) {
            c = big_zalloc((size_t)ACH * AR_SLAB);
            for (uint32_t k = 1; c && k < AR_SLAB; k++) a->ch[a->nch + k] = c + (size_t)k * ACH;
        } else {
            c = a->ch[a->nch];
        }
        if (!c) return 0;
        a->ch[a->nch++] = c;
        a->pos = a->nch == 1 ? 8 : 0; /* offset 0 means "empty slot" */
    }
    uint64_t off = ((uint64_t)(a->nch - 1) << ACH_BITS) | a->pos;
    a->pos += bytes;
    return off;
}

/* Next entry after `off` in insertion order, or 0 at the end. */
static uint64_t ar_next(const Arena *a, uint64_t off) {
    uint64_t c = off >> ACH_BITS, p = (off & (ACH - 1)) + ((AR_HDR + ar_at(a, off)[0] + 7) & ~7u);
    if (p + AR_HDR <= ACH && a->ch[c][p] != 0) return (c << ACH_BITS) | p;
    if (c + 1 < a->nch && a->ch[c + 1][0] != 0) return (c + 1) << ACH_BITS;
    return 0;
}

static inline uint64_t ar_first(const Arena *a) { return a->nch && a->ch[0][8] ? 8 : 0; }

static inline uint32_t ar_val(const Arena *a, uint64_t off) {
    uint32_t v;
    memcpy(&v, ar_at(a, off) + 4, 4);
    return v;
}

static inline void ar_set_val(const Arena *a, uint64_t off, uint32_t v) { memcpy(ar_at(a, off) + 4, &v, 4); }

static inline uint64_t sl_off(const Slot *sl) { return (uint64_t)sl->off << 3; }

/* The value of a found slot. */
static inline uint32_t st_val(const StrTab *t, const Slot *sl) { return ar_val(&t->a, sl_off(sl)); }

static int st_init(StrTab *t, uint32_t slots) {
    memset(t, 0, sizeof *t);
    t->s = big_zalloc((size_t)slots * sizeof(Slot));
    if (!t->s) return -1;
    t->mask = slots - 1;
    return 0;
}

static void st_free(StrTab *t, int keep) {
    big_free(t->s, ((size_t)t->mask + 1) * sizeof(Slot), keep, 1);
    if (t->old) big_free(t->old, ((size_t)t->omask + 1) * sizeof(Slot), keep, 1);
    for (uint32_t i = 0; i < t->a.nch; i++) {
        if (i < AR_SLAB) free(t->a.ch[i]);
        else if (i % AR_SLAB == 0) big_free(t->a.ch[i], (size_t)ACH * AR_SLAB, keep, 1);
    }
    free(t->a.ch);
    memset(t, 0, sizeof *t);
}

static inline const char *st_str(const StrTab *t, uint64_t off, uint32_t *n, int *esc) {
    const uint8_t *p = ar_at(&t->a, off);
    *n = p[0];
    *esc = p[1];
    return (const char *)p + AR_HDR;
}

static inline Slot *st_probe(const StrTab *t, Slot *tab, uint32_t mask, const char *s, uint32_t n, uint32_t h,
                             int *found) {
    uint32_t i = h & mask;
    for (;;) {
        Slot *sl = &tab[i];
        if (!sl->off) {
            *found = 0;
            return sl;
        }
        if (sl->hash == h) {
            const uint8_t *p = ar_at(&t->a, sl_off(sl));
            /* ids and user ids are short: no libc call for them */
            if (p[0] == n && eq_small((const char *)p + AR_HDR, s, n)) {
                *found = 1;
                return sl;
            }
        }
        i = (i + 1) & mask;
    }
}

/* Returns the slot holding the string, or the empty slot of the current table where it would
 * go (found = 0). */
static inline Slot *st_lookup(const StrTab *t, const char *s, uint32_t n, uint32_t h, int *found) {
    Slot *sl = st_probe(t, t->s, t->mask, s, n, h, found);
    if (*found || !t->old) return sl;
    Slot *o = st_probe(t, t->old, t->omask, s, n, h, found);
    return *found ? o : sl;
}

static inline void st_place(Slot *tab, uint32_t mask, const Slot *v) {
    uint32_t j = v->hash & mask;
    while (tab[j].off) j = (j + 1) & mask;
    tab[j] = *v;
}

/* Move up to `k` slots of the old table into the new one. */
static void st_migrate(StrTab *t, uint32_t k) {
    if (k <= 8 && t->mpos + 64 <= t->omask) {
        /* a few calls ahead: the old table's line and the ST_GROW lines of the new table its
         * entries move to (an entry at old index i goes to i + j * old size, or just after) */
        uint32_t a = t->mpos + 64;
        prefetch(&t->old[a]);
        for (uint32_t j = 0; j < ST_GROW; j++) prefetch_w(&t->s[a + j * (t->omask + 1)]);
    }
    while (k-- && t->mpos <= t->omask) {
        const Slot *sl = &t->old[t->mpos++];
        if (sl->off) st_place(t->s, t->mask, sl);
    }
    if (t->mpos > t->omask) {
        big_free(t->old, ((size_t)t->omask + 1) * sizeof(Slot), 0, 1);
        t->old = NULL;
    }
}

/* Start growing: an ST_GROW times bigger table takes new entries; the old one drains incrementally. */
static int st_grow(StrTab *t) {
    if (t->old) st_migrate(t, UINT32_MAX); /* cannot happen with the sizes below; be safe */
    uint64_t nslots = ((uint64_t)t->mask + 1) * ST_GROW;
    if (nslots > ((uint64_t)1 << 31)) return -1; /* 2^30 strings: reported as out of memory */
    Slot *ns = big_zalloc((size_t)nslots * sizeof(Slot));
    if (!ns) return -1;
    t->old = t->s;
    t->omask = t->mask;
    t->mpos = 0;
    t->s = ns;
    t->mask = (uint32_t)(nslots - 1);
    if (t->omask < 4096) st_migrate(t, UINT32_MAX); /* small tables: at once */
    return 0;
}

static inline int needs_esc(const char *s, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == '"' || c == '\\') return 1;
    }
    return 0;
}

/* Insert into the empty slot `sl` (from st_lookup).  Returns the arena offset, or 0 on OOM.
 * The slot pointer is invalid afterwards (the table may have grown). */
static uint64_t st_put(StrTab *t, Slot *sl, const char *s, uint32_t n, uint32_t h, uint32_t val, int esc) {
    uint64_t off = ar_alloc(&t->a, n + AR_HDR);
    if (!off) return 0;
    uint8_t *p = ar_at(&t->a, off);
    p[0] = (uint8_t)n;
    p[1] = (uint8_t)(esc < 0 ? needs_esc(s, n) : esc);
    ar_set_val(&t->a, off, val);
    copy_small((char *)p + AR_HDR, s, n);
    sl->off = (uint32_t)(off >> 3);
    sl->hash = h;
    t->n++;
    if (t->old) st_migrate(t, 8);
    if (t->n * 2 > t->mask + 1 && st_grow(t) != 0) return 0;
    return off;
}

/* ---- engine lifetime -------------------------------------------------------------------- */

sb_engine *sb_new(void) {
    sb_engine *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    if (st_init(&e->ids, 1024) || st_init(&e->users, 256) || st_init(&e->syms, 64) || st_init(&e->active, 64)) {
        sb_free(e);
        return NULL;
    }
    e->ofree = NONE;
    e->emit = 1;
    return e;
}

void sb_free(sb_engine *e) {
    if (!e) return;
    sb_out_reset(e); /* never free the caller's memory */
    for (uint32_t i = 0; i < e->nochunk; i++) big_free(e->ochunk[i], (size_t)OCH * sizeof(Order), 1, 0);
    free(e->ochunk);
    st_free(&e->ids, 1);
    st_free(&e->users, 1);
    st_free(&e->syms, 1);
    st_free(&e->active, 1);
    free(e->ucount);
    free(e->uoff);
    for (uint32_t i = 0; i < e->nbooks; i++) {
        free(e->books[i].side[0].lv);
        free(e->books[i].side[1].lv);
    }
    free(e->books);
    free(e->fills.b);
    free(e->stats.b);
    free(e->uids.b);
    free(e->kinds.b);
    free(e->snap.b);
    free(e->touched);
    free(e->dropped);
    free(e->scratch);
    free(e->rec);
    if (e->pw) pw_stop(e->pw);
    free(e->pa);
    free(e);
}

/* ---- symbols and books ------------------------------------------------------------------ */

static int symbol_ok(const char *s, uint32_t n) {
    if (n < 1 || n > MAX_SYM) return 0;
    for (uint32_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (i > 0) ok = ok || c == '.' || c == '_' || c == '-';
        if (!ok) return 0;
    }
    return 1;
}

static int64_t book_find(sb_engine *e, const char *s, uint32_t n, uint32_t h) {
    int found;
    Slot *sl = st_lookup(&e->syms, s, n, h, &found);
    return found ? (int64_t)st_val(&e->syms, sl) : -1;
}

static int64_t book_create(sb_engine *e, const char *s, uint32_t n, uint32_t h) {
    int found;
    Slot *sl = st_lookup(&e->syms, s, n, h, &found);
    if (found) return st_val(&e->syms, sl);
    if (grow((void **)&e->books, sizeof(Book), &e->bcap, (uint64_t)e->nbooks + 1)) return -2;
    Book *b = &e->books[e->nbooks];
    memset(b, 0, sizeof *b);
    memcpy(b->sym, s, n);
    b->symlen = (uint8_t)n;
    if (!st_put(&e->syms, sl, s, n, h, e->nbooks, 0)) return -2;
    return e->nbooks++;
}

int64_t sb_book_find(sb_engine *e, const char *sym, uint32_t len) {
    if (!symbol_ok(sym, len)) return -1;
    return book_find(e, sym, len, hash_bytes(sym, len));
}

int64_t sb_book_get(sb_engine *e, const char *sym, uint32_t len) {
    if (!symbol_ok(sym, len)) return -1;
    int64_t b = book_create(e, sym, len, hash_bytes(sym, len));
    return b < 0 ? -1 : b;
}

uint32_t sb_book_count(sb_engine *e) { return e->nbooks; }

const char *sb_book_symbol(sb_engine *e, uint32_t book, uint32_t *len) {
    if (book >= e->nbooks) return NULL;
    *len = e->books[book].symlen;
    return e->books[book].sym;
}

uint64_t sb_book_seq(sb_engine *e, uint32_t book) { return book < e->nbooks ? e->books[book].seq : 0; }

uint64_t sb_open_orders(sb_engine *e) { return e->open; }

void sb_active_clear(sb_engine *e, int restrict_active) {
    st_free(&e->active, 0);
    st_init(&e->active, 64);
    e->restrict_active = restrict_active;
    e->sym_last1 = 0;
}

int sb_active_add(sb_engine *e, const char *sym, uint32_t len) {
    if (!symbol_ok(sym, len)) return -1;
    uint32_t h = hash_bytes(sym, len);
    int found;
    Slot *sl = st_lookup(&e->active, sym, len, h, &found);
    if (found) return 0;
    return st_put(&e->active, sl, sym, len, h, 1, 0) ? 0 : -1;
}

static int symbol_active(sb_engine *e, const char *s, uint32_t n, uint32_t h) {
    if (!e->restrict_active) return 1;
    int found;
    st_lookup(&e->active, s, n, h, &found);
    return found;
}

static inline void touch(sb_engine *e, uint32_t bi) {
    Book *b = &e->books[bi];
    if (b->touch_gen == e->gen) return;
    b->touch_gen = e->gen;
    if (grow((void **)&e->touched, 16, &e->tcap, (uint64_t)e->ntouched + 1)) {
        e->oom = 1;
        return;
    }
    e->touched[2 * e->ntouched] = bi;
    e->ntouched++;
}

/* ---- users ------------------------------------------------------------------------------ */

/* h = hash_bytes(s, n) (the JSON door hashes the user id while parsing, ahead of execution). */
static uint32_t user_intern_h(sb_engine *e, const char *s, uint32_t n, uint32_t h, int esc) {
    int found;
    Slot *sl = st_lookup(&e->users, s, n, h, &found);
    if (found) return st_val(&e->users, sl);
    uint32_t idx = e->users.n;
    if (grow((void **)&e->ucount, sizeof(uint32_t), &e->ucap, (uint64_t)idx + 1)) return NONE;
    if (grow((void **)&e->uoff, sizeof(uint64_t), &e->uocap, (uint64_t)idx + 1)) return NONE;
    e->ucount[idx] = 0;
    uint64_t off = st_put(&e->users, sl, s, n, h, idx, esc);
    if (!off) return NONE;
    e->uoff[idx] = off;
    return idx;
}

static uint32_t user_intern(sb_engine *e, const char *s, uint32_t n, int esc) {
    return user_intern_h(e, s, n, hash_bytes(s, n), esc);
}

static uint32_t user_find_h(sb_engine *e, const char *s, uint32_t n, uint32_t h) {
    int found;
    Slot *sl = st_lookup(&e->users, s, n, h, &found);
    return found ? st_val(&e->users, sl) : NONE;
}


/* ---- order pool ------------------------------------------------------------------------- */

static uint32_t order_chunk(sb_engine *e) {
    if (e->nochunk == e->ochcap) {
        if (e->ochcap >= (NONE >> OCH_BITS)) return NONE;
        uint32_t nc = e->ochcap ? e->ochcap * 2 : 16;
        Order **q = realloc(e->ochunk, nc * sizeof *q);
        if (!q) return NONE;
        e->ochunk = q;
        e->ochcap = nc;
    }
    /* not zeroed: an order's fields are all written when it is allocated (core_add, restore),
     * and its gen is only ever compared with itself (a handle), so any start value serves;
     * not advised for huge pages (see big_alloc) */
    Order *c = big_alloc((size_t)OCH * sizeof(Order), 0, 0);
    if (!c) return NONE;
    e->ochunk[e->nochunk++] = c;
    return 0;
}

static inline uint32_t order_alloc(sb_engine *e) {
    uint32_t i = e->ofree;
    if (i != NONE) {
        e->ofree = ORD(e, i)->next;
        return i;
    }
    if (UNLIKELY(e->onext == e->nochunk * OCH) && order_chunk(e) == NONE) return NONE;
    return e->onext++;
}

static inline void order_free(sb_engine *e, uint32_t i) {
    Order *o = ORD(e, i);
    o->gen++;
    o->next = e->ofree;
    e->ofree = i;
}

/* ---- levels ----------------------------------------------------------------------------- */

static inline uint64_t level_key(int side, uint64_t price) { return side == BUY ? price : UINT64_MAX - price; }

/* First index with key >= k. */
static inline uint32_t level_lb(const Side *s, uint64_t k) {
    uint32_t lo = 0, hi = s->n;
    /* the top of the book is where the action is: look at the best 8 levels first, then
     * binary-search the rest.  Keys ascend, so the levels >= k are a suffix: they are counted
     * among the best 8 with no early exit (an exit at a random level was a mispredicted branch
     * a call; the count compiles to compares and adds). */
    uint32_t stop = hi > 8 ? hi - 8 : 0;
    uint32_t ge = 0;
    for (uint32_t i = stop; i < hi; i++) ge += s->lv[i].key >= k;
    if (ge < hi - stop) return hi - ge;
    hi = stop;
    while (lo < hi) {
        uint32_t mid = (lo + hi) >> 1;
        if (s->lv[mid].key < k) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static int order_rest(sb_engine *e, Book *b, uint32_t oi) {
    Order *o = ORD(e, oi);
    Side *s = &b->side[o->side];
    uint64_t k = level_key(o->side, o->price);
    uint32_t i = level_lb(s, k);
    Level *L;
    if (i < s->n && s->lv[i].key == k) {
        L = &s->lv[i];
    } else {
        if (grow((void **)&s->lv, sizeof(Level), &s->cap, (uint64_t)s->n + 1)) return -1;
        memmove(&s->lv[i + 1], &s->lv[i], (s->n - i) * sizeof(Level));
        s->n++;
        L = &s->lv[i];
        L->key = k;
        L->price = o->price;
        L->total = 0;
        L->head = L->tail = NONE;
        L->count = 0;
    }
    o->next = NONE;
    o->prev = L->tail;
    if (L->tail != NONE) ORD(e, L->tail)->next = oi;
    else L->head = oi;
    L->tail = oi;
    L->total += o->rem;
    L->count++;
    e->ucount[o->user]++;
    e->open++;
    return 0;
}

/* Unlink a resting order from its level (removing an emptied level). */
static void order_unlink(sb_engine *e, Book *b, uint32_t oi) {
    Order *o = ORD(e, oi);
    Side *s = &b->side[o->side];
    uint64_t k = level_key(o->side, o->price);
    uint32_t i = level_lb(s, k);
    Level *L = &s->lv[i];
    if (o->prev != NONE) ORD(e, o->prev)->next = o->next;
    else L->head = o->next;
    if (o->next != NONE) ORD(e, o->next)->prev = o->prev;
    else L->tail = o->prev;
    L->total -= o->rem;
    L->count--;
    if (!L->count) {
        memmove(&s->lv[i], &s->lv[i + 1], (s->n - i - 1) * sizeof(Level));
        s->n--;
    }
    e->ucount[o->user]--;
    e->open--;
}

/* Point the id at arena offset `off` at `val` (an open order, or NONE). */
static inline void id_set(sb_engine *e, uint64_t off, uint32_t val) { ar_set_val(&e->ids.a, off, val); }

/* Mark the order's id closed (remembered, no longer open). */
static inline void id_close(sb_engine *e, const Order *o) {
    if (o->id_off) id_set(e, o->id_off, NONE);
}

/* ---- event writing ---------------------------------------------------------------------- */

/* Every event of a command has the same t (and usually every event of a batch): its digits are
 * written once and then copied with one fixed-size move. */
static inline char *put_t(sb_engine *e, char *o, int64_t t) {
    if (UNLIKELY(t != e->tc_v || !e->tc_n)) {
        e->tc_n = (uint32_t)(put_i64(e->tc_s, t) - e->tc_s);
        e->tc_v = t;
    }
    memcpy(o, e->tc_s, 24);
    return o + e->tc_n;
}

typedef struct {
    const char *s;
    uint32_t n;
    int esc;
} Str;

static inline Str ustr(sb_engine *e, uint32_t user) {
    Str r;
    r.s = st_str(&e->users, e->uoff[user], &r.n, &r.esc);
    return r;
}

static inline Str ids_str(sb_engine *e, uint64_t off) {
    Str r;
    r.s = st_str(&e->ids, off, &r.n, &r.esc);
    return r;
}

typedef struct {
    Str uid, oid;
    const char *sym; /* NULL -> null */
    uint32_t symn;
    int symesc;
    int status, reason;
    uint64_t filled, remaining;
    int has_price;
    int64_t price;
    int64_t t;
    int has_seq;
    uint64_t seq;
} StatusEv;

static void emit_status(sb_engine *e, const StatusEv *v) {
    e->events++;
    if (!e->emit) return;
    size_t need = 400 + ESC_MAX(v->uid.n) + ESC_MAX(v->oid.n) + ESC_MAX(v->symn);
    if (buf_reserve(&e->stats, need) || buf_reserve(&e->uids, ESC_MAX(v->uid.n) + 1) || buf_reserve(&e->kinds, 1)) {
        e->oom = 1;
        return;
    }
    char *o = e->stats.b + e->stats.n;
    o = PUT_LIT(o, "{\"e\":\"order\",\"user_id\":\"");
    o = put_str(o, v->uid.s, v->uid.n, v->uid.esc);
    o = PUT_LIT(o, "\",\"order_id\":\"");
    o = put_str(o, v->oid.s, v->oid.n, v->oid.esc);
    if (v->sym) {
        o = PUT_LIT(o, "\",\"s\":\"");
        o = put_str(o, v->sym, v->symn, v->symesc);
        o = PUT_LIT(o, "\",\"status\":\"");
    } else {
        o = PUT_LIT(o, "\",\"s\":null,\"status\":\"");
    }
    memcpy(o, ST_NAME[v->status], 16);
    o += ST_LEN[v->status];
    if (v->reason) {
        o = PUT_LIT(o, "\",\"reason\":\"");
        memcpy(o, R_NAME[v->reason], 24);
        o += R_LEN[v->reason];
        o = PUT_LIT(o, "\",\"filled\":");
    } else {
        o = PUT_LIT(o, "\",\"reason\":null,\"filled\":");
    }
    o = put_u64(o, v->filled);
    o = PUT_LIT(o, ",\"remaining\":");
    o = put_u64(o, v->remaining);
    o = PUT_LIT(o, ",\"price\":");
    if (v->has_price) o = put_i64(o, v->price);
    else o = PUT_LIT(o, "null");
    o = PUT_LIT(o, ",\"t\":");
    o = put_t(e, o, v->t);
    o = PUT_LIT(o, ",\"seq\":");
    if (v->has_seq) o = put_u64(o, v->seq);
    else o = PUT_LIT(o, "null");
    o = PUT_LIT(o, "}\n");
    e->stats.n = (size_t)(o - e->stats.b);
    e->ns++;
    char *u = e->uids.b + e->uids.n;
    if (v->uid.esc) e->uesc = 1;
    u = put_str(u, v->uid.s, v->uid.n, v->uid.esc);
    *u++ = '\n';
    e->uids.n = (size_t)(u - e->uids.b);
    e->kinds.b[e->kinds.n++] = 's';
}

/* The ids come by pointer: passed by value, GCC copied the taker's two from the Taker with
 * `rep movsq` (slow to start) on every fill. */
static void emit_fill(sb_engine *e, const Book *b, uint64_t seq, uint64_t price, uint64_t q, const Str *mo,
                      const Str *mu, const Str *to, const Str *tu, int taker_side, int64_t t) {
    e->events++;
    if (!e->emit) return;
    size_t need = 400 + ESC_MAX(mo->n) + ESC_MAX(mu->n) + ESC_MAX(to->n) + ESC_MAX(tu->n);
    if (buf_reserve(&e->fills, need) || buf_reserve(&e->kinds, 1)) {
        e->oom = 1;
        return;
    }
    char *o = e->fills.b + e->fills.n;
    o = PUT_LIT(o, "{\"e\":\"fill\",\"s\":\"");
    o = copy_small(o, b->sym, b->symlen); /* a variable memcpy here became `rep movs` */
    o = PUT_LIT(o, "\",\"trade_id\":\"");
    o = copy_small(o, b->sym, b->symlen);
    *o++ = '-';
    o = put_u64_pad12(o, seq);
    o = PUT_LIT(o, "\",\"p\":");
    o = put_u64(o, price);
    o = PUT_LIT(o, ",\"q\":");
    o = put_u64(o, q);
    o = PUT_LIT(o, ",\"maker_order_id\":\"");
    o = put_str(o, mo->s, mo->n, mo->esc);
    o = PUT_LIT(o, "\",\"maker_user_id\":\"");
    o = put_str(o, mu->s, mu->n, mu->esc);
    o = PUT_LIT(o, "\",\"taker_order_id\":\"");
    o = put_str(o, to->s, to->n, to->esc);
    o = PUT_LIT(o, "\",\"taker_user_id\":\"");
    o = put_str(o, tu->s, tu->n, tu->esc);
    if (taker_side == BUY) o = PUT_LIT(o, "\",\"taker_side\":\"BUY\",\"t\":");
    else o = PUT_LIT(o, "\",\"taker_side\":\"SELL\",\"t\":");
    o = put_t(e, o, t);
    o = PUT_LIT(o, ",\"seq\":");
    o = put_u64(o, seq);
    o = PUT_LIT(o, "}\n");
    e->fills.n = (size_t)(o - e->fills.b);
    e->nf++;
    e->kinds.b[e->kinds.n++] = 'f';
}

/* ---- matching --------------------------------------------------------------------------- */

typedef struct {
    Book *b;
    uint32_t bi;
    int side;
    uint64_t limit; /* best acceptable opposite price (inclusive) */
    uint32_t user;
    Str tid, tuid;
    int64_t t;
    uint64_t seq; /* the command's seq */
} Taker;

/* Status of a resting order (maker or SELF_TRADE victim). */
static inline void status_of(sb_engine *e, const Book *b, const Order *o, int st, int reason, int64_t t,
                             uint64_t seq) {
    if (!e->emit) {
        e->events++;
        return;
    }
    StatusEv v;
    v.uid = ustr(e, o->user);
    v.oid = ids_str(e, o->id_off);
    v.sym = b->sym;
    v.symn = b->symlen;
    v.symesc = 0;
    v.status = st;
    v.reason = reason;
    v.filled = o->filled;
    v.remaining = o->rem;
    v.has_price = 1;
    v.price = (int64_t)o->price;
    v.t = t;
    v.has_seq = 1;
    v.seq = seq;
    emit_status(e, &v);
}

/* Unlink the head order `oi` (whose successor is `nx`) of level L after it was filled or
 * cancelled, and return it to the pool.  Its status must already have been emitted. */
static inline void retire_head(sb_engine *e, Level *L, Order *o, uint32_t oi, uint32_t nx) {
    L->count--;
    L->head = nx;
    if (nx != NONE) {
        Order *h = ORD(e, nx);
        h->prev = NONE;
        /* the order after the new head: next in line, likely long out of cache */
        if (h->next != NONE) prefetch_w(ORD(e, h->next));
        /* the new head's id, which its fill event will copy (the line is written on close) */
        if (h->id_off) prefetch_w(ar_at(&e->ids.a, h->id_off));
    } else {
        L->tail = NONE;
    }
    e->ucount[o->user]--;
    e->open--;
    id_close(e, o);
    order_free(e, oi);
}

/* Match `rem` against the opposite side.  Returns the unfilled rest; *filled_out gets the
 * quantity traded. */
static uint64_t match(sb_engine *e, Taker *tk, uint64_t rem, uint64_t *filled_out) {
    Book *b = tk->b;
    Side *opp = &b->side[!tk->side];
    uint64_t filled = 0;
    while (rem && opp->n) {
        Level *L = &opp->lv[opp->n - 1];
        if (tk->side == BUY ? L->price > tk->limit : L->price < tk->limit) break;
        uint32_t oi = L->head;
        while (oi != NONE && rem) {
            Order *o = ORD(e, oi);
            uint32_t nx = o->next;
            if (UNLIKELY(o->user == tk->user)) {
                /* self-trade prevention: cancel the resting order */
                L->total -= o->rem;
                o->rem = 0;
                status_of(e, b, o, ST_CANCELLED, R_SELF_TRADE, tk->t, tk->seq);
                retire_head(e, L, o, oi, nx);
                oi = nx;
                continue;
            }
            uint64_t q = o->rem < rem ? o->rem : rem;
            uint64_t fseq = ++b->seq;
            if (e->emit) {
                Str mo = ids_str(e, o->id_off), mu = ustr(e, o->user);
                emit_fill(e, b, fseq, L->price, q, &mo, &mu, &tk->tid, &tk->tuid, tk->side, tk->t);
            } else {
                e->events++;
            }
            o->rem -= q;
            o->filled += q;
            L->total -= q;
            rem -= q;
            filled += q;
            if (o->rem == 0) {
                status_of(e, b, o, ST_FILLED, R_NONE, tk->t, fseq);
                retire_head(e, L, o, oi, nx);
                oi = nx;
            } else {
                status_of(e, b, o, ST_PARTIAL, R_NONE, tk->t, fseq);
            }
        }
        if (L->head == NONE) opp->n--;
    }
    *filled_out = filled;
    return rem;
}

/* FOK pre-check: is there enough opposite quantity within the limit, own orders not counted? */
static int fok_ok(sb_engine *e, const Taker *tk, uint64_t need) {
    const Side *opp = &tk->b->side[!tk->side];
    int own = tk->user != NONE && e->ucount[tk->user] > 0;
    for (uint32_t i = opp->n; i-- > 0;) {
        const Level *L = &opp->lv[i];
        if (tk->side == BUY ? L->price > tk->limit : L->price < tk->limit) return 0;
        if (!own) {
            if (L->total >= need) return 1;
            need -= L->total;
            continue;
        }
        for (uint32_t oi = L->head; oi != NONE; oi = ORD(e, oi)->next) {
            const Order *o = ORD(e, oi);
            if (o->user == tk->user) continue;
            if (o->rem >= need) return 1;
            need -= o->rem;
        }
    }
    return 0;
}

/* ---- commands --------------------------------------------------------------------------- */

typedef struct {
    int action;
    uint32_t bi;
    Str oid, uid;
    int is_buy, market, tif;
    int has_price, has_qty;
    uint64_t price, qty;
    int64_t t;
    uint64_t seq;
    uint32_t oh; /* hash of oid */
    uint32_t uh; /* hash of uid */
} Cmd;
static const Cmd CMD_ZERO;

static void reject(sb_engine *e, const Cmd *c, const Book *b, int reason, int has_price, int64_t price) {
    if (!e->emit) {
        e->events++;
        return;
    }
    StatusEv v;
    v.uid = c->uid;
    v.oid = c->oid;
    v.sym = b->sym;
    v.symn = b->symlen;
    v.symesc = 0;
    v.status = ST_REJECTED;
    v.reason = reason;
    v.filled = 0;
    v.remaining = 0;
    v.has_price = has_price;
    v.price = price;
    v.t = c->t;
    v.has_seq = 1;
    v.seq = c->seq;
    emit_status(e, &v);
}

static void taker_status(sb_engine *e, const Book *b, Str oid, Str uid, int st, uint64_t filled, uint64_t rem,
                         int has_price, uint64_t price, int64_t t, uint64_t seq) {
    if (!e->emit) {
        e->events++;
        return;
    }
    StatusEv v;
    v.uid = uid;
    v.oid = oid;
    v.sym = b->sym;
    v.symn = b->symlen;
    v.symesc = 0;
    v.status = st;
    v.reason = R_NONE;
    v.filled = filled;
    v.remaining = rem;
    v.has_price = has_price;
    v.price = (int64_t)price;
    v.t = t;
    v.has_seq = 1;
    v.seq = seq;
    emit_status(e, &v);
}

/* ---- the book core: orders as dense handles ------------------------------------------------
 * core_add / core_cancel / core_replace know nothing of string order ids: the id layer below
 * (do_add, find_own) checks duplicates and maps ids to pool indices, and passes the id's arena
 * entry along only so that events can name the order and the id can be closed when the order
 * leaves the book (id_off 0: no id, the handle door of sb_hcore_cmd). */

/* An accepted ADD.  *oi_out: the resting order's pool index, or NONE. */
static int core_add(sb_engine *e, const Cmd *c, uint32_t user, uint64_t id_off, uint32_t *oi_out) {
    Book *b = &e->books[c->bi];
    int has_p = !c->market;
    int side = c->is_buy ? BUY : SELL;
    *oi_out = NONE;
    Taker tk;
    tk.b = b;
    tk.bi = c->bi;
    tk.side = side;
    tk.limit = c->market ? (side == BUY ? UINT64_MAX : 0) : c->price;
    tk.user = user;
    tk.t = c->t;
    tk.seq = c->seq;
    if (c->market && b->side[!side].n == 0) {
        reject(e, c, b, R_NO_LIQUIDITY, 0, 0);
        return 0;
    }
    if (UNLIKELY(c->tif == T_FOK) && !fok_ok(e, &tk, c->qty)) {
        reject(e, c, b, R_FOK_UNFILLABLE, has_p, (int64_t)c->price);
        return 0;
    }
    if (e->emit) {
        tk.tid = ids_str(e, id_off);
        tk.tuid = ustr(e, user);
    } else {
        tk.tid.s = tk.tuid.s = NULL;
        tk.tid.n = tk.tuid.n = 0;
        tk.tid.esc = tk.tuid.esc = 0;
    }
    taker_status(e, b, tk.tid, tk.tuid, ST_ACCEPTED, 0, c->qty, has_p, c->price, c->t, c->seq);
    uint64_t filled = 0, rem = c->qty;
    const Side *opp = &b->side[!side];
    if (opp->n) {
        uint64_t best = opp->lv[opp->n - 1].price;
        if (side == BUY ? best <= tk.limit : best >= tk.limit) rem = match(e, &tk, c->qty, &filled);
    }
    if (rem == 0) {
        taker_status(e, b, tk.tid, tk.tuid, ST_FILLED, filled, 0, has_p, c->price, c->t, c->seq);
        return 0;
    }
    if (c->market || c->tif != T_GTC) {
        taker_status(e, b, tk.tid, tk.tuid, ST_EXPIRED, filled, 0, has_p, c->price, c->t, c->seq);
        return 0;
    }
    uint32_t oi = order_alloc(e);
    if (oi == NONE) return -1;
    Order *o = ORD(e, oi);
    o->price = c->price;
    o->rem = rem;
    o->filled = filled;
    o->id_off = id_off;
    o->user = user;
    o->book = c->bi;
    o->side = (uint32_t)side;
    if (order_rest(e, b, oi)) return -1;
    *oi_out = oi;
    if (filled) taker_status(e, b, tk.tid, tk.tuid, ST_PARTIAL, filled, rem, 1, c->price, c->t, c->seq);
    return 0;
}

static void core_cancel(sb_engine *e, const Cmd *c, uint32_t oi) {
    Book *b = &e->books[c->bi];
    Order *o = ORD(e, oi);
    order_unlink(e, b, oi);
    o->rem = 0;
    status_of(e, b, o, ST_CANCELLED, R_NONE, c->t, c->seq);
    id_close(e, o);
    order_free(e, oi);
}

/* Returns 0, or -1 on OOM; *rests = 1 if the order is still in the book. */
static int core_replace(sb_engine *e, const Cmd *c, uint32_t oi, int *rests) {
    Book *b = &e->books[c->bi];
    Order *o = ORD(e, oi);
    uint64_t total = o->filled + o->rem;
    uint64_t np = c->has_price ? c->price : o->price;
    uint64_t nq = c->has_qty ? c->qty : total;
    *rests = 0;
    if (nq <= o->filled) {
        core_cancel(e, c, oi);
        return 0;
    }
    uint64_t nrem = nq - o->filled;
    *rests = 1;
    if (np == o->price && nq <= total) {
        /* same price, size not growing: keep priority */
        Side *s = &b->side[o->side];
        Level *L = &s->lv[level_lb(s, level_key(o->side, o->price))];
        L->total -= o->rem - nrem;
        o->rem = nrem;
        status_of(e, b, o, ST_REPLACED, R_NONE, c->t, c->seq);
        return 0;
    }
    order_unlink(e, b, oi);
    o->price = np;
    o->rem = nrem;
    status_of(e, b, o, ST_REPLACED, R_NONE, c->t, c->seq);
    Taker tk;
    tk.b = b;
    tk.bi = c->bi;
    tk.side = o->side;
    tk.limit = np;
    tk.user = o->user;
    tk.t = c->t;
    tk.seq = c->seq;
    if (e->emit) {
        tk.tid = ids_str(e, o->id_off);
        tk.tuid = ustr(e, o->user);
    } else {
        tk.tid.s = tk.tuid.s = NULL;
        tk.tid.n = tk.tuid.n = 0;
        tk.tid.esc = tk.tuid.esc = 0;
    }
    uint64_t filled;
    uint64_t rem = match(e, &tk, nrem, &filled);
    o = ORD(e, oi);
    o->filled += filled;
    o->rem = rem;
    if (rem == 0) {
        *rests = 0;
        status_of(e, b, o, ST_FILLED, R_NONE, c->t, c->seq);
        id_close(e, o);
        order_free(e, oi);
        return 0;
    }
    if (order_rest(e, b, oi)) return -1;
    if (filled) status_of(e, b, o, ST_PARTIAL, R_NONE, c->t, c->seq);
    return 0;
}

/* ---- the id layer: string order ids -> pool indices ------------------------------------- */

static int do_add(sb_engine *e, Cmd *c) {
    Book *b = &e->books[c->bi];
    uint32_t h = c->oh;
    int found;
    Slot *sl = st_lookup(&e->ids, c->oid.s, c->oid.n, h, &found);
    if (found) {
        reject(e, c, b, R_DUPLICATE, !c->market, (int64_t)c->price);
        return 0;
    }
    uint64_t id_off = st_put(&e->ids, sl, c->oid.s, c->oid.n, h, NONE, c->oid.esc);
    if (!id_off) return -1;
    uint32_t user = user_intern_h(e, c->uid.s, c->uid.n, c->uh, c->uid.esc);
    if (user == NONE) return -1;
    uint32_t oi;
    if (core_add(e, c, user, id_off, &oi)) return -1;
    if (oi != NONE) id_set(e, id_off, oi); /* the id now names an open order */
    return 0;
}

/* The open order a CANCEL/REPLACE names, or NONE after sending the rejection. */
static uint32_t find_own(sb_engine *e, const Cmd *c, int has_price, int64_t price) {
    const Book *b = &e->books[c->bi];
    int found;
    Slot *sl = st_lookup(&e->ids, c->oid.s, c->oid.n, c->oh, &found);
    uint32_t oi = found ? st_val(&e->ids, sl) : NONE;
    if (oi == NONE || ORD(e, oi)->book != c->bi) {
        reject(e, c, b, R_UNKNOWN_ORDER, has_price, price);
        return NONE;
    }
    if (user_find_h(e, c->uid.s, c->uid.n, c->uh) != ORD(e, oi)->user) {
        reject(e, c, b, R_NOT_OWNER, has_price, price);
        return NONE;
    }
    return oi;
}

static int do_cancel(sb_engine *e, Cmd *c, int has_price, int64_t price) {
    uint32_t oi = find_own(e, c, has_price, price);
    if (oi != NONE) core_cancel(e, c, oi);
    return 0;
}

static int do_replace(sb_engine *e, Cmd *c, int has_price, int64_t price) {
    uint32_t oi = find_own(e, c, has_price, price);
    int rests;
    return oi == NONE ? 0 : core_replace(e, c, oi, &rests);
}

/* ---- JSON command validation ------------------------------------------------------------ */

static inline int is_str(const jval *v) { return v->kind == JV_STR; }
static inline int absent(const jval *v) { return v->kind == JV_ABSENT || v->kind == JV_NULL; }
static inline int pos_int(const jval *v) { return v->kind == JV_INT && v->i > 0 && (uint64_t)v->i <= MAXQ; }
static inline int id_ok(const jval *v) { return v->kind == JV_STR && v->n >= 1 && v->n <= MAX_ID; }
static inline int str_is(const jval *v, const char *lit) {
    size_t n = strlen(lit);
    return v->kind == JV_STR && v->n == n && memcmp(v->s, lit, n) == 0;
}

static void drop(sb_engine *e, uint32_t rec, uint32_t why) {
    e->dropped_total++;
    if (grow((void **)&e->dropped, 8, &e->dcap, (uint64_t)e->ndropped + 1)) return;
    e->dropped[2 * e->ndropped] = rec;
    e->dropped[2 * e->ndropped + 1] = why;
    e->ndropped++;
}

/* A parsed record waiting in sb_process's pipeline. */
struct Parsed {
    _Atomic uint64_t ready; /* parse-thread mode: the batch number once jc..finds are written */
    jcmd jc;
    int ok;       /* the record is one readable JSON object */
    uint32_t oh;  /* hash of its order_id (when it is a usable string) */
    uint32_t uh;  /* hash of its user_id (likewise) */
    uint8_t hashed; /* bit 0: oh is set, bit 1: uh is set */
    uint8_t finds;  /* a CANCEL/REPLACE with a usable order_id: the pipeline prefetches its order */
    uint64_t aoff; /* arena offset of its order_id's entry, found by stage 2 (0 = none) */
    uint32_t ord;  /* the open order that entry named at stage 3 (NONE: none) */
} __attribute__((aligned(64)));

static int run_json(sb_engine *e, const Parsed *pr, uint32_t idx, int64_t now) {
    if (!pr->ok) {
        drop(e, idx, 1);
        return 0;
    }
    const jval *f = pr->jc.f;
    Cmd c = CMD_ZERO; /* a copy, not memset or = {0}: GCC zeroes the 104 bytes with a slow `rep stos` */
    int bad = 0;
    /* ts */
    c.t = now;
    if (!absent(&f[K_TS])) {
        if (f[K_TS].kind == JV_INT && f[K_TS].i >= 0 && (uint64_t)f[K_TS].i < TS_LIMIT) c.t = f[K_TS].i;
        else bad = 1;
    }
    /* symbol */
    const jval *sv = &f[K_SYMBOL];
    int has_book = 0;
    uint32_t h = 0;
    int inactive = 0;
    /* the last active symbol's book is cached: a batch is usually one symbol (the cache is
     * cleared when the active set changes; a book exists only for a valid symbol) */
    const Book *lb = e->sym_last1 ? &e->books[e->sym_last1 - 1] : NULL;
    if (lb && is_str(sv) && sv->n == lb->symlen && eq_small(sv->s, lb->sym, sv->n)) {
        c.bi = e->sym_last1 - 1;
        has_book = 1;
        c.seq = ++e->books[c.bi].seq;
        touch(e, c.bi);
    } else if (is_str(sv) && symbol_ok(sv->s, sv->n)) {
        h = hash_bytes(sv->s, sv->n);
        if (symbol_active(e, sv->s, sv->n, h)) {
            int64_t bi = book_create(e, sv->s, sv->n, h);
            if (bi < 0) return -1;
            c.bi = (uint32_t)bi;
            e->sym_last1 = (uint32_t)bi + 1;
            has_book = 1;
            c.seq = ++e->books[bi].seq;
            touch(e, c.bi);
        } else {
            inactive = 1;
        }
    } else {
        bad = 1;
    }
    /* ids: a status can be sent only when both are non-empty strings */
    const jval *ov = &f[K_ORDER_ID], *uv = &f[K_USER_ID];
    if (!(is_str(ov) && ov->n > 0 && is_str(uv) && uv->n > 0)) {
        drop(e, idx, 2);
        return 0;
    }
    c.oid.s = ov->s;
    c.oid.n = ov->n;
    c.oid.esc = ov->esc;
    c.oh = pr->oh;
    c.uh = pr->uh;
    c.uid.s = uv->s;
    c.uid.n = uv->n;
    c.uid.esc = uv->esc;
    if (!id_ok(ov) || !id_ok(uv)) bad = 1;
    /* action and its fields */
    const jval *pv = &f[K_PRICE], *qv = &f[K_QUANTITY];
    if (str_is(&f[K_ACTION], "ADD")) {
        c.action = A_ADD;
        const jval *tv = &f[K_TYPE], *fv = &f[K_TIF];
        if (absent(tv) || str_is(tv, "LIMIT")) c.market = 0;
        else if (str_is(tv, "MARKET")) c.market = 1;
        else bad = 1;
        if (absent(fv) || str_is(fv, "GTC")) c.tif = T_GTC;
        else if (str_is(fv, "IOC")) c.tif = T_IOC;
        else if (str_is(fv, "FOK")) c.tif = T_FOK;
        else bad = 1;
        if (c.market && c.tif == T_GTC) c.tif = T_IOC;
        if (f[K_IS_BUY].kind == JV_TRUE) c.is_buy = 1;
        else if (f[K_IS_BUY].kind == JV_FALSE) c.is_buy = 0;
        else bad = 1;
        if (pos_int(qv)) c.qty = (uint64_t)qv->i;
        else bad = 1;
        if (!c.market) {
            if (pos_int(pv)) c.price = (uint64_t)pv->i;
            else bad = 1;
        }
    } else if (str_is(&f[K_ACTION], "CANCEL")) {
        c.action = A_CANCEL;
    } else if (str_is(&f[K_ACTION], "REPLACE")) {
        c.action = A_REPLACE;
        if (!absent(pv)) {
            if (pos_int(pv)) {
                c.price = (uint64_t)pv->i;
                c.has_price = 1;
            } else {
                bad = 1;
            }
        }
        if (!absent(qv)) {
            if (pos_int(qv)) {
                c.qty = (uint64_t)qv->i;
                c.has_qty = 1;
            } else {
                bad = 1;
            }
        }
        if (!c.has_price && !c.has_qty) bad = 1;
    } else {
        bad = 1;
    }
    /* the command's price for a rejection: an int64 integer, null for MARKET */
    int rp_has = pv->kind == JV_INT && !(c.action == A_ADD && c.market);
    int64_t rp = rp_has ? pv->i : 0;
    if (bad || inactive) {
        if (!e->emit) {
            e->events++;
            return 0;
        }
        StatusEv v;
        v.uid = c.uid;
        v.oid = c.oid;
        if (is_str(sv)) {
            v.sym = sv->s;
            v.symn = sv->n;
            v.symesc = sv->esc;
        } else {
            v.sym = NULL;
            v.symn = 0;
            v.symesc = 0;
        }
        v.status = ST_REJECTED;
        v.reason = bad ? R_BAD_ORDER : R_UNKNOWN_SYMBOL;
        v.filled = 0;
        v.remaining = 0;
        v.has_price = rp_has;
        v.price = rp;
        v.t = c.t;
        v.has_seq = has_book;
        v.seq = c.seq;
        emit_status(e, &v);
        return 0;
    }
    switch (c.action) {
    case A_ADD: return do_add(e, &c);
    case A_CANCEL: return do_cancel(e, &c, rp_has, rp);
    default: return do_replace(e, &c, rp_has, rp);
    }
}

static void begin_batch(sb_engine *e) {
    e->gen++;
    if (e->gen == 0) {
        for (uint32_t i = 0; i < e->nbooks; i++) e->books[i].touch_gen = 0;
        e->gen = 1;
    }
    e->fills.n = e->stats.n = e->uids.n = e->kinds.n = 0;
    e->nf = e->ns = 0;
    e->uesc = 0;
    e->ntouched = 0;
    e->ndropped = 0;
    e->oom = 0;
}

/* Parse one record into a pipeline slot: reads only the record (no engine state), so the
 * parse thread may run it. */
static inline void parse_rec(Parsed *pr, const char *rec, size_t rl, char *scratch, int json_slow) {
    pr->jc.scratch = scratch;
    pr->ok = (!json_slow && jp_fast(rec, rl, &pr->jc)) || jp_command(rec, rl, &pr->jc);
    pr->finds = 0;
    pr->aoff = 0;
    pr->ord = NONE;
    pr->oh = pr->uh = 0;
    pr->hashed = 0;
    if (!pr->ok) return;
    const jval *ov = &pr->jc.f[K_ORDER_ID];
    if (ov->kind == JV_STR && ov->n >= 1 && ov->n <= MAX_ID) {
        pr->oh = hash_bytes(ov->s, ov->n);
        /* only a CANCEL/REPLACE names an order that may exist: an ADD's new id has no entry,
         * and probing for it in stages 2 to 4 cost ADD-only flow ~10% */
        const jval *av = &pr->jc.f[K_ACTION];
        pr->finds = av->kind == JV_STR && av->n >= 1 && av->s[0] != 'A';
        pr->hashed = 1;
    }
    const jval *uv = &pr->jc.f[K_USER_ID];
    if (uv->kind == JV_STR && uv->n >= 1 && uv->n <= MAX_ID) {
        pr->uh = hash_bytes(uv->s, uv->n);
        pr->hashed |= 2;
    }
}

/* First prefetch stage: the id-table slot the record's order id hashes to, and its user's
 * (the users table is small but an L1/L2 miss by now). */
static inline void pipe_prefetch1(sb_engine *e, const Parsed *pr) {
    if (pr->hashed & 1) {
        prefetch(&e->ids.s[pr->oh & e->ids.mask]);
        /* while the table grows, a miss in the new table probes the old one too */
        if (e->ids.old) prefetch(&e->ids.old[pr->oh & e->ids.omask]);
    }
    if (pr->hashed & 2) prefetch(&e->users.s[pr->uh & e->users.mask]);
}

/* The slot whose hash is h in the new table, else in the old one (a hash match is almost
 * always the id; a wrong guess only costs a useless prefetch), or NULL.  Probes at most 8
 * slots: the line(s) stage 1 prefetched. */
static inline const Slot *pf_slot(const StrTab *t, uint32_t h) {
    for (uint32_t k = 0, i = h & t->mask; k < 8; k++, i = (i + 1) & t->mask) {
        const Slot *sl = &t->s[i];
        if (!sl->off) break;
        if (sl->hash == h) return sl;
    }
    if (!t->old) return NULL;
    for (uint32_t k = 0, i = h & t->omask; k < 8; k++, i = (i + 1) & t->omask) {
        const Slot *sl = &t->old[i];
        if (!sl->off) break;
        if (sl->hash == h) return sl;
    }
    return NULL;
}

/* Second prefetch stage (CANCEL/REPLACE): the id's arena entry.  Its offset is kept for stage 3
 * (arena entries never move, while a slot may move if the table grows in between). */
static inline void pipe_prefetch2(sb_engine *e, Parsed *pr) {
    if (!pr->finds) return;
    const Slot *sl = pf_slot(&e->ids, pr->oh);
    if (sl) {
        pr->aoff = sl_off(sl);
        prefetch(ar_at(&e->ids.a, pr->aoff));
    }
}

/* Third stage: the open order the id names (the value in its arena entry). */
static inline void pipe_prefetch3(sb_engine *e, Parsed *pr) {
    if (!pr->aoff) return;
    uint32_t v = ar_val(&e->ids.a, pr->aoff);
    if (v != NONE && v < e->onext) {
        pr->ord = v;
        prefetch(ORD(e, v));
    }
}

/* Fourth stage: the order's FIFO neighbours, which a CANCEL/REPLACE unlinking it writes (the
 * order itself is in cache by now; a neighbour that changes in between only wastes a prefetch). */
static inline void pipe_prefetch4(sb_engine *e, const Parsed *pr) {
    if (pr->ord == NONE) return;
    const Order *o = ORD(e, pr->ord);
    if (o->prev < e->onext) prefetch_w(ORD(e, o->prev));
    if (o->next < e->onext) prefetch_w(ORD(e, o->next));
}

/* Records are parsed PIPE - 1 ahead of execution (parsing reads only the record, never engine
 * state), so the id-table slot of a record is prefetched while earlier records run: the
 * table's cache misses overlap instead of stalling each ADD/CANCEL in turn. */
/* A memory miss here costs ~250 ns (measured: a random read of a 64 MiB region needs a prefetch
 * ~16 reads of ~15 ns ahead to hide), about one record's work, so the stages are spaced several
 * records apart.  The macros are overridable for tuning (SUPERNOBA_BOOK_CFLAGS=-DPIPE=...). */
#ifndef PIPE
#define PIPE 16 /* a power of two */
#endif
#ifndef PF2
#define PF2 7 /* stage 2 runs PIPE - 1 - PF2 records before execution */
#endif
#ifndef PF3
#define PF3 12 /* stage 3 likewise */
#endif
#ifndef PF4
#define PF4 14 /* stage 4 likewise */
#endif
#ifndef RPF
#define RPF 8 /* a record's bytes are prefetched RPF records before it is parsed */
#endif

/* Scratch for decoded strings: record i may use 16 bytes more than its length from its soff
 * (decoded strings are never longer than their JSON form).  total = the records' bytes. */
static int scratch_reserve(sb_engine *e, size_t total, uint32_t m) {
    size_t need = total + 16 * ((size_t)m + 2);
    if (need > e->scap) {
        size_t nc = e->scap ? e->scap : 4096;
        while (nc < need) nc *= 2;
        char *q = realloc(e->scratch, nc);
        if (!q) return -1;
        e->scratch = q;
        e->scap = nc;
    }
    return 0;
}

static int run_batch(sb_engine *e, uint32_t m, int64_t now);

int sb_process(sb_engine *e, const char *buf, size_t len, const uint32_t *lens, uint32_t n, int64_t now) {
    begin_batch(e);
    /* record boundaries */
    if (grow((void **)&e->rec, sizeof(BatchRec), &e->rcap, (uint64_t)n + 1)) return -1;
    size_t pos = 0;
    uint32_t m = 0;
    for (; m < n; m++) {
        size_t rl;
        if (lens) {
            rl = lens[m];
            if (pos + rl > len) break;
        } else {
            const char *z = memchr(buf + pos, 0, len - pos);
            rl = z ? (size_t)(z - (buf + pos)) : len - pos;
            if (z && m == n - 1) return -2; /* a NUL inside a record: nothing was processed */
        }
        e->rec[m].p = buf + pos;
        e->rec[m].n = rl;
        e->rec[m].soff = pos + 16 * (size_t)m;
        pos += rl + (lens ? 0 : 1);
        if (pos > len) pos = len;
    }
    if (scratch_reserve(e, len, m)) return -1;
    return run_batch(e, m, now);
}

int sb_process_vec(sb_engine *e, const char *const *recs, const size_t *lens, uint32_t n, int64_t now) {
    begin_batch(e);
    if (grow((void **)&e->rec, sizeof(BatchRec), &e->rcap, (uint64_t)n + 1)) return -1;
    size_t pos = 0;
    for (uint32_t i = 0; i < n; i++) {
        e->rec[i].p = recs[i];
        e->rec[i].n = lens[i];
        e->rec[i].soff = pos + 16 * (size_t)i;
        pos += lens[i];
    }
    if (scratch_reserve(e, pos, n)) return -1;
    return run_batch(e, n, now);
}

/* ---- the parse thread --------------------------------------------------------------------
 * Parsing a record reads only its bytes, so a second thread can parse records ahead of the
 * matching thread (LMAX's split of unmarshalling from business logic): the matching thread
 * then only reads finished Parsed slots.  Both threads take records from one counter,
 * `claim` = batch number << 32 | next record, with a compare-and-swap, so a record is
 * parsed exactly once, and the matching thread parses a record itself whenever it would
 * otherwise wait for it (the parse thread not yet awake, descheduled, or behind): the batch
 * never depends on the second thread making progress.  A slot is published by storing the
 * batch number in its `ready` with release order.  Between batches the parse thread spins
 * for PW_SPIN_NS (batches arrive back to back under load), then sleeps on a condition
 * variable. */
#ifndef PW_SPIN_NS
#define PW_SPIN_NS 200000
#endif

struct ParseWorker {
    _Atomic uint64_t claim;   /* batch number << 32 | next unclaimed record */
    char pad0[56];
    /* the batch being parsed: written by the matching thread before it publishes `claim`
     * (atomics, relaxed: a late parse thread may read them while the next batch's are written;
     * its claim on the old batch then fails, and it reads them again) */
    const BatchRec *_Atomic rec;
    Parsed *_Atomic pa;
    char *_Atomic scratch;
    _Atomic uint32_t m;
    _Atomic int json_slow;
    _Atomic int sleeping, quit;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t th;
    pid_t pid; /* the process that started the thread (a fork child has none) */
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Take the next record of batch `b`, or return 0 when it has none left (or is no longer the
 * batch being run). */
static inline int pw_take(ParseWorker *w, uint64_t b, uint32_t m, uint32_t *idx) {
    uint64_t v = atomic_load_explicit(&w->claim, memory_order_relaxed);
    for (;;) {
        if ((v >> 32) != (b & 0xFFFFFFFFu) || (uint32_t)v >= m) return 0;
        if (atomic_compare_exchange_weak_explicit(&w->claim, &v, v + 1, memory_order_acquire,
                                                  memory_order_relaxed)) {
            *idx = (uint32_t)v;
            return 1;
        }
    }
}

static inline void pw_parse(const BatchRec *rec, Parsed *pa, char *scratch, int slow, uint32_t i, uint64_t b) {
    const BatchRec *br = &rec[i];
    parse_rec(&pa[i], br->p, br->n, scratch + br->soff, slow);
    atomic_store_explicit(&pa[i].ready, b, memory_order_release);
}

static void *pw_main(void *arg) {
    ParseWorker *w = arg;
    uint64_t seen = 0;
    for (;;) {
        uint64_t v = atomic_load_explicit(&w->claim, memory_order_acquire);
        if ((v >> 32) == (seen & 0xFFFFFFFFu)) {
            /* no new batch: spin a while, then sleep until the next one is published */
            uint64_t t0 = mono_ns();
            for (uint32_t k = 1;; k++) {
                if (atomic_load_explicit(&w->quit, memory_order_relaxed)) return NULL;
                v = atomic_load_explicit(&w->claim, memory_order_acquire);
                if ((v >> 32) != (seen & 0xFFFFFFFFu)) break;
                cpu_relax();
                if ((k & 255) == 0 && mono_ns() - t0 > PW_SPIN_NS) {
                    pthread_mutex_lock(&w->mu);
                    atomic_store(&w->sleeping, 1);
                    while (!atomic_load(&w->quit) && (atomic_load(&w->claim) >> 32) == (seen & 0xFFFFFFFFu))
                        pthread_cond_wait(&w->cv, &w->mu);
                    atomic_store(&w->sleeping, 0);
                    pthread_mutex_unlock(&w->mu);
                    t0 = mono_ns();
                }
            }
        }
        /* a new batch: its fields were written before `claim` was published (acquire above) */
        uint64_t b = v >> 32;
        const BatchRec *rec = atomic_load_explicit(&w->rec, memory_order_relaxed);
        Parsed *pa = atomic_load_explicit(&w->pa, memory_order_relaxed);
        char *scratch = atomic_load_explicit(&w->scratch, memory_order_relaxed);
        uint32_t m = atomic_load_explicit(&w->m, memory_order_relaxed);
        int slow = atomic_load_explicit(&w->json_slow, memory_order_relaxed);
        seen = b;
        uint32_t i;
        while (pw_take(w, b, m, &i)) pw_parse(rec, pa, scratch, slow, i, b);
    }
}

static void pw_stop(ParseWorker *w) {
    if (w->pid == getpid()) {
        pthread_mutex_lock(&w->mu);
        atomic_store(&w->quit, 1);
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->th, NULL);
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
    }
    free(w);
}

/* The engine's parse thread, started on first use (again in a fork child, which has none);
 * NULL if it cannot be started (the batch is then parsed inline). */
static ParseWorker *pw_get(sb_engine *e) {
    if (e->pw && e->pw->pid == getpid()) return e->pw;
    if (e->pw) { /* inherited through fork: the thread is not in this process */
        free(e->pw);
        e->pw = NULL;
    }
    ParseWorker *w = aligned_alloc(64, (sizeof *w + 63) & ~(size_t)63);
    if (!w) return NULL;
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->pid = getpid();
    /* the thread takes no signals: they stay with the process's own threads (CPython's
     * handlers expect to run there) */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&w->th, NULL, pw_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
#if defined(__linux__)
    if (err == 0) pthread_setname_np(w->th, "sb-parse"); /* as `top -H` and /proc show it */
#endif
    if (err != 0) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return NULL;
    }
    e->pw = w;
    return w;
}

void sb_set_parse_thread(sb_engine *e, uint32_t min_batch) {
    e->par_min = min_batch;
    if (!min_batch && e->pw) {
        pw_stop(e->pw);
        e->pw = NULL;
    }
}

/* Room for m parsed records (64-byte aligned: one thread writes a slot while the other reads
 * its neighbour; zeroed: no `ready` may hold a batch number by chance). */
static int pa_reserve(sb_engine *e, uint32_t m) {
    if (m <= e->pacap) return 0;
    uint64_t nc = e->pacap ? e->pacap : 512;
    while (nc < m) nc *= 2;
    Parsed *q = aligned_alloc(64, (size_t)nc * sizeof(Parsed));
    if (!q) return -1;
    memset(q, 0, (size_t)nc * sizeof(Parsed));
    free(e->pa);
    e->pa = q;
    e->pacap = (uint32_t)(nc < UINT32_MAX ? nc : UINT32_MAX);
    return 0;
}

/* Record i of batch b, parsed: by the parse thread, or here if it has not got to it. */
static inline Parsed *pw_need(sb_engine *e, ParseWorker *w, uint32_t i, uint32_t m, uint64_t b) {
    Parsed *pr = &e->pa[i];
    while (atomic_load_explicit(&pr->ready, memory_order_acquire) != b) {
        uint32_t k;
        if (pw_take(w, b, m, &k)) pw_parse(e->rec, e->pa, e->scratch, e->json_slow, k, b);
        else cpu_relax(); /* the parse thread has record i in hand */
    }
    return pr;
}

/* After a batch stopped early: no record is taken any more, and the ones the parse thread
 * took are finished (it reads the batch's records, which the caller may free next). */
static void pw_close(ParseWorker *w, Parsed *pa, uint32_t m, uint64_t b) {
    uint64_t v = atomic_exchange(&w->claim, ((b & 0xFFFFFFFFu) << 32) | m);
    uint32_t taken = (v >> 32) == (b & 0xFFFFFFFFu) ? (uint32_t)v : 0;
    if (taken > m) taken = m;
    for (uint32_t i = 0; i < taken; i++)
        while (atomic_load_explicit(&pa[i].ready, memory_order_acquire) != b) cpu_relax();
}

/* Hand the batch's m records to the parse thread (waking it if it sleeps); returns the batch
 * number its slots will carry. */
static uint64_t pw_publish(sb_engine *e, ParseWorker *w, uint32_t m) {
    atomic_store_explicit(&w->rec, e->rec, memory_order_relaxed);
    atomic_store_explicit(&w->pa, e->pa, memory_order_relaxed);
    atomic_store_explicit(&w->scratch, e->scratch, memory_order_relaxed);
    atomic_store_explicit(&w->m, m, memory_order_relaxed);
    atomic_store_explicit(&w->json_slow, e->json_slow, memory_order_relaxed);
    uint64_t b = ++e->pbatch;
    if ((b & 0xFFFFFFFFu) == 0) b = ++e->pbatch; /* claim's batch field 0 means "none yet" */
    atomic_store(&w->claim, (b & 0xFFFFFFFFu) << 32);
    if (atomic_load(&w->sleeping)) {
        pthread_mutex_lock(&w->mu);
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
    }
    return b;
}

/* The pipeline over e->rec[0..m), then the batch result. */
static int run_batch(sb_engine *e, uint32_t m, int64_t now) {
    Parsed ring[PIPE];
    int rc = 0;
    ParseWorker *w = NULL;
    uint64_t b = 0;
    if (e->par_min && m >= e->par_min && pa_reserve(e, m) == 0 && (w = pw_get(e))) b = pw_publish(e, w, m);
    Parsed *pa = e->pa;
#define SLOT(i) (w ? &pa[i] : &ring[(i) & (PIPE - 1)])
    for (uint32_t i = 0; i < m + PIPE - 1; i++) {
        if (i < m) {
            if (w) {
                pipe_prefetch1(e, pw_need(e, w, i, m, b));
            } else {
                if (i + RPF < m) {
                    /* the record parsed RPF iterations from now: its bytes are read once, cold
                     * (a Python bytes object's lines were a third of jp_fast's samples) */
                    const BatchRec *br = &e->rec[i + RPF];
                    for (size_t off = 0; off < br->n; off += 64) prefetch(br->p + off);
                    if (br->n) prefetch(br->p + br->n - 1);
                }
                const BatchRec *br = &e->rec[i];
                Parsed *pr = &ring[i & (PIPE - 1)];
                parse_rec(pr, br->p, br->n, e->scratch + br->soff, e->json_slow);
                pipe_prefetch1(e, pr);
            }
        }
        if (i >= PF2 && i - PF2 < m) pipe_prefetch2(e, SLOT(i - PF2));
        if (i >= PF3 && i - PF3 < m) pipe_prefetch3(e, SLOT(i - PF3));
        if (i >= PF4 && i - PF4 < m) pipe_prefetch4(e, SLOT(i - PF4));
        if (i >= PIPE - 1) {
            uint32_t j = i - (PIPE - 1);
            if (run_json(e, SLOT(j), j, now) != 0 || e->oom) {
                rc = -1;
                break;
            }
        }
    }
#undef SLOT
    if (w && rc) pw_close(w, pa, m, b);
    for (uint32_t i = 0; i < e->ntouched; i++) e->touched[2 * i + 1] = e->books[e->touched[2 * i]].seq;
    sb_result *r = &e->res;
    r->fills = e->fills.b;
    r->fills_len = e->fills.n;
    r->n_fills = e->nf;
    r->statuses = e->stats.b;
    r->statuses_len = e->stats.n;
    r->n_statuses = e->ns;
    r->users = e->uids.b;
    r->users_len = e->uids.n;
    r->users_escaped = e->uesc;
    r->kinds = e->kinds.b;
    r->n_events = e->kinds.n;
    r->touched = e->touched;
    r->n_touched = e->ntouched;
    r->dropped = e->dropped;
    r->n_dropped = e->ndropped;
    r->n_books = e->nbooks;
    return rc;
}

const sb_result *sb_last(sb_engine *e) { return &e->res; }

static Buf *out_buf(sb_engine *e, int k) {
    switch (k) {
    case 0: return &e->fills;
    case 1: return &e->stats;
    case 2: return &e->uids;
    default: return &e->kinds;
    }
}

void sb_out_set(sb_engine *e, int k, char *buf, size_t cap, sb_out_grow grow, void *ctx) {
    if (k < 0 || k > 3 || !grow) return;
    Buf *b = out_buf(e, k);
    if (!b->grow) e->own[k] = *b;
    b->b = buf;
    b->n = 0;
    b->cap = cap;
    b->grow = grow;
    b->ctx = ctx;
    b->k = k;
}

void sb_out_reset(sb_engine *e) {
    for (int k = 0; k < 4; k++) {
        Buf *b = out_buf(e, k);
        if (b->grow) {
            *b = e->own[k];
            b->n = 0;
        }
    }
}

void sb_set_json_fast(sb_engine *e, int on) { e->json_slow = !on; }

static int jval_same(const jval *a, const jval *b) {
    if (a->kind != b->kind) return 0;
    if (a->kind == JV_INT) return a->i == b->i;
    if (a->kind == JV_STR) return a->esc == b->esc && a->n == b->n && memcmp(a->s, b->s, a->n) == 0;
    return 1;
}

int sb_json_check(const char *buf, size_t len) {
    char *sa = malloc(len + 16), *sg = malloc(len + 16);
    jcmd a, g;
    int rc = -2;
    memset(&a, 0, sizeof a); /* jval_same reads only what the kind uses; this quiets -Wmaybe-uninitialized */
    memset(&g, 0, sizeof g);
    if (!sa || !sg) goto out;
    a.scratch = sa;
    g.scratch = sg;
    int fa = jp_fast(buf, len, &a);
    int ok = jp_command(buf, len, &g);
    if (!fa) {
        rc = 0;
        goto out;
    }
    rc = -1;
    if (!ok) goto out;
    for (int k = 0; k < K_COUNT; k++)
        if (!jval_same(&a.f[k], &g.f[k])) goto out;
    rc = 1;
out:
    free(sa);
    free(sg);
    return rc;
}
uint64_t sb_dropped_total(sb_engine *e) { return e->dropped_total; }
void sb_set_emit(sb_engine *e, int emit_json) { e->emit = emit_json; }
uint64_t sb_event_count(sb_engine *e) { return e->events; }

/* ---- binary door ------------------------------------------------------------------------ */

int sb_core_cmd(sb_engine *e, const sb_cmd *bc) {
    if (bc->book >= e->nbooks || !bc->order_id_len || bc->order_id_len > MAX_ID || !bc->user_id_len ||
        bc->user_id_len > MAX_ID)
        return -2;
    Cmd c;
    memset(&c, 0, sizeof c);
    c.bi = bc->book;
    c.seq = ++e->books[c.bi].seq;
    c.t = bc->t;
    c.oid.s = bc->order_id;
    c.oid.n = bc->order_id_len;
    c.oid.esc = needs_esc(bc->order_id, bc->order_id_len);
    c.oh = hash_bytes(bc->order_id, bc->order_id_len);
    c.uid.s = bc->user_id;
    c.uid.n = bc->user_id_len;
    c.uid.esc = needs_esc(bc->user_id, bc->user_id_len);
    c.uh = hash_bytes(bc->user_id, bc->user_id_len);
    c.is_buy = bc->is_buy;
    c.market = bc->type == 1;
    c.tif = bc->tif <= T_FOK ? bc->tif : T_GTC;
    if (c.market && c.tif == T_GTC) c.tif = T_IOC;
    c.price = bc->price;
    c.qty = bc->qty;
    c.has_price = bc->has_price;
    c.has_qty = bc->has_qty;
    if ((bc->action == A_ADD && (!c.qty || c.qty > MAXQ || (!c.market && (!c.price || c.price > MAXQ)))) ||
        (c.has_price && (!c.price || c.price > MAXQ)) || (c.has_qty && (!c.qty || c.qty > MAXQ))) {
        reject(e, &c, &e->books[c.bi], R_BAD_ORDER, 0, 0);
        return 0;
    }
    switch (bc->action) {
    case A_ADD: return do_add(e, &c);
    case A_CANCEL: return do_cancel(e, &c, 0, 0);
    case A_REPLACE: return do_replace(e, &c, 0, 0);
    default: return -2;
    }
}

/* Batch door: like sb_core_cmd over an array, but it hides the id table's cache misses with a
 * two-stage software prefetch: the hash slot of command i+16, then the arena entry and the
 * order that slot names for command i+8. */
int sb_core_batch(sb_engine *e, const sb_cmd *cmds, uint32_t n) {
    enum { FAR = 16, NEAR = 8 };
    int rc = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (i + FAR < n) {
            const sb_cmd *p = &cmds[i + FAR];
            uint32_t h = hash_bytes(p->order_id, p->order_id_len);
            prefetch(&e->ids.s[h & e->ids.mask]);
        }
        if (i + NEAR < n) {
            const sb_cmd *p = &cmds[i + NEAR];
            const Slot *sl = &e->ids.s[hash_bytes(p->order_id, p->order_id_len) & e->ids.mask];
            if (sl->off) prefetch(ar_at(&e->ids.a, sl_off(sl)));
        }
        if (i + NEAR / 2 < n) {
            const sb_cmd *p = &cmds[i + NEAR / 2];
            const Slot *sl = &e->ids.s[hash_bytes(p->order_id, p->order_id_len) & e->ids.mask];
            if (sl->off) {
                uint32_t v = ar_val(&e->ids.a, sl_off(sl));
                if (v != NONE) prefetch(ORD(e, v));
            }
        }
        int r = sb_core_cmd(e, &cmds[i]);
        if (r == -1) return -1;
        if (r) rc = r;
    }
    return rc;
}

/* Handle door: the book core alone, as the QuantCup "voyager" benchmark drives its book --
 * orders named by dense handles (pool index | generation << 32), users by interned index, no
 * string ids, no duplicate check, events counted (emit must be off). */
uint32_t sb_user(sb_engine *e, const char *uid, uint32_t len) {
    if (!len || len > MAX_ID) return NONE;
    return user_intern(e, uid, len, -1);
}

void sb_hprefetch(const sb_engine *e, uint64_t handle, int stage) {
    uint32_t oi = (uint32_t)handle;
    if (oi >= e->onext) return;
    const Order *o = ORD(e, oi);
    if (!stage) {
        prefetch_w(o);
        return;
    }
    /* the order is in cache by now: its FIFO neighbours are what unlinking it writes */
    if (o->gen != (uint32_t)(handle >> 32)) return;
    if (o->prev != NONE && o->prev < e->onext) prefetch_w(ORD(e, o->prev));
    if (o->next != NONE && o->next < e->onext) prefetch_w(ORD(e, o->next));
}

uint64_t sb_hcore_cmd(sb_engine *e, const sb_hcmd *hc) {
    if (UNLIKELY(e->emit || hc->book >= e->nbooks || hc->user >= e->users.n)) return SB_HERR;
    Cmd c;
    c.action = hc->action;
    c.bi = hc->book;
    c.seq = ++e->books[c.bi].seq;
    c.t = 0;
    c.is_buy = hc->is_buy;
    c.market = hc->type == 1;
    c.tif = hc->tif <= T_FOK ? hc->tif : T_GTC;
    if (c.market && c.tif == T_GTC) c.tif = T_IOC;
    c.price = hc->price;
    c.qty = hc->qty;
    c.has_price = hc->has_price;
    c.has_qty = hc->has_qty;
    if ((c.action == A_ADD && (!c.qty || c.qty > MAXQ || (!c.market && (!c.price || c.price > MAXQ)))) ||
        (c.has_price && (!c.price || c.price > MAXQ)) || (c.has_qty && (!c.qty || c.qty > MAXQ))) {
        e->events++; /* REJECTED BAD_ORDER */
        return SB_HNONE;
    }
    if (c.action == A_ADD) {
        uint32_t oi;
        if (core_add(e, &c, hc->user, 0, &oi)) return SB_HERR;
        return oi == NONE ? SB_HNONE : ((uint64_t)ORD(e, oi)->gen << 32 | oi);
    }
    uint32_t oi = (uint32_t)hc->handle;
    const Order *o;
    if (oi >= e->onext || (o = ORD(e, oi))->gen != (uint32_t)(hc->handle >> 32) || o->book != c.bi) {
        e->events++; /* REJECTED UNKNOWN_ORDER */
        return SB_HNONE;
    }
    if (o->user != hc->user) {
        e->events++; /* REJECTED NOT_OWNER */
        return SB_HNONE;
    }
    if (c.action == A_CANCEL) {
        core_cancel(e, &c, oi);
        return SB_HNONE;
    }
    if (c.action != A_REPLACE) return SB_HERR;
    int rests;
    if (core_replace(e, &c, oi, &rests)) return SB_HERR;
    return rests ? hc->handle : SB_HNONE;
}

/* ---- depth ------------------------------------------------------------------------------ */

uint32_t sb_depth(sb_engine *e, uint32_t book, int side, uint32_t levels, uint64_t *out) {
    if (book >= e->nbooks || side < 0 || side > 1) return 0;
    const Side *s = &e->books[book].side[side];
    uint32_t k = 0;
    for (uint32_t i = s->n; i-- > 0 && k < levels; k++) {
        out[2 * k] = s->lv[i].price;
        out[2 * k + 1] = s->lv[i].total;
    }
    return k;
}

/* ---- snapshot / restore ----------------------------------------------------------------- */
/* Format (little-endian): "SNB1", u64 number of remembered ids, each as u8 len + bytes (in the
 * order they were first accepted); u32 number of books, each: u8 len + symbol, u64 seq,
 * u64 number of resting orders, each: u8 side, u8 len + id, u8 len + user, u64 price,
 * u64 remaining, u64 filled -- bids best->worst then asks best->worst, FIFO within a level,
 * so restoring in that order reproduces every priority. */

static int sn_put(Buf *b, const void *p, size_t n) {
    if (buf_reserve(b, n)) return -1;
    memcpy(b->b + b->n, p, n);
    b->n += n;
    return 0;
}

static int sn_u64(Buf *b, uint64_t v) {
    uint8_t t[8];
    for (int i = 0; i < 8; i++) t[i] = (uint8_t)(v >> (8 * i));
    return sn_put(b, t, 8);
}

static int sn_u32(Buf *b, uint32_t v) {
    uint8_t t[4];
    for (int i = 0; i < 4; i++) t[i] = (uint8_t)(v >> (8 * i));
    return sn_put(b, t, 4);
}

static int sn_str(Buf *b, const char *s, uint32_t n) {
    uint8_t l = (uint8_t)n;
    return sn_put(b, &l, 1) || sn_put(b, s, n);
}

int sb_snapshot(sb_engine *e, const char **out, size_t *len) {
    Buf *b = &e->snap;
    b->n = 0;
    int rc = sn_put(b, "SNB1", 4) || sn_u64(b, e->ids.n);
    for (uint64_t off = ar_first(&e->ids.a); off && !rc; off = ar_next(&e->ids.a, off)) {
        const uint8_t *p = ar_at(&e->ids.a, off);
        rc = sn_str(b, (const char *)p + AR_HDR, p[0]);
    }
    rc = rc || sn_u32(b, e->nbooks);
    for (uint32_t bi = 0; bi < e->nbooks && !rc; bi++) {
        Book *bk = &e->books[bi];
        uint64_t cnt = 0;
        for (int sd = 0; sd < 2; sd++)
            for (uint32_t i = 0; i < bk->side[sd].n; i++) cnt += bk->side[sd].lv[i].count;
        rc = sn_str(b, bk->sym, bk->symlen) || sn_u64(b, bk->seq) || sn_u64(b, cnt);
        for (int sd = 0; sd < 2 && !rc; sd++) {
            Side *s = &bk->side[sd];
            for (uint32_t i = s->n; i-- > 0 && !rc;) {
                for (uint32_t oi = s->lv[i].head; oi != NONE && !rc; oi = ORD(e, oi)->next) {
                    Order *o = ORD(e, oi);
                    uint8_t side = o->side;
                    Str id = ids_str(e, o->id_off), us = ustr(e, o->user);
                    rc = sn_put(b, &side, 1) || sn_str(b, id.s, id.n) || sn_str(b, us.s, us.n) ||
                         sn_u64(b, o->price) || sn_u64(b, o->rem) || sn_u64(b, o->filled);
                }
            }
        }
    }
    if (rc) return -1;
    *out = b->b;
    *len = b->n;
    return 0;
}

typedef struct {
    const uint8_t *p, *e;
    int bad;
} Rd;

static uint64_t rd_u(Rd *r, int bytes) {
    if (r->e - r->p < bytes) {
        r->bad = 1;
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v |= (uint64_t)r->p[i] << (8 * i);
    r->p += bytes;
    return v;
}

static const char *rd_str(Rd *r, uint32_t *n) {
    *n = (uint32_t)rd_u(r, 1);
    if (r->bad || (uint64_t)(r->e - r->p) < *n) {
        r->bad = 1;
        return NULL;
    }
    const char *s = (const char *)r->p;
    r->p += *n;
    return s;
}

int sb_restore(sb_engine *e, const char *buf, size_t len) {
    if (e->nbooks || e->ids.n || e->open) return -1;
    Rd r = {(const uint8_t *)buf, (const uint8_t *)buf + len, 0};
    if (len < 4 || memcmp(buf, "SNB1", 4) != 0) return -1;
    r.p += 4;
    uint64_t nids = rd_u(&r, 8);
    for (uint64_t i = 0; i < nids && !r.bad; i++) {
        uint32_t n;
        const char *s = rd_str(&r, &n);
        if (r.bad || n < 1 || n > MAX_ID) return -1;
        uint32_t h = hash_bytes(s, n);
        int found;
        Slot *sl = st_lookup(&e->ids, s, n, h, &found);
        if (found || !st_put(&e->ids, sl, s, n, h, NONE, -1)) return -1;
    }
    uint32_t nb = (uint32_t)rd_u(&r, 4);
    for (uint32_t k = 0; k < nb && !r.bad; k++) {
        uint32_t sn;
        const char *sym = rd_str(&r, &sn);
        if (r.bad || !symbol_ok(sym, sn)) return -1;
        uint32_t h = hash_bytes(sym, sn);
        if (book_find(e, sym, sn, h) >= 0) return -1;
        int64_t bi = book_create(e, sym, sn, h);
        if (bi < 0) return -1;
        e->books[bi].seq = rd_u(&r, 8);
        uint64_t cnt = rd_u(&r, 8);
        for (uint64_t j = 0; j < cnt && !r.bad; j++) {
            uint32_t side = (uint32_t)rd_u(&r, 1), idn, un;
            const char *id = rd_str(&r, &idn);
            const char *us = rd_str(&r, &un);
            uint64_t price = rd_u(&r, 8), rem = rd_u(&r, 8), filled = rd_u(&r, 8);
            if (r.bad || side > 1 || idn < 1 || idn > MAX_ID || un < 1 || un > MAX_ID) return -1;
            if (!price || price > MAXQ || !rem || rem > MAXQ || filled > MAXQ) return -1;
            uint32_t h2 = hash_bytes(id, idn);
            int found;
            Slot *sl = st_lookup(&e->ids, id, idn, h2, &found);
            if (!found || st_val(&e->ids, sl) != NONE) return -1;
            uint64_t id_off = sl_off(sl);
            uint32_t user = user_intern(e, us, un, -1);
            uint32_t oi = order_alloc(e);
            if (user == NONE || oi == NONE) return -1;
            Order *o = ORD(e, oi);
            o->price = price;
            o->rem = rem;
            o->filled = filled;
            o->id_off = id_off;
            o->user = user;
            o->book = (uint32_t)bi;
            o->side = (uint8_t)side;
            if (order_rest(e, &e->books[bi], oi)) return -1;
            id_set(e, id_off, oi);
        }
        Book *bk = &e->books[bi];
        if (bk->side[0].n && bk->side[1].n &&
            bk->side[0].lv[bk->side[0].n - 1].price >= bk->side[1].lv[bk->side[1].n - 1].price)
            return -1; /* crossed */
    }
    if (r.bad || r.p != r.e) return -1;
    return 0;
}
