/* Token sampler. One call turns a logit vector into a token id:
 *
 *   logits -> val[]: a sanitized copy with the repetition penalty applied
 *          -> top-k: one pass through a small buffer that is cut back to k
 *             by partial selection whenever it fills; no sort
 *          -> top-p: the smallest best-first set whose probability mass
 *             reaches p. After top-k, a weighted selection on the k
 *             candidates; on the whole vocabulary, a histogram of the
 *             logits (1024 bins below the maximum, at most 32 nats deep)
 *             finds the bin where the mass crosses p, and only that bin's
 *             tokens go through the weighted selection
 *          -> min-p: drop logits below max + log(min_p)
 *          -> temperature, softmax, draw with xoshiro256**.
 *
 * The order and the penalty rule follow llama.cpp's common default chain
 * (penalties, top_k, top_p, min_p, temp, dist): top-p and min-p look at the
 * distribution before temperature. A stage on the whole vocabulary drops a
 * token by setting its val to -inf; top-k gathers its k survivors into the
 * compact arrays cl/cp/cid, where later stages work. Candidates are ordered
 * by logit and then by id, a total order, so every selection has exactly
 * one answer whatever pivots it uses. Every work array is allocated at
 * create time. The passes over the vocabulary are written with integer
 * compares and bit selects so that GCC vectorizes them without
 * -ffast-math (a float compare keeps a loop scalar under the default
 * -ftrapping-math); exp_neg makes the softmax vectorizable too.
 * A 262,144-token step takes about 0.2 ms greedy and 1.5 ms with top-p on
 * the whole vocabulary (one x86-64 core, SSE2). */
#include "runtime/sample.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"

enum {
    N_BINS = 1024,      /* top-p histogram */
    BLOCK = 1024,       /* probabilities summed per block for the draw */
};

struct ks_sampler {
    ks_sampler_params par;
    uint32_t  n_vocab;
    float    *val;      /* [n_vocab] sanitized, penalized logits */
    float    *prob;     /* [n_vocab] unnormalized probabilities of val */
    uint16_t *bin;      /* [n_vocab] histogram bin per token, top-p */
    float    *cl;       /* [n_vocab] compact candidates: logit */
    float    *cp;       /*                                probability */
    int32_t  *cid;      /*                                token id */
    double   *blk;      /* [n_vocab / BLOCK + 1] block sums for the draw */
    double    bin_mass[N_BINS];
    uint32_t *mark;     /* [n_vocab] == gen when the token is in the window */
    uint32_t  gen;
    int32_t  *hist;     /* [hist_cap] ring of accepted tokens */
    uint32_t  hist_cap;
    uint32_t  hist_len;
    uint32_t  hist_pos; /* next slot to write */
    uint64_t  rng[4];   /* xoshiro256** state */
};

/* A candidate set: the full vocabulary (id == NULL: index is the id) or
 * the compact arrays. */
typedef struct view {
    float         *l;
    float         *p;
    const int32_t *id;
    size_t         n;
} view;

/* ---- random numbers -------------------------------------------------- */

