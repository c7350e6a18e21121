/*
 * binfile.c - InsightFace verification .bin files (lfw.bin, cfp_fp.bin ...):
 * a pickle of (bins, issame_list). This is a pickle reader for that one
 * structure, not a Python unpickler: it runs a small stack machine over the
 * opcodes that the known writers emit (Python 2 str, Python 3 bytes, NumPy
 * arrays through numpy.core.multiarray._reconstruct; protocols 2 to 5) and
 * never calls anything. Every other opcode or global is an error naming the
 * byte where it occurs. Image bytes are not loaded: the reader records where
 * each one lies in the file and reads it on request with pread().
 */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Far above any verification set (LFW has 12000 images); stops a hostile file
 * from making the stack, the memo or a list grow with every byte. */
enum { MAX_VALUES = 1 << 24, NAME_MAX_LEN = 128, BUF_BYTES = 1 << 16 };

struct facet_binfile {
    int fd;
    char *path;
    int64_t pairs;
    int64_t *offset;          /* 2P images: where their bytes lie in the file */
    int64_t *length;
    uint8_t *issame;          /* P */
};

/* ---- values of the pickle machine ------------------------------------------------------ */

enum kind { K_MARK, K_NONE, K_BOOL, K_INT, K_BYTES, K_TEXT, K_GLOBAL, K_LIST, K_TUPLE, K_ARRAY, K_DTYPE };
enum global { G_RECONSTRUCT = 1, G_NDARRAY = 2, G_DTYPE = 3 };

struct obj;
/* Scalars are held by value; strings by their place in the file; lists,
 * tuples, arrays and dtypes are shared objects (the memo refers to them). */
struct value {
    int kind;
    int64_t num;              /* bool, int, global id */
    int64_t off, len;         /* bytes, text */
    struct obj *obj;
};

struct obj {
    struct obj *next;         /* every object, for freeing */
    struct value *items;      /* list, tuple */
    int64_t n, cap;
    char dtype[8];            /* dtype name, and an array's dtype */
    int built;                /* array: BUILD gave it its state */
    int vector;               /* array: at most one dim above 1, e.g. (n,) or (n, 1) */
    char shape[48];           /* array: its shape, for messages */
    int64_t count;            /* array elements (one byte each) */
    int64_t data_off, data_len;
};

struct parser {
    const char *fn, *path;
    int fd;
    int64_t size, pos;
    int64_t op_at;            /* the opcode being run, for messages; -1 after STOP */
    uint8_t buf[BUF_BYTES];
    int64_t buf_at, buf_len;
    struct value *stack;
    int64_t sp, stack_cap;
    struct value *memo;       /* kind K_MARK marks an unused slot */
    int64_t memo_cap, memo_used;
    struct obj *objects;
    int protocol;
};

