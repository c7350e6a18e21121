/*
 * head.c - the fused row passes of the loss heads on the CPU (see the heads
 * section of facet.h for the formulas). The Lua side runs the GEMMs; here one
 * pass per row turns the GEMM block into cosines, logits, the row max and sum
 * of exponentials, and one pass per column block turns the cosines into the
 * gradient in place, accumulating the column sums the W gradient needs.
 */
#include "internal.h"
#include "head_math.h"
#include <stdlib.h>
#include <string.h>

enum { CHUNK = 256 };

static void derive(struct facet_head_params *p)
{
    p->cos_m3 = cosf(p->m3);
    p->sin_m3 = sinf(p->m3);
    p->arc_threshold = -cosf(p->m3);          /* theta + m3 > pi  <=>  c < cos(pi - m3) */
    p->arc_fallback = p->m3 * sinf(p->m3);
}

int facet_head_init(facet_head **out, int margin, int reweight, int sample)
{
    static const char *fn = "facet_head_init";
    if (!out) return facet_fail(FACET_STATUS_ERR_ARG, "%s: out is NULL", fn);
    *out = NULL;
    if (margin < 0 || margin >= FACET_HEAD_MARGIN_COUNT) return facet_fail(FACET_STATUS_ERR_ARG, "%s: unknown margin %d", fn, margin);
    if (reweight < 0 || reweight >= FACET_HEAD_REWEIGHT_COUNT)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: unknown re-weighting %d", fn, reweight);
    if (sample < 0 || sample >= FACET_HEAD_SAMPLE_COUNT)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: unknown sample reduction %d", fn, sample);
    facet_head *h = calloc(1, sizeof *h);
    if (!h) return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory", fn);
    h->p.s = 32.0f;
    h->p.m1 = 1.0f;
    h->p.lambda = 5.0f;
    h->p.gamma = 2.0f;
    h->p.keep = 0.9f;
    h->p.l_a = 10.0f;           /* MagFace's defaults */
    h->p.u_a = 110.0f;
    h->p.l_m = 0.45f;
    h->p.u_m = 0.8f;
    h->p.lambda_g = 35.0f;
    h->p.margin = margin;
    h->p.reweight = reweight;
    h->p.sample = sample;
    derive(&h->p);
    *out = h;
    return 0;
}

int facet_head_free(facet_head *head)
{
    if (head && head->cuda) facet_cuda_head_release(head);   /* never fails: the head goes regardless */
    free(head);
    return 0;
}

int facet_head_set(facet_head *head, int param, double value)
{
    static const char *fn = "facet_head_set";
    if (!head) return facet_fail(FACET_STATUS_ERR_ARG, "%s: head is NULL", fn);
    if (!(value == value) || value > 1e30 || value < -1e30)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: parameter %d must be finite, got %g", fn, param, value);
    struct facet_head_params *p = &head->p;
    float v = (float)value;
    switch (param) {
    case FACET_HEAD_PARAM_S:
        if (v <= 0) return facet_fail(FACET_STATUS_ERR_ARG, "%s: s must be > 0, got %g", fn, value);
        p->s = v; break;
    case FACET_HEAD_PARAM_M1:
        if (v < 0) return facet_fail(FACET_STATUS_ERR_ARG, "%s: m1 must be >= 0, got %g", fn, value);
        p->m1 = v; break;
    case FACET_HEAD_PARAM_M2: p->m2 = v; break;
    case FACET_HEAD_PARAM_M3: p->m3 = v; break;
    case FACET_HEAD_PARAM_LAMBDA:
        if (v < 0) return facet_fail(FACET_STATUS_ERR_ARG, "%s: lambda must be >= 0, got %g", fn, value);
        p->lambda = v; break;
    case FACET_HEAD_PARAM_T:
        if (v < 0) return facet_fail(FACET_STATUS_ERR_ARG, "%s: t must be >= 0 (h >= 1), got %g", fn, value);
        p->t = v; break;
    case FACET_HEAD_PARAM_GAMMA:
        if (v < 0) return facet_fail(FACET_STATUS_ERR_ARG, "%s: gamma must be >= 0, got %g", fn, value);
        p->gamma = v; break;
    case FACET_HEAD_PARAM_KEEP:
        if (!(v > 0 && v <= 1)) return facet_fail(FACET_STATUS_ERR_ARG, "%s: keep must be in (0, 1], got %g", fn, value);
        p->keep = v; break;
    case FACET_HEAD_PARAM_EASY_MARGIN: p->easy_margin = value != 0; break;
    case FACET_HEAD_PARAM_RAW: p->raw = value != 0; break;
    case FACET_HEAD_PARAM_L_A:
    case FACET_HEAD_PARAM_U_A:
        if (v <= 0) return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s must be > 0, got %g", fn,
                                      param == FACET_HEAD_PARAM_L_A ? "l_a" : "u_a", value);
        if (param == FACET_HEAD_PARAM_L_A) p->l_a = v; else p->u_a = v;
        break;
    case FACET_HEAD_PARAM_L_M: p->l_m = v; break;
    case FACET_HEAD_PARAM_U_M: p->u_m = v; break;
    case FACET_HEAD_PARAM_LAMBDA_G:
        if (v < 0) return facet_fail(FACET_STATUS_ERR_ARG, "%s: lambda_g must be >= 0, got %g", fn, value);
        p->lambda_g = v; break;
    case FACET_HEAD_PARAM_STD:
        if (v < 0) return facet_fail(FACET_STATUS_ERR_ARG, "%s: std must be >= 0, got %g", fn, value);
        p->std = v; break;
    case FACET_HEAD_PARAM_PLUS: p->plus = value != 0; break;
    default: return facet_fail(FACET_STATUS_ERR_ARG, "%s: unknown parameter %d", fn, param);
    }
    derive(p);
    return 0;
}

