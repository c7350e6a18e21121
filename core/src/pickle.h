/*
 * pickle.h - a restricted reader of Python pickles (protocols 2 to 5) for
 * the file formats that are pickles (binfile.c's verification .bin). It is
 * not an unpickler: it runs a small stack machine over the opcodes plain
 * data needs and builds a tree of values from bytes [0, size) of a file,
 * reading through pread(). Strings are not loaded: a value records where
 * its bytes lie in the file. Globals resolve only through the caller's
 * allow-list, and REDUCE and BUILD on them only through the caller's hooks,
 * which describe the object in the tree: nothing in a file is ever imported,
 * called or executed. Every other opcode or global is an error naming the
 * byte where it occurs. A format may also take dicts and floats (EMPTY_DICT,
 * DICT, SETITEM(S), BINFLOAT: PyTorch's state dicts) and persistent ids
 * (BINPERSID, through its hook: PyTorch's storage records), and may read a
 * pickle that lies inside a larger file (a .pth zip's data.pkl).
 */
#ifndef FACET_PICKLE_H
#define FACET_PICKLE_H

#include "internal.h"

/* The kinds of value; a format's own objects (made by its hooks) take kinds
 * from FACET_PICKLE_USER on. */
enum facet_pickle_kind {
    FACET_PICKLE_MARK, FACET_PICKLE_NONE, FACET_PICKLE_BOOL, FACET_PICKLE_INT, FACET_PICKLE_BYTES,
    FACET_PICKLE_TEXT, FACET_PICKLE_GLOBAL, FACET_PICKLE_LIST, FACET_PICKLE_TUPLE, FACET_PICKLE_DICT,
    FACET_PICKLE_FLOAT, FACET_PICKLE_USER
};

struct facet_pickle_obj;
/* Scalars are held by value, strings by their place in the file; lists,
 * tuples and a format's objects are shared (the memo refers to them). */
struct facet_pickle_value {
    int kind;
    int64_t num;                       /* bool, int, a global's id; a float's bits (memcpy) */
    int64_t off, len;                  /* bytes, text */
    struct facet_pickle_obj *obj;      /* list, tuple, dict, a format's object */
};

struct facet_pickle_obj {
    struct facet_pickle_obj *next;     /* every object of the tree, for freeing */
    struct facet_pickle_value *items;  /* list, tuple; a dict's keys and values, alternating */
    int64_t n, cap;
    void *ext;                         /* a format's object: its fields, zeroed */
};

/* One allowed global: module.name stands for the value of kind GLOBAL with
 * num = id (> 0). */
struct facet_pickle_global {
    const char *module, *name;
    int64_t id;
};

struct facet_pickle;

/* What one file format accepts; the strings complete the error messages. */
struct facet_pickle_format {
    const char *what;                  /* "a verification .bin" */
    const char *holds;                 /* "only the tuple ...": what the format holds, after a refused opcode */
    const char *allowed;               /* "only byte strings, ...": after a refused global */
    const struct facet_pickle_global *globals;   /* the allow-list, ended by a NULL module */
    const char *const *kind_names;     /* "a NumPy array", ...: the kinds from FACET_PICKLE_USER on */
    int nkinds;
    /* REDUCE: callable (a GLOBAL) applied to the tuple args stands for *out,
     * which the hook builds without calling anything. Both hooks are needed
     * once the allow-list is not empty. */
    int (*reduce)(struct facet_pickle *p, const struct facet_pickle_value *callable,
                  const struct facet_pickle_obj *args, struct facet_pickle_value *out);
    /* BUILD: gives target (a format's object or a dict, still on the stack) its state. */
    int (*build)(struct facet_pickle *p, struct facet_pickle_value *target, const struct facet_pickle_value *state);
};

/* What a format takes beyond plain data (facet_pickle_parse_range). */
struct facet_pickle_extras {
    int dicts;                         /* 1: dicts and floats are data too */
    /* BINPERSID: the object persistent id pid stands for (NULL: refused). */
    int (*persistent)(struct facet_pickle *p, const struct facet_pickle_value *pid, struct facet_pickle_value *out);
    void *user;                        /* for the hooks: facet_pickle_user() */
};

/* Parses the pickle in bytes [0, size) of fd. On success *top is its value
 * and *out the reader that owns the tree: facet_pickle_free it after use.
 * On failure the error names fn and path and *out is NULL. */
int facet_pickle_parse(struct facet_pickle **out, struct facet_pickle_value *top, const struct facet_pickle_format *f,
                       int fd, int64_t size, const char *fn, const char *path);
/* The same for a pickle in bytes [base, base + size) of fd, with the extras
 * x (may be NULL); values' offsets are then relative to base
 * (facet_pickle_text reads them). */
int facet_pickle_parse_range(struct facet_pickle **out, struct facet_pickle_value *top,
                             const struct facet_pickle_format *f, const struct facet_pickle_extras *x, int fd,
                             int64_t base, int64_t size, const char *fn, const char *path);
/* The extras' user pointer. */
void *facet_pickle_user(const struct facet_pickle *p);
/* After a parse: where the pickle ended (the byte after STOP, from base). */
int64_t facet_pickle_end(const struct facet_pickle *p);
void facet_pickle_free(struct facet_pickle *p);

/* For hooks and for reading the tree. */
/* An IO error "fn: path: message", with "(opcode at byte N)" while parsing. */
int facet_pickle_fail(struct facet_pickle *p, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* "an int", "a list", or the format's name for its kind. */
const char *facet_pickle_kind_name(const struct facet_pickle *p, int kind);
/* A new object of the tree with ext_bytes of zeroed fields at (*o)->ext. */
int facet_pickle_new_object(struct facet_pickle *p, size_t ext_bytes, struct facet_pickle_obj **o);
/* The text of a short string value (a name), NUL-ended, read from the file. */
int facet_pickle_text(struct facet_pickle *p, const struct facet_pickle_value *v, char *dst, size_t cap);

#endif
