/* CPython glue compiled into the cffi module engine_pkg._book (after cffi's own #include of
 * Python.h), not into the C book: it lets Engine.process hand its list of records to C without
 * joining them into one buffer first (the join and the NUL scan were ~15% of a batch).
 *
 * sb_process_pylist(e, id(records), now): `records` must be an exact list or tuple of exact
 * bytes objects (CPython's id() is the object's address); anything else returns -3 having done
 * nothing, and the caller falls back to sb_process.  cffi releases the GIL around the call: it
 * is taken back for the whole batch, so no other thread can change the list or free a record
 * while C reads it (a batch of 500 holds it ~0.1 ms, like any C extension call). */
#include <stddef.h>
#include <stdlib.h>

static int sb_process_pylist(sb_engine *e, uintptr_t records, int64_t now) {
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *seq = (PyObject *)records;
    int is_list = PyList_CheckExact(seq), rc = -3;
    if (is_list || PyTuple_CheckExact(seq)) {
        /* the limited API of an abi3 module: item access through functions, not macros */
        Py_ssize_t n = is_list ? PyList_Size(seq) : PyTuple_Size(seq);
        const char **ptrs = n > 0 && n < (Py_ssize_t)UINT32_MAX ? malloc((size_t)n * sizeof *ptrs) : NULL;
        size_t *lens = ptrs ? malloc((size_t)n * sizeof *lens) : NULL;
        if (n == 0) {
            rc = sb_process_vec(e, NULL, NULL, 0, now);
        } else if (lens) {
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
            if (i == n) rc = sb_process_vec(e, ptrs, lens, (uint32_t)n, now);
        } else if (n > 0 && n < (Py_ssize_t)UINT32_MAX) {
            rc = -1; /* out of memory */
        }
        free(ptrs);
        free(lens);
    }
    PyGILState_Release(gil);
    return rc;
}
