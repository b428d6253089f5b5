/* Supernoba: a small strict JSON reader for the one order-command shape, and JSON writing
 * helpers for the events.  Included by book.c only (static functions, one translation unit).
 *
 * Reader: RFC 8259 syntax, UTF-8 validated, escapes decoded (\uXXXX with surrogate pairs; a
 * lone surrogate refuses the line), NaN/Infinity refused, nesting deeper than JP_MAX_DEPTH
 * refused.  The top level must be an object.  Only the ten known keys are kept (keys are
 * compared after unescaping; a repeated key: the last one wins); every other value is
 * validated and skipped.  Numbers are classified: an integer that fits int64 (JV_INT), an
 * integer beyond (JV_BIGINT), or a number with a fraction or exponent (JV_FLOAT).  Decoded
 * strings that needed unescaping are written to a scratch buffer at least as long as the
 * record; the others point into the record.
 */
#ifndef SUPERNOBA_JSON_H
#define SUPERNOBA_JSON_H

#include <stdint.h>
#include <string.h>

enum { JV_ABSENT = 0, JV_NULL, JV_TRUE, JV_FALSE, JV_INT, JV_BIGINT, JV_FLOAT, JV_STR, JV_OTHER };
enum { K_ACTION, K_SYMBOL, K_ORDER_ID, K_USER_ID, K_IS_BUY, K_PRICE, K_QUANTITY, K_TYPE, K_TIF, K_TS, K_COUNT };

#define JP_MAX_DEPTH 64

typedef struct {
    uint8_t kind;
    uint8_t esc; /* string: decoded content holds '"', '\\' or a control char (needs escaping) */
    int64_t i;
    const char *s;
    uint32_t n;
} jval;

typedef struct {
    jval f[K_COUNT];
    char *scratch; /* decoded strings go here */
    size_t sused;
} jcmd;

#define JWS(p, e) while ((p) < (e) && (*(p) == ' ' || *(p) == '\t' || *(p) == '\n' || *(p) == '\r')) (p)++

/* The high bit of each byte of x (8 string bytes, little-endian) that is '"', '\\', < 0x20 or
 * >= 0x80; the lowest flagged byte is exact (later ones may be false hits of the borrow). */
static inline uint64_t str_flags(uint64_t x) {
    const uint64_t L = 0x0101010101010101ULL, H = 0x8080808080808080ULL;
    uint64_t q = x ^ (L * '"'), b = x ^ (L * '\\');
    return (((q - L) & ~q) | ((b - L) & ~b) | ((x - L * 0x20) & ~x) | x) & H;
}