int facet_head_set_program(facet_head *head, int slot, int n_instr, const int32_t *code, int n_consts,
                           const double *consts)
{
    static const char *fn = "facet_head_set_program";
    if (!head) return facet_fail(FACET_STATUS_ERR_ARG, "%s: head is NULL", fn);
    if (slot < 0 || slot >= FACET_HEAD_PROGRAM_COUNT) return facet_fail(FACET_STATUS_ERR_ARG, "%s: unknown slot %d", fn, slot);
    if (n_instr < 1 || n_instr > FACET_EXPR_MAX_INSTR || !code)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %d instructions (want 1..%d)", fn, n_instr, FACET_EXPR_MAX_INSTR);
    if (n_consts < 0 || n_consts > FACET_EXPR_MAX_CONSTS || (n_consts && !consts))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %d constants (want 0..%d)", fn, n_consts, FACET_EXPR_MAX_CONSTS);
    /* validate every instruction so evaluation can never index out of range */
    for (int i = 0; i < n_instr; i++) {
        const int32_t *in = code + 5 * i;
        int op = in[0];
        if (op < 0 || op >= FACET_EXPR_OP_COUNT) return facet_fail(FACET_STATUS_ERR_ARG, "%s: instruction %d: bad op %d", fn, i, op);
        if (in[1] < 0 || in[1] >= FACET_EXPR_MAX_REGS)
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: instruction %d: bad register %d", fn, i, in[1]);
        if (op == FACET_EXPR_OP_CONST) {
            if (in[2] < 0 || in[2] >= n_consts)
                return facet_fail(FACET_STATUS_ERR_ARG, "%s: instruction %d: bad constant %d", fn, i, in[2]);
        } else {
            for (int k = 2; k < 5; k++)
                if (in[k] < 0 || in[k] >= FACET_EXPR_MAX_REGS)
                    return facet_fail(FACET_STATUS_ERR_ARG, "%s: instruction %d: bad register %d", fn, i, in[k]);
        }
    }
    struct facet_program *p = &head->prog[slot];
    p->n_instr = n_instr;
    memcpy(p->code, code, sizeof(int32_t) * 5 * (size_t)n_instr);
    for (int i = 0; i < n_consts; i++) p->consts[i] = (float)consts[i];
    head->has_prog[slot] = 1;
    static uint64_t next_id;    /* ids are never reused, so a freed head's id cannot alias a new one */
    head->prog_id[slot] = __atomic_add_fetch(&next_id, 1, __ATOMIC_RELAXED);
    return 0;
}

int facet_head_eval_program(const facet_head *head, int slot, int64_t n, const float *c, float *out)
{
    if (!head || !c || !out) return facet_fail(FACET_STATUS_ERR_ARG, "facet_head_eval_program: NULL argument");
    if (slot < 0 || slot >= FACET_HEAD_PROGRAM_COUNT || !head->has_prog[slot])
        return facet_fail(FACET_STATUS_ERR_ARG, "facet_head_eval_program: slot %d has no program", slot);
    for (int64_t i = 0; i < n; i++) out[i] = facet_expr_eval1(&head->prog[slot], c[i]);
    return 0;
}

/* The VM over a chunk: each instruction runs over n values (vectorises). */
FACET_CLONES static void program_run(const struct facet_program *p, int n, const float *x, float *out)
{
    float r[FACET_EXPR_MAX_REGS][CHUNK];
    memcpy(r[0], x, sizeof(float) * (size_t)n);
    int dst = 0;
    for (int i = 0; i < p->n_instr; i++) {
        const int32_t *in = p->code + 5 * i;
        int op = in[0];
        float *d = r[in[1]];
        dst = in[1];
        if (op == FACET_EXPR_OP_CONST) {
            float v = p->consts[in[2]];
            for (int j = 0; j < n; j++) d[j] = v;
            continue;
        }
        const float *a = r[in[2]], *b = r[in[3]], *c = r[in[4]];
        switch (op) {   /* the common ops get their own loops; the rest share one */
        case FACET_EXPR_OP_ADD: for (int j = 0; j < n; j++) d[j] = a[j] + b[j]; break;
        case FACET_EXPR_OP_SUB: for (int j = 0; j < n; j++) d[j] = a[j] - b[j]; break;
        case FACET_EXPR_OP_MUL: for (int j = 0; j < n; j++) d[j] = a[j] * b[j]; break;
        case FACET_EXPR_OP_DIV: for (int j = 0; j < n; j++) d[j] = a[j] / b[j]; break;
        case FACET_EXPR_OP_EXP: for (int j = 0; j < n; j++) d[j] = facet_fast_exp(a[j]); break;
        default: for (int j = 0; j < n; j++) d[j] = facet_expr_apply(op, a[j], b[j], c[j]); break;
        }
    }
    memcpy(out, r[dst], sizeof(float) * (size_t)n);
}

/* ---- argument checks ------------------------------------------------------------- */

struct block {
    int64_t B, Kb, off;
    float *z;                 /* B x Kb */
    float *rows;              /* B x FACET_HEAD_ROW_COUNT */
    const float *wn, *bias;   /* Kb, or NULL */
    const void *labels;
    int ldt;                  /* label dtype */
};

static inline int64_t label_at(const struct block *b, int64_t i)
{
    return b->ldt == FACET_DTYPE_INT32 ? ((const int32_t *)b->labels)[i] : ((const int64_t *)b->labels)[i];
}

static int check_block(const char *fn, const facet_head *head, facet_tensor *rows, const facet_tensor *logits,
                       const facet_tensor *wnorm, const facet_tensor *bias, const facet_tensor *labels,
                       int64_t class_offset, struct block *b)
{
    if (!head) return facet_fail(FACET_STATUS_ERR_ARG, "%s: head is NULL", fn);
    int rc = facet_check_dtype(fn, "rows", rows, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_dtype(fn, "logits", logits, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_tensor(fn, "labels", labels);
    if (!rc) rc = facet_check_same_device(fn, rows, logits);
    if (!rc) rc = facet_check_same_device(fn, labels, logits);
    if (rc) return rc;
    if (logits->ndim != 2 || !facet_contiguous(logits))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: logits must be a contiguous 2-D tensor, got %s", fn, facet_desc(logits));
    int64_t B = logits->sizes[0], Kb = logits->sizes[1];
    if (rows->ndim != 2 || rows->sizes[0] != B || rows->sizes[1] != FACET_HEAD_ROW_COUNT || !facet_contiguous(rows))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: rows must be contiguous %lldx%d, got %s", fn, (long long)B,
                          FACET_HEAD_ROW_COUNT, facet_desc(rows));
    if ((labels->dtype != FACET_DTYPE_INT32 && labels->dtype != FACET_DTYPE_INT64) || labels->ndim != 1 ||
        labels->sizes[0] != B || !facet_contiguous(labels))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: labels must be %lld int32/int64 values, got %s", fn, (long long)B,
                          facet_desc(labels));
    if (!head->p.raw) {
        if (!wnorm) return facet_fail(FACET_STATUS_ERR_ARG, "%s: a cosine head needs wnorm", fn);
    }
    const facet_tensor *vecs[2] = { wnorm, bias };
    const char *names[2] = { "wnorm", "bias" };
    for (int k = 0; k < 2; k++) {
        if (!vecs[k]) continue;
        rc = facet_check_dtype(fn, names[k], vecs[k], FACET_DTYPE_FLOAT32);
        if (!rc) rc = facet_check_same_device(fn, vecs[k], logits);
        if (rc) return rc;
        if (facet_numel(vecs[k]) != Kb || !facet_contiguous(vecs[k]))
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s must be contiguous with %lld values, got %s", fn, names[k],
                              (long long)Kb, facet_desc(vecs[k]));
    }
    if (class_offset < 0) return facet_fail(FACET_STATUS_ERR_ARG, "%s: negative class offset", fn);
    b->B = B;
    b->Kb = Kb;
    b->off = class_offset;
    b->z = facet_ptr(logits);
    b->rows = facet_ptr(rows);
    b->wn = head->p.raw ? NULL : facet_ptr(wnorm);
    b->bias = bias ? facet_ptr(bias) : NULL;
    b->labels = facet_ptr(labels);
    b->ldt = labels->dtype;
    return 0;
}

