/*
 * head_math.h - the per-element math of the loss heads, shared by the CPU
 * row passes (head.c) and the CUDA kernels (core/cuda/head.cu): margins and
 * their derivatives, the MV-Softmax re-weighting, the expression VM for
 * scripted h and margins, and a branch-free exp that vectorises.
 */
#ifndef FACET_HEAD_MATH_H
#define FACET_HEAD_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#include "facet.h"
#include "elementwise_math.h"

/* Cosines are clamped before acos/sqrt; sin(theta) is floored here when it
 * divides, so gradients stay finite at c = +-1 (documented in docs/heads.md). */
#define FACET_SIN_FLOOR 1e-3f

/* AdaFace (docs/heads.md): the margin keeps cosines and angles e = 1e-3
 * inside their ranges; feature norms are clamped to [0.001, 100] */
#define FACET_ADAFACE_EPS 1e-3f
#define FACET_ADAFACE_NORM_MIN 0.001f
#define FACET_ADAFACE_NORM_MAX 100.0f

struct facet_head_params {
    float s, m1, m2, m3, lambda, t, gamma, keep;
    float l_a, u_a, l_m, u_m, lambda_g;                 /* MagFace */
    float std;                                          /* ElasticFace */
    int plus;
    int easy_margin, raw;
    int margin, reweight, sample;
    float cos_m3, sin_m3, arc_threshold, arc_fallback;  /* derived for ARC */
};

struct facet_program {
    int n_instr;
    int32_t code[FACET_EXPR_MAX_INSTR * 5];
    float consts[FACET_EXPR_MAX_CONSTS];
};

struct facet_head_cuda;     /* head.cu's per-head device state (NULL until a CUDA call) */

/* The opaque facet_head of the public API. */
struct facet_head {
    struct facet_head_params p;
    struct facet_program prog[FACET_HEAD_PROGRAM_COUNT];
    int has_prog[FACET_HEAD_PROGRAM_COUNT];
    /* a process-wide unique id per facet_head_set_program (0: never set, all
     * zeros), so head.cu copies a program to the device only when it changed */
    uint64_t prog_id[FACET_HEAD_PROGRAM_COUNT];
    struct facet_head_cuda *cuda;
    /* the last finish ran on the GPU: only then does facet_head_bad_label
     * report the device's verdict (a later CPU finish must not see it) */
    int finish_on_cuda;
};

/* min/max as plain comparisons: they vectorise (fminf/fmaxf become libm
 * calls), and a NaN in a propagates, so clamping never hides a NaN loss */
FACET_HD float facet_minf(float a, float b) { return b < a ? b : a; }
FACET_HD float facet_maxf(float a, float b) { return b > a ? b : a; }

/* exp(x) for x <= 0 mostly (logits minus their max): 2^n * p(r), |rel err| < 2e-7
 * on [-87, 88]; no branches or calls, so loops over it vectorise. */
FACET_HD float facet_fast_exp(float x)
{
    x = facet_minf(facet_maxf(x, -87.0f), 88.0f);
    /* round to nearest by truncating a positive value: floorf does not vectorise */
    float xs = x == x ? x : 0.0f;           /* NaN must not reach the int conversion; r keeps it */
    int32_t ni = (int32_t)(xs * 1.44269504088896341f + 128.5f) - 128;
    float n = (float)ni;
    float r = x - n * 0.693359375f;          /* ln2 split in two for precision */
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    return p * facet_bits_float((ni + 127) << 23);
}

FACET_HD float facet_clamp_cos(float c) { return facet_minf(facet_maxf(c, -1.0f), 1.0f); }

/* ---- cosines and the per-element gradient ---------------------------------------------
 * Cosine heads divide the GEMM output by max(||w_k||, floor); both backends
 * take the reciprocal once per class and multiply (a NaN norm stays NaN), so
 * the cosines are the same bits on the CPU and the GPU for the same GEMM
 * output. Raw heads use 1 (multiplying by it is exact). */
#define FACET_HEAD_WNORM_FLOOR 1e-12f

FACET_HD float facet_head_inv_norm(float wn) { return 1.0f / facet_maxf(wn, FACET_HEAD_WNORM_FLOOR); }

FACET_HD float facet_head_cos(float z, float inv_wn) { return facet_clamp_cos(facet_mul_rn(z, inv_wn)); }