static uint64_t
splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t
rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t
xoshiro_next(uint64_t s[4])
{
    uint64_t r = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* Uniform in [0, 1) with 53 random bits. */
static double
uniform01(uint64_t s[4])
{
    return (double)(xoshiro_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

static void
seed_rng(ks_sampler *s)
{
    uint64_t x = s->par.seed;

    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
}

/* ---- vector-friendly math ---------------------------------------------- */

/* e^x for x <= 0 (x = -inf gives 0), relative error about 2e-7. Plain
 * float arithmetic, and the range checks done on the bit pattern: with
 * GCC's default -ftrapping-math a float comparison keeps a loop scalar,
 * an integer one does not. A loop of it vectorizes without -ffast-math and
 * gives the same bits on every IEEE machine. */
static inline float
exp_neg(float x)
{
    union { uint32_t u; float f; } in = { .f = x }, lim = { .f = -87.0f },
                                   scale, out;
    /* x < -87 (or -inf, or a NaN with the sign set): all ones */
    uint32_t tiny = (uint32_t)0 - (uint32_t)(in.u > lim.u);
    float xc, k, r, q = 1.0f / 720.0f;

    in.u = (in.u & ~tiny) | (lim.u & tiny);
    xc = in.f;
    /* round(x / ln 2) with the 1.5 * 2^23 trick */
    k = (xc * 1.44269504f + 12582912.0f) - 12582912.0f;
    /* Cody-Waite reduction: r = x - k ln2, |r| <= ln2 / 2 */
    r = (xc - k * 0.693145752f) - k * 1.42860677e-6f;
    q = q * r + 1.0f / 120.0f;
    q = q * r + 1.0f / 24.0f;
    q = q * r + 1.0f / 6.0f;
    q = q * r + 0.5f;
    q = q * r + 1.0f;
    q = q * r + 1.0f;
    scale.u = (uint32_t)((int32_t)k + 127) << 23;
    out.f = q * scale.f;
    out.u &= ~tiny;
    return out.f;
}

/* out[i] = e^((x[i] - m) * scale), m >= every x[i], scale > 0. */
static void
exp_shift(const float *restrict x, float *restrict out, size_t n, float m,
          float scale)
{
    for (size_t i = 0; i < n; i++)
        out[i] = exp_neg((x[i] - m) * scale);
}

/* Maps a float to an unsigned key with the same order (-0 just below +0):
 * flip the sign bit of a positive number, every bit of a negative one. */
static inline uint32_t
order_key(float f)
{
    union { float f; uint32_t u; } b = { .f = f };
    return b.u ^ (((uint32_t)0 - (b.u >> 31)) | 0x80000000u);
}

static inline float
from_key(uint32_t k)
{
    union { uint32_t u; float f; } b;
    b.u = k & 0x80000000u ? k ^ 0x80000000u : ~k;
    return b.f;
}

/* The largest value of x[0, n), n > 0; NaN never wins (all NaN gives
 * -inf). Compares order keys: integer compares vectorize under
 * -ftrapping-math, float ones do not. */
static float
vmax(const float *x, size_t n)
{
    uint32_t m = 0x007fffffu;   /* key of -inf */

    for (size_t i = 0; i < n; i++) {
        union { float f; uint32_t u; } b = { .f = x[i] };
        uint32_t k = order_key(x[i]);
        uint32_t nan = (uint32_t)0 - (uint32_t)((b.u & 0x7fffffffu) >
                                                0x7f800000u);
        k &= ~nan;
        m = k > m ? k : m;
    }
    return from_key(m);
}

/* Sum of p[0, n) in double; blk (optional) receives each BLOCK's sum. */
static double
sum_blocks(const float *p, size_t n, double *blk)
{
    double z = 0.0;

    for (size_t b = 0; b * BLOCK < n; b++) {
        size_t lo = b * BLOCK, hi = lo + BLOCK < n ? lo + BLOCK : n;
        double a[4] = { 0.0, 0.0, 0.0, 0.0 };
        size_t i = lo;
        for (; i + 4 <= hi; i += 4)
            for (int j = 0; j < 4; j++)
                a[j] += p[i + j];
        for (; i < hi; i++)
            a[0] += p[i];
        a[0] = (a[0] + a[1]) + (a[2] + a[3]);
        if (blk)
            blk[b] = a[0];
        z += a[0];
    }
    return z;
}

/* ---- create / destroy -------------------------------------------------- */

static bool
penalty_on(const ks_sampler *s)
{
    return s->par.repeat_penalty != 0.0f && s->par.repeat_penalty != 1.0f;
}

ks_status
ks_sampler_create(const ks_sampler_params *p, uint32_t n_vocab,
                  ks_sampler **out)
{
    static const ks_sampler_params defaults;
    ks_sampler_params par = p ? *p : defaults;
    ks_sampler *s = NULL;
    ks_status st;

    *out = NULL;
    if (n_vocab == 0 || n_vocab > (uint32_t)INT32_MAX)
        return ks_error(KS_ERR_INVALID_ARG,
                        "sampler: n_vocab must be in 1..%d, found %u",
                        INT32_MAX, n_vocab);
    if (isnan(par.temp))
        return ks_error(KS_ERR_INVALID_ARG, "sampler: temp is NaN");
    if (par.top_k < 0)
        return ks_error(KS_ERR_INVALID_ARG,
                        "sampler: top_k must be >= 0 (0: off), found %d",
                        par.top_k);
    if (!(par.top_p >= 0.0f))
        return ks_error(KS_ERR_INVALID_ARG,
                        "sampler: top_p must be >= 0 (0 or >= 1: off), "
                        "found %g", (double)par.top_p);
    if (!(par.min_p >= 0.0f && par.min_p <= 1.0f))
        return ks_error(KS_ERR_INVALID_ARG,
                        "sampler: min_p must be in [0, 1] (0: off), found %g",
                        (double)par.min_p);
    if (!(par.repeat_penalty >= 0.0f && par.repeat_penalty <= FLT_MAX))
        return ks_error(KS_ERR_INVALID_ARG,
                        "sampler: repeat_penalty must be a finite value "
                        ">= 0 (0 or 1: off), found %g",
                        (double)par.repeat_penalty);
    if (par.repeat_last_n < 0)
        return ks_error(KS_ERR_INVALID_ARG,
                        "sampler: repeat_last_n must be >= 0 (0: 64), "
                        "found %d", par.repeat_last_n);
    if (par.repeat_last_n == 0)
        par.repeat_last_n = 64;

    s = calloc(1, sizeof(*s));
    if (!s)
        return ks_error(KS_ERR_NOMEM, "sampler: no memory");
    s->par = par;
    s->n_vocab = n_vocab;
    s->hist_cap = (uint32_t)par.repeat_last_n;
    /* n_vocab <= INT32_MAX, so these element counts cannot overflow size_t
     * on a 64-bit host; calloc checks the products itself anyway. */
    s->val = calloc(n_vocab, sizeof(float));
    s->prob = calloc(n_vocab, sizeof(float));
    s->bin = calloc(n_vocab, sizeof(uint16_t));
    s->cl = calloc(n_vocab, sizeof(float));
    s->cp = calloc(n_vocab, sizeof(float));
    s->cid = calloc(n_vocab, sizeof(int32_t));
    s->blk = calloc(n_vocab / BLOCK + 1, sizeof(double));
    s->mark = calloc(n_vocab, sizeof(uint32_t));
    s->hist = calloc(s->hist_cap, sizeof(int32_t));
    if (!s->val || !s->prob || !s->bin || !s->cl || !s->cp || !s->cid ||
        !s->blk || !s->mark || !s->hist) {
        st = ks_error(KS_ERR_NOMEM,
                      "sampler: no memory for %u candidates and a window "
                      "of %u tokens", n_vocab, s->hist_cap);
        goto fail;
    }
    ks_sampler_reset(s);
    *out = s;
    return KS_OK;
fail:
    ks_sampler_destroy(s);
    return st;
}

void
ks_sampler_destroy(ks_sampler *s)
{
    if (!s)
        return;
    free(s->hist);
    free(s->mark);
    free(s->blk);
    free(s->cid);
    free(s->cp);
    free(s->cl);
    free(s->bin);
    free(s->prob);
    free(s->val);
    free(s);
}

void
ks_sampler_reset(ks_sampler *s)
{
    s->hist_len = 0;
    s->hist_pos = 0;
    seed_rng(s);
}

void
ks_sampler_accept(ks_sampler *s, int32_t token)
{
    if (token < 0 || (uint32_t)token >= s->n_vocab)
        return;
    s->hist[s->hist_pos] = token;
    s->hist_pos = (s->hist_pos + 1) % s->hist_cap;
    if (s->hist_len < s->hist_cap)
        s->hist_len++;
}

/* ---- penalty ------------------------------------------------------------ */

static float
penalize(float v, float penalty)
{
    /* llama.cpp (llama_sampler_penalties_apply): logit <= 0 is multiplied,
     * a positive one divided, so both move towards "less likely". */
    return v <= 0.0f ? v * penalty : v / penalty;
}

/* Copies logits into val (NaN -> -inf, +inf -> FLT_MAX so that differences
 * stay finite) and applies the penalty once to each distinct token of the
 * window. */
static void
fill_val(ks_sampler *s, const float *restrict logits)
{
    float *restrict val = s->val;
    size_t n = s->n_vocab;

    for (size_t i = 0; i < n; i++) {
        union { float f; uint32_t u; } v = { .f = logits[i] };
        uint32_t a = v.u & 0x7fffffffu;
        uint32_t nan = (uint32_t)0 - (uint32_t)(a > 0x7f800000u);
        uint32_t pinf = (uint32_t)0 - (uint32_t)(v.u == 0x7f800000u);
        /* bit selects: integer compares keep the loop vectorizable */
        v.u = (v.u & ~(nan | pinf)) | (0xff800000u & nan) |
              (0x7f7fffffu & pinf);   /* -inf, FLT_MAX */
        val[i] = v.f;
    }
    if (!penalty_on(s) || s->hist_len == 0)
        return;
    if (++s->gen == 0) {
        memset(s->mark, 0, (size_t)s->n_vocab * sizeof(uint32_t));
        s->gen = 1;
    }
    for (uint32_t i = 0; i < s->hist_len; i++) {
        int32_t t = s->hist[i];
        if (s->mark[t] != s->gen) {
            s->mark[t] = s->gen;
            val[t] = penalize(val[t], s->par.repeat_penalty);
        }
    }
}

/* ---- compact candidates: ordering and selection ------------------------- */

/* True when candidate a comes before b: higher logit, then lower id. */
static inline bool
before(float la, int32_t ia, float lb, int32_t ib)
{
    return la > lb || (la == lb && ia < ib);
}

static inline void
swap_at(ks_sampler *s, size_t a, size_t b)
{
    float l = s->cl[a], p = s->cp[a];
    int32_t id = s->cid[a];

    s->cl[a] = s->cl[b];
    s->cp[a] = s->cp[b];
    s->cid[a] = s->cid[b];
    s->cl[b] = l;
    s->cp[b] = p;
    s->cid[b] = id;
}

/* The total order makes the result independent of the pivots; random
 * pivots keep the expected cost linear on any input. */
static inline size_t
pivot_index(uint64_t *x, size_t lo, size_t hi)
{
    return lo + (size_t)(splitmix64(x) % (uint64_t)(hi - lo));
}

/* Partitions [lo, hi) around the candidate at |piv|: candidates before it
 * first, then the pivot, whose index is returned. *mass (when not NULL)
 * receives the cp sum of the candidates placed before the pivot. */
static size_t
partition(ks_sampler *s, size_t lo, size_t hi, size_t piv, double *mass)
{
    size_t store = lo;
    float pl;
    int32_t pi;
    double m = 0.0;

    swap_at(s, piv, hi - 1);
    pl = s->cl[hi - 1];
    pi = s->cid[hi - 1];
    for (size_t j = lo; j < hi - 1; j++) {
        if (before(s->cl[j], s->cid[j], pl, pi)) {
            m += s->cp[j];
            swap_at(s, j, store);
            store++;
        }
    }
    swap_at(s, store, hi - 1);
    if (mass)
        *mass = m;
    return store;
}

/* Rearranges [0, n) so that [0, k) holds the first k candidates in the
 * total order, in no particular order themselves. */
static void
select_k(ks_sampler *s, size_t n, size_t k)
{
    uint64_t x = 0x6b657374726c;  /* fixed: same input, same work */
    size_t lo = 0, hi = n;

    while (lo < k && k < hi) {
        size_t m = partition(s, lo, hi, pivot_index(&x, lo, hi), NULL);
        if (m == k || m + 1 == k)
            break;
        if (m < k)
            lo = m + 1;
        else
            hi = m;
    }
}

static void
insertion_sort(ks_sampler *s, size_t lo, size_t hi)
{
    for (size_t i = lo + 1; i < hi; i++)
        for (size_t j = i; j > lo && before(s->cl[j], s->cid[j],
                                            s->cl[j - 1], s->cid[j - 1]); j--)
            swap_at(s, j, j - 1);
}

/* Weighted selection on [lo, hi): moves the smallest best-first prefix
 * whose cp mass reaches |target| to the front and returns its length
 * (at least 1). Each round partitions around a pivot and keeps the side
 * where the mass boundary lies; expected linear time. */
static size_t
select_mass(ks_sampler *s, size_t lo, size_t hi, double target)
{
    uint64_t x = 0x746f702d70;
    size_t start = lo;
    double mass;

    while (hi - lo > 16) {
        size_t k = partition(s, lo, hi, pivot_index(&x, lo, hi), &mass);
        if (mass >= target) {
            hi = k;                 /* the boundary is before the pivot */
        } else if (mass + s->cp[k] >= target) {
            return k + 1 - start;   /* the pivot completes the mass */
        } else {
            target -= mass + s->cp[k];
            lo = k + 1;
        }
    }
    insertion_sort(s, lo, hi);
    mass = 0.0;
    for (size_t i = lo; i < hi; i++) {
        mass += s->cp[i];
        if (mass >= target)
            return i + 1 - start;
    }
    return hi > start ? hi - start : 1;   /* rounding: keep what is left */
}

/* ---- stages ------------------------------------------------------------- */

/* Top-k over the full view into the compact arrays: survivors of a running
 * threshold gather in a buffer; when it fills it is cut back to the k best
 * and the threshold becomes the k-th logit. A later token equal to the
 * threshold has a higher id, so it comes after every kept one. */
static view
top_k_full(ks_sampler *s, size_t k)
{
    size_t n = s->n_vocab;
    size_t cap = k * 4 > k + 1024 ? k * 4 : k + 1024;
    const float *val = s->val;
    size_t cnt = 0;
    bool have = false;
    float tau = 0.0f;

    if (cap > n)
        cap = n;
    for (size_t i = 0; i < n; i++) {
        float v = val[i];
        if (have && !(v > tau))
            continue;
        s->cl[cnt] = v;
        s->cp[cnt] = 0.0f;
        s->cid[cnt] = (int32_t)i;
        if (++cnt == cap) {
            size_t last = 0;
            select_k(s, cnt, k);
            for (size_t j = 1; j < k; j++)
                if (before(s->cl[last], s->cid[last], s->cl[j], s->cid[j]))
                    last = j;
            tau = s->cl[last];
            have = true;
            cnt = k;
        }
    }
    if (cnt > k)
        select_k(s, cnt, k);
    return (view){ s->cl, s->cp, s->cid, k };
}

/* Top-p after an earlier filter: weighted selection on the compact set. */
static view
top_p_compact(ks_sampler *s, view v, float top_p)
{
    float m = vmax(v.l, v.n);
    double z;

    if (m == -INFINITY)
        return v;
    exp_shift(v.l, v.p, v.n, m, 1.0f);
    z = sum_blocks(v.p, v.n, NULL);
    v.n = select_mass(s, 0, v.n, (double)top_p * z);
    return v;
}

/* Top-p on the full vocabulary, in place: tokens outside the kept set get
 * val = -inf. Bins slice the logits below the maximum into N_BINS equal
 * steps over the range of the finite logits, at most 32 nats deep (the
 * last bin takes everything lower: tokens 32 nats below the top carry too
 * little mass to matter, unless nothing else does). Bins before the one
 * where the cumulative mass reaches p are kept whole, bins after it
 * dropped; only that bin's tokens go through the weighted selection. */
static view
top_p_full(ks_sampler *s, float top_p)
{
    size_t n = s->n_vocab;
    float *restrict val = s->val;
    float *restrict prob = s->prob;
    uint16_t *restrict bin = s->bin;
    uint32_t kmax = 0, kmin = UINT32_MAX, kninf = order_key(-INFINITY);
    float m, range, per_nat;
    double z = 0.0, target, cum = 0.0;
    size_t b, cnt = 0, keep;
    uint16_t bcut;
    union { float f; uint32_t u; } last = { .f = (float)(N_BINS - 1) };

    for (size_t i = 0; i < n; i++) {
        uint32_t k = order_key(val[i]);
        kmax = k > kmax ? k : kmax;
        k = k == kninf ? UINT32_MAX : k;    /* -inf is not in the range */
        kmin = k < kmin ? k : kmin;
    }
    m = from_key(kmax);
    if (m == -INFINITY)
        return (view){ s->val, s->prob, NULL, n };
    range = m - from_key(kmin);             /* finite: val has no +inf */
    if (range == 0.0f) {
        /* All finite logits equal: the order is by id, and p keeps the
         * first ceil(p * count) of them; spares the selection a bin
         * holding the whole vocabulary. */
        size_t n_fin = 0, c;
        for (size_t i = 0; i < n; i++)
            n_fin += val[i] != -INFINITY;
        c = (size_t)ceil((double)top_p * (double)n_fin);
        c = c < 1 ? 1 : c;
        for (size_t i = 0; i < n; i++) {
            if (val[i] != -INFINITY) {
                if (c > 0)
                    c--;
                else
                    val[i] = -INFINITY;
            }
        }
        return (view){ s->val, s->prob, NULL, n };
    }
    range = range < 32.0f ? range : 32.0f;
    /* bins per nat; capped so that a tiny range cannot overflow it */
    per_nat = range > (float)N_BINS / 1e9f ? (float)N_BINS / range : 1e9f;
    for (size_t i = 0; i < n; i++) {
        /* d >= 0 (+inf for -inf logits): the bits of d * per_nat order
         * like its value, so the clamp is an integer compare */
        float d = m - val[i];
        union { float f; uint32_t u; } f = { .f = d * per_nat };
        uint32_t over = (uint32_t)0 - (uint32_t)(f.u > last.u);
        f.u = (f.u & ~over) | (last.u & over);
        bin[i] = (uint16_t)(int32_t)f.f;
        prob[i] = exp_neg(-d);
    }
    memset(s->bin_mass, 0, sizeof s->bin_mass);
    for (size_t i = 0; i < n; i++)
        s->bin_mass[bin[i]] += prob[i];
    for (b = 0; b < N_BINS; b++)
        z += s->bin_mass[b];
    target = (double)top_p * z;
    for (b = 0; b < N_BINS - 1; b++) {
        if (cum + s->bin_mass[b] >= target)
            break;
        cum += s->bin_mass[b];
    }
    bcut = (uint16_t)b;
    /* Two passes: a branch-free one that vectorizes, and one whose branch
     * is rarely taken; one branchy pass mispredicts on flat logits. */
    for (size_t i = 0; i < n; i++) {
        union { float f; uint32_t u; } v = { .f = val[i] };
        uint32_t drop = (uint32_t)0 - (uint32_t)(bin[i] > bcut);
        v.u = (v.u & ~drop) | (0xff800000u & drop);   /* -inf */
        val[i] = v.f;
    }
    for (size_t i0 = 0; i0 < n; i0 += 16) {
        size_t i1 = i0 + 16 < n ? i0 + 16 : n;
        uint32_t hit = 0;
        for (size_t i = i0; i < i1; i++)   /* cheap test, 16 at a time */
            hit |= bin[i] == bcut;
        if (!hit)
            continue;
        for (size_t i = i0; i < i1; i++) {
            if (bin[i] == bcut) {
                s->cl[cnt] = val[i];
                s->cp[cnt] = prob[i];
                s->cid[cnt] = (int32_t)i;
                cnt++;
            }
        }
    }
    keep = cnt > 0 ? select_mass(s, 0, cnt, target - cum) : 0;
    for (size_t j = keep; j < cnt; j++)
        val[s->cid[j]] = -INFINITY;
    return (view){ s->val, s->prob, NULL, n };
}

/* Keeps candidates whose logit is at least max + log(min_p): on the full
 * view by setting the others to -inf, on the compact one by compaction. */
static view
min_p_cut(ks_sampler *s, view v, float min_p)
{
    float m = vmax(v.l, v.n), thr;
    size_t w = 0;

    if (m == -INFINITY)
        return v;
    thr = m + logf(min_p);
    if (!v.id) {
        uint32_t kt = order_key(thr);
        for (size_t i = 0; i < v.n; i++)
            v.l[i] = order_key(v.l[i]) >= kt ? v.l[i] : -INFINITY;
        return v;
    }
    for (size_t i = 0; i < v.n; i++) {
        if (v.l[i] >= thr) {
            s->cl[w] = v.l[i];
            s->cid[w] = v.id[i];
            w++;
        }
    }
    v.n = w;
    return v;
}

static int32_t
id_at(view v, size_t i)
{
    return v.id ? v.id[i] : (int32_t)i;
}

/* The first candidate in the total order. */
static int32_t
best_of(view v)
{
    size_t b = 0;

    for (size_t i = 1; i < v.n; i++)
        if (before(v.l[i], id_at(v, i), v.l[b], id_at(v, b)))
            b = i;
    return id_at(v, b);
}

static int32_t
draw(ks_sampler *s, view v)
{
    float m = vmax(v.l, v.n);
    float inv_t = 1.0f / s->par.temp;
    double z, u, acc = 0.0;
    size_t b, i, last = 0;

    /* Nothing possible (all -inf), or a temperature so small that 1/temp
     * overflows: answer like greedy does. */
    if (m == -INFINITY || !(inv_t <= FLT_MAX))
        return best_of(v);
    exp_shift(v.l, v.p, v.n, m, inv_t);
    z = sum_blocks(v.p, v.n, s->blk);
    u = uniform01(s->rng) * z;
    for (b = 0; (b + 1) * BLOCK < v.n; b++) {
        if (acc + s->blk[b] > u)
            break;
        acc += s->blk[b];
    }
    for (i = b * BLOCK; i < v.n; i++) {
        if (v.p[i] > 0.0f) {
            acc += v.p[i];
            last = i;
            if (u < acc)
                return id_at(v, i);
        }
    }
    /* rounding left u past the end: the last possible token */
    if (v.p[last] == 0.0f)
        for (i = 0; i < v.n; i++)
            if (v.p[i] > 0.0f)
                last = i;
    return id_at(v, last);
}

static int32_t
sample_greedy(ks_sampler *s, const float *logits)
{
    const float *src = logits;
    size_t n = s->n_vocab;
    float m;

    if (penalty_on(s) && s->hist_len > 0) {
        fill_val(s, logits);
        src = s->val;
    }
    m = vmax(src, n);
    for (size_t i = 0; i < n; i++)
        if (src[i] == m)
            return (int32_t)i;
    return 0;   /* every logit NaN */
}

int32_t
ks_sampler_sample(ks_sampler *s, const float *logits)
{
    const ks_sampler_params *par = &s->par;
    view v;

    if (!(par->temp > 0.0f))
        return sample_greedy(s, logits);
    fill_val(s, logits);
    v = (view){ s->val, s->prob, NULL, s->n_vocab };
    if (par->top_k > 0 && (size_t)par->top_k < v.n)
        v = top_k_full(s, (size_t)par->top_k);
    if (par->top_p > 0.0f && par->top_p < 1.0f && v.n > 1)
        v = v.id ? top_p_compact(s, v, par->top_p) : top_p_full(s, par->top_p);
    if (par->min_p > 0.0f && v.n > 1)
        v = min_p_cut(s, v, par->min_p);
    return draw(s, v);
}

/* ---- distributions, for speculative sampling ----------------------------- */

void
ks_sampler_probs(ks_sampler *s, const float *logits, float *probs)
{
    const ks_sampler_params *par = &s->par;
    float m, inv_t;
    double z;
    view v;

    memset(probs, 0, (size_t)s->n_vocab * sizeof(*probs));
    if (!(par->temp > 0.0f)) {
        probs[sample_greedy(s, logits)] = 1.0f;
        return;
    }
    /* the chain of ks_sampler_sample up to the draw */
    fill_val(s, logits);
    v = (view){ s->val, s->prob, NULL, s->n_vocab };
    if (par->top_k > 0 && (size_t)par->top_k < v.n)
        v = top_k_full(s, (size_t)par->top_k);
    if (par->top_p > 0.0f && par->top_p < 1.0f && v.n > 1)
        v = v.id ? top_p_compact(s, v, par->top_p) : top_p_full(s, par->top_p);
    if (par->min_p > 0.0f && v.n > 1)
        v = min_p_cut(s, v, par->min_p);
    m = vmax(v.l, v.n);
    inv_t = 1.0f / par->temp;
    if (m == -INFINITY || !(inv_t <= FLT_MAX)) {  /* as draw: the best one */
        probs[best_of(v)] = 1.0f;
        return;
    }
    exp_shift(v.l, v.p, v.n, m, inv_t);
    z = sum_blocks(v.p, v.n, NULL);
    for (size_t i = 0; i < v.n; i++)
        probs[id_at(v, i)] = (float)(v.p[i] / z);
}

double
ks_sampler_uniform(ks_sampler *s)
{
    return uniform01(s->rng);
}

void
ks_sampler_set_history(ks_sampler *s, const int32_t *tokens, size_t n)
{
    size_t from = n > s->hist_cap ? n - s->hist_cap : 0;

    s->hist_len = 0;
    s->hist_pos = 0;
    for (size_t i = from; i < n; i++)
        ks_sampler_accept(s, tokens[i]);
}