/* ---- target ----------------------------------------------------------------------- */

static void target_row(const facet_head *head, const struct block *b, int64_t i)
{
    const struct facet_head_params *p = &head->p;
    int64_t k = label_at(b, i) - b->off;
    if (k < 0 || k >= b->Kb) return;
    float *row = b->rows + i * FACET_HEAD_ROW_COUNT;
    float v = b->z[i * b->Kb + k];
    float f, df, dm = 0.0f;
    if (p->raw) {
        if (b->bias) v += b->bias[k];
        f = v;
        df = 1.0f;
    } else {
        v = facet_head_cos(v, facet_head_inv_norm(b->wn[k]));
        if (p->margin == FACET_HEAD_MARGIN_PROGRAM) {
            f = facet_expr_eval1(&head->prog[FACET_HEAD_PROGRAM_MARGIN], v);
            df = facet_expr_eval1(&head->prog[FACET_HEAD_PROGRAM_MARGIN_GRAD], v);
        } else {
            facet_margin(p, v, row[FACET_HEAD_ROW_NORM], &f, &df, &dm);
        }
    }
    if (p->margin == FACET_HEAD_MARGIN_MAGFACE) row[FACET_HEAD_ROW_MARGIN_DM] = dm;
    row[FACET_HEAD_ROW_COS] = v;
    row[FACET_HEAD_ROW_MARGIN] = f;
    row[FACET_HEAD_ROW_MARGIN_GRAD] = df;
    row[FACET_HEAD_ROW_TARGET] = p->raw ? f : p->s * f;
}

int facet_head_target(facet_head *head, facet_tensor *rows, const facet_tensor *logits, const facet_tensor *wnorm,
                      const facet_tensor *bias, const facet_tensor *labels, int64_t class_offset, int64_t classes)
{
    static const char *fn = "facet_head_target";
    struct block b;
    int rc = check_block(fn, head, rows, logits, wnorm, bias, labels, class_offset, &b);
    if (rc) return rc;
    if (head->p.margin == FACET_HEAD_MARGIN_PROGRAM &&
        (!head->has_prog[FACET_HEAD_PROGRAM_MARGIN] || !head->has_prog[FACET_HEAD_PROGRAM_MARGIN_GRAD]))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: scripted margin without its programs", fn);
    /* what the forward's later passes need is checked here too, before the
     * first write of a forward: a forward fails whole or not at all */
    if (head->p.reweight == FACET_HEAD_REWEIGHT_PROGRAM &&
        (!head->has_prog[FACET_HEAD_PROGRAM_LOGH] || !head->has_prog[FACET_HEAD_PROGRAM_LOGH_GRAD]))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: scripted h without its programs", fn);
    if (classes < 1)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: classes must be >= 1, got %lld", fn, (long long)classes);
    /* labels are checked against the full class count, once per batch. On
     * CUDA the target kernel checks them where they are (no copy to the host,
     * no wait) and the next facet_head_finish reports a bad one; the kernels
     * never index with a label outside the block. */
    if (logits->device == FACET_DEVICE_CUDA)
        return facet_cuda_head_target(head, b.rows, b.z, b.wn, b.bias, b.labels, b.ldt, b.B, b.Kb, b.off, classes);
    for (int64_t i = 0; i < b.B; i++) {
        int64_t y = label_at(&b, i);
        if (y < 0 || y >= classes)
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: label %lld of row %lld outside [0, %lld)", fn, (long long)y,
                              (long long)i, (long long)classes);
    }
    for (int64_t i = 0; i < b.B; i++) target_row(head, &b, i);
    return 0;
}

/* ---- the adaptive heads' batch statistics ------------------------------------------------ */

/* the lanes of facet_head_lane folded by the tree, as a GPU block does */
static double lanes_total(const float *v, int64_t stride, int64_t n, float lo, float hi, double center, int square)
{
    double part[FACET_HEAD_LANES];
    for (int j = 0; j < FACET_HEAD_LANES; j++) part[j] = facet_head_lane(v, stride, n, j, lo, hi, center, square);
    for (int half = FACET_HEAD_LANES / 2; half > 0; half /= 2)
        for (int j = 0; j < half; j++) facet_head_lane_fold(part, j, half);
    return part[0];
}

/* the head, and rows: contiguous B x FACET_HEAD_ROW_COUNT float32, B >= 1 */
static int check_batch_rows(const char *fn, const facet_head *head, const facet_tensor *rows)
{
    if (!head) return facet_fail(FACET_STATUS_ERR_ARG, "%s: head is NULL", fn);
    int rc = facet_check_dtype(fn, "rows", rows, FACET_DTYPE_FLOAT32);
    if (rc) return rc;
    if (rows->ndim != 2 || rows->sizes[1] != FACET_HEAD_ROW_COUNT || rows->sizes[0] < 1 || !facet_contiguous(rows))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: rows must be contiguous Bx%d with B >= 1, got %s", fn,
                          FACET_HEAD_ROW_COUNT, facet_desc(rows));
    return 0;
}

/* check_batch_rows; each state tensor: one float32 value on the rows' device */
static int check_stats_args(const char *fn, const facet_head *head, const facet_tensor *rows,
                            const facet_tensor *const *state, const char *const *names, int nstate, double momentum)
{
    int rc = check_batch_rows(fn, head, rows);
    if (rc) return rc;
    for (int k = 0; k < nstate; k++) {
        rc = facet_check_dtype(fn, names[k], state[k], FACET_DTYPE_FLOAT32);
        if (!rc) rc = facet_check_same_device(fn, state[k], rows);
        if (rc) return rc;
        if (facet_numel(state[k]) != 1 || !facet_contiguous(state[k]))
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s must hold one value, got %s", fn, names[k],
                              facet_desc(state[k]));
    }
    if (!(momentum >= 0.0 && momentum <= 1.0))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: momentum must be in [0, 1], got %g", fn, momentum);
    return 0;
}