static inline int hexv(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Validate one UTF-8 sequence starting at p (p[0] >= 0x80).  Returns its length or 0. */
static inline int utf8_len(const unsigned char *p, const unsigned char *e) {
    unsigned c = p[0];
    if (c >= 0xC2 && c <= 0xDF) {
        if (e - p < 2 || (p[1] & 0xC0) != 0x80) return 0;
        return 2;
    }
    if (c >= 0xE0 && c <= 0xEF) {
        if (e - p < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && p[1] < 0xA0) return 0;  /* overlong */
        if (c == 0xED && p[1] >= 0xA0) return 0; /* surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (e - p < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
        if (c == 0xF0 && p[1] < 0x90) return 0;  /* overlong */
        if (c == 0xF4 && p[1] >= 0x90) return 0; /* > U+10FFFF */
        return 4;
    }
    return 0;
}

static inline char *put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (char)(0xF0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    return o;
}

static inline int read_u4(const unsigned char *p, const unsigned char *e, uint32_t *out) {
    if (e - p < 4) return 0;
    int a = hexv(p[0]), b = hexv(p[1]), c = hexv(p[2]), d = hexv(p[3]);
    if ((a | b | c | d) < 0) return 0;
    *out = (uint32_t)((a << 12) | (b << 8) | (c << 4) | d);
    return 1;
}

/* p points after the opening quote.  On success returns the position after the closing quote
 * and fills v (kind JV_STR).  `keep` = 0: validate only. */
static const unsigned char *jp_string(const unsigned char *p, const unsigned char *e, jcmd *c, jval *v, int keep) {
    const unsigned char *start = p;
    /* fast path: no escapes */
    for (;;) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        /* 8 bytes at a time: jump to the first byte that is '"', '\\', < 0x20 or >= 0x80
         * (the lowest flagged byte of these SWAR tests is exact) */
        if (e - p >= 8) {
            uint64_t x;
            memcpy(&x, p, 8);
            uint64_t t = str_flags(x);
            if (!t) {
                p += 8;
                continue;
            }
            p += __builtin_ctzll(t) >> 3;
        }
#endif
        if (p >= e) return NULL;
        unsigned ch = *p;
        if (ch == '"') {
            if (keep) {
                v->kind = JV_STR;
                v->esc = 0;
                v->s = (const char *)start;
                v->n = (uint32_t)(p - start);
            }
            return p + 1;
        }
        if (ch == '\\') break;
        if (ch < 0x20) return NULL;
        if (ch < 0x80) {
            p++;
            continue;
        }
        int l = utf8_len(p, e);
        if (!l) return NULL;
        p += l;
    }
    /* slow path: decode into scratch */
    char *o0 = c->scratch + c->sused;
    char *o = o0;
    if (keep) {
        memcpy(o, start, (size_t)(p - start));
        o += p - start;
    }
    uint8_t esc = 0;
    for (;;) {
        if (p >= e) return NULL;
        unsigned ch = *p;
        if (ch == '"') {
            p++;
            break;
        }
        if (ch < 0x20) return NULL;
        if (ch == '\\') {
            if (e - p < 2) return NULL;
            unsigned x = p[1];
            uint32_t cp;
            p += 2;
            switch (x) {
            case '"': cp = '"'; break;
            case '\\': cp = '\\'; break;
            case '/': cp = '/'; break;
            case 'b': cp = 8; break;
            case 'f': cp = 12; break;
            case 'n': cp = 10; break;
            case 'r': cp = 13; break;
            case 't': cp = 9; break;
            case 'u':
                if (!read_u4(p, e, &cp)) return NULL;
                p += 4;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    uint32_t lo;
                    if (e - p < 6 || p[0] != '\\' || p[1] != 'u' || !read_u4(p + 2, e, &lo)) return NULL;
                    if (lo < 0xDC00 || lo > 0xDFFF) return NULL;
                    p += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    return NULL; /* lone low surrogate */
                }
                break;
            default: return NULL;
            }
            if (cp < 0x20 || cp == '"' || cp == '\\') esc = 1;
            if (keep) o = put_utf8(o, cp);
            continue;
        }
        if (ch < 0x80) {
            if (keep) *o++ = (char)ch;
            p++;
            continue;
        }
        int l = utf8_len(p, e);
        if (!l) return NULL;
        if (keep) {
            memcpy(o, p, (size_t)l);
            o += l;
        }
        p += l;
    }
    if (keep) {
        v->kind = JV_STR;
        v->esc = esc;
        v->s = o0;
        v->n = (uint32_t)(o - o0);
        c->sused += (size_t)(o - o0);
    }
    return p;
}

static const unsigned char *jp_number(const unsigned char *p, const unsigned char *e, jval *v) {
    int neg = 0, big = 0, flt = 0;
    uint64_t acc = 0;
    if (p < e && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= e) return NULL;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < e && *p >= '0' && *p <= '9') {
            unsigned d = (unsigned)(*p - '0');
            if (acc > (UINT64_MAX - d) / 10) big = 1;
            else acc = acc * 10 + d;
            p++;
        }
    } else {
        return NULL;
    }
    if (p < e && *p == '.') {
        p++;
        if (p >= e || *p < '0' || *p > '9') return NULL;
        while (p < e && *p >= '0' && *p <= '9') p++;
        flt = 1;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-')) p++;
        if (p >= e || *p < '0' || *p > '9') return NULL;
        while (p < e && *p >= '0' && *p <= '9') p++;
        flt = 1;
    }
    if (flt) {
        v->kind = JV_FLOAT;
    } else if (big || (!neg && acc > (uint64_t)INT64_MAX) || (neg && acc > (uint64_t)INT64_MAX + 1)) {
        v->kind = JV_BIGINT;
    } else {
        v->kind = JV_INT;
        v->i = neg ? (int64_t)(0 - acc) : (int64_t)acc;
    }
    return p;
}

