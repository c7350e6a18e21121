/*
 * pickle.c - the restricted pickle reader of pickle.h: a stack machine over
 * the opcodes of plain data (None, bools, ints, byte and text strings,
 * lists, tuples, the memo; protocols 2 to 5) plus GLOBAL, REDUCE and BUILD,
 * which only look names up in the format's allow-list and hand the rest to
 * its hooks; dicts, floats and persistent ids for the formats that take them. The stream is read through a buffer with pread(); strings are
 * skipped and remembered by their place in the file.
 */
#define _POSIX_C_SOURCE 200809L
#include "pickle.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Far above any file this reads (LFW's .bin has 12000 images); stops a
 * hostile file from making the stack, the memo or a list grow with every
 * byte. */
enum { MAX_VALUES = 1 << 24, NAME_MAX_LEN = 128, BUF_BYTES = 1 << 16 };

struct facet_pickle {
    const struct facet_pickle_format *format;
    struct facet_pickle_extras extras;
    const char *fn, *path;
    int fd;
    int64_t base;             /* where the pickle starts in the file */
    int64_t size, pos;
    int64_t op_at;            /* the opcode being run, for messages; -1 after STOP */
    uint8_t buf[BUF_BYTES];
    int64_t buf_at, buf_len;
    struct facet_pickle_value *stack;
    int64_t sp, stack_cap;
    struct facet_pickle_value *memo;   /* kind MARK marks an unused slot */
    int64_t memo_cap, memo_used;
    struct facet_pickle_obj *objects;
    int protocol;
};