int facet_head_update_t(facet_head *head, facet_tensor *rows, facet_tensor *t, double momentum)
{
    static const char *fn = "facet_head_update_t";
    const facet_tensor *state[1] = { t };
    const char *names[1] = { "t" };
    int rc = check_stats_args(fn, head, rows, state, names, 1, momentum);
    if (rc) return rc;
    int64_t B = rows->sizes[0];
    float *r = facet_ptr(rows), *tp = facet_ptr(t);
    if (rows->device == FACET_DEVICE_CUDA) return facet_cuda_head_update_t(r, B, tp, momentum);
    const double sum = lanes_total(r + FACET_HEAD_ROW_COS, FACET_HEAD_ROW_COUNT, B, -INFINITY, INFINITY, 0.0, 0);
    const float nt = facet_head_ema(*tp, sum / (double)B, momentum);
    *tp = nt;
    for (int64_t i = 0; i < B; i++) r[i * FACET_HEAD_ROW_COUNT + FACET_HEAD_ROW_T] = nt;
    return 0;
}

int facet_head_update_norms(facet_head *head, facet_tensor *rows, const facet_tensor *norms, facet_tensor *mean,
                            facet_tensor *std, double momentum, double h)
{
    static const char *fn = "facet_head_update_norms";
    const facet_tensor *state[2] = { mean, std };
    const char *names[2] = { "mean", "std" };
    int rc = check_stats_args(fn, head, rows, state, names, 2, momentum);
    if (!rc) rc = facet_check_dtype(fn, "norms", norms, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_same_device(fn, norms, rows);
    if (rc) return rc;
    int64_t B = rows->sizes[0];
    if (facet_numel(norms) != B || !facet_contiguous(norms))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: norms must be %lld contiguous values, got %s", fn, (long long)B,
                          facet_desc(norms));
    if (!(h > 0.0 && h <= 1e30)) return facet_fail(FACET_STATUS_ERR_ARG, "%s: h must be > 0, got %g", fn, h);
    float *r = facet_ptr(rows), *mp = facet_ptr(mean), *sp = facet_ptr(std);
    const float *n = facet_ptr((facet_tensor *)norms);
    if (rows->device == FACET_DEVICE_CUDA) return facet_cuda_head_update_norms(r, B, n, mp, sp, momentum, h);
    const float lo = FACET_ADAFACE_NORM_MIN, hi = FACET_ADAFACE_NORM_MAX;
    /* one row has no standard deviation: the statistics stay (momentum 0) */
    const double mom = B < 2 ? 0.0 : momentum;
    const double bmean = lanes_total(n, 1, B, lo, hi, 0.0, 0) / (double)B;
    const double bstd = B < 2 ? 0.0 : sqrt(lanes_total(n, 1, B, lo, hi, bmean, 1) / (double)(B - 1));
    const float nm = facet_head_ema(*mp, bmean, mom), ns = facet_head_ema(*sp, bstd, mom);
    *mp = nm;
    *sp = ns;
    for (int64_t i = 0; i < B; i++) r[i * FACET_HEAD_ROW_COUNT + FACET_HEAD_ROW_NORM] = facet_adaface_z(n[i], nm, ns, h);
    return 0;
}

/* ---- MagFace's per-row margins -------------------------------------------------------- */

/* rows (B x FACET_HEAD_ROW_COUNT), norms (B) and, when given, coef (B):
 * float32, contiguous, on one device; the head's norm range usable */
static int check_magface_args(const char *fn, const facet_head *head, const facet_tensor *rows,
                              const facet_tensor *norms, const facet_tensor *coef)
{
    int rc = check_batch_rows(fn, head, rows);
    if (!rc) rc = facet_check_dtype(fn, "norms", norms, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_same_device(fn, norms, rows);
    if (!rc && coef) rc = facet_check_dtype(fn, "coef", coef, FACET_DTYPE_FLOAT32);
    if (!rc && coef) rc = facet_check_same_device(fn, coef, rows);
    if (rc) return rc;
    int64_t B = rows->sizes[0];
    const facet_tensor *vecs[2] = { norms, coef };
    const char *names[2] = { "norms", "coef" };
    for (int k = 0; k < 2; k++)
        if (vecs[k] && (facet_numel(vecs[k]) != B || !facet_contiguous(vecs[k])))
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s must be %lld contiguous values, got %s", fn, names[k],
                              (long long)B, facet_desc(vecs[k]));
    const struct facet_head_params *p = &head->p;
    if (p->margin != FACET_HEAD_MARGIN_MAGFACE)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: the head's margin is not MagFace's", fn);
    if (!(p->l_a < p->u_a))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: l_a (%g) must be below u_a (%g)", fn, p->l_a, p->u_a);
    return 0;
}

int facet_head_update_margins(facet_head *head, facet_tensor *rows, const facet_tensor *norms)
{
    static const char *fn = "facet_head_update_margins";
    int rc = check_magface_args(fn, head, rows, norms, NULL);
    if (rc) return rc;
    int64_t B = rows->sizes[0];
    float *r = facet_ptr(rows);
    const float *n = facet_ptr((facet_tensor *)norms);
    if (rows->device == FACET_DEVICE_CUDA) return facet_cuda_head_update_margins(&head->p, r, B, n);
    for (int64_t i = 0; i < B; i++) facet_magface_row(&head->p, r + i * FACET_HEAD_ROW_COUNT, n[i]);
    return 0;
}

int facet_head_norm_grad(const facet_head *head, const facet_tensor *rows, const facet_tensor *norms,
                         facet_tensor *coef)
{
    static const char *fn = "facet_head_norm_grad";
    if (!coef) return facet_fail(FACET_STATUS_ERR_ARG, "%s: coef is NULL", fn);
    int rc = check_magface_args(fn, head, rows, norms, coef);
    if (rc) return rc;
    int64_t B = rows->sizes[0];
    const float *r = facet_ptr((facet_tensor *)rows), *n = facet_ptr((facet_tensor *)norms);
    float *out = facet_ptr(coef);
    if (rows->device == FACET_DEVICE_CUDA) return facet_cuda_head_norm_grad(&head->p, r, B, n, out);
    for (int64_t i = 0; i < B; i++) out[i] = facet_magface_coef(&head->p, r + i * FACET_HEAD_ROW_COUNT, n[i], B);
    return 0;
}

/* ---- ElasticFace's margins ------------------------------------------------------------- */

