/* RESTORE commands of new Redis keys: DUMP payloads of small hashes, with their CRC-64.
 * The CPython extension module store._dump: the format, and why, are described in
 * store/redis_dump.py, which calls it; hatch_build.py compiles it when the package is built
 * or installed. Arrays come in through the buffer protocol (numpy arrays, bytes) and are
 * checked against the row and field counts before a byte is read or written. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define RDB_TYPE_HASH 4
#define RDB_TYPE_HASH_LISTPACK 16
#define RDB_VERSION 10

#define ABI_VERSION 2 /* bump with any change of restore_rows' or crc64's arguments */

static uint64_t crc_tab[8][256]; /* [t]: a byte followed by t more bytes of the word */

static void crc_init(void) {
    const uint64_t poly = 0x95AC9329AC4BC9B5ULL; /* CRC-64/Jones, reflected */
    for (int i = 0; i < 256; i++) {
        uint64_t c = (uint64_t)i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ poly : c >> 1;
        crc_tab[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++)
            crc_tab[t][i] = crc_tab[0][crc_tab[t - 1][i] & 0xFF] ^ (crc_tab[t - 1][i] >> 8);
}

static uint64_t crc64(const uint8_t *p, int64_t n) {
    uint64_t crc = 0;
    while (n >= 8) { /* slicing by 8, little-endian word whatever the host's order */
        uint64_t x = crc;
        for (int k = 0; k < 8; k++) x ^= (uint64_t)p[k] << (8 * k);
        crc = crc_tab[7][x & 0xFF] ^ crc_tab[6][(x >> 8) & 0xFF] ^
              crc_tab[5][(x >> 16) & 0xFF] ^ crc_tab[4][(x >> 24) & 0xFF] ^
              crc_tab[3][(x >> 32) & 0xFF] ^ crc_tab[2][(x >> 40) & 0xFF] ^
              crc_tab[1][(x >> 48) & 0xFF] ^ crc_tab[0][x >> 56];
        p += 8;
        n -= 8;
    }
    while (n-- > 0) crc = crc_tab[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return crc;
}

static int64_t rdb_len_size(int64_t v) { return v < 64 ? 1 : (v < 16384 ? 2 : 5); }

static uint8_t *put_rdb_len(uint8_t *o, int64_t v) {
    if (v < 64) {
        *o++ = (uint8_t)v;
    } else if (v < 16384) {
        *o++ = (uint8_t)(0x40 | (v >> 8));
        *o++ = (uint8_t)(v & 0xFF);
    } else {
        *o++ = 0x80;
        for (int k = 3; k >= 0; k--) *o++ = (uint8_t)((v >> (8 * k)) & 0xFF);
    }
    return o;
}

static uint8_t *put_decimal(uint8_t *o, int64_t v) {
    char digits[24];
    int d = 0;
    do {
        digits[d++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    while (d > 0) *o++ = (uint8_t)digits[--d];
    return o;
}

/* A listpack string entry: 6- or 12-bit length encoding, the bytes, then the backlen (the
 * entry's length, 7 bits per byte, high group first, all but the first byte flagged). */
static uint8_t *put_entry(uint8_t *o, const uint8_t *s, int64_t m) {
    if (m < 64) {
        *o++ = (uint8_t)(0x80 | m);
    } else {
        *o++ = (uint8_t)(0xE0 | (m >> 8));
        *o++ = (uint8_t)(m & 0xFF);
    }
    memcpy(o, s, (size_t)m);
    o += m;
    int64_t entry = (m < 64 ? 1 : 2) + m;
    if (entry <= 127) {
        *o++ = (uint8_t)entry;
    } else {
        *o++ = (uint8_t)(entry >> 7);
        *o++ = (uint8_t)((entry & 127) | 128);
    }
    return o;
}

static int64_t entry_size(int64_t m) {
    int64_t entry = (m < 64 ? 1 : 2) + m;
    return entry + (entry <= 127 ? 1 : 2);
}

/* Could a listpack store this element as an integer? 1 to 20 bytes of an optional '-' and
 * digits: a superset of Redis's lpStringToInt64. */
static int intlike(const uint8_t *s, int64_t n) {
    if (n < 1 || n > 20) return 0;
    int64_t k = 0;
    if (s[0] == '-') {
        if (n == 1) return 0;
        k = 1;
    }
    for (; k < n; k++)
        if (s[k] < '0' || s[k] > '9') return 0;
    return 1;
}

static int64_t decimal_size(int64_t v) {
    int64_t d = 1;
    while (v >= 10) {
        v /= 10;
        d++;
    }
    return d;
}

/* Write the RESTORE command of every row into out (out_len bytes), as a listpack payload
 * where HSET would build that very listpack (listpack[r] = 1), else as a plain hash
 * payload. val_off is (fields x (rows + 1)) offsets into val_data. Returns the bytes
 * written, or -1 when out is too small. */
static int64_t restore_rows(
    int64_t n, int64_t nf, const int64_t *key_off, const uint8_t *key_data,
    const int64_t *name_off, const uint8_t *name_data, const int64_t *val_off,
    const uint8_t *val_data, const uint8_t *head, int64_t head_len, const uint8_t *ttl,
    int64_t ttl_len, int names_fit, int64_t max_value, uint8_t *out, int64_t out_len,
    uint8_t *listpack) {
    uint8_t *o = out;
    for (int64_t r = 0; r < n; r++) {
        int64_t lp = 6 + 1, plain = rdb_len_size(nf);
        int fits = names_fit;
        for (int64_t f = 0; f < nf; f++) {
            int64_t nlen = name_off[f + 1] - name_off[f];
            const int64_t *vo = val_off + f * (n + 1);
            int64_t vlen = vo[r + 1] - vo[r];
            plain += rdb_len_size(nlen) + nlen + rdb_len_size(vlen) + vlen;
            if (vlen > max_value || intlike(val_data + vo[r], vlen)) fits = 0;
            lp += entry_size(nlen) + entry_size(vlen);
        }
        listpack[r] = (uint8_t)fits;
        int64_t size = 1 + (fits ? rdb_len_size(lp) + lp : plain) + 2 + 8;
        int64_t klen = key_off[r + 1] - key_off[r];
        int64_t row = head_len + 1 + decimal_size(klen) + 2 + klen + 2 + ttl_len + 1 +
                      decimal_size(size) + 2 + size + 2;
        if (row > out_len - (o - out)) return -1;
        memcpy(o, head, (size_t)head_len);
        o += head_len;
        *o++ = '$';
        o = put_decimal(o, klen);
        *o++ = '\r';
        *o++ = '\n';
        memcpy(o, key_data + key_off[r], (size_t)klen);
        o += klen;
        *o++ = '\r';
        *o++ = '\n';
        memcpy(o, ttl, (size_t)ttl_len);
        o += ttl_len;
        *o++ = '$';
        o = put_decimal(o, size);
        *o++ = '\r';
        *o++ = '\n';
        uint8_t *body = o;
        if (fits) {
            *o++ = RDB_TYPE_HASH_LISTPACK;
            o = put_rdb_len(o, lp);
            for (int k = 0; k < 4; k++) *o++ = (uint8_t)((lp >> (8 * k)) & 0xFF);
            int64_t elements = 2 * nf < 65535 ? 2 * nf : 65535;
            *o++ = (uint8_t)(elements & 0xFF);
            *o++ = (uint8_t)(elements >> 8);
            for (int64_t f = 0; f < nf; f++) {
                const int64_t *vo = val_off + f * (n + 1);
                o = put_entry(o, name_data + name_off[f], name_off[f + 1] - name_off[f]);
                o = put_entry(o, val_data + vo[r], vo[r + 1] - vo[r]);
            }
            *o++ = 0xFF;
        } else {
            *o++ = RDB_TYPE_HASH;
            o = put_rdb_len(o, nf);
            for (int64_t f = 0; f < nf; f++) {
                const int64_t *vo = val_off + f * (n + 1);
                int64_t nlen = name_off[f + 1] - name_off[f], vlen = vo[r + 1] - vo[r];
                o = put_rdb_len(o, nlen);
                memcpy(o, name_data + name_off[f], (size_t)nlen);
                o += nlen;
                o = put_rdb_len(o, vlen);
                memcpy(o, val_data + vo[r], (size_t)vlen);
                o += vlen;
            }
        }
        *o++ = RDB_VERSION;
        *o++ = 0;
        uint64_t crc = crc64(body, o - body);
        for (int k = 0; k < 8; k++) *o++ = (uint8_t)((crc >> (8 * k)) & 0xFF);
        *o++ = '\r';
        *o++ = '\n';
    }
    return o - out;
}

/* Offsets of `count` cells: `count` + 1 int64 values in the buffer, aligned, rising from 0
 * or more to at most `data_len`. */
static int offsets_ok(const Py_buffer *off, Py_ssize_t count, Py_ssize_t data_len) {
    if ((uintptr_t)off->buf % sizeof(int64_t) != 0) return 0;
    if (off->len / (Py_ssize_t)sizeof(int64_t) < count + 1) return 0;
    const int64_t *v = (const int64_t *)off->buf;
    if (v[0] < 0) return 0;
    for (Py_ssize_t i = 0; i < count; i++)
        if (v[i + 1] < v[i]) return 0;
    return v[count] <= data_len;
}

PyDoc_STRVAR(restore_rows_doc,
"restore_rows(n, nf, key_off, key_data, name_off, name_data, val_off, val_data, head, ttl,\n"
"             names_fit, max_value, out, listpack) -> int\n\n"
"Write the RESTORE command of each of n rows with nf fields into the writable buffer out;\n"
"listpack[r] is set to 1 where row r carries a listpack payload. Offsets are int64 arrays\n"
"(val_off: nf x (n + 1)). Returns the number of bytes written.");

static PyObject *py_restore_rows(PyObject *self, PyObject *args) {
    Py_ssize_t n, nf, max_value;
    int names_fit;
    Py_buffer key_off, key_data, name_off, name_data, val_off, val_data, head, ttl, out, lp;
    (void)self;
    if (!PyArg_ParseTuple(args, "nny*y*y*y*y*y*y*y*pnw*w*:restore_rows", &n, &nf, &key_off,
                          &key_data, &name_off, &name_data, &val_off, &val_data, &head, &ttl,
                          &names_fit, &max_value, &out, &lp))
        return NULL;
    PyObject *result = NULL;
    const char *bad = NULL;
    if (n < 0 || nf < 0 || max_value < 0)
        bad = "n, nf and max_value must not be negative";
    else if (!offsets_ok(&key_off, n, key_data.len))
        bad = "key_off does not index key_data's n cells";
    else if (!offsets_ok(&name_off, nf, name_data.len))
        bad = "name_off does not index name_data's nf cells";
    else if (val_off.len / (Py_ssize_t)sizeof(int64_t) < nf * (n + 1))
        bad = "val_off holds fewer than nf x (n + 1) offsets";
    else if (lp.len < n)
        bad = "listpack holds fewer than n bytes";
    for (Py_ssize_t f = 0; bad == NULL && f < nf; f++) {
        Py_buffer field = val_off;
        field.buf = (char *)val_off.buf + f * (n + 1) * (Py_ssize_t)sizeof(int64_t);
        field.len = (n + 1) * (Py_ssize_t)sizeof(int64_t);
        if (!offsets_ok(&field, n, val_data.len)) bad = "val_off does not index val_data";
    }
    if (bad != NULL) {
        PyErr_SetString(PyExc_ValueError, bad);
    } else {
        int64_t used;
        Py_BEGIN_ALLOW_THREADS
        used = restore_rows(n, nf, key_off.buf, key_data.buf, name_off.buf, name_data.buf,
                            val_off.buf, val_data.buf, head.buf, head.len, ttl.buf, ttl.len,
                            names_fit, max_value, out.buf, out.len, lp.buf);
        Py_END_ALLOW_THREADS
        if (used < 0)
            PyErr_SetString(PyExc_ValueError, "out is too small for the commands");
        else
            result = PyLong_FromLongLong(used);
    }
    PyBuffer_Release(&key_off);
    PyBuffer_Release(&key_data);
    PyBuffer_Release(&name_off);
    PyBuffer_Release(&name_data);
    PyBuffer_Release(&val_off);
    PyBuffer_Release(&val_data);
    PyBuffer_Release(&head);
    PyBuffer_Release(&ttl);
    PyBuffer_Release(&out);
    PyBuffer_Release(&lp);
    return result;
}

PyDoc_STRVAR(crc64_doc, "crc64(data) -> int\n\nRedis's CRC-64 (Jones) of a bytes-like object.");

static PyObject *py_crc64(PyObject *self, PyObject *args) {
    Py_buffer data;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*:crc64", &data)) return NULL;
    uint64_t crc;
    Py_BEGIN_ALLOW_THREADS
    crc = crc64(data.buf, data.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    return PyLong_FromUnsignedLongLong(crc);
}

static PyMethodDef dump_methods[] = {
    {"restore_rows", py_restore_rows, METH_VARARGS, restore_rows_doc},
    {"crc64", py_crc64, METH_VARARGS, crc64_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef dump_module = {
    PyModuleDef_HEAD_INIT,
    "store._dump",
    "RESTORE payloads of small Redis hashes (see store/redis_dump.py).",
    -1,
    dump_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__dump(void) {
    crc_init();
    PyObject *m = PyModule_Create(&dump_module);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "ABI_VERSION", ABI_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