int facet_pickle_fail(struct facet_pickle *p, const char *fmt, ...)
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
static int get(struct facet_pickle *p, void *dst, int64_t n)
{
    if (n > p->size - p->pos)
        return facet_pickle_fail(p, "the file is truncated: it ends at byte %lld, inside this opcode",
                                 (long long)p->size);
    uint8_t *d = dst;
    while (n > 0) {
        if (p->pos < p->buf_at || p->pos >= p->buf_at + p->buf_len) {
            p->buf_at = p->pos;
            p->buf_len = p->size - p->pos < BUF_BYTES ? p->size - p->pos : BUF_BYTES;
            int rc = facet_pread_full(p->fd, p->fn, p->path, p->buf, p->buf_len, p->base + p->buf_at);
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
static int get_uint(struct facet_pickle *p, int n, uint64_t *v)
{
    uint8_t b[8];
    int rc = get(p, b, n);
    if (rc) return rc;
    *v = 0;
    for (int i = n - 1; i >= 0; i--) *v = *v << 8 | b[i];
    return 0;
}

/* A string of len bytes starts here: remember where, skip over it. */
static int skip_string(struct facet_pickle *p, uint64_t len, int kind, struct facet_pickle_value *v)
{
    if (len > (uint64_t)(p->size - p->pos))
        return facet_pickle_fail(p, "the file is truncated: a string of %llu bytes at byte %lld runs past the end "
                                 "(%lld bytes)", (unsigned long long)len, (long long)p->pos, (long long)p->size);
    memset(v, 0, sizeof *v);
    v->kind = kind;
    v->off = p->pos;
    v->len = (int64_t)len;
    p->pos += (int64_t)len;
    return 0;
}

int facet_pickle_text(struct facet_pickle *p, const struct facet_pickle_value *v, char *dst, size_t cap)
{
    if (v->len >= (int64_t)cap)
        return facet_pickle_fail(p, "a name of %lld bytes is longer than expected", (long long)v->len);
    int rc = facet_pread_full(p->fd, p->fn, p->path, dst, v->len, p->base + v->off);
    dst[rc ? 0 : v->len] = '\0';
    return rc;
}

const char *facet_pickle_kind_name(const struct facet_pickle *p, int kind)
{
    static const char *names[] = { "a MARK", "None", "a bool", "an int", "bytes", "a str (text)", "a global",
                                   "a list", "a tuple", "a dict", "a float" };
    _Static_assert(sizeof names / sizeof names[0] == FACET_PICKLE_USER, "a name for every kind");
    if (kind >= FACET_PICKLE_USER && kind - FACET_PICKLE_USER < p->format->nkinds)
        return p->format->kind_names[kind - FACET_PICKLE_USER];
    return kind >= 0 && kind < FACET_PICKLE_USER ? names[kind] : "an unknown value";
}

int facet_pickle_new_object(struct facet_pickle *p, size_t ext_bytes, struct facet_pickle_obj **out)
{
    /* one allocation: the object, then its format's fields */
    struct facet_pickle_obj *o = calloc(1, sizeof *o + ext_bytes);
    if (!o) return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory reading %s", p->fn, p->path);
    o->ext = ext_bytes ? (void *)(o + 1) : NULL;
    o->next = p->objects;
    p->objects = o;
    *out = o;
    return 0;
}

static int grow(struct facet_pickle *p, struct facet_pickle_value **arr, int64_t *cap, int64_t need, const char *what)
{
    if (need <= *cap) return 0;
    if (need > MAX_VALUES)
        return facet_pickle_fail(p, "the pickle's %s grows past %d entries: not %s", what, MAX_VALUES, p->format->what);
    int64_t ncap = *cap ? *cap : 64;
    while (ncap < need) ncap *= 2;
    struct facet_pickle_value *na = realloc(*arr, (size_t)ncap * sizeof *na);
    if (!na) return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory reading %s", p->fn, p->path);
    memset(na + *cap, 0, (size_t)(ncap - *cap) * sizeof *na);
    *arr = na;
    *cap = ncap;
    return 0;
}

static int push(struct facet_pickle *p, struct facet_pickle_value v)
{
    int rc = grow(p, &p->stack, &p->stack_cap, p->sp + 1, "stack");
    if (rc) return rc;
    p->stack[p->sp++] = v;
    return 0;
}

static int push_kind(struct facet_pickle *p, int kind, int64_t num, struct facet_pickle_obj *o)
{
    struct facet_pickle_value v = { kind, num, 0, 0, o };
    return push(p, v);
}

static int pop(struct facet_pickle *p, struct facet_pickle_value *v)
{
    if (p->sp == 0) return facet_pickle_fail(p, "the pickle's stack is empty where a value is needed");
    if (p->stack[p->sp - 1].kind == FACET_PICKLE_MARK)
        return facet_pickle_fail(p, "a MARK where a value is needed");
    *v = p->stack[--p->sp];
    return 0;
}

/* The values above the topmost MARK: stack[*first .. sp). */
static int find_mark(struct facet_pickle *p, int64_t *first)
{
    for (int64_t k = p->sp - 1; k >= 0; k--) {
        if (p->stack[k].kind == FACET_PICKLE_MARK) {
            *first = k + 1;
            return 0;
        }
    }
    return facet_pickle_fail(p, "no MARK on the stack for this opcode");
}

/* A new list or tuple holding stack[first .. first + n). */
static int make_seq(struct facet_pickle *p, int kind, int64_t first, int64_t n, struct facet_pickle_value *out)
{
    struct facet_pickle_obj *o = NULL;
    int rc = facet_pickle_new_object(p, 0, &o);
    if (!rc) rc = grow(p, &o->items, &o->cap, n, kind == FACET_PICKLE_LIST ? "list" : "tuple");
    if (rc) return rc;
    if (n) memcpy(o->items, p->stack + first, (size_t)n * sizeof *o->items);
    o->n = n;
    struct facet_pickle_value v = { kind, 0, 0, 0, o };
    *out = v;
    return 0;
}

/* SETITEM(S): the n values from stack[first] (key, value, key, value ...) go into the dict */
static int set_items(struct facet_pickle *p, struct facet_pickle_value *dict, int64_t first, int64_t n)
{
    if (dict->kind != FACET_PICKLE_DICT)
        return facet_pickle_fail(p, "SETITEM on %s, not a dict", facet_pickle_kind_name(p, dict->kind));
    if (n % 2) return facet_pickle_fail(p, "SETITEMS with a key and no value");
    struct facet_pickle_obj *o = dict->obj;
    int rc = grow(p, &o->items, &o->cap, o->n + n, "dict");
    if (rc) return rc;
    if (n) memcpy(o->items + o->n, p->stack + first, (size_t)n * sizeof *o->items);
    o->n += n;
    return 0;
}

static int append(struct facet_pickle *p, struct facet_pickle_value *list, const struct facet_pickle_value *items,
                  int64_t n)
{
    if (list->kind != FACET_PICKLE_LIST)
        return facet_pickle_fail(p, "APPEND to %s, not a list", facet_pickle_kind_name(p, list->kind));
    struct facet_pickle_obj *o = list->obj;
    int rc = grow(p, &o->items, &o->cap, o->n + n, "list");
    if (rc) return rc;
    if (n) memcpy(o->items + o->n, items, (size_t)n * sizeof *items);
    o->n += n;
    return 0;
}

static int memo_put(struct facet_pickle *p, uint64_t index)
{
    if (p->sp == 0 || p->stack[p->sp - 1].kind == FACET_PICKLE_MARK)
        return facet_pickle_fail(p, "memo put with no value on the stack");
    /* writers number the memo 0, 1, 2 ... (Python 2's cPickle from 1): a jump
     * ahead would only make us allocate for nothing */
    if (index > (uint64_t)p->memo_used + 1)
        return facet_pickle_fail(p, "memo index %llu is out of sequence (%lld entries so far)",
                                 (unsigned long long)index, (long long)p->memo_used);
    int rc = grow(p, &p->memo, &p->memo_cap, (int64_t)index + 1, "memo");
    if (rc) return rc;
    if (p->memo[index].kind == FACET_PICKLE_MARK) p->memo_used++;
    p->memo[index] = p->stack[p->sp - 1];
    return 0;
}

static int memo_get(struct facet_pickle *p, uint64_t index)
{
    if (index >= (uint64_t)p->memo_cap || p->memo[index].kind == FACET_PICKLE_MARK)
        return facet_pickle_fail(p, "memo index %llu was never set", (unsigned long long)index);
    return push(p, p->memo[index]);
}

/* ---- globals, REDUCE and BUILD: only through the format ---------------------------------- */

static int resolve_global(struct facet_pickle *p, const char *module, const char *name)
{
    for (const struct facet_pickle_global *g = p->format->globals; g->module; g++)
        if (!strcmp(module, g->module) && !strcmp(name, g->name)) return push_kind(p, FACET_PICKLE_GLOBAL, g->id, NULL);
    /* printable in the message whatever the file holds */
    char m[NAME_MAX_LEN + 1], n[NAME_MAX_LEN + 1];
    size_t i;
    for (i = 0; module[i]; i++) m[i] = module[i] >= 32 && module[i] < 127 ? module[i] : '?';
    m[i] = '\0';
    for (i = 0; name[i]; i++) n[i] = name[i] >= 32 && name[i] < 127 ? name[i] : '?';
    n[i] = '\0';
    if (!strcmp(module, "_codecs") && !strcmp(name, "encode"))
        return facet_pickle_fail(p, "pickle global '_codecs.encode' (bytes pickled by Python 3 at protocol 2) is not "
                                 "supported; save the file again with protocol 3 or higher");
    return facet_pickle_fail(p, "pickle global '%s.%s' is not allowed: %s holds %s, and facet never runs code from "
                             "a file", m, n, p->format->what, p->format->allowed);
}

/* GLOBAL: "module\nname\n" */
static int op_global(struct facet_pickle *p)
{
    char parts[2][NAME_MAX_LEN + 1];
    for (int k = 0; k < 2; k++) {
        int len = 0;
        for (;;) {
            uint8_t c;
            int rc = get(p, &c, 1);
            if (rc) return rc;
            if (c == '\n') break;
            if (len == NAME_MAX_LEN)
                return facet_pickle_fail(p, "GLOBAL name longer than %d bytes", NAME_MAX_LEN);
            parts[k][len++] = (char)c;
        }
        parts[k][len] = '\0';
    }
    return resolve_global(p, parts[0], parts[1]);
}

static int op_stack_global(struct facet_pickle *p)
{
    struct facet_pickle_value name = { 0 }, module = { 0 };
    int rc = pop(p, &name);
    if (!rc) rc = pop(p, &module);
    if (rc) return rc;
    if (name.kind != FACET_PICKLE_TEXT || module.kind != FACET_PICKLE_TEXT)
        return facet_pickle_fail(p, "STACK_GLOBAL wants two str values, got %s and %s",
                                 facet_pickle_kind_name(p, module.kind), facet_pickle_kind_name(p, name.kind));
    char m[NAME_MAX_LEN + 1], n[NAME_MAX_LEN + 1];
    if ((rc = facet_pickle_text(p, &module, m, sizeof m)) || (rc = facet_pickle_text(p, &name, n, sizeof n))) return rc;
    if (strlen(m) != (size_t)module.len || strlen(n) != (size_t)name.len)
        return facet_pickle_fail(p, "STACK_GLOBAL name holds a NUL byte");
    return resolve_global(p, m, n);
}

static int op_reduce(struct facet_pickle *p)
{
    struct facet_pickle_value args = { 0 }, callable = { 0 }, v = { 0 };
    int rc = pop(p, &args);
    if (!rc) rc = pop(p, &callable);
    if (rc) return rc;
    if (callable.kind != FACET_PICKLE_GLOBAL)
        return facet_pickle_fail(p, "REDUCE calls %s", facet_pickle_kind_name(p, callable.kind));
    if (args.kind != FACET_PICKLE_TUPLE)
        return facet_pickle_fail(p, "REDUCE arguments are %s, not a tuple", facet_pickle_kind_name(p, args.kind));
    if ((rc = p->format->reduce(p, &callable, args.obj, &v))) return rc;
    return push(p, v);
}

static int op_build(struct facet_pickle *p)
{
    struct facet_pickle_value state = { 0 };
    int rc = pop(p, &state);
    if (rc) return rc;
    if (p->sp == 0 || p->stack[p->sp - 1].kind == FACET_PICKLE_MARK)
        return facet_pickle_fail(p, "BUILD with no object on the stack");
    struct facet_pickle_value *target = &p->stack[p->sp - 1];
    if (target->kind < FACET_PICKLE_USER && target->kind != FACET_PICKLE_DICT)
        return facet_pickle_fail(p, "BUILD on %s", facet_pickle_kind_name(p, target->kind));
    return p->format->build(p, target, &state);
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

static int run(struct facet_pickle *p, struct facet_pickle_value *result)
{
    for (int64_t ops = 0;; ops++) {
        p->op_at = p->pos;
        if (p->pos >= p->size)
            return facet_pickle_fail(p, "the file is truncated: it ends at byte %lld before the pickle's STOP opcode",
                                     (long long)p->size);
        uint8_t op;
        uint64_t u = 0;
        int64_t first = 0;
        struct facet_pickle_value v = { 0 };
        int rc = get(p, &op, 1);
        if (rc) return rc;
        if (ops == 0 && op != 0x80)
            return facet_pickle_fail(p, "not a pickle of protocol 2 or higher (the first byte is 0x%02x, not PROTO "
                                     "0x80): not %s file", op, p->format->what);
        switch (op) {
        case 0x80: /* PROTO */
            if (ops != 0) return facet_pickle_fail(p, "PROTO in the middle of the pickle");
            if ((rc = get_uint(p, 1, &u))) return rc;
            if (u < 2 || u > 5)
                return facet_pickle_fail(p, "pickle protocol %llu is not supported (2 to 5 are)", (unsigned long long)u);
            p->protocol = (int)u;
            break;
        case 0x95: /* FRAME: a length prefix for what follows, no value */
            if ((rc = get_uint(p, 8, &u))) return rc;
            if (u > (uint64_t)(p->size - p->pos))
                return facet_pickle_fail(p, "the file is truncated: a frame of %llu bytes runs past the end "
                                         "(%lld bytes)", (unsigned long long)u, (long long)p->size);
            break;
        case '.': /* STOP */
            if ((rc = pop(p, result))) return rc;
            if (p->sp != 0)
                return facet_pickle_fail(p, "the pickle ends with %lld values left on the stack", (long long)p->sp);
            return 0;
        case 'N': rc = push_kind(p, FACET_PICKLE_NONE, 0, NULL); break;
        case 0x88: rc = push_kind(p, FACET_PICKLE_BOOL, 1, NULL); break;
        case 0x89: rc = push_kind(p, FACET_PICKLE_BOOL, 0, NULL); break;
        case 'K': /* BININT1 */
            if (!(rc = get_uint(p, 1, &u))) rc = push_kind(p, FACET_PICKLE_INT, (int64_t)u, NULL);
            break;
        case 'M': /* BININT2 */
            if (!(rc = get_uint(p, 2, &u))) rc = push_kind(p, FACET_PICKLE_INT, (int64_t)u, NULL);
            break;
        case 'J': /* BININT: signed */
            if (!(rc = get_uint(p, 4, &u))) rc = push_kind(p, FACET_PICKLE_INT, (int64_t)(int32_t)(uint32_t)u, NULL);
            break;
        case 0x8a: { /* LONG1: n-byte two's complement */
            uint64_t n;
            if ((rc = get_uint(p, 1, &n))) return rc;
            if (n > 8)
                return facet_pickle_fail(p, "LONG1 of %llu bytes is larger than any size here", (unsigned long long)n);
            u = 0;
            if (n && (rc = get_uint(p, (int)n, &u))) return rc;
            int64_t x = (int64_t)u;
            if (n > 0 && n < 8 && (u >> (8 * n - 1)) & 1) x = (int64_t)(u | (~UINT64_C(0) << (8 * n)));
            rc = push_kind(p, FACET_PICKLE_INT, x, NULL);
            break;
        }
        case 'U': case 'C': case 0x8c: /* SHORT_BINSTRING, SHORT_BINBYTES, SHORT_BINUNICODE */
            if ((rc = get_uint(p, 1, &u))) return rc;
            if (!(rc = skip_string(p, u, op == 0x8c ? FACET_PICKLE_TEXT : FACET_PICKLE_BYTES, &v))) rc = push(p, v);
            break;
        case 'T': case 'B': case 'X': /* BINSTRING (signed length), BINBYTES, BINUNICODE */
            if ((rc = get_uint(p, 4, &u))) return rc;
            if (op == 'T' && (int32_t)(uint32_t)u < 0) return facet_pickle_fail(p, "BINSTRING with a negative length");
            if (!(rc = skip_string(p, u, op == 'X' ? FACET_PICKLE_TEXT : FACET_PICKLE_BYTES, &v))) rc = push(p, v);
            break;
        case 0x8e: case 0x8d: /* BINBYTES8, BINUNICODE8 */
            if ((rc = get_uint(p, 8, &u))) return rc;
            if (!(rc = skip_string(p, u, op == 0x8d ? FACET_PICKLE_TEXT : FACET_PICKLE_BYTES, &v))) rc = push(p, v);
            break;
        case ']': /* EMPTY_LIST */
        case ')': /* EMPTY_TUPLE */
            if (!(rc = make_seq(p, op == ']' ? FACET_PICKLE_LIST : FACET_PICKLE_TUPLE, 0, 0, &v))) rc = push(p, v);
            break;
        case '(': rc = push_kind(p, FACET_PICKLE_MARK, 0, NULL); break;
        case 't': case 'l': /* TUPLE, LIST: from the mark */
            if ((rc = find_mark(p, &first))) return rc;
            rc = make_seq(p, op == 't' ? FACET_PICKLE_TUPLE : FACET_PICKLE_LIST, first, p->sp - first, &v);
            if (rc) return rc;
            p->sp = first - 1;
            rc = push(p, v);
            break;
        case 0x85: case 0x86: case 0x87: { /* TUPLE1, TUPLE2, TUPLE3 */
            int64_t n = op - 0x84;
            if (p->sp < n)
                return facet_pickle_fail(p, "TUPLE%lld with %lld values on the stack", (long long)n, (long long)p->sp);
            for (int64_t k = p->sp - n; k < p->sp; k++)
                if (p->stack[k].kind == FACET_PICKLE_MARK)
                    return facet_pickle_fail(p, "a MARK inside TUPLE%lld", (long long)n);
            if ((rc = make_seq(p, FACET_PICKLE_TUPLE, p->sp - n, n, &v))) return rc;
            p->sp -= n;
            rc = push(p, v);
            break;
        }
        case 'a': /* APPEND */
            if ((rc = pop(p, &v))) return rc;
            if (p->sp == 0) return facet_pickle_fail(p, "APPEND with no list on the stack");
            rc = append(p, &p->stack[p->sp - 1], &v, 1);
            break;
        case 'e': /* APPENDS: the values above the mark go to the list below it */
            if ((rc = find_mark(p, &first))) return rc;
            if (first < 2) return facet_pickle_fail(p, "APPENDS with no list below the MARK");
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
        case '}': /* EMPTY_DICT */
            if (!p->extras.dicts) goto refused;
            if (!(rc = make_seq(p, FACET_PICKLE_DICT, 0, 0, &v))) rc = push(p, v);
            break;
        case 'd': /* DICT: the keys and values above the mark */
            if (!p->extras.dicts) goto refused;
            if ((rc = find_mark(p, &first))) return rc;
            if ((p->sp - first) % 2) return facet_pickle_fail(p, "DICT with a key and no value");
            if ((rc = make_seq(p, FACET_PICKLE_DICT, first, p->sp - first, &v))) return rc;
            p->sp = first - 1;
            rc = push(p, v);
            break;
        case 's': /* SETITEM */
            if (!p->extras.dicts) goto refused;
            if (p->sp < 3) return facet_pickle_fail(p, "SETITEM with %lld values on the stack", (long long)p->sp);
            for (int64_t k = p->sp - 2; k < p->sp; k++)
                if (p->stack[k].kind == FACET_PICKLE_MARK) return facet_pickle_fail(p, "a MARK inside SETITEM");
            if ((rc = set_items(p, &p->stack[p->sp - 3], p->sp - 2, 2))) return rc;
            p->sp -= 2;
            break;
        case 'u': /* SETITEMS: the pairs above the mark go to the dict below it */
            if (!p->extras.dicts) goto refused;
            if ((rc = find_mark(p, &first))) return rc;
            if (first < 2) return facet_pickle_fail(p, "SETITEMS with no dict below the MARK");
            if ((rc = set_items(p, &p->stack[first - 2], first, p->sp - first))) return rc;
            p->sp = first - 1;
            break;
        case 'G': { /* BINFLOAT: big-endian double */
            if (!p->extras.dicts) goto refused;
            uint8_t b[8];
            if ((rc = get(p, b, 8))) return rc;
            uint64_t bits = 0;
            for (int i = 0; i < 8; i++) bits = bits << 8 | b[i];
            v.num = (int64_t)bits;   /* the double's bits */
            v.kind = FACET_PICKLE_FLOAT;
            rc = push(p, v);
            break;
        }
        case 'Q': { /* BINPERSID */
            if (!p->extras.persistent) goto refused;
            struct facet_pickle_value pid = { 0 };
            if ((rc = pop(p, &pid))) return rc;
            if ((rc = p->extras.persistent(p, &pid, &v))) return rc;
            rc = push(p, v);
            break;
        }
        default:
        refused:
            if (op >= 32 && op < 127)
                return facet_pickle_fail(p, "unsupported pickle opcode '%c' (%s): %s holds %s", op, opcode_name(op),
                                         p->format->what, p->format->holds);
            return facet_pickle_fail(p, "unsupported pickle opcode 0x%02x (%s): %s holds %s", op, opcode_name(op),
                                     p->format->what, p->format->holds);
        }
        if (rc) return rc;
    }
}

void facet_pickle_free(struct facet_pickle *p)
{
    if (!p) return;
    while (p->objects) {
        struct facet_pickle_obj *o = p->objects;
        p->objects = o->next;
        free(o->items);
        free(o);
    }
    free(p->stack);
    free(p->memo);
    free(p);
}

int facet_pickle_parse(struct facet_pickle **out, struct facet_pickle_value *top, const struct facet_pickle_format *f,
                       int fd, int64_t size, const char *fn, const char *path)
{
    return facet_pickle_parse_range(out, top, f, NULL, fd, 0, size, fn, path);
}

void *facet_pickle_user(const struct facet_pickle *p) { return p->extras.user; }
int64_t facet_pickle_end(const struct facet_pickle *p) { return p->pos; }

int facet_pickle_parse_range(struct facet_pickle **out, struct facet_pickle_value *top,
                             const struct facet_pickle_format *f, const struct facet_pickle_extras *x, int fd,
                             int64_t base, int64_t size, const char *fn, const char *path)
{
    *out = NULL;
    struct facet_pickle *p = calloc(1, sizeof *p);
    if (!p) return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory reading %s", fn, path);
    p->format = f;
    if (x) p->extras = *x;
    p->fn = fn;
    p->path = path;
    p->fd = fd;
    p->base = base;
    p->size = size;
    int rc = run(p, top);
    if (rc) {
        facet_pickle_free(p);
        return rc;
    }
    p->op_at = -1;            /* what the caller finds wrong in the tree has no opcode */
    *out = p;
    return 0;
}
