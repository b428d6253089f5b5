/* CPython glue compiled into the cffi module engine_pkg._book (after cffi's own #include of
 * Python.h), not into the C book: it lets Engine.process hand its list of records to C without
 * joining them into one buffer first (the join and the NUL scan were ~15% of a batch), and
 * lets C write the batch's events straight into the bytes objects Python gets back (copying
 * the engine's buffers afterwards was ~3 us of a 500-record batch).
 *
 * sb_process_pylist(e, id(records), now, id(out)): `records` must be an exact list or tuple
 * of exact bytes objects and `out` an exact list of 4 items (CPython's id() is the object's
 * address); anything else returns -3 having done nothing, and the caller falls back to
 * sb_process.  On 0, out[0..3] are new bytes objects: the batch's fills, statuses, status
 * users and event kinds (sb_result's four outputs; its counts are read through sb_last).
 * cffi releases the GIL around the call: it is taken back for the whole batch, so no other
 * thread can change the lists or free a record while C reads it (a batch of 500 holds it
 * ~0.1 ms, like any C extension call). */
#include <stddef.h>
#include <stdlib.h>

/* Not in the limited API, but exported by every CPython 3 (the one way to grow or shrink a
 * bytes object that nothing else references yet). */
PyAPI_FUNC(int) _PyBytes_Resize(PyObject **, Py_ssize_t);

#define SB_OUT_N 4

/* sb_out_grow for a bytes object: objs[k] resized in place (realloc), its bytes kept. */
static char *py_out_grow(void *ctx, int k, size_t newcap) {
    PyObject **objs = (PyObject **)ctx;
    if (newcap > (size_t)PY_SSIZE_T_MAX || _PyBytes_Resize(&objs[k], (Py_ssize_t)newcap) != 0) {
        PyErr_Clear(); /* objs[k] may be NULL now; the batch stops with -1 */
        return NULL;
    }
    return PyBytes_AsString(objs[k]);
}

/* The batch: the records' pointers and lengths read in place, then sb_process_vec. */
static int py_run(sb_engine *e, PyObject *seq, int is_list, int64_t now) {
    /* the limited API of an abi3 module: item access through functions, not macros */
    Py_ssize_t n = is_list ? PyList_Size(seq) : PyTuple_Size(seq);
    if (n == 0) return sb_process_vec(e, NULL, NULL, 0, now);
    if (n < 0 || n >= (Py_ssize_t)UINT32_MAX) return -3;
    const char **ptrs = malloc((size_t)n * sizeof *ptrs);
    size_t *lens = ptrs ? malloc((size_t)n * sizeof *lens) : NULL;
    int rc = -1; /* out of memory */
    if (lens) {
        /* the items' pointers first (the list's own array), then each item: its header is
         * a cache miss of its own, so the one 8 ahead is prefetched */
        PyObject **items = (PyObject **)ptrs;
        for (Py_ssize_t i = 0; i < n; i++) items[i] = is_list ? PyList_GetItem(seq, i) : PyTuple_GetItem(seq, i);
        /* The limited API has no PyBytes_AS_STRING macro, and the two calls a record were
         * ~3% of a batch: an exact bytes object's data lies at one fixed offset from its
         * header (PyBytesObject.ob_sval), taken once from the first record; Py_SIZE is its
         * length. */
        ptrdiff_t data = -1;
        Py_ssize_t i = 0;
        for (; i < n; i++) {
            if (i + 8 < n) __builtin_prefetch(items[i + 8]);
            PyObject *it = items[i];
            if (!PyBytes_CheckExact(it)) break;
            if (data < 0) data = PyBytes_AsString(it) - (const char *)it;
            lens[i] = (size_t)Py_SIZE(it);
            ptrs[i] = (const char *)it + data; /* overwrites items[i], read above */
        }
        rc = i == n ? sb_process_vec(e, ptrs, lens, (uint32_t)n, now) : -3;
    }
    free(ptrs);
    free(lens);
    return rc;
}

static int sb_process_pylist(sb_engine *e, uintptr_t records, int64_t now, uintptr_t out) {
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *seq = (PyObject *)records, *outl = (PyObject *)out;
    int is_list = PyList_CheckExact(seq), rc = -3;
    if ((is_list || PyTuple_CheckExact(seq)) && PyList_CheckExact(outl) && PyList_Size(outl) == SB_OUT_N) {
        /* each output starts a quarter bigger than the last batch's: most batches never grow it */
        const sb_result *last = sb_last(e);
        const size_t prev[SB_OUT_N] = {last->fills_len, last->statuses_len, last->users_len, last->n_events};
        PyObject *objs[SB_OUT_N] = {NULL};
        rc = 0;
        for (int k = 0; k < SB_OUT_N && rc == 0; k++) {
            size_t cap = prev[k] + prev[k] / 4 + 1024;
            objs[k] = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap);
            if (objs[k]) sb_out_set(e, k, PyBytes_AsString(objs[k]), cap, py_out_grow, objs);
            else rc = -1;
        }
        if (rc == 0) rc = py_run(e, seq, is_list, now);
        const sb_result *r = sb_last(e);
        const size_t len[SB_OUT_N] = {r->fills_len, r->statuses_len, r->users_len, r->n_events};
        sb_out_reset(e);
        for (int k = 0; k < SB_OUT_N; k++) {
            /* a shrink: realloc in place, nothing copied */
            if (rc == 0 && (!objs[k] || _PyBytes_Resize(&objs[k], (Py_ssize_t)len[k]) != 0)) rc = -1;
            if (rc == 0) {
                PyList_SetItem(outl, k, objs[k]); /* steals the reference, drops the old item */
            } else {
                Py_XDECREF(objs[k]);
            }
        }
        if (rc != 0) PyErr_Clear();
    }
    PyGILState_Release(gil);
    return rc;
}
