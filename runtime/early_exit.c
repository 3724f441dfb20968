/* Early exit (ks_generate_params.early_exit): lossy, greedy decoding in
 * which a token whose exit is confident skips the model's last layers.
 *
 * Two sessions on one model: |e| (p->draft) runs layers [0, L) and the
 * shared head; |s| runs all of them. Every token runs through e; when
 * e's top probability reaches the threshold, its top token is the next
 * one and s does not run. Otherwise s runs the tokens it has not run
 * yet and the new one in one verification pass (ks_session_eval_all:
 * the weights read once, each token with the one-token arithmetic), and
 * its top token is the next. So the layers a token skipped get their
 * keys and values filled later, from the same tokens, bit for bit as a
 * full run would fill them: the tokens after an early exit see exactly
 * the context a full run gives them. Exits change which tokens come
 * out; nothing else.
 *
 * Greedy only (the top token of whichever logits decide), without the
 * repeat penalty, speculation or a JSON schema. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"
#include "runtime/session_priv.h"

/* The top token of a row and its probability. */
static int32_t
top(const float *l, uint32_t n_vocab, float *p_top)
{
    uint32_t imax = 0;
    double sum = 0;

    for (uint32_t i = 1; i < n_vocab; i++)
        if (l[i] > l[imax])
            imax = i;
    for (uint32_t i = 0; i < n_vocab; i++)
        sum += exp((double)l[i] - l[imax]);
    *p_top = (float)(1.0 / sum);
    return (int32_t)imax;
}

static ks_status
check(const ks_session *s, const ks_generate_params *p)
{
    const ks_session *e = p->draft;

    if (!(p->early_exit <= 1.0f))
        return ks_error(KS_ERR_INVALID_ARG, "generate: early_exit %g is not a probability "
                        "(0 < T <= 1)", (double)p->early_exit);
    if (!e || e->m != s->m || e->n_layers >= s->n_layers)
        return ks_error(KS_ERR_INVALID_ARG, "generate: early exit needs a session on the "
                        "same model with fewer layers (n_layers) as draft");
    if (p->sampling.temp > 0.0f ||
        (p->sampling.repeat_penalty != 0.0f && p->sampling.repeat_penalty != 1.0f))
        return ks_error(KS_ERR_UNSUPPORTED, "generate: early exit is greedy only, without "
                        "the repeat penalty (use --temp 0)");
    if (p->json_schema || (p->spec != KS_SPEC_AUTO && p->spec != KS_SPEC_OFF))
        return ks_error(KS_ERR_UNSUPPORTED, "generate: early exit cannot be combined with "
                        "speculation or a JSON schema");
    return KS_OK;
}

/* Makes e hold what s holds: it keeps the common prefix and runs the rest. */
static ks_status
follow(ks_session *e, const ks_session *s)
{
    uint32_t n = e->n_past < s->n_past ? e->n_past : s->n_past, i = 0;
    ks_status st;

    while (i < n && e->hist[i] == s->hist[i])
        i++;
    if ((st = ks_session_truncate(e, i)) != KS_OK)
        return st;
    if (s->n_past > i)
        return ks_session_eval(e, s->hist + i, s->n_past - i, NULL);
    return KS_OK;
}

/* Appends the tokens s has not been given yet to what it holds, unrun
 * (the contract lets keys and values come late). */
static void
hold_pending(ks_session *s, const int32_t *pending, uint32_t n)
{
    memcpy(s->hist + s->n_past, pending, n * sizeof(*pending));
    s->n_past += n;
    s->logits_ok = false;
}

