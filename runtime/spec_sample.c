/* Speculative sampling: accept a drafted token with probability
 * min(1, p(x) / q(x)), else draw from the residual max(0, p - q).
 *
 * Why it is lossless: the token emitted is x with probability
 * q(x) min(1, p(x)/q(x)) = min(p(x), q(x)) from the acceptance, plus
 * P(reject) r(x) from the residual, where P(reject) = 1 - sum min(p, q)
 * = sum max(0, p - q) is exactly the residual's normalizer; so the
 * residual adds max(0, p(x) - q(x)), and min + max(0, p - q) = p. The
 * number of drafts and their values depend only on the draft's draws, so
 * each position's token, given the ones before it, follows p whether it
 * came from a draft or from the target's bonus row. */
#include "runtime/spec_sample.h"

#include <math.h>
#include <stddef.h>

#include "scheduler/governor.h"

int ks_spec_test_break;

int32_t
ks_spec_draw(ks_sampler *smp, const float *probs, uint32_t n_vocab)
{
    double z = 0.0, u, acc = 0.0;
    int32_t last = -1;

    for (uint32_t i = 0; i < n_vocab; i++)
        z += probs[i];
    u = ks_sampler_uniform(smp) * z;
    for (uint32_t i = 0; i < n_vocab; i++) {
        if (probs[i] <= 0.0f)
            continue;
        acc += probs[i];
        last = (int32_t)i;
        if (u < acc)
            return last;
    }
    return last >= 0 ? last : 0;  /* rounding: the last possible token */
}

int32_t
ks_spec_pick(ks_sampler *smp, const float *logits, const float *q, int32_t x,
             float *work, uint32_t n_vocab)
{
    double px, qx, u, resid = 0.0;

    ks_sampler_probs(smp, logits, work);
    px = work[x];
    qx = q ? q[x] : 1.0;
    u = ks_sampler_uniform(smp);
    /* u < p / q, without dividing: q(x) > 0 since x was drawn from q */
    if (u * qx < px || ks_spec_test_break == 1)
        return x;
    if (ks_spec_test_break == 2)
        return ks_spec_draw(smp, work, n_vocab);
    for (uint32_t i = 0; i < n_vocab; i++) {
        float r = work[i] - (q ? q[i] : (int32_t)i == x ? 1.0f : 0.0f);
        work[i] = r > 0.0f ? r : 0.0f;
        resid += work[i];
    }
    if (!(resid > 0.0)) {  /* p and q equal up to rounding: p again */
        ks_sampler_probs(smp, logits, work);
        work[x] = 0.0f;
    }
    return ks_spec_draw(smp, work, n_vocab);
}

double
ks_spec_min_gain(int gov_state)
{
    switch (gov_state) {
    case KS_GOV_STATE_POWER:
    case KS_GOV_STATE_THERMAL:
    case KS_GOV_STATE_BATTERY:
    case KS_GOV_STATE_BLIND:
        return 1.25;
    case KS_GOV_STATE_CRITICAL:
        return INFINITY;
    default:  /* no governor, start, cool, target rate */
        return 1.0;
    }
}
