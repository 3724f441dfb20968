/* Online identification of the thermal plant (see thermal_model.h).
 * Power readings accumulate into a sample of about dt_s; at its end the
 * sample's mean power and the latest temperature enter a recursive least
 * squares fit with forgetting. Temperatures are taken relative to the
 * first one seen, so that the constant term stays small and the fit well
 * conditioned. After each fit the model is checked: poles inside the unit
 * circle, a positive steady-state gain; only then do forecasts use it. */
#include "scheduler/thermal_model.h"

#include <math.h>
#include <string.h>

/* Forgetting per sample (a memory of about 200 samples), the
 * covariance's starting size and bound (no wind-up while the plant sits
 * still), and the fits needed before the model is used. */
#define TM_FORGET 0.995
#define TM_COV0 100.0
#define TM_COV_MAX 1e4
#define TM_MIN_FITS 12

void
ks_thermal_model_init(ks_thermal_model *m, double dt_s)
{
    memset(m, 0, sizeof *m);
    m->dt_s = dt_s > 0 ? dt_s : 1.0;
    m->theta[0] = 1.0;      /* until fitted: the temperature persists */
    for (int i = 0; i < KS_TM_NP; i++)
        m->cov[i][i] = TM_COV0;
}

static void
rls(ks_thermal_model *m, const double phi[KS_TM_NP], double y)
{
    double pphi[KS_TM_NP], den = TM_FORGET, err = y, tr = 0;

    for (int i = 0; i < KS_TM_NP; i++) {
        pphi[i] = 0;
        for (int j = 0; j < KS_TM_NP; j++)
            pphi[i] += m->cov[i][j] * phi[j];
        den += phi[i] * pphi[i];
        err -= m->theta[i] * phi[i];
    }
    for (int i = 0; i < KS_TM_NP; i++)
        m->theta[i] += pphi[i] * err / den;
    for (int i = 0; i < KS_TM_NP; i++)
        tr += m->cov[i][i];
    for (int i = 0; i < KS_TM_NP; i++)
        for (int j = 0; j < KS_TM_NP; j++)
            m->cov[i][j] = (m->cov[i][j] - pphi[i] * pphi[j] / den) /
                           (tr < TM_COV_MAX ? TM_FORGET : 1.0);
    m->res_c = m->n_fit ? 0.95 * m->res_c + 0.05 * fabs(err) : fabs(err);
    m->n_fit++;
}

/* Stable poles and a positive gain: what the fit implies, or invalid. */
static void
check(ks_thermal_model *m)
{
    double a1 = m->theta[0], a2 = m->theta[1];
    double b = m->theta[2] + m->theta[3], den = 1.0 - a1 - a2;
    double disc = a1 * a1 + 4.0 * a2, r[2];

    m->valid = false;
    if (m->n_fit < TM_MIN_FITS || den < 1e-3 || b <= 0)
        return;
    if (disc >= 0) {
        r[0] = (a1 + sqrt(disc)) / 2.0;
        r[1] = (a1 - sqrt(disc)) / 2.0;
    } else {
        r[0] = r[1] = sqrt(-a2);   /* a damped pair: its modulus */
    }
    if (fabs(r[0]) >= 1.0 || fabs(r[1]) >= 1.0)
        return;
    for (int i = 0; i < 2; i++)
        m->tau_s[i] = r[i] > 1e-6 ? -m->dt_s / log(r[i]) : 0.0;
    if (m->tau_s[0] < m->tau_s[1]) {
        double t = m->tau_s[0];

        m->tau_s[0] = m->tau_s[1];
        m->tau_s[1] = t;
    }
    m->r_c_per_w = b / den;
    m->amb_c = m->t_ref_c + m->theta[4] / den;
    m->valid = true;
}

void
ks_thermal_model_add(ks_thermal_model *m, uint64_t now_ns, double temp_c,
                     double power_mw)
{
    double p_w;

    if (m->started)
        temp_c -= m->t_ref_c;
    if (!m->started) {
        m->started = true;
        m->t_ref_c = temp_c;
        m->start_ns = now_ns;
        m->t0_c = m->t1_c = 0.0;
        m->n_hist = 1;
        return;
    }
    if (now_ns <= m->start_ns)
        return;
    m->acc_mw_ns += power_mw * (double)(now_ns - m->start_ns);
    m->acc_ns += now_ns - m->start_ns;
    m->start_ns = now_ns;
    if (m->acc_ns < (uint64_t)(m->dt_s * 1e9))
        return;
    p_w = m->acc_mw_ns / (double)m->acc_ns / 1000.0;
    m->acc_mw_ns = 0;
    m->acc_ns = 0;
    m->last_p_w = p_w;
    if (m->n_hist >= 2) {
        double phi[KS_TM_NP] = { m->t0_c, m->t1_c, p_w, m->p1_w, 1.0 };

        rls(m, phi, temp_c);
        check(m);
    }
    m->t1_c = m->t0_c;
    m->t0_c = temp_c;
    m->p1_w = p_w;
    if (m->n_hist < 2)
        m->n_hist++;
}

/* Runs the model |n| whole samples ahead at power |p_w| from the present
 * state; writes each step's temperature to out[0..n-1] when given. */
static double
simulate(const ks_thermal_model *m, double p_w, int n, double *out)
{
    const double *th = m->theta;
    double t0 = m->t0_c, t1 = m->t1_c, p1 = m->p1_w;

    for (int k = 0; k < n; k++) {
        double t = th[0] * t0 + th[1] * t1 + th[2] * p_w + th[3] * p1 + th[4];

        t1 = t0;
        t0 = t;
        p1 = p_w;
        if (out)
            out[k] = t;
    }
    return t0;
}

double
ks_thermal_model_forecast(const ks_thermal_model *m, double power_w,
                          double h_s)
{
    double steps, lo, hi;
    int n;

    if (!m->valid || h_s <= 0)
        return m->t_ref_c + m->t0_c;
    /* From the latest whole sample, so ahead by the part gathered since. */
    steps = (h_s + (double)m->acc_ns / 1e9) / m->dt_s;
    n = (int)floor(steps);
    if (n > 100000)
        n = 100000;
    lo = simulate(m, power_w, n, NULL);
    hi = simulate(m, power_w, n + 1, NULL);
    return m->t_ref_c + lo + (hi - lo) * (steps - n);
}

double
ks_thermal_model_allowed_w(const ks_thermal_model *m, double limit_c,
                           double h_s)
{
    double zero[64], one[64], allowed = INFINITY;
    int n = (int)ceil(h_s / m->dt_s);

    if (!m->valid)
        return NAN;
    if (n < 1)
        n = 1;
    if (n > 64)
        n = 64;
    simulate(m, 0.0, n, zero);
    simulate(m, 1.0, n, one);
    for (int k = 0; k < n; k++) {
        double s = one[k] - zero[k];   /* °C per W, k+1 samples on */

        double room = limit_c - m->t_ref_c - zero[k];

        if (s > 1e-9 && room / s < allowed)
            allowed = room / s;
    }
    return allowed;
}