/* G'_ik = w_i p_ik dz_ik / ||w_k|| without the one-hot term, with
 * p_ik = e * inv_sum (e = exp(z_ik - max_i)); rounded one operation at a time. */
FACET_HD float facet_head_grad(float w, float e, float inv_sum, float dz, float inv_wn)
{
    return facet_mul_rn(facet_mul_rn(facet_mul_rn(w, facet_mul_rn(e, inv_sum)), dz), inv_wn);
}

/* The one-hot term of the target column: w_i dz_iy / ||w_y||. */
FACET_HD float facet_head_grad_onehot(float w, float dz, float inv_wn)
{
    return facet_mul_rn(facet_mul_rn(w, dz), inv_wn);
}

FACET_HD float facet_sin_of_cos(float c)
{
    return fmaxf(sqrtf(fmaxf(1.0f - c * c, 0.0f)), FACET_SIN_FLOOR);
}

/* Chebyshev T_m(c) = cos(m theta) and U_{m-1}(c) = sin(m theta)/sin(theta). */
FACET_HD void facet_chebyshev(int m, float c, float *t_m, float *u_m1)
{
    float t0 = 1.0f, t1 = c, u0 = 1.0f, u1 = 2.0f * c;
    if (m == 0) { *t_m = 1.0f; *u_m1 = 0.0f; return; }
    for (int i = 1; i < m; i++) {
        float t2 = 2.0f * c * t1 - t0;
        t0 = t1; t1 = t2;
        if (i < m - 1) {
            float u2 = 2.0f * c * u1 - u0;
            u0 = u1; u1 = u2;
        }
    }
    *t_m = t1;
    *u_m1 = m == 1 ? 1.0f : u1;
}

/* The VM: scalar form (CUDA threads and per-row margins). */
FACET_HD float facet_expr_apply(int op, float a, float b, float c)
{
    switch (op) {
    case FACET_EXPR_OP_ADD: return a + b;
    case FACET_EXPR_OP_SUB: return a - b;
    case FACET_EXPR_OP_MUL: return a * b;
    case FACET_EXPR_OP_DIV: return a / b;
    case FACET_EXPR_OP_NEG: return -a;
    case FACET_EXPR_OP_EXP: return facet_fast_exp(a);   /* as the chunked VM on the CPU */
    case FACET_EXPR_OP_LOG: return logf(a);
    case FACET_EXPR_OP_SQRT: return sqrtf(a);
    case FACET_EXPR_OP_COS: return cosf(a);
    case FACET_EXPR_OP_SIN: return sinf(a);
    case FACET_EXPR_OP_ACOS: return acosf(fminf(fmaxf(a, -1.0f), 1.0f));
    case FACET_EXPR_OP_ABS: return fabsf(a);
    case FACET_EXPR_OP_MIN: return fminf(a, b);
    case FACET_EXPR_OP_MAX: return fmaxf(a, b);
    case FACET_EXPR_OP_POW: return powf(a, b);
    case FACET_EXPR_OP_LT: return a < b ? 1.0f : 0.0f;
    case FACET_EXPR_OP_LE: return a <= b ? 1.0f : 0.0f;
    case FACET_EXPR_OP_GT: return a > b ? 1.0f : 0.0f;
    case FACET_EXPR_OP_GE: return a >= b ? 1.0f : 0.0f;
    case FACET_EXPR_OP_WHERE: return a != 0.0f ? b : c;
    case FACET_EXPR_OP_FLOOR: return floorf(a);
    default: return 0.0f;
    }
}

FACET_HD float facet_expr_eval1(const struct facet_program *p, float x)
{
    float r[FACET_EXPR_MAX_REGS];
    r[0] = x;
    int dst = 0;
    for (int i = 0; i < p->n_instr; i++) {
        const int32_t *in = p->code + 5 * i;
        dst = in[1];
        r[dst] = in[0] == FACET_EXPR_OP_CONST ? p->consts[in[2]] : facet_expr_apply(in[0], r[in[2]], r[in[3]], r[in[4]]);
    }
    return r[dst];
}

/* f(c) and df/dc for the built-in margins (c already clamped); rz is the
 * row's rows[i, FACET_HEAD_ROW_NORM] (ADAFACE's normalised feature norm,
 * MAGFACE's margin), *dm df/dm (MAGFACE; 0 otherwise). */