static inline const unsigned char *jp_lit(const unsigned char *p, const unsigned char *e, const char *lit, size_t n) {
    if ((size_t)(e - p) < n || memcmp(p, lit, n) != 0) return NULL;
    return p + n;
}

static const unsigned char *jp_value(const unsigned char *p, const unsigned char *e, jcmd *c, jval *v, int depth);

static const unsigned char *jp_skip_container(const unsigned char *p, const unsigned char *e, jcmd *c, int depth) {
    jval tmp;
    if (depth > JP_MAX_DEPTH) return NULL;
    if (*p == '[') {
        p++;
        JWS(p, e);
        if (p < e && *p == ']') return p + 1;
        for (;;) {
            p = jp_value(p, e, c, &tmp, depth + 1);
            if (!p) return NULL;
            JWS(p, e);
            if (p >= e) return NULL;
            if (*p == ',') {
                p++;
                continue;
            }
            if (*p == ']') return p + 1;
            return NULL;
        }
    }
    /* object */
    p++;
    JWS(p, e);
    if (p < e && *p == '}') return p + 1;
    for (;;) {
        JWS(p, e);
        if (p >= e || *p != '"') return NULL;
        p = jp_string(p + 1, e, c, &tmp, 0);
        if (!p) return NULL;
        JWS(p, e);
        if (p >= e || *p != ':') return NULL;
        p++;
        p = jp_value(p, e, c, &tmp, depth + 1);
        if (!p) return NULL;
        JWS(p, e);
        if (p >= e) return NULL;
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p == '}') return p + 1;
        return NULL;
    }
}

/* Parse any value; strings are kept (decoded) only for the caller's known keys. */
static const unsigned char *jp_value(const unsigned char *p, const unsigned char *e, jcmd *c, jval *v, int depth) {
    JWS(p, e);
    if (p >= e) return NULL;
    switch (*p) {
    case '"': return jp_string(p + 1, e, c, v, depth == 0);
    case '{':
    case '[':
        v->kind = JV_OTHER;
        return jp_skip_container(p, e, c, depth);
    case 't': v->kind = JV_TRUE; return jp_lit(p, e, "true", 4);
    case 'f': v->kind = JV_FALSE; return jp_lit(p, e, "false", 5);
    case 'n': v->kind = JV_NULL; return jp_lit(p, e, "null", 4);
    default: return jp_number(p, e, v);
    }
}

static int key_index(const char *k, uint32_t n) {
    switch (n) {
    case 2: return memcmp(k, "ts", 2) == 0 ? K_TS : -1;
    case 3: return memcmp(k, "tif", 3) == 0 ? K_TIF : -1;
    case 4: return memcmp(k, "type", 4) == 0 ? K_TYPE : -1;
    case 5: return memcmp(k, "price", 5) == 0 ? K_PRICE : -1;
    case 6:
        if (memcmp(k, "action", 6) == 0) return K_ACTION;
        if (memcmp(k, "symbol", 6) == 0) return K_SYMBOL;
        if (memcmp(k, "is_buy", 6) == 0) return K_IS_BUY;
        return -1;
    case 7: return memcmp(k, "user_id", 7) == 0 ? K_USER_ID : -1;
    case 8:
        if (memcmp(k, "order_id", 8) == 0) return K_ORDER_ID;
        if (memcmp(k, "quantity", 8) == 0) return K_QUANTITY;
        return -1;
    default: return -1;
    }
}

/* Parse one command.  Returns 1 on success, 0 when the line is not a JSON object. */
static int jp_command(const char *buf, size_t len, jcmd *c) {
    const unsigned char *p = (const unsigned char *)buf, *e = p + len;
    for (int k = 0; k < K_COUNT; k++) c->f[k].kind = JV_ABSENT; /* only `kind` is read of an absent field */
    c->sused = 0;
    JWS(p, e);
    if (p >= e || *p != '{') return 0;
    p++;
    JWS(p, e);
    if (p < e && *p == '}') {
        p++;
    } else {
        for (;;) {
            jval key, skip;
            JWS(p, e);
            if (p >= e || *p != '"') return 0;
            size_t mark = c->sused;
            p = jp_string(p + 1, e, c, &key, 1);
            if (!p) return 0;
            int ki = key_index(key.s, key.n);
            c->sused = mark; /* the key's decoded bytes are no longer needed */
            JWS(p, e);
            if (p >= e || *p != ':') return 0;
            p++;
            /* a known key's value goes straight into its field (a repeated key: the last wins) */
            p = jp_value(p, e, c, ki >= 0 ? &c->f[ki] : &skip, ki >= 0 ? 0 : 1);
            if (!p) return 0;
            JWS(p, e);
            if (p >= e) return 0;
            if (*p == ',') {
                p++;
                continue;
            }
            if (*p == '}') {
                p++;
                break;
            }
            return 0;
        }
    }
    JWS(p, e);
    return p == e;
}