int facet_head_elastic(facet_head *head, facet_tensor *rows, const facet_tensor *draws)
{
    static const char *fn = "facet_head_elastic";
    int rc = check_batch_rows(fn, head, rows);
    if (!rc) rc = facet_check_dtype(fn, "draws", draws, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_same_device(fn, draws, rows);
    if (rc) return rc;
    int64_t B = rows->sizes[0];
    if (facet_numel(draws) != B || !facet_contiguous(draws))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: draws must be %lld contiguous values, got %s", fn, (long long)B,
                          facet_desc(draws));
    const struct facet_head_params *p = &head->p;
    if (p->margin != FACET_HEAD_MARGIN_ELASTIC_ARC && p->margin != FACET_HEAD_MARGIN_ELASTIC_COS)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: the head's margin is not ElasticFace's", fn);
    float *r = facet_ptr(rows);
    const float *d = facet_ptr((facet_tensor *)draws);
    if (rows->device == FACET_DEVICE_CUDA) return facet_cuda_head_elastic(p, r, B, d);
    if (!p->plus) {
        for (int64_t i = 0; i < B; i++) facet_elastic_row(p, r + i * FACET_HEAD_ROW_COUNT, fmaf(p->std, d[i], p->m3));
        return 0;
    }
    /* as on the GPU: each draw to its place in ascending order (MARGIN_DM of
     * that row), each row's rank by c_y (EXTRA), then the margins */
    enum { N = FACET_HEAD_ROW_COUNT };
    for (int64_t i = 0; i < B; i++) {
        int64_t q = 0, rank = 0;
        float ci = r[i * N + FACET_HEAD_ROW_COS];
        for (int64_t j = 0; j < B; j++) {
            q += facet_elastic_draw_before(d[j], j, d[i], i);
            rank += facet_elastic_row_before(r[j * N + FACET_HEAD_ROW_COS], j, ci, i);
        }
        r[q * N + FACET_HEAD_ROW_MARGIN_DM] = d[i];
        r[i * N + FACET_HEAD_ROW_EXTRA] = (float)rank;
    }
    for (int64_t i = 0; i < B; i++) {
        int64_t rank = (int64_t)r[i * N + FACET_HEAD_ROW_EXTRA];
        r[i * N + FACET_HEAD_ROW_EXTRA] = 0.0f;
        facet_elastic_row(p, r + i * N, fmaf(p->std, r[rank * N + FACET_HEAD_ROW_MARGIN_DM], p->m3));
    }
    return 0;
}

/* ---- the forward row pass ----------------------------------------------------------- */

/* logits of one chunk of row i, from cosines (or raw logits) in c[]; the
 * composition is facet_head_logit, as on the GPU */
static inline void chunk_logits(const facet_head *head, const float *row, int n, const float *c, float *z)
{
    const struct facet_head_params *p = &head->p;
    float fy = row[FACET_HEAD_ROW_MARGIN], rt = row[FACET_HEAD_ROW_T];
    if (!facet_head_reweights(p)) {
        #pragma omp simd
        for (int j = 0; j < n; j++) z[j] = facet_head_logit(p, c[j], fy, 0.0f);
    } else if (p->reweight == FACET_HEAD_REWEIGHT_PROGRAM) {
        float lh[CHUNK];
        program_run(&head->prog[FACET_HEAD_PROGRAM_LOGH], n, c, lh);
        #pragma omp simd
        for (int j = 0; j < n; j++) z[j] = facet_head_logit(p, c[j], fy, lh[j]);
    } else {
        #pragma omp simd
        for (int j = 0; j < n; j++) {
            float lh, dlh;
            facet_logh(p, c[j], rt, &lh, &dlh);
            z[j] = facet_head_logit(p, c[j], fy, lh);
        }
    }
}

/* 1 / max(||w_k||, floor) of a chunk of classes, into inv[] (cosine heads) */
static inline void chunk_inv_norms(const struct block *b, int64_t k0, int n, float *inv)
{
    const float *wn = b->wn + k0;
    #pragma omp simd
    for (int j = 0; j < n; j++) inv[j] = facet_head_inv_norm(wn[j]);
}

/* cosines (or raw logits plus bias) of a chunk of the GEMM output, into c[];
 * inv: the chunk's reciprocal norms (cosine heads). The block itself stays
 * untouched until backward overwrites it. */
static inline void chunk_cos(const struct block *b, const float *zr, int64_t k0, int n, const float *inv, float *c)
{
    if (!b->wn) {
        if (b->bias) {
            const float *bias = b->bias + k0;
            #pragma omp simd
            for (int j = 0; j < n; j++) c[j] = zr[j] + bias[j];
        } else {
            for (int j = 0; j < n; j++) c[j] = zr[j];
        }
    } else {
        #pragma omp simd
        for (int j = 0; j < n; j++) c[j] = facet_head_cos(zr[j], inv[j]);
    }
}

/* max and sum of exp(z - m) over a chunk, in 16 lanes so they vectorise */
static inline float chunk_max(const float *z, int n)
{
    float lane[16];
    for (int l = 0; l < 16; l++) lane[l] = -INFINITY;
    int j = 0;
    for (; j + 16 <= n; j += 16)
        for (int l = 0; l < 16; l++) lane[l] = z[j + l] > lane[l] ? z[j + l] : lane[l];
    float m = -INFINITY;
    for (int l = 0; l < 16; l++) m = lane[l] > m ? lane[l] : m;
    for (; j < n; j++) m = z[j] > m ? z[j] : m;
    return m;
}

/* The sum of a chunk whose max is -inf: every logit is -inf or NaN, so it
 * is 0 (an empty pair), or NaN so that NaN logits reach the loss. */
static inline float chunk_sum_neginf(const float *z, int n)
{
    float s = 0.0f;
    for (int j = 0; j < n; j++)
        if (z[j] != z[j]) s = z[j];
    return s;
}

static inline float chunk_sumexp(const float *z, int n, float m)
{
    float lane[16] = {0};
    int j = 0;
    for (; j + 16 <= n; j += 16)
        for (int l = 0; l < 16; l++) lane[l] += facet_fast_exp(z[j + l] - m);
    float s = 0.0f;
    for (int l = 0; l < 16; l++) s += lane[l];
    for (; j < n; j++) s += facet_fast_exp(z[j] - m);
    return s;
}

FACET_CLONES static void partial_row(const facet_head *head, const struct block *b, int64_t i)
{
    float *zr = b->z + i * b->Kb;
    float *row = b->rows + i * FACET_HEAD_ROW_COUNT;
    int64_t ty = label_at(b, i) - b->off;
    float m = -INFINITY, sum = 0.0f;     /* the empty pair */
    float z[CHUNK], c[CHUNK], inv[CHUNK];
    for (int64_t k0 = 0; k0 < b->Kb; k0 += CHUNK) {
        int n = (int)(b->Kb - k0 < CHUNK ? b->Kb - k0 : CHUNK);
        if (b->wn) chunk_inv_norms(b, k0, n, inv);
        chunk_cos(b, zr + k0, k0, n, inv, c);
        chunk_logits(head, row, n, c, z);
        if (ty >= k0 && ty < k0 + n) z[ty - k0] = row[FACET_HEAD_ROW_TARGET];
        /* the chunk's own pair, merged as the GPU merges its threads' pairs */
        float cm = chunk_max(z, n);
        float cs = cm == -INFINITY ? chunk_sum_neginf(z, n) : chunk_sumexp(z, n, cm);
        facet_lse_merge(&m, &sum, cm, cs);
    }
    row[FACET_HEAD_ROW_MAX] = m;
    row[FACET_HEAD_ROW_SUMEXP] = sum;
}