FACET_HD void facet_margin(const struct facet_head_params *p, float c, float rz, float *f, float *df, float *dm)
{
    *dm = 0.0f;
    switch (p->margin) {
    case FACET_HEAD_MARGIN_ELASTIC_COS:
        *f = c - rz;
        *df = 1.0f;
        *dm = -1.0f;
        break;
    case FACET_HEAD_MARGIN_ELASTIC_ARC:
    case FACET_HEAD_MARGIN_MAGFACE: {
        /* arc with the row's margin; with easy_margin (its authors' runs)
         * none where c <= 0, else the fallback past theta + m = pi */
        const float m = rz, cm = cosf(m), sm = sinf(m);
        if (p->easy_margin && c <= 0.0f) {
            *f = c;
            *df = 1.0f;
        } else if (c > -cm) {
            const float sn = sqrtf(fmaxf(1.0f - c * c, 0.0f));
            *f = c * cm - sn * sm;
            *df = cm + c * sm / facet_sin_of_cos(c);
            *dm = -(c * sm + sn * cm);
        } else {
            *f = c - m * sm;
            *df = 1.0f;
            *dm = -(sm + m * cm);
        }
        break;
    }
    case FACET_HEAD_MARGIN_ADAFACE: {
        /* the angle moves by -m z, clipped inside (e, pi - e); the cosine
         * then drops by m (1 + z). The clamps have no gradient outside. */
        const float e = FACET_ADAFACE_EPS, lo = -1.0f + e, hi = 1.0f - e;
        const float cc = facet_minf(facet_maxf(c, lo), hi);
        const float a = acosf(cc) - p->m3 * rz;
        const float pi_e = 3.14159265358979f - e;
        const float ac = facet_minf(facet_maxf(a, e), pi_e);
        *f = cosf(ac) - (p->m3 + p->m3 * rz);
        *df = (c >= lo && c <= hi && a >= e && a <= pi_e) ? sinf(ac) / facet_sin_of_cos(cc) : 0.0f;
        break;
    }
    case FACET_HEAD_MARGIN_COMBINED:
        if (p->m1 == 1.0f && p->m3 == 0.0f) {
            *f = c - p->m2;
            *df = 1.0f;
        } else {
            float theta = acosf(c), a = p->m1 * theta + p->m3;
            *f = cosf(a) - p->m2;
            *df = p->m1 * sinf(a) / facet_sin_of_cos(c);
        }
        break;
    case FACET_HEAD_MARGIN_ARC:
        if (p->easy_margin ? c <= 0.0f : c < p->arc_threshold) {
            /* beyond theta + m = pi cos(theta + m) stops decreasing: the
             * monotonic fallback (easy margin: no margin at all) */
            *f = p->easy_margin ? c : c - p->arc_fallback;
            *df = 1.0f;
        } else {
            float sn = facet_sin_of_cos(c);
            *f = c * p->cos_m3 - sqrtf(fmaxf(1.0f - c * c, 0.0f)) * p->sin_m3;
            *df = p->cos_m3 + c * p->sin_m3 / sn;
        }
        break;
    case FACET_HEAD_MARGIN_ASOFTMAX: {
        float theta = acosf(c);
        int m = (int)p->m1;
        float kf = floorf(p->m1 * theta / 3.14159265358979f);
        if (kf > p->m1 - 1.0f) kf = p->m1 - 1.0f;
        float sign = fmodf(kf, 2.0f) == 0.0f ? 1.0f : -1.0f;
        float cos_m, dcos_m;
        if ((float)m == p->m1 && m >= 1 && m <= 16) {
            float u;
            facet_chebyshev(m, c, &cos_m, &u);
            dcos_m = p->m1 * u;                 /* d cos(m theta)/dc = m U_{m-1}(c) */
        } else {
            cos_m = cosf(p->m1 * theta);
            dcos_m = p->m1 * sinf(p->m1 * theta) / facet_sin_of_cos(c);
        }
        float psi = sign * cos_m - 2.0f * kf;
        *f = (p->lambda * c + psi) / (1.0f + p->lambda);
        *df = (p->lambda + sign * dcos_m) / (1.0f + p->lambda);
        break;
    }
    default:
        *f = c;
        *df = 1.0f;
        break;
    }
}