/* ---- fast path: the router's canonical layout ---------------------------------------------
 *
 * The router (chalice_app.messages.order_command, serialised by orjson) always writes the keys
 * in the order action, symbol, order_id, user_id, is_buy, price, quantity, type, tif, ts (absent
 * ones left out), with no whitespace, no escapes and ASCII strings.  jp_fast reads exactly that
 * subset -- each known key at most once and in that order, each with a value of its own type
 * or null: a plain string (no backslash, control or non-ASCII byte) for the text fields, true or
 * false for is_buy, an integer of at most 18 digits without fraction or exponent for price,
 * quantity and ts -- and fills the fields exactly as jp_command would.  Anything else (other key
 * order, unknown or repeated keys, whitespace, escapes, UTF-8, a value of another type, floats,
 * big integers, nested values, trailing bytes) returns 0 and the caller runs jp_command, so the
 * result never depends on which reader took the record (property-tested through
 * sb_json_check and the engine's fast-path switch). */

/* The 8 bytes at p as a little-endian word; bytes at or past e read as 0 (b: the record's start,
 * p < e).  Never reads outside [b, e). */
static inline uint64_t jf_load8(const unsigned char *b, const unsigned char *p, const unsigned char *e) {
    uint64_t x = 0;
    if (e - p >= 8) {
        memcpy(&x, p, 8);
    } else if (e - b >= 8) {
        memcpy(&x, e - 8, 8);
        x >>= 8 * (8 - (e - p));
    } else {
        for (const unsigned char *q = p; q < e; q++) x |= (uint64_t)*q << (8 * (q - p));
    }
    return x;
}

/* p after the opening quote: the closing quote, or NULL at a byte the fast path does not take.
 * Eight bytes a step, the last step included (jf_load8 reads the record's tail as zero bytes
 * past its end, which stop the scan as control bytes would). */
static inline const unsigned char *jf_str(const unsigned char *b, const unsigned char *p, const unsigned char *e) {
    while (p < e) {
        uint64_t t = str_flags(jf_load8(b, p, e));
        if (!t) {
            p += 8;
            continue;
        }
        p += __builtin_ctzll(t) >> 3;
        return p < e && *p == '"' ? p : NULL;
    }
    return NULL;
}

#define JF_NULL 0x6c6c756eu /* "null" as a little-endian 32-bit word */

/* A null value: JV_NULL, p past it; else NULL. */
static inline const unsigned char *jf_null(const unsigned char *b, const unsigned char *p, const unsigned char *e,
                                           jval *v) {
    if ((uint32_t)jf_load8(b, p, e) != JF_NULL) return NULL;
    v->kind = JV_NULL;
    return p + 4;
}

/* A text field's value: a plain string or null. */
static inline const unsigned char *jf_strv(const unsigned char *b, const unsigned char *p, const unsigned char *e,
                                           jval *v) {
    if (*p != '"') return jf_null(b, p, e, v);
    const unsigned char *q = jf_str(b, p + 1, e);
    if (!q) return NULL;
    v->kind = JV_STR;
    v->esc = 0;
    v->s = (const char *)p + 1;
    v->n = (uint32_t)(q - (p + 1));
    return q + 1;
}

/* How many of x's bytes, from the first, are ASCII digits.  A byte >= 0xFA may carry into the
 * next byte's test, but it is itself a non-digit, so the count ends before the bytes it spoils. */