static int bad(struct parser *p, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static int bad(struct parser *p, const char *fmt, ...)
{
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (p->op_at < 0) return facet_fail(FACET_STATUS_ERR_IO, "%s: %s: %s", p->fn, p->path, msg);
    return facet_fail(FACET_STATUS_ERR_IO, "%s: %s: %s (opcode at byte %lld)", p->fn, p->path, msg, (long long)p->op_at);
}

/* n bytes of the pickle stream, through the buffer. */
static int get(struct parser *p, void *dst, int64_t n)
{
    if (n > p->size - p->pos)
        return bad(p, "the file is truncated: it ends at byte %lld, inside this opcode", (long long)p->size);
    uint8_t *d = dst;
    while (n > 0) {
        if (p->pos < p->buf_at || p->pos >= p->buf_at + p->buf_len) {
            p->buf_at = p->pos;
            p->buf_len = p->size - p->pos < BUF_BYTES ? p->size - p->pos : BUF_BYTES;
            int rc = facet_pread_full(p->fd, p->fn, p->path, p->buf, p->buf_len, p->buf_at);
            if (rc) return rc;
        }
        int64_t k = p->buf_at + p->buf_len - p->pos;
        if (k > n) k = n;
        memcpy(d, p->buf + (p->pos - p->buf_at), (size_t)k);
        d += k;
        p->pos += k;
        n -= k;
    }
    return 0;
}

/* Little-endian unsigned integer of n <= 8 bytes. */
static int get_uint(struct parser *p, int n, uint64_t *v)
{
    uint8_t b[8];
    int rc = get(p, b, n);
    if (rc) return rc;
    *v = 0;
    for (int i = n - 1; i >= 0; i--) *v = *v << 8 | b[i];
    return 0;
}

/* A string of len bytes starts here: remember where, skip over it. */
static int skip_string(struct parser *p, uint64_t len, int kind, struct value *v)
{
    if (len > (uint64_t)(p->size - p->pos))
        return bad(p, "the file is truncated: a string of %llu bytes at byte %lld runs past the end (%lld bytes)",
                   (unsigned long long)len, (long long)p->pos, (long long)p->size);
    memset(v, 0, sizeof *v);
    v->kind = kind;
    v->off = p->pos;
    v->len = (int64_t)len;
    p->pos += (int64_t)len;
    return 0;
}

/* The text of a short string value (a global's name, a dtype's), NUL-ended. */
static int string_text(struct parser *p, const struct value *v, char *dst, size_t cap)
{
    if (v->len >= (int64_t)cap) return bad(p, "a name of %lld bytes is longer than expected", (long long)v->len);
    int rc = facet_pread_full(p->fd, p->fn, p->path, dst, v->len, v->off);
    dst[rc ? 0 : v->len] = '\0';
    return rc;
}

static const char *kind_name(int kind)
{
    static const char *names[] = { "a MARK", "None", "a bool", "an int", "bytes", "a str (text)", "a global",
                                   "a list", "a tuple", "a NumPy array", "a NumPy dtype" };
    return names[kind];
}

static struct obj *new_obj(struct parser *p)
{
    struct obj *o = calloc(1, sizeof *o);
    if (!o) return NULL;
    o->next = p->objects;
    p->objects = o;
    return o;
}

static int grow(struct parser *p, struct value **arr, int64_t *cap, int64_t need, const char *what)
{
    if (need <= *cap) return 0;
    if (need > MAX_VALUES) return bad(p, "the pickle's %s grows past %d entries: not a verification .bin", what,
                                      MAX_VALUES);
    int64_t ncap = *cap ? *cap : 64;
    while (ncap < need) ncap *= 2;
    struct value *na = realloc(*arr, (size_t)ncap * sizeof *na);
    if (!na) return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory reading %s", p->fn, p->path);
    memset(na + *cap, 0, (size_t)(ncap - *cap) * sizeof *na);
    *arr = na;
    *cap = ncap;
    return 0;
}

static int push(struct parser *p, struct value v)
{
    int rc = grow(p, &p->stack, &p->stack_cap, p->sp + 1, "stack");
    if (rc) return rc;
    p->stack[p->sp++] = v;
    return 0;
}

static int push_kind(struct parser *p, int kind, int64_t num, struct obj *o)
{
    struct value v = { kind, num, 0, 0, o };
    return push(p, v);
}

static int pop(struct parser *p, struct value *v)
{
    if (p->sp == 0) return bad(p, "the pickle's stack is empty where a value is needed");
    if (p->stack[p->sp - 1].kind == K_MARK) return bad(p, "a MARK where a value is needed");
    *v = p->stack[--p->sp];
    return 0;
}

/* The values above the topmost MARK: stack[*first .. sp). */
static int find_mark(struct parser *p, int64_t *first)
{
    for (int64_t k = p->sp - 1; k >= 0; k--) {
        if (p->stack[k].kind == K_MARK) {
            *first = k + 1;
            return 0;
        }
    }
    return bad(p, "no MARK on the stack for this opcode");
}

/* A new list or tuple holding stack[first .. first + n). */
static int make_seq(struct parser *p, int kind, int64_t first, int64_t n, struct value *out)
{
    struct obj *o = new_obj(p);
    if (!o) return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory reading %s", p->fn, p->path);
    int rc = grow(p, &o->items, &o->cap, n, kind == K_LIST ? "list" : "tuple");
    if (rc) return rc;
    if (n) memcpy(o->items, p->stack + first, (size_t)n * sizeof *o->items);
    o->n = n;
    struct value v = { kind, 0, 0, 0, o };
    *out = v;
    return 0;
}

static int append(struct parser *p, struct value *list, const struct value *items, int64_t n)
{
    if (list->kind != K_LIST) return bad(p, "APPEND to %s, not a list", kind_name(list->kind));
    struct obj *o = list->obj;
    int rc = grow(p, &o->items, &o->cap, o->n + n, "list");
    if (rc) return rc;
    if (n) memcpy(o->items + o->n, items, (size_t)n * sizeof *items);
    o->n += n;
    return 0;
}

static int memo_put(struct parser *p, uint64_t index)
{
    if (p->sp == 0 || p->stack[p->sp - 1].kind == K_MARK) return bad(p, "memo put with no value on the stack");
    /* writers number the memo 0, 1, 2 ... (Python 2's cPickle from 1): a jump
     * ahead would only make us allocate for nothing */
    if (index > (uint64_t)p->memo_used + 1)
        return bad(p, "memo index %llu is out of sequence (%lld entries so far)", (unsigned long long)index,
                   (long long)p->memo_used);
    int rc = grow(p, &p->memo, &p->memo_cap, (int64_t)index + 1, "memo");
    if (rc) return rc;
    if (p->memo[index].kind == K_MARK) p->memo_used++;
    p->memo[index] = p->stack[p->sp - 1];
    return 0;
}

static int memo_get(struct parser *p, uint64_t index)
{
    if (index >= (uint64_t)p->memo_cap || p->memo[index].kind == K_MARK)
        return bad(p, "memo index %llu was never set", (unsigned long long)index);
    return push(p, p->memo[index]);
}

/* ---- globals, REDUCE and BUILD: only NumPy's array reconstruction ------------------------ */

static int resolve_global(struct parser *p, const char *module, const char *name)
{
    if (!strcmp(name, "_reconstruct") &&
        (!strcmp(module, "numpy.core.multiarray") || !strcmp(module, "numpy._core.multiarray")))
        return push_kind(p, K_GLOBAL, G_RECONSTRUCT, NULL);
    if (!strcmp(module, "numpy") && !strcmp(name, "ndarray")) return push_kind(p, K_GLOBAL, G_NDARRAY, NULL);
    if (!strcmp(module, "numpy") && !strcmp(name, "dtype")) return push_kind(p, K_GLOBAL, G_DTYPE, NULL);
    /* printable in the message whatever the file holds */
    char m[NAME_MAX_LEN + 1], n[NAME_MAX_LEN + 1];
    size_t i;
    for (i = 0; module[i]; i++) m[i] = module[i] >= 32 && module[i] < 127 ? module[i] : '?';
    m[i] = '\0';
    for (i = 0; name[i]; i++) n[i] = name[i] >= 32 && name[i] < 127 ? name[i] : '?';
    n[i] = '\0';
    if (!strcmp(module, "_codecs") && !strcmp(name, "encode"))
        return bad(p, "pickle global '_codecs.encode' (bytes pickled by Python 3 at protocol 2) is not supported; "
                   "save the file again with protocol 3 or higher");
    return bad(p, "pickle global '%s.%s' is not allowed: a verification .bin holds only byte strings, bools and "
               "NumPy arrays (numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype), and facet never "
               "runs code from a file", m, n);
}

/* GLOBAL: "module\nname\n" */
static int op_global(struct parser *p)
{
    char parts[2][NAME_MAX_LEN + 1];
    for (int k = 0; k < 2; k++) {
        int len = 0;
        for (;;) {
            uint8_t c;
            int rc = get(p, &c, 1);
            if (rc) return rc;
            if (c == '\n') break;
            if (len == NAME_MAX_LEN) return bad(p, "GLOBAL name longer than %d bytes", NAME_MAX_LEN);
            parts[k][len++] = (char)c;
        }
        parts[k][len] = '\0';
    }
    return resolve_global(p, parts[0], parts[1]);
}

static int op_stack_global(struct parser *p)
{
    struct value name = { 0 }, module = { 0 };
    int rc = pop(p, &name);
    if (!rc) rc = pop(p, &module);
    if (rc) return rc;
    if (name.kind != K_TEXT || module.kind != K_TEXT)
        return bad(p, "STACK_GLOBAL wants two str values, got %s and %s", kind_name(module.kind), kind_name(name.kind));
    char m[NAME_MAX_LEN + 1], n[NAME_MAX_LEN + 1];
    if ((rc = string_text(p, &module, m, sizeof m)) || (rc = string_text(p, &name, n, sizeof n))) return rc;
    if (strlen(m) != (size_t)module.len || strlen(n) != (size_t)name.len)
        return bad(p, "STACK_GLOBAL name holds a NUL byte");
    return resolve_global(p, m, n);
}

static int op_reduce(struct parser *p)
{
    struct value args = { 0 }, callable = { 0 };
    int rc = pop(p, &args);
    if (!rc) rc = pop(p, &callable);
    if (rc) return rc;
    if (callable.kind != K_GLOBAL) return bad(p, "REDUCE calls %s", kind_name(callable.kind));
    if (args.kind != K_TUPLE) return bad(p, "REDUCE arguments are %s, not a tuple", kind_name(args.kind));
    const struct obj *a = args.obj;
    if (callable.num == G_NDARRAY)
        return bad(p, "numpy.ndarray is called directly: only _reconstruct(ndarray, ...) arrays are supported");
    struct obj *o = new_obj(p);
    if (!o) return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory reading %s", p->fn, p->path);
    if (callable.num == G_RECONSTRUCT) {
        if (a->n < 1 || a->items[0].kind != K_GLOBAL || a->items[0].num != G_NDARRAY)
            return bad(p, "_reconstruct is called without numpy.ndarray as its first argument");
        return push_kind(p, K_ARRAY, 0, o);
    }
    /* numpy.dtype(name, align, copy) */
    if (a->n < 1 || (a->items[0].kind != K_TEXT && a->items[0].kind != K_BYTES))
        return bad(p, "numpy.dtype is called without a type name");
    if ((rc = string_text(p, &a->items[0], o->dtype, sizeof o->dtype))) return rc;
    return push_kind(p, K_DTYPE, 0, o);
}

/* BUILD on an array: state (version 1, shape, dtype, is_fortran, raw bytes). */
static int build_array(struct parser *p, struct obj *o, const struct value *state)
{
    if (o->built) return bad(p, "BUILD on a NumPy array that already has its data");
    if (state->kind != K_TUPLE || state->obj->n != 5)
        return bad(p, "NumPy array state is %s of %lld items, want (version, shape, dtype, is_fortran, data)",
                   kind_name(state->kind), state->kind == K_TUPLE ? (long long)state->obj->n : 0LL);
    const struct value *s = state->obj->items;
    if (s[0].kind != K_INT || s[0].num != 1) return bad(p, "NumPy array state version is not 1");
    if (s[1].kind != K_TUPLE) return bad(p, "NumPy array shape is %s, not a tuple", kind_name(s[1].kind));
    if (s[2].kind != K_DTYPE) return bad(p, "NumPy array dtype is %s", kind_name(s[2].kind));
    if (s[4].kind != K_BYTES)
        return bad(p, "NumPy array data is %s, not bytes (an object array?)", kind_name(s[4].kind));
    const char *dt = s[2].obj->dtype;
    if (strcmp(dt, "u1") && strcmp(dt, "b1"))
        return bad(p, "NumPy dtype '%s' is not supported: images are uint8 ('u1') arrays of encoded bytes, "
                   "issame a bool ('b1') array", dt);
    const struct obj *shape = s[1].obj;
    int64_t count = 1;
    int long_dims = 0, at = snprintf(o->shape, sizeof o->shape, "(");
    for (int64_t d = 0; d < shape->n; d++) {
        const struct value *e = &shape->items[d];
        if (e->kind != K_INT || e->num < 0) return bad(p, "NumPy array shape holds %s", kind_name(e->kind));
        /* each element is one byte, so the data's length bounds every size */
        if (e->num > s[4].len || (e->num > 0 && count > s[4].len / e->num))
            return bad(p, "NumPy array shape does not match its %lld data bytes", (long long)s[4].len);
        count *= e->num;
        long_dims += e->num > 1;
        if (at < (int)sizeof o->shape - 24)
            at += snprintf(o->shape + at, sizeof o->shape - at, d ? ", %lld" : "%lld", (long long)e->num);
    }
    snprintf(o->shape + at, sizeof o->shape - at, shape->n == 1 ? ",)" : ")");
    if (count != s[4].len)
        return bad(p, "NumPy array of %lld elements has %lld data bytes", (long long)count, (long long)s[4].len);
    memcpy(o->dtype, dt, sizeof o->dtype);
    o->vector = long_dims <= 1;
    o->count = count;
    o->data_off = s[4].off;
    o->data_len = s[4].len;
    o->built = 1;
    return 0;
}

static int op_build(struct parser *p)
{
    struct value state = { 0 };
    int rc = pop(p, &state);
    if (rc) return rc;
    if (p->sp == 0 || p->stack[p->sp - 1].kind == K_MARK) return bad(p, "BUILD with no object on the stack");
    struct value *target = &p->stack[p->sp - 1];
    if (target->kind == K_ARRAY) return build_array(p, target->obj, &state);
    if (target->kind == K_DTYPE) {
        /* (3, '|', None, None, None, -1, -1, 0): nothing in it matters for one-byte types */
        if (state.kind != K_TUPLE) return bad(p, "NumPy dtype state is %s, not a tuple", kind_name(state.kind));
        return 0;
    }
    return bad(p, "BUILD on %s", kind_name(target->kind));
}

/* ---- the opcode loop ---------------------------------------------------------------------- */

static const char *opcode_name(uint8_t op)
{
    switch (op) {
    case '}': return "EMPTY_DICT";
    case 'd': return "DICT";
    case 's': return "SETITEM";
    case 'u': return "SETITEMS";
    case 'i': return "INST";
    case 'o': return "OBJ";
    case 0x81: return "NEWOBJ";
    case 0x92: return "NEWOBJ_EX";
    case 'P': return "PERSID";
    case 'Q': return "BINPERSID";
    case 0x82: case 0x83: case 0x84: return "EXT";
    case 'I': return "INT";
    case 'L': return "LONG";
    case 0x8b: return "LONG4";
    case 'F': return "FLOAT";
    case 'G': return "BINFLOAT";
    case 'S': return "STRING";
    case 'V': return "UNICODE";
    case 'g': return "GET";
    case 'p': return "PUT";
    case '0': return "POP";
    case '1': return "POP_MARK";
    case '2': return "DUP";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    default: return "unknown";
    }
}

static int run(struct parser *p, struct value *result)
{
    for (int64_t ops = 0;; ops++) {
        p->op_at = p->pos;
        if (p->pos >= p->size)
            return bad(p, "the file is truncated: it ends at byte %lld before the pickle's STOP opcode",
                       (long long)p->size);
        uint8_t op;
        uint64_t u = 0;
        int64_t first = 0;
        struct value v = { 0 };
        int rc = get(p, &op, 1);
        if (rc) return rc;
        if (ops == 0 && op != 0x80)
            return bad(p, "not a pickle of protocol 2 or higher (the first byte is 0x%02x, not PROTO 0x80): "
                       "not a verification .bin file", op);
        switch (op) {
        case 0x80: /* PROTO */
            if (ops != 0) return bad(p, "PROTO in the middle of the pickle");
            if ((rc = get_uint(p, 1, &u))) return rc;
            if (u < 2 || u > 5) return bad(p, "pickle protocol %llu is not supported (2 to 5 are)", (unsigned long long)u);
            p->protocol = (int)u;
            break;
        case 0x95: /* FRAME: a length prefix for what follows, no value */
            if ((rc = get_uint(p, 8, &u))) return rc;
            if (u > (uint64_t)(p->size - p->pos))
                return bad(p, "the file is truncated: a frame of %llu bytes runs past the end (%lld bytes)",
                           (unsigned long long)u, (long long)p->size);
            break;
        case '.': /* STOP */
            if ((rc = pop(p, result))) return rc;
            if (p->sp != 0) return bad(p, "the pickle ends with %lld values left on the stack", (long long)p->sp);
            return 0;
        case 'N': rc = push_kind(p, K_NONE, 0, NULL); break;
        case 0x88: rc = push_kind(p, K_BOOL, 1, NULL); break;
        case 0x89: rc = push_kind(p, K_BOOL, 0, NULL); break;
        case 'K': /* BININT1 */
            if (!(rc = get_uint(p, 1, &u))) rc = push_kind(p, K_INT, (int64_t)u, NULL);
            break;
        case 'M': /* BININT2 */
            if (!(rc = get_uint(p, 2, &u))) rc = push_kind(p, K_INT, (int64_t)u, NULL);
            break;
        case 'J': /* BININT: signed */
            if (!(rc = get_uint(p, 4, &u))) rc = push_kind(p, K_INT, (int64_t)(int32_t)(uint32_t)u, NULL);
            break;
        case 0x8a: { /* LONG1: n-byte two's complement */
            uint64_t n;
            if ((rc = get_uint(p, 1, &n))) return rc;
            if (n > 8) return bad(p, "LONG1 of %llu bytes is larger than any size here", (unsigned long long)n);
            u = 0;
            if (n && (rc = get_uint(p, (int)n, &u))) return rc;
            int64_t x = (int64_t)u;
            if (n > 0 && n < 8 && (u >> (8 * n - 1)) & 1) x = (int64_t)(u | (~UINT64_C(0) << (8 * n)));
            rc = push_kind(p, K_INT, x, NULL);
            break;
        }
        case 'U': case 'C': case 0x8c: /* SHORT_BINSTRING, SHORT_BINBYTES, SHORT_BINUNICODE */
            if ((rc = get_uint(p, 1, &u))) return rc;
            if (!(rc = skip_string(p, u, op == 0x8c ? K_TEXT : K_BYTES, &v))) rc = push(p, v);
            break;
        case 'T': case 'B': case 'X': /* BINSTRING (signed length), BINBYTES, BINUNICODE */
            if ((rc = get_uint(p, 4, &u))) return rc;
            if (op == 'T' && (int32_t)(uint32_t)u < 0) return bad(p, "BINSTRING with a negative length");
            if (!(rc = skip_string(p, u, op == 'X' ? K_TEXT : K_BYTES, &v))) rc = push(p, v);
            break;
        case 0x8e: case 0x8d: /* BINBYTES8, BINUNICODE8 */
            if ((rc = get_uint(p, 8, &u))) return rc;
            if (!(rc = skip_string(p, u, op == 0x8d ? K_TEXT : K_BYTES, &v))) rc = push(p, v);
            break;
        case ']': /* EMPTY_LIST */
        case ')': /* EMPTY_TUPLE */
            if (!(rc = make_seq(p, op == ']' ? K_LIST : K_TUPLE, 0, 0, &v))) rc = push(p, v);
            break;
        case '(': rc = push_kind(p, K_MARK, 0, NULL); break;
        case 't': case 'l': /* TUPLE, LIST: from the mark */
            if ((rc = find_mark(p, &first))) return rc;
            if ((rc = make_seq(p, op == 't' ? K_TUPLE : K_LIST, first, p->sp - first, &v))) return rc;
            p->sp = first - 1;
            rc = push(p, v);
            break;
        case 0x85: case 0x86: case 0x87: { /* TUPLE1, TUPLE2, TUPLE3 */
            int64_t n = op - 0x84;
            if (p->sp < n) return bad(p, "TUPLE%lld with %lld values on the stack", (long long)n, (long long)p->sp);
            for (int64_t k = p->sp - n; k < p->sp; k++)
                if (p->stack[k].kind == K_MARK) return bad(p, "a MARK inside TUPLE%lld", (long long)n);
            if ((rc = make_seq(p, K_TUPLE, p->sp - n, n, &v))) return rc;
            p->sp -= n;
            rc = push(p, v);
            break;
        }
        case 'a': /* APPEND */
            if ((rc = pop(p, &v))) return rc;
            if (p->sp == 0) return bad(p, "APPEND with no list on the stack");
            rc = append(p, &p->stack[p->sp - 1], &v, 1);
            break;
        case 'e': /* APPENDS: the values above the mark go to the list below it */
            if ((rc = find_mark(p, &first))) return rc;
            if (first < 2) return bad(p, "APPENDS with no list below the MARK");
            if ((rc = append(p, &p->stack[first - 2], p->stack + first, p->sp - first))) return rc;
            p->sp = first - 1;
            break;
        case 'q': /* BINPUT */
            if (!(rc = get_uint(p, 1, &u))) rc = memo_put(p, u);
            break;
        case 'r': /* LONG_BINPUT */
            if (!(rc = get_uint(p, 4, &u))) rc = memo_put(p, u);
            break;
        case 0x94: rc = memo_put(p, (uint64_t)p->memo_used); break; /* MEMOIZE */
        case 'h': /* BINGET */
            if (!(rc = get_uint(p, 1, &u))) rc = memo_get(p, u);
            break;
        case 'j': /* LONG_BINGET */
            if (!(rc = get_uint(p, 4, &u))) rc = memo_get(p, u);
            break;
        case 'c': rc = op_global(p); break;
        case 0x93: rc = op_stack_global(p); break;
        case 'R': rc = op_reduce(p); break;
        case 'b': rc = op_build(p); break;
        default:
            if (op >= 32 && op < 127)
                return bad(p, "unsupported pickle opcode '%c' (%s): a verification .bin holds only the tuple "
                           "(bins, issame_list)", op, opcode_name(op));
            return bad(p, "unsupported pickle opcode 0x%02x (%s): a verification .bin holds only the tuple "
                       "(bins, issame_list)", op, opcode_name(op));
        }
        if (rc) return rc;
    }
}

/* ---- from the pickled value to the handle ------------------------------------------------- */

static int collect(struct parser *p, const struct value *top, facet_binfile *b)
{
    p->op_at = -1;
    if (top->kind != K_TUPLE || top->obj->n != 2)
        return bad(p, "the pickle holds %s%s, want the tuple (bins, issame_list)", kind_name(top->kind),
                   top->kind == K_TUPLE ? " of a length other than 2" : "");
    const struct value *bins = &top->obj->items[0], *same = &top->obj->items[1];
    if (bins->kind != K_LIST && bins->kind != K_TUPLE)
        return bad(p, "bins is %s, want a list of images", kind_name(bins->kind));
    int64_t nimages = bins->obj->n, pairs;
    if (same->kind == K_LIST || same->kind == K_TUPLE) {
        pairs = same->obj->n;
    } else if (same->kind == K_ARRAY && same->obj->built && !strcmp(same->obj->dtype, "b1") && same->obj->vector) {
        pairs = same->obj->count;
    } else {
        return bad(p, "issame_list is %s, want a list of bools or a bool NumPy vector", kind_name(same->kind));
    }
    if (nimages != 2 * pairs)
        return bad(p, "wrong counts: %lld images for %lld issame flags (want 2 images per pair, %lld)",
                   (long long)nimages, (long long)pairs, (long long)(2 * pairs));

    b->pairs = pairs;
    b->offset = malloc((size_t)(nimages ? nimages : 1) * sizeof(int64_t));
    b->length = malloc((size_t)(nimages ? nimages : 1) * sizeof(int64_t));
    b->issame = malloc((size_t)(pairs ? pairs : 1));
    if (!b->offset || !b->length || !b->issame)
        return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory reading %s", p->fn, p->path);
    for (int64_t i = 0; i < nimages; i++) {
        const struct value *v = &bins->obj->items[i];
        if (v->kind == K_BYTES) {
            b->offset[i] = v->off;
            b->length[i] = v->len;
        } else if (v->kind == K_ARRAY && v->obj->built && !strcmp(v->obj->dtype, "u1") && v->obj->vector) {
            b->offset[i] = v->obj->data_off;
            b->length[i] = v->obj->data_len;
        } else if (v->kind == K_ARRAY && v->obj->built) {
            return bad(p, "image %lld is a NumPy array of dtype '%s' and shape %s, want a vector of uint8 (the "
                       "encoded bytes; decoded pixels are not supported)", (long long)i, v->obj->dtype, v->obj->shape);
        } else {
            return bad(p, "image %lld is %s, want bytes or a uint8 NumPy vector", (long long)i,
                       kind_name(v->kind));
        }
    }
    if (same->kind == K_ARRAY) {
        int rc = facet_pread_full(p->fd, p->fn, p->path, b->issame, pairs, same->obj->data_off);
        if (rc) return rc;
        for (int64_t i = 0; i < pairs; i++)
            if (b->issame[i] > 1) return bad(p, "issame array element %lld is %d, not a bool", (long long)i, b->issame[i]);
    } else {
        for (int64_t i = 0; i < pairs; i++) {
            const struct value *v = &same->obj->items[i];
            if (v->kind != K_BOOL) return bad(p, "issame_list item %lld is %s, want a bool", (long long)i, kind_name(v->kind));
            b->issame[i] = (uint8_t)v->num;
        }
    }
    return 0;
}

int facet_binfile_free(facet_binfile *b)
{
    if (!b) return 0;
    if (b->fd >= 0) close(b->fd);
    free(b->path);
    free(b->offset);
    free(b->length);
    free(b->issame);
    free(b);
    return 0;
}

int facet_binfile_init(facet_binfile **out, const char *path)
{
    static const char *fn = "facet_binfile_init";
    if (!out) return facet_fail(FACET_STATUS_ERR_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (!path) return facet_fail(FACET_STATUS_ERR_ARG, "%s: path is NULL", fn);
    facet_binfile *b = calloc(1, sizeof *b);
    struct parser *p = calloc(1, sizeof *p);
    size_t plen = strlen(path) + 1;
    if (b) b->fd = -1;
    if (!b || !p || !(b->path = malloc(plen))) {
        free(p);
        facet_binfile_free(b);
        return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory", fn);
    }
    memcpy(b->path, path, plen);
    int rc = 0;
    b->fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (b->fd < 0) rc = facet_fail(FACET_STATUS_ERR_IO, "%s: %s: cannot open: %s", fn, path, strerror(errno));
    else if (fstat(b->fd, &st) != 0 || !S_ISREG(st.st_mode)) rc = facet_fail(FACET_STATUS_ERR_IO, "%s: %s: not a regular file", fn, path);
    if (!rc) {
        p->fn = fn;
        p->path = b->path;
        p->fd = b->fd;
        p->size = (int64_t)st.st_size;
        struct value top = { 0 };
        rc = run(p, &top);
        if (!rc) rc = collect(p, &top, b);
    }
    while (p->objects) {
        struct obj *o = p->objects;
        p->objects = o->next;
        free(o->items);
        free(o);
    }
    free(p->stack);
    free(p->memo);
    free(p);
    if (rc) {
        facet_binfile_free(b);
        return rc;
    }
    *out = b;
    return 0;
}

static int check_handle(const char *fn, const facet_binfile *b)
{
    return b ? 0 : facet_fail(FACET_STATUS_ERR_ARG, "%s: b is NULL", fn);
}

int facet_binfile_pairs(const facet_binfile *b, int64_t *pairs)
{
    int rc = check_handle("facet_binfile_pairs", b);
    if (rc) return rc;
    if (!pairs) return facet_fail(FACET_STATUS_ERR_ARG, "facet_binfile_pairs: pairs is NULL");
    *pairs = b->pairs;
    return 0;
}

int facet_binfile_issame(const facet_binfile *b, int64_t pair, int *same)
{
    static const char *fn = "facet_binfile_issame";
    int rc = check_handle(fn, b);
    if (rc) return rc;
    if (!same) return facet_fail(FACET_STATUS_ERR_ARG, "%s: same is NULL", fn);
    if (pair < 0 || pair >= b->pairs)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: pair %lld outside [0, %lld)", fn, (long long)pair, (long long)b->pairs);
    *same = b->issame[pair];
    return 0;
}

static int check_image(const char *fn, const facet_binfile *b, int64_t index)
{
    int rc = check_handle(fn, b);
    if (rc) return rc;
    if (index < 0 || index >= 2 * b->pairs)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: image index %lld outside [0, %lld)", fn, (long long)index,
                          (long long)(2 * b->pairs));
    return 0;
}

int facet_binfile_image_size(const facet_binfile *b, int64_t index, int64_t *nbytes)
{
    static const char *fn = "facet_binfile_image_size";
    int rc = check_image(fn, b, index);
    if (rc) return rc;
    if (!nbytes) return facet_fail(FACET_STATUS_ERR_ARG, "%s: nbytes is NULL", fn);
    *nbytes = b->length[index];
    return 0;
}

int facet_binfile_read_image(const facet_binfile *b, int64_t index, void *dst, size_t capacity, int64_t *nbytes)
{
    static const char *fn = "facet_binfile_read_image";
    int rc = check_image(fn, b, index);
    if (rc) return rc;
    if (!dst && capacity > 0) return facet_fail(FACET_STATUS_ERR_ARG, "%s: dst is NULL", fn);
    if (!nbytes) return facet_fail(FACET_STATUS_ERR_ARG, "%s: nbytes is NULL", fn);
    int64_t len = b->length[index];
    if ((uint64_t)len > (uint64_t)capacity)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: image %lld has %lld bytes, more than the capacity %zu", fn,
                          (long long)index, (long long)len, capacity);
    if ((rc = facet_pread_full(b->fd, fn, b->path, dst, len, b->offset[index]))) return rc;
    *nbytes = len;
    return 0;
}