/* log h and its derivative at I = 1 for the built-in re-weightings; rt is
 * the row's t (rows[i, FACET_HEAD_ROW_T]), which only CURRICULAR reads:
 * its hard logit s c (t + c) is s c + log h with log h = s c (t + c - 1).
 * Rounded one operation at a time (no contraction), as on the GPU. */
FACET_HD void facet_logh(const struct facet_head_params *p, float c, float rt, float *lh, float *dlh)
{
    float st = p->s * p->t;
    if (p->reweight == FACET_HEAD_REWEIGHT_FIXED) { *lh = st; *dlh = 0.0f; }
    else if (p->reweight == FACET_HEAD_REWEIGHT_ADAPTIVE) { *lh = st * (c + 1.0f); *dlh = st; }
    else if (p->reweight == FACET_HEAD_REWEIGHT_CURRICULAR) {
        *lh = facet_mul_rn(p->s, facet_mul_rn(c, facet_add_rn(facet_add_rn(rt, c), -1.0f)));
        *dlh = facet_mul_rn(p->s, facet_add_rn(facet_add_rn(rt, -1.0f), facet_add_rn(c, c)));
    }
    else { *lh = 0.0f; *dlh = 0.0f; }
}

/* ---- batch statistics of the adaptive heads -----------------------------------------
 * CurricularFace's t (the mean of c_y) and AdaFace's norm statistics are
 * sums over the B rows, in double, in one order on both backends: lane j
 * (of FACET_HEAD_LANES) sums values j, j + LANES, ... in turn, and a fixed
 * tree folds the lanes (a GPU block of LANES threads runs the same steps).
 * Products and sums go through the _rn helpers: nvcc would contract them. */
#define FACET_HEAD_LANES 256

/* lane j over v[i * stride], i < n: the sum of clamp(v, lo, hi) - center,
 * or with square its square */
FACET_HD double facet_head_lane(const float *v, int64_t stride, int64_t n, int j, float lo, float hi, double center,
                                int square)
{
    double acc = 0.0;
    for (int64_t i = j; i < n; i += FACET_HEAD_LANES) {
        const double d = facet_dadd_rn((double)facet_minf(facet_maxf(v[i * stride], lo), hi), -center);
        acc = facet_dadd_rn(acc, square ? facet_dmul_rn(d, d) : d);
    }
    return acc;
}

/* one level of the tree: lanes [0, half) take lanes [half, 2 half) */
FACET_HD void facet_head_lane_fold(double *part, int j, int half)
{
    if (j < half) part[j] = facet_dadd_rn(part[j], part[j + half]);
}

/* (1 - momentum) old + momentum batch, as the state keeps it (float); the
 * ends exactly: momentum 0 keeps old (a NaN batch cannot reach it through
 * 0 * NaN) and momentum 1 takes the batch (a NaN old is forgotten) */
FACET_HD float facet_head_ema(float old, double batch, double momentum)
{
    if (momentum == 0.0) return old;
    if (momentum == 1.0) return (float)batch;
    return (float)facet_dadd_rn(facet_dmul_rn(1.0 - momentum, (double)old), facet_dmul_rn(momentum, batch));
}

/* MagFace: a row's clamped norm a, its margin, its regulariser term
 * lambda_g g(a), and dLoss/d||x|| through both (0 outside the clamp, as
 * torch's clamp): w (p_y - 1) s df/dm dm/da + lambda_g g'(a) / B, with w the
 * row's weight and p_y its target probability */
FACET_HD float facet_magface_a(const struct facet_head_params *p, float n)
{
    return facet_minf(facet_maxf(n, p->l_a), p->u_a);
}

FACET_HD float facet_magface_margin(const struct facet_head_params *p, float a)
{
    return facet_add_rn(p->l_m, facet_mul_rn(p->u_m - p->l_m, (a - p->l_a) / (p->u_a - p->l_a)));
}

FACET_HD float facet_magface_extra(const struct facet_head_params *p, float a)
{
    return p->lambda_g * (1.0f / a + a / (p->u_a * p->u_a));
}

/* a row's margin and regulariser term from its norm n */
FACET_HD void facet_magface_row(const struct facet_head_params *p, float *row, float n)
{
    const float a = facet_magface_a(p, n);
    row[FACET_HEAD_ROW_NORM] = facet_magface_margin(p, a);
    row[FACET_HEAD_ROW_EXTRA] = facet_magface_extra(p, a);
}