static inline uint32_t jf_ndigits(uint64_t x) {
    const uint64_t F = 0xF0F0F0F0F0F0F0F0ULL, T = 0x3030303030303030ULL;
    uint64_t m = ((x & F) ^ T) | (((x + 0x0606060606060606ULL) & F) ^ T); /* 0 byte: a digit */
    uint64_t z = (((m & 0x7F7F7F7F7F7F7F7FULL) + 0x7F7F7F7F7F7F7F7FULL) | m) & 0x8080808080808080ULL;
    return z ? (uint32_t)__builtin_ctzll(z) >> 3 : 8;
}

/* The value of x's first nd (1..8) bytes, ASCII digits, most significant first: three
 * multiply-shift steps combine 1-, 2- and 4-digit lanes. */
static inline uint64_t jf_digits(uint64_t x, uint32_t nd) {
    x = (x & 0x0F0F0F0F0F0F0F0FULL) << (8 * (8 - nd));
    x = (x * 2561) >> 8;
    x = ((x & 0x00FF00FF00FF00FFULL) * 6553601) >> 16;
    return ((x & 0x0000FFFF0000FFFFULL) * 42949672960001ULL) >> 32;
}

static const uint64_t JF_POW10[9] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000};

/* An integer field's value: an integer of at most 18 digits (8 read at a time), or null. */
static inline const unsigned char *jf_intv(const unsigned char *b, const unsigned char *p, const unsigned char *e,
                                           jval *v) {
    int neg = *p == '-';
    p += neg;
    if (p >= e) return NULL;
    uint64_t x = jf_load8(b, p, e);
    uint32_t nd = jf_ndigits(x), total = nd;
    if (!nd) return neg ? NULL : jf_null(b, p, e, v);
    if ((x & 0xFF) == '0' && nd > 1) return NULL; /* "01": the general reader refuses it */
    uint64_t acc = jf_digits(x, nd);
    p += nd;
    while (nd == 8 && p < e) {
        x = jf_load8(b, p, e);
        nd = jf_ndigits(x);
        if (!nd) break;
        total += nd;
        if (total > 18) return NULL; /* might not fit int64: the general reader decides */
        acc = acc * JF_POW10[nd] + jf_digits(x, nd);
        p += nd;
    }
    if (p < e && (*p == '.' || *p == 'e' || *p == 'E')) return NULL;
    v->kind = JV_INT;
    v->i = neg ? -(int64_t)acc : (int64_t)acc;
    return p;
}

/* is_buy's value: true, false or null. */
static inline const unsigned char *jf_boolv(const unsigned char *b, const unsigned char *p, const unsigned char *e,
                                            jval *v) {
    uint64_t x = jf_load8(b, p, e);
    if ((uint32_t)x == 0x65757274u) { /* "true" */
        v->kind = JV_TRUE;
        return p + 4;
    }
    if ((x & 0xFFFFFFFFFFULL) == 0x65736c6166ULL) { /* "false" */
        v->kind = JV_FALSE;
        return p + 5;
    }
    if ((uint32_t)x == JF_NULL) {
        v->kind = JV_NULL;
        return p + 4;
    }
    return NULL;
}

/* One optional key of the canonical order: when the record continues with it, read its value
 * with READ and the ',' or the final '}' after it. */
#define JF_FIELD(K, LIT, READ)                                                                  \
    if ((size_t)(e - p) > sizeof(LIT) - 1 && memcmp(p, LIT, sizeof(LIT) - 1) == 0) {           \
        p = READ(b, p + sizeof(LIT) - 1, e, &c->f[K]);                                          \
        if (!p || p >= e) return 0;                                                             \
        if (*p == '}') return p + 1 == e;                                                       \
        if (*p != ',') return 0;                                                                \
        p++;                                                                                    \
    }