int facet_head_partial(facet_head *head, facet_tensor *rows, facet_tensor *logits, const facet_tensor *wnorm,
                       const facet_tensor *bias, const facet_tensor *labels, int64_t class_offset)
{
    static const char *fn = "facet_head_partial";
    struct block b;
    int rc = check_block(fn, head, rows, logits, wnorm, bias, labels, class_offset, &b);
    if (rc) return rc;
    if (head->p.reweight == FACET_HEAD_REWEIGHT_PROGRAM && !head->has_prog[FACET_HEAD_PROGRAM_LOGH])
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: scripted h without its program", fn);
    if (logits->device == FACET_DEVICE_CUDA)
        return facet_cuda_head_partial(head, b.rows, b.z, b.wn, b.bias, b.labels, b.ldt, b.B, b.Kb, b.off);
    #pragma omp parallel for schedule(dynamic, 1) num_threads(facet_threads()) if (b.B * b.Kb >= FACET_PARALLEL_GRAIN)
    for (int64_t i = 0; i < b.B; i++) partial_row(head, &b, i);
    return 0;
}

/* ---- batch level --------------------------------------------------------------------- */

/* pairs (loss, row) in hard mining's order (facet_hard_before) */
static int cmp_hard(const void *x, const void *y)
{
    const float *a = x, *b = y;
    if (facet_hard_before(a[0], (int64_t)a[1], b[0], (int64_t)b[1])) return -1;
    return facet_hard_before(b[0], (int64_t)b[1], a[0], (int64_t)a[1]) ? 1 : 0;
}

int facet_head_finish(facet_head *head, facet_tensor *rows, double *loss)
{
    static const char *fn = "facet_head_finish";
    if (!head) return facet_fail(FACET_STATUS_ERR_ARG, "%s: head is NULL", fn);
    int rc = facet_check_dtype(fn, "rows", rows, FACET_DTYPE_FLOAT32);
    if (rc) return rc;
    if (!loss) return facet_fail(FACET_STATUS_ERR_ARG, "%s: loss is NULL", fn);
    if (rows->ndim != 2 || rows->sizes[1] != FACET_HEAD_ROW_COUNT || !facet_contiguous(rows))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: rows must be contiguous Bx%d, got %s", fn, FACET_HEAD_ROW_COUNT,
                          facet_desc(rows));
    int64_t B = rows->sizes[0];
    if (B == 0) return facet_fail(FACET_STATUS_ERR_ARG, "%s: empty batch", fn);
    head->finish_on_cuda = rows->device == FACET_DEVICE_CUDA;
    if (rows->device == FACET_DEVICE_CUDA) {
        /* the whole batch level runs on the device; the loss (and the verdict
         * on the labels of the target calls since the last finish) is the one
         * value read back */
        double total = 0.0;
        rc = facet_cuda_head_finish(head, facet_ptr(rows), B, &total);
        if (rc) return rc;
        *loss = total;
        return 0;
    }
    float *host = facet_ptr(rows);
    const struct facet_head_params *p = &head->p;
    /* every allocation before the first write to rows */
    float *pairs = NULL;
    if (p->sample == FACET_HEAD_SAMPLE_HARD) {
        pairs = malloc(sizeof(float) * 2 * (size_t)B);
        if (!pairs) return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory", fn);
    }
    double total = 0.0;
    for (int64_t i = 0; i < B; i++) {
        float *r = host + i * FACET_HEAD_ROW_COUNT;
        r[FACET_HEAD_ROW_LOSS] =
            facet_head_row_loss(r[FACET_HEAD_ROW_MAX], r[FACET_HEAD_ROW_SUMEXP], r[FACET_HEAD_ROW_TARGET]);
    }
    if (p->sample == FACET_HEAD_SAMPLE_HARD) {
        int64_t keep = facet_hard_keep(p->keep, B);
        for (int64_t i = 0; i < B; i++) {
            pairs[2 * i] = host[i * FACET_HEAD_ROW_COUNT + FACET_HEAD_ROW_LOSS];
            pairs[2 * i + 1] = (float)i;
        }
        qsort(pairs, (size_t)B, 2 * sizeof(float), cmp_hard);
        for (int64_t i = 0; i < B; i++) host[i * FACET_HEAD_ROW_COUNT + FACET_HEAD_ROW_WEIGHT] = 0.0f;
        for (int64_t j = 0; j < keep; j++) {
            int64_t i = (int64_t)pairs[2 * j + 1];
            host[i * FACET_HEAD_ROW_COUNT + FACET_HEAD_ROW_WEIGHT] = 1.0f / (float)keep;
            total += host[i * FACET_HEAD_ROW_COUNT + FACET_HEAD_ROW_LOSS];
        }
        total /= (double)keep;
        free(pairs);
    } else {
        for (int64_t i = 0; i < B; i++) {
            float *r = host + i * FACET_HEAD_ROW_COUNT;
            float L = r[FACET_HEAD_ROW_LOSS];
            if (p->sample == FACET_HEAD_SAMPLE_FOCAL) {
                total += facet_focal_loss(L, p->gamma);
                r[FACET_HEAD_ROW_WEIGHT] = facet_focal_weight(L, p->gamma) / (float)B;
            } else {
                total += L;
                r[FACET_HEAD_ROW_WEIGHT] = 1.0f / (float)B;
            }
        }
        total /= (double)B;
    }
    if (p->margin == FACET_HEAD_MARGIN_MAGFACE) {
        /* MagFace's regulariser, a mean over the batch beside the cross-entropy */
        double extra = 0.0;
        for (int64_t i = 0; i < B; i++) extra += host[i * FACET_HEAD_ROW_COUNT + FACET_HEAD_ROW_EXTRA];
        total += extra / (double)B;
    }
    *loss = total;      /* NaN passes through: the training loop's guard decides */
    return 0;
}

int facet_head_bad_label(const facet_head *head, int64_t *row, int64_t *label, int64_t *classes)
{
    static const char *fn = "facet_head_bad_label";
    if (!head) return facet_fail(FACET_STATUS_ERR_ARG, "%s: head is NULL", fn);
    if (!row || !label || !classes) return facet_fail(FACET_STATUS_ERR_ARG, "%s: NULL output", fn);
    *row = -1;
    *label = 0;
    *classes = 0;
    if (head->cuda && head->finish_on_cuda) facet_cuda_head_bad_label(head, row, label, classes);
    return 0;
}