FACET_HD float facet_magface_coef(const struct facet_head_params *p, const float *row, float n, int64_t B)
{
    if (!(n >= p->l_a && n <= p->u_a)) return n == n ? 0.0f : n;    /* a NaN norm stays NaN */
    const float py = facet_fast_exp(row[FACET_HEAD_ROW_TARGET] - row[FACET_HEAD_ROW_MAX]) / row[FACET_HEAD_ROW_SUMEXP];
    const float dmda = (p->u_m - p->l_m) / (p->u_a - p->l_a);
    const float margin = row[FACET_HEAD_ROW_WEIGHT] * (py - 1.0f) * p->s * row[FACET_HEAD_ROW_MARGIN_DM] * dmda;
    return margin + p->lambda_g * (1.0f / (p->u_a * p->u_a) - 1.0f / (n * n)) / (float)B;
}

/* AdaFace: the clamped norm n and its normalised form z in [-1, 1] */
FACET_HD float facet_adaface_z(float norm, float mean, float std, double h)
{
    const double n = (double)facet_minf(facet_maxf(norm, FACET_ADAFACE_NORM_MIN), FACET_ADAFACE_NORM_MAX);
    const double z = facet_dmul_rn((n - (double)mean) / ((double)std + (double)FACET_ADAFACE_EPS), h);
    return (float)(z < -1.0 ? -1.0 : z > 1.0 ? 1.0 : z);
}

/* ---- composing a class's logit ------------------------------------------------------
 * The logit of a non-target class with cosine (raw heads: logit) c, given
 * f(c_y) = fy and the re-weighting's log h and d log h/dc at c (lh, dlh:
 * from facet_logh or the scripted programs): z = s c, plus log h where the
 * class beats the target (c > fy); dz/dc likewise. The target column is
 * replaced by the caller (row[FACET_HEAD_ROW_TARGET]). Rounded one operation
 * at a time, so head.c and head.cu compose the same bits. */
FACET_HD int facet_head_reweights(const struct facet_head_params *p)
{
    return !p->raw && p->reweight != FACET_HEAD_REWEIGHT_NONE;
}

FACET_HD float facet_head_scale(const struct facet_head_params *p) { return p->raw ? 1.0f : p->s; }

FACET_HD float facet_head_logit(const struct facet_head_params *p, float c, float fy, float lh)
{
    const float z = facet_mul_rn(facet_head_scale(p), c);
    if (!facet_head_reweights(p)) return z;
    return facet_add_rn(z, c > fy ? lh : 0.0f);
}

FACET_HD float facet_head_logit_grad(const struct facet_head_params *p, float c, float fy, float dlh)
{
    const float s = facet_head_scale(p);
    if (!facet_head_reweights(p)) return s;
    return facet_add_rn(s, c > fy ? dlh : 0.0f);
}

/* ---- log-sum-exp partials ------------------------------------------------------------
 * A row's softmax denominator is kept as a pair (m, s): the max of the
 * logits seen and the sum of exp(z - m) over them. Pairs of disjoint parts
 * (chunks on the CPU, threads and warps on the GPU) merge in any grouping.
 * A pair is empty when it has seen nothing (s == 0) or only -inf logits
 * (m == -inf, s a number): it contributes exp(-inf) = 0 and is skipped, since
 * merging two of them by the formula would compute 0 * exp(-inf - -inf) =
 * 0 * NaN. A NaN sum is never empty, so a NaN logit still reaches the loss. */
FACET_HD int facet_lse_empty(float m, float s)
{
    return s == 0.0f || (m == -INFINITY && s == s);
}

/* Folds the pair (m2, s2) into (*m, *s). */
FACET_HD void facet_lse_merge(float *m, float *s, float m2, float s2)
{
    if (facet_lse_empty(m2, s2)) return;
    if (facet_lse_empty(*m, *s)) {
        *m = m2;
        *s = s2;
    } else if (m2 > *m) {
        *s = facet_madd_rn(*s, facet_fast_exp(*m - m2), s2);
        *m = m2;
    } else {
        *s = facet_madd_rn(s2, facet_fast_exp(m2 - *m), *s);
    }
}

/* ---- the batch level (facet_head_finish) ----------------------------------------------- */

/* A row's cross-entropy from its merged pair and target logit: rounding can
 * dip below 0 (then 0); NaN stays NaN. */