/* 1: the record was read (fields as jp_command would set them); 0: not the canonical subset. */
static int jp_fast(const char *buf, size_t len, jcmd *c) {
    const unsigned char *b = (const unsigned char *)buf, *p = b, *e = p + len;
    for (int k = 0; k < K_COUNT; k++) c->f[k].kind = JV_ABSENT;
    c->sused = 0;
    if (len < 2 || *p != '{' || p[1] != '"') return 0;
    p++;
    JF_FIELD(K_ACTION, "\"action\":", jf_strv)
    JF_FIELD(K_SYMBOL, "\"symbol\":", jf_strv)
    JF_FIELD(K_ORDER_ID, "\"order_id\":", jf_strv)
    JF_FIELD(K_USER_ID, "\"user_id\":", jf_strv)
    JF_FIELD(K_IS_BUY, "\"is_buy\":", jf_boolv)
    JF_FIELD(K_PRICE, "\"price\":", jf_intv)
    JF_FIELD(K_QUANTITY, "\"quantity\":", jf_intv)
    JF_FIELD(K_TYPE, "\"type\":", jf_strv)
    JF_FIELD(K_TIF, "\"tif\":", jf_strv)
    JF_FIELD(K_TS, "\"ts\":", jf_intv)
    return 0; /* a key out of order, unknown or repeated, or a value the fast path leaves */
}
#undef JF_FIELD

/* ---- writing ---------------------------------------------------------------------------- */

/* Upper bound of the escaped size of n bytes. */
#define ESC_MAX(n) ((size_t)(n) * 6)

static const char HEXD[] = "0123456789abcdef";

/* JSON-escape like Python's json.dumps(ensure_ascii=False). */
static inline char *put_esc(char *o, const char *s, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\') {
            *o++ = (char)ch;
            continue;
        }
        *o++ = '\\';
        switch (ch) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        default:
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = HEXD[ch >> 4];
            *o++ = HEXD[ch & 15];
        }
    }
    return o;
}

/* Copy n bytes with overlapping fixed-size moves (inlined; a variable-length memcpy is a libc
 * call or a slow-to-start `rep movs`, and ids/symbols are short: the router's ids are 30 bytes).
 * Reads and writes stay inside [s, s+n) and [o, o+n). */
static inline char *copy_small(char *o, const char *s, uint32_t n) {
    if (n > 16) {
        if (n > 64) {
            memcpy(o, s, n);
            return o + n;
        }
        char x[32], y[32];
        if (n > 32) {
            memcpy(x, s, 32);
            memcpy(y, s + n - 32, 32);
            memcpy(o, x, 32);
            memcpy(o + n - 32, y, 32);
        } else {
            memcpy(x, s, 16);
            memcpy(y, s + n - 16, 16);
            memcpy(o, x, 16);
            memcpy(o + n - 16, y, 16);
        }
    } else if (n >= 8) {
        uint64_t x, y;
        memcpy(&x, s, 8);
        memcpy(&y, s + n - 8, 8);
        memcpy(o, &x, 8);
        memcpy(o + n - 8, &y, 8);
    } else if (n >= 4) {
        uint32_t x, y;
        memcpy(&x, s, 4);
        memcpy(&y, s + n - 4, 4);
        memcpy(o, &x, 4);
        memcpy(o + n - 4, &y, 4);
    } else if (n) {
        o[0] = s[0];
        o[n >> 1] = s[n >> 1];
        o[n - 1] = s[n - 1];
    }
    return o + n;
}

/* a[0..n) == b[0..n) with overlapping fixed-size loads (no libc call up to 64 bytes). */
static inline int eq_small(const char *a, const char *b, uint32_t n) {
    if (n > 16) {
        if (n > 32) return n <= 64 ? memcmp(a, b, 32) == 0 && memcmp(a + n - 32, b + n - 32, 32) == 0
                                   : memcmp(a, b, n) == 0;
        return memcmp(a, b, 16) == 0 && memcmp(a + n - 16, b + n - 16, 16) == 0;
    }
    if (n >= 8) {
        uint64_t x0, x1, y0, y1;
        memcpy(&x0, a, 8);
        memcpy(&y0, b, 8);
        memcpy(&x1, a + n - 8, 8);
        memcpy(&y1, b + n - 8, 8);
        return ((x0 ^ y0) | (x1 ^ y1)) == 0;
    }
    if (n >= 4) {
        uint32_t x0, x1, y0, y1;
        memcpy(&x0, a, 4);
        memcpy(&y0, b, 4);
        memcpy(&x1, a + n - 4, 4);
        memcpy(&y1, b + n - 4, 4);
        return ((x0 ^ y0) | (x1 ^ y1)) == 0;
    }
    return n == 0 || (a[0] == b[0] && a[n >> 1] == b[n >> 1] && a[n - 1] == b[n - 1]);
}