/* ---- the backward pass, by column blocks ------------------------------------------------ */

FACET_CLONES static void backward_cols(const facet_head *head, const struct block *b, int64_t k0, int64_t k1, float *colsum,
                          float *colsum_cos)
{
    const struct facet_head_params *p = &head->p;
    float s = facet_head_scale(p);
    int64_t n = k1 - k0;
    float cs[CHUNK], cc[CHUNK], z[CHUNK], dz[CHUNK], c[CHUNK], inv[CHUNK];
    for (int64_t j = 0; j < n; j++) { cs[j] = 0.0f; cc[j] = 0.0f; }
    /* the chunk's reciprocal norms, once for every row (raw heads: 1) */
    if (b->wn) chunk_inv_norms(b, k0, (int)n, inv);
    else for (int64_t j = 0; j < n; j++) inv[j] = 1.0f;
    for (int64_t i = 0; i < b->B; i++) {
        const float *row = b->rows + i * FACET_HEAD_ROW_COUNT;
        float *g = b->z + i * b->Kb + k0;
        float w = row[FACET_HEAD_ROW_WEIGHT];
        if (w == 0.0f) {            /* dropped by hard mining */
            for (int64_t j = 0; j < n; j++) g[j] = 0.0f;
            continue;
        }
        chunk_cos(b, g, k0, (int)n, inv, c);
        float m = row[FACET_HEAD_ROW_MAX], inv_sum = 1.0f / row[FACET_HEAD_ROW_SUMEXP], fy = row[FACET_HEAD_ROW_MARGIN];
        chunk_logits(head, row, (int)n, c, z);
        /* dz/dc for the non-target classes (facet_head_logit_grad, as on the GPU) */
        if (facet_head_reweights(p) && p->reweight == FACET_HEAD_REWEIGHT_PROGRAM) {
            program_run(&head->prog[FACET_HEAD_PROGRAM_LOGH_GRAD], (int)n, c, dz);
            #pragma omp simd
            for (int64_t j = 0; j < n; j++) dz[j] = facet_head_logit_grad(p, c[j], fy, dz[j]);
        } else {
            const float rt = row[FACET_HEAD_ROW_T];
            #pragma omp simd
            for (int64_t j = 0; j < n; j++) {
                float lh, dlh;
                facet_logh(p, c[j], rt, &lh, &dlh);
                dz[j] = facet_head_logit_grad(p, c[j], fy, dlh);
            }
        }
        int64_t ty = label_at(b, i) - b->off - k0;
        float cy = 0.0f;
        if (ty >= 0 && ty < n) {
            z[ty] = row[FACET_HEAD_ROW_TARGET];
            dz[ty] = s * row[FACET_HEAD_ROW_MARGIN_GRAD];
            cy = c[ty];
        }
        #pragma omp simd
        for (int64_t j = 0; j < n; j++) {
            float v = facet_head_grad(w, facet_fast_exp(z[j] - m), inv_sum, dz[j], inv[j]);
            cc[j] += v * c[j];
            cs[j] += v;
            g[j] = v;
        }
        if (ty >= 0 && ty < n) {
            /* the -1 of (p - onehot) */
            float g1 = facet_head_grad_onehot(w, dz[ty], inv[ty]);
            g[ty] -= g1;
            cs[ty] -= g1;
            cc[ty] -= g1 * cy;
        }
    }
    if (colsum) for (int64_t j = 0; j < n; j++) colsum[k0 + j] = cs[j];
    if (colsum_cos) for (int64_t j = 0; j < n; j++) colsum_cos[k0 + j] = cc[j];
}

int facet_head_backward(facet_head *head, facet_tensor *logits, const facet_tensor *rows, const facet_tensor *wnorm,
                        const facet_tensor *bias, const facet_tensor *labels, int64_t class_offset,
                        facet_tensor *colsum, facet_tensor *colsum_cos)
{
    static const char *fn = "facet_head_backward";
    struct block b;
    int rc = check_block(fn, head, (facet_tensor *)rows, logits, wnorm, bias, labels, class_offset, &b);
    if (rc) return rc;
    if (head->p.reweight == FACET_HEAD_REWEIGHT_PROGRAM && !head->has_prog[FACET_HEAD_PROGRAM_LOGH_GRAD])
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: scripted h without its derivative program", fn);
    facet_tensor *outs[2] = { colsum, colsum_cos };
    for (int k = 0; k < 2; k++) {
        if (!outs[k]) continue;
        rc = facet_check_dtype(fn, k ? "colsum_cos" : "colsum", outs[k], FACET_DTYPE_FLOAT32);
        if (!rc) rc = facet_check_same_device(fn, outs[k], logits);
        if (rc) return rc;
        if (facet_numel(outs[k]) != b.Kb || !facet_contiguous(outs[k]))
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: column sums must be contiguous with %lld values, got %s", fn,
                              (long long)b.Kb, facet_desc(outs[k]));
    }
    float *cs = colsum ? facet_ptr(colsum) : NULL, *cc = colsum_cos ? facet_ptr(colsum_cos) : NULL;
    if (logits->device == FACET_DEVICE_CUDA)
        return facet_cuda_head_backward(head, b.z, b.rows, b.wn, b.bias, b.labels, b.ldt, b.B, b.Kb, b.off, cs, cc);
    int64_t blocks = (b.Kb + CHUNK - 1) / CHUNK;
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (b.B * b.Kb >= FACET_PARALLEL_GRAIN)
    for (int64_t blk = 0; blk < blocks; blk++) {
        int64_t k0 = blk * CHUNK, k1 = k0 + CHUNK < b.Kb ? k0 + CHUNK : b.Kb;
        backward_cols(head, &b, k0, k1, cs, cc);
    }
    return 0;
}

/* ---- sub-centres --------------------------------------------------------------------------- */

/* cos (or grad) and index (B x Kb float32 / uint8), sub (B x Kb k float32) and wnorm
 * (Kb k float32): contiguous, on one device, 1 <= k <= 255; B, Kb and k out */