FACET_HD float facet_head_row_loss(float m, float s, float target)
{
    const float L = facet_add_rn(facet_add_rn(m, logf(s)), -target);
    return L < 0.0f ? 0.0f : L;
}

/* Hard mining's order: row a (loss la) comes before row b when its loss is
 * larger, ties to the lower row; a NaN loss counts as +inf, so the order is
 * total and a NaN loss is kept (it reaches the loss, and the guard). The CPU
 * sorts by it, the GPU ranks every row by it: the same rows are kept. */
FACET_HD int facet_hard_before(float la, int64_t a, float lb, int64_t b)
{
    const float ka = la == la ? la : INFINITY, kb = lb == lb ? lb : INFINITY;
    return ka > kb || (ka == kb && a < b);
}

/* How many rows hard mining keeps out of B: floor(keep B), at least 1. */
FACET_HD int64_t facet_hard_keep(float keep, int64_t B)
{
    int64_t n = (int64_t)floor((double)keep * (double)B);
    return n < 1 ? 1 : n;
}

/* A focal row's term of the loss, (1 - p_y)^gamma L, in double as summed. */
FACET_HD double facet_focal_loss(float L, float gamma)
{
    return (double)powf(-expm1f(-L), gamma) * (double)L;
}

/* Per-row weight dLoss/dCE for the mean and focal reductions, over B rows;
 * L is the row's cross-entropy (-log p_y). */
FACET_HD float facet_focal_weight(float L, float gamma)
{
    if (gamma == 0.0f) return 1.0f;
    float p = expf(-L);
    float q = -expm1f(-L);                     /* 1 - p without cancellation */
    if (q <= 0.0f) return 0.0f;
    float qg = powf(q, gamma);
    return qg + gamma * p * (qg / q) * L;
}

/* ---- ElasticFace ------------------------------------------------------------------------
 * ElasticFace+ gives the smallest margin to the row with the largest c_y:
 * rows in the order of c_y descending (ties to the lower row, a NaN c_y
 * last), draws in ascending order (ties to the lower index). */
FACET_HD int facet_elastic_row_before(float ca, int64_t a, float cb, int64_t b)
{
    if (ca != ca) return cb != cb && a < b;
    if (cb != cb) return 1;
    return ca > cb || (ca == cb && a < b);
}

FACET_HD int facet_elastic_draw_before(float da, int64_t a, float db, int64_t b)
{
    return da < db || (da == db && a < b);
}

/* A row's margin m (rows[NORM]) and its target fields from its c_y */
FACET_HD void facet_elastic_row(const struct facet_head_params *p, float *row, float m)
{
    float f, df, dm;
    row[FACET_HEAD_ROW_NORM] = m;
    facet_margin(p, row[FACET_HEAD_ROW_COS], m, &f, &df, &dm);
    row[FACET_HEAD_ROW_MARGIN] = f;
    row[FACET_HEAD_ROW_MARGIN_GRAD] = df;
    row[FACET_HEAD_ROW_TARGET] = p->s * f;
}

/* ---- sub-centres (Sub-center ArcFace) ------------------------------------------------------
 * A class with k sub-centres has k consecutive columns of the GEMM output
 * (z, their norms wn). Its cosine is the best of theirs: the first of equal
 * ones, and a NaN wins so that it reaches the loss (and the training loop's
 * guard). Returns the sub-centre's index, *best its (clamped) cosine. */
/* whether a later sub-centre's cosine c replaces the best so far b */
FACET_HD int facet_subcenter_takes(float b, float c) { return b == b && (c > b || c != c); }

FACET_HD int facet_subcenter_best(const float *z, const float *wn, int k, float *best)
{
    int arg = 0;
    float b = facet_head_cos(z[0], facet_head_inv_norm(wn[0]));
    for (int j = 1; j < k; j++) {
        float c = facet_head_cos(z[j], facet_head_inv_norm(wn[j]));
        if (facet_subcenter_takes(b, c)) {
            b = c;
            arg = j;
        }
    }
    *best = b;
    return arg;
}

/* dLoss/d(GEMM output) of sub-centre column j of a class whose best
 * sub-centre is arg: the class's dLoss/dcos g over that column's norm, 0 at
 * the others (a max passes its gradient to the one it took). */
FACET_HD float facet_subcenter_grad(float g, int j, int arg, float inv_wn)
{
    return j == arg ? facet_mul_rn(g, inv_wn) : 0.0f;
}

#endif