ks_status
ks_early_exit_generate(ks_session *s, ks_generate_params *p)
{
    ks_session *e = p->draft;
    uint32_t V = s->m->hp.n_vocab, n_pending = 0, n_gen = 0;
    int32_t *pending = NULL, tok;
    float *rows = NULL, p_top;
    uint64_t t0 = ks_now_ns(), t1 = 0;
    ks_status st;

    if ((st = check(s, p)) != KS_OK) {
        p->stop = KS_STOP_ERROR;
        return st;
    }
    pending = malloc((size_t)s->n_ctx * sizeof(*pending));
    rows = malloc((size_t)64 * V * sizeof(*rows));
    if (!pending || !rows) {
        st = ks_error(KS_ERR_NOMEM, "generate: no memory for early exit");
        goto done;
    }
    /* the prompt through the full model; its logits give the first token */
    if (p->n_prompt && (st = ks_session_eval(s, p->prompt, p->n_prompt, NULL)) != KS_OK)
        goto done;
    if (!s->logits_ok) {
        if (s->n_kv == s->n_past)
            s->n_kv--;
        if ((st = ks_forward_sync(s, p->cancel)) != KS_OK)
            goto done;
    }
    if ((st = follow(e, s)) != KS_OK)
        goto done;
    tok = top(s->logits, V, &p_top);
    t1 = ks_now_ns();
    s->stats.n_prompt = (uint32_t)p->n_prompt;
    s->stats.prefill_ms = (double)(t1 - t0) / 1e6;

    for (;;) {
        char piece[256];
        size_t len;
        float *l = rows;

        if (!p->ignore_eog && ks_model_token_is_eog(s->m, tok)) {
            p->stop = KS_STOP_EOG;
            break;
        }
        if (p->cancel && *p->cancel) {
            st = ks_error(KS_ERR_CANCELLED, "generate: cancelled");
            break;
        }
        if (s->n_past + n_pending >= s->n_ctx) {
            st = ks_error(KS_ERR_CONTEXT_FULL, "context full: %u tokens", s->n_ctx);
            break;
        }
        pending[n_pending++] = tok;
        if (p->out_tokens && n_gen < p->out_cap)
            p->out_tokens[n_gen] = tok;
        n_gen++;
        len = ks_model_token_piece(s->m, tok, piece, sizeof piece);
        if (p->on_token && !p->on_token(p->user, tok, piece, len < sizeof piece ? len : 0)) {
            p->stop = KS_STOP_CALLBACK;
            break;
        }
        if (p->n_predict && n_gen >= p->n_predict) {
            p->stop = KS_STOP_LENGTH;
            break;
        }
        /* the exit decides when it is sure */
        if ((st = ks_session_eval(e, &tok, 1, NULL)) != KS_OK)
            break;
        tok = top(e->logits, V, &p_top);
        if (p_top >= p->early_exit) {
            s->stats.n_early_exit++;
            continue;
        }
        /* else the full model: the tokens it lacks in passes of up to 64 */
        while (n_pending > 0) {
            uint32_t k = n_pending < 64 ? n_pending : 64;
            if ((st = ks_session_eval_all(s, pending, k, rows)) != KS_OK)
                break;
            l = rows + (size_t)(k - 1) * V;
            memmove(pending, pending + k, (n_pending - k) * sizeof(*pending));
            n_pending -= k;
        }
        if (st != KS_OK)
            break;
        tok = top(l, V, &p_top);
    }
    if (n_pending)
        hold_pending(s, pending, n_pending);
done:
    if (p->stop == KS_STOP_NONE)
        p->stop = st == KS_OK                  ? KS_STOP_LENGTH
                  : st == KS_ERR_CANCELLED     ? KS_STOP_CANCELLED
                  : st == KS_ERR_CONTEXT_FULL  ? KS_STOP_CONTEXT
                                               : KS_STOP_ERROR;
    p->n_out = n_gen;
    s->stats.n_gen = n_gen;
    if (t1) {
        s->stats.decode_ms = (double)(ks_now_ns() - t1) / 1e6;
        if (n_gen > 1 && s->stats.decode_ms > 0)
            s->stats.decode_tps = (n_gen - 1) * 1e3 / s->stats.decode_ms;
        if (s->stats.prefill_ms > 0)
            s->stats.prefill_tps = s->stats.n_prompt * 1e3 / s->stats.prefill_ms;
    }
    s->stats.peak_rss_bytes = ks_peak_rss_bytes();
    free(pending);
    free(rows);
    return st;
}