static inline char *put_str(char *o, const char *s, uint32_t n, int esc) {
    if (!esc) return copy_small(o, s, n);
    return put_esc(o, s, n);
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#error "the number writer below builds digits in little-endian byte order"
#endif

/* The 8 decimal digits of v < 10^8 as ASCII in one register, most significant first in memory
 * (little-endian), computed with multiply-shift per lane: two 4-digit lanes, then 2-digit,
 * then 1-digit lanes. */
static inline uint64_t dig8(uint32_t v) {
    uint64_t y = (uint64_t)(v / 10000) | ((uint64_t)(v % 10000) << 32);
    uint64_t z = ((y * 10486) >> 20) & 0x0000007F0000007FULL; /* lane / 100 */
    z |= (y - z * 100) << 16;
    uint64_t w = ((z * 103) >> 10) & 0x000F000F000F000FULL; /* lane / 10 */
    w |= (z - w * 10) << 8;
    return w;
}

/* v < 10^8 without leading zeros: one 8-byte store (bytes past the digits are scratch). */
static inline char *put_u32_8(char *o, uint32_t v) {
    uint64_t w = dig8(v);
    uint32_t lz = v ? (uint32_t)__builtin_ctzll(w) >> 3 : 7; /* leading zero digits */
    w = (w + 0x3030303030303030ULL) >> (8 * lz);
    memcpy(o, &w, 8);
    return o + 8 - lz;
}

/* v < 10^4 (most quantities and many prices): the same with 4 lanes in 32 bits. */
static inline char *put_u32_4(char *o, uint32_t v) {
    uint32_t q = (v * 5243) >> 19; /* v / 100 */
    uint32_t z = q | ((v - q * 100) << 16);
    uint32_t w = ((z * 103) >> 10) & 0x000F000FU;
    w |= (z - w * 10) << 8;
    uint32_t lz = v ? (uint32_t)__builtin_ctz(w) >> 3 : 3;
    w = (w + 0x30303030U) >> (8 * lz);
    memcpy(o, &w, 4);
    return o + 4 - lz;
}

static inline char *put_8(char *o, uint32_t v) {
    uint64_t w = dig8(v) + 0x3030303030303030ULL;
    memcpy(o, &w, 8);
    return o + 8;
}

/* Writes up to 20 digits; the caller's buffer must have 24 bytes of room at o (event writers
 * reserve far more).  Digits are built in registers and stored 8 at a time: no per-digit
 * stores read back by a wide copy (a store-forwarding stall), no digit-count loop. */
static inline char *put_u64(char *o, uint64_t v) {
    if (v < 10000) return put_u32_4(o, (uint32_t)v);
    if (v < 100000000ULL) return put_u32_8(o, (uint32_t)v);
    if (v < 10000000000000000ULL) {
        o = put_u32_8(o, (uint32_t)(v / 100000000ULL));
        return put_8(o, (uint32_t)(v % 100000000ULL));
    }
    o = put_u32_8(o, (uint32_t)(v / 10000000000000000ULL));
    v %= 10000000000000000ULL;
    o = put_8(o, (uint32_t)(v / 100000000ULL));
    return put_8(o, (uint32_t)(v % 100000000ULL));
}

static inline char *put_i64(char *o, int64_t v) {
    if (v < 0) {
        *o++ = '-';
        return put_u64(o, (uint64_t)0 - (uint64_t)v);
    }
    return put_u64(o, (uint64_t)v);
}

/* v zero-padded to at least 12 digits (trade ids). */
static inline char *put_u64_pad12(char *o, uint64_t v) {
    if (v < 1000000000000ULL) {
        uint64_t w = dig8((uint32_t)(v % 100000000ULL)) + 0x3030303030303030ULL;
        uint32_t hi = (uint32_t)(v / 100000000ULL); /* < 10^4: its last 4 of 8 digits */
        uint64_t h = (dig8(hi) + 0x3030303030303030ULL) >> 32;
        uint32_t h4 = (uint32_t)h;
        memcpy(o, &h4, 4);
        memcpy(o + 4, &w, 8);
        return o + 12;
    }
    return put_u64(o, v);
}

#define PUT_LIT(o, lit) (memcpy((o), (lit), sizeof(lit) - 1), (o) + sizeof(lit) - 1)

#endif