static int check_subcenter(const char *fn, const char *cos_name, const facet_tensor *cos, const facet_tensor *index,
                           const facet_tensor *sub, const facet_tensor *wnorm, int64_t *B, int64_t *Kb, int *k)
{
    int rc = facet_check_dtype(fn, cos_name, cos, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_dtype(fn, "index", index, FACET_DTYPE_UINT8);
    if (!rc) rc = facet_check_dtype(fn, "sub", sub, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_dtype(fn, "wnorm", wnorm, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_same_device(fn, index, cos);
    if (!rc) rc = facet_check_same_device(fn, sub, cos);
    if (!rc) rc = facet_check_same_device(fn, wnorm, cos);
    if (rc) return rc;
    if (cos->ndim != 2 || !facet_contiguous(cos) || cos->sizes[1] < 1)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s must be a contiguous B x Kb tensor (Kb >= 1), got %s", fn,
                          cos_name, facet_desc(cos));
    int64_t b = cos->sizes[0], kb = cos->sizes[1];
    if (index->ndim != 2 || index->sizes[0] != b || index->sizes[1] != kb || !facet_contiguous(index))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: index must be contiguous %lldx%lld, got %s", fn, (long long)b,
                          (long long)kb, facet_desc(index));
    if (sub->ndim != 2 || sub->sizes[0] != b || !facet_contiguous(sub) || sub->sizes[1] % kb != 0 ||
        sub->sizes[1] / kb < 1 || sub->sizes[1] / kb > 255)
        return facet_fail(FACET_STATUS_ERR_ARG,
                          "%s: sub must be contiguous %lld x (%lld k) with 1 <= k <= 255 sub-centres, got %s", fn,
                          (long long)b, (long long)kb, facet_desc(sub));
    if (facet_numel(wnorm) != sub->sizes[1] || !facet_contiguous(wnorm))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: wnorm must be contiguous with %lld values, got %s", fn,
                          (long long)sub->sizes[1], facet_desc(wnorm));
    *B = b;
    *Kb = kb;
    *k = (int)(sub->sizes[1] / kb);
    return 0;
}

int facet_head_subcenter_max(facet_tensor *cos, facet_tensor *index, const facet_tensor *sub,
                             const facet_tensor *wnorm)
{
    static const char *fn = "facet_head_subcenter_max";
    int64_t B, Kb;
    int k;
    int rc = check_subcenter(fn, "cos", cos, index, sub, wnorm, &B, &Kb, &k);
    if (rc) return rc;
    float *c = facet_ptr(cos);
    uint8_t *idx = facet_ptr(index);
    const float *z = facet_ptr((facet_tensor *)sub), *wn = facet_ptr((facet_tensor *)wnorm);
    if (cos->device == FACET_DEVICE_CUDA) return facet_cuda_head_subcenter_max(c, idx, z, wn, B, Kb, k);
    /* by blocks of whole classes (the reciprocal norms once a block), each
     * row's classes a sub-centre at a time so the loops vectorise; the
     * choice is facet_subcenter_best's, as on the GPU */
    int64_t per = CHUNK / k, blocks = (Kb + per - 1) / per;
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (B * Kb * k >= FACET_PARALLEL_GRAIN)
    for (int64_t blk = 0; blk < blocks; blk++) {
        int64_t c0 = blk * per, n = (c0 + per < Kb ? c0 + per : Kb) - c0;
        float inv[CHUNK], best[CHUNK];
        int arg[CHUNK];
        for (int64_t u = 0; u < n * k; u++) inv[u] = facet_head_inv_norm(wn[c0 * k + u]);
        for (int64_t i = 0; i < B; i++) {
            const float *zr = z + (i * Kb + c0) * k;
            #pragma omp simd
            for (int64_t q = 0; q < n; q++) {
                best[q] = facet_head_cos(zr[q * k], inv[q * k]);
                arg[q] = 0;
            }
            for (int j = 1; j < k; j++) {
                #pragma omp simd
                for (int64_t q = 0; q < n; q++) {
                    float v = facet_head_cos(zr[q * k + j], inv[q * k + j]);
                    int t = facet_subcenter_takes(best[q], v);
                    best[q] = t ? v : best[q];
                    arg[q] = t ? j : arg[q];
                }
            }
            for (int64_t q = 0; q < n; q++) {
                c[i * Kb + c0 + q] = best[q];
                idx[i * Kb + c0 + q] = (uint8_t)arg[q];
            }
        }
    }
    return 0;
}

int facet_head_subcenter_scatter(facet_tensor *sub, facet_tensor *colsum_cos, const facet_tensor *grad,
                                 const facet_tensor *index, const facet_tensor *wnorm)
{
    static const char *fn = "facet_head_subcenter_scatter";
    int64_t B, Kb;
    int k;
    int rc = check_subcenter(fn, "grad", grad, index, sub, wnorm, &B, &Kb, &k);
    if (rc) return rc;
    int64_t n = Kb * k;
    if (colsum_cos) {
        rc = facet_check_dtype(fn, "colsum_cos", colsum_cos, FACET_DTYPE_FLOAT32);
        if (!rc) rc = facet_check_same_device(fn, colsum_cos, sub);
        if (rc) return rc;
        if (facet_numel(colsum_cos) != n || !facet_contiguous(colsum_cos))
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: colsum_cos must be contiguous with %lld values, got %s", fn,
                              (long long)n, facet_desc(colsum_cos));
    }
    float *z = facet_ptr(sub), *cc = colsum_cos ? facet_ptr(colsum_cos) : NULL;
    const float *g = facet_ptr((facet_tensor *)grad), *wn = facet_ptr((facet_tensor *)wnorm);
    const uint8_t *idx = facet_ptr((facet_tensor *)index);
    if (sub->device == FACET_DEVICE_CUDA) return facet_cuda_head_subcenter_scatter(z, cc, g, idx, wn, B, Kb, k);
    /* by blocks of whole classes, each column's sum over the rows in order */
    int64_t per = CHUNK / k, blocks = (Kb + per - 1) / per;
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (B * n >= FACET_PARALLEL_GRAIN)
    for (int64_t blk = 0; blk < blocks; blk++) {
        int64_t c0 = blk * per, c1 = c0 + per < Kb ? c0 + per : Kb, m = (c1 - c0) * k;
        float inv[CHUNK], acc[CHUNK];
        for (int64_t u = 0; u < m; u++) {
            inv[u] = facet_head_inv_norm(wn[c0 * k + u]);
            acc[u] = 0.0f;
        }
        for (int64_t i = 0; i < B; i++) {
            float *zr = z + i * n + c0 * k;
            const float *gr = g + i * Kb + c0;
            const uint8_t *ir = idx + i * Kb + c0;
            /* a sub-centre at a time over the block's classes, so the loops vectorise */
            for (int j = 0; j < k; j++) {
                #pragma omp simd
                for (int64_t q = 0; q < m / k; q++) {
                    int64_t u = q * k + j;
                    float v = facet_subcenter_grad(gr[q], j, ir[q], inv[u]);
                    acc[u] += j == ir[q] ? v * facet_head_cos(zr[u], inv[u]) : 0.0f;
                    zr[u] = v;
                }
            }
        }
        if (cc) for (int64_t u = 0; u < m; u++) cc[c0 * k + u] = acc[u];
    }
    return 0;
}
