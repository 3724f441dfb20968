/* Online identification of the thermal plant as the governor sees it:
 * the sensor's temperature against the power drawn, sampled about once a
 * second, fitted by recursive least squares (with forgetting) to a
 * second-order ARX model
 *
 *     T[k+1] = a1 T[k] + a2 T[k-1] + b1 P[k] + b2 P[k-1] + c,
 *
 * which holds a die that heats in seconds on a board that heats in
 * minutes (two real poles) as well as a bare die (a2 = b2 = 0). From it:
 * the thermal resistance (steady-state gain, °C/W), the time constants
 * (-dt / ln pole), a forecast of the temperature h seconds ahead at a
 * constant power, and the highest constant power that keeps every
 * forecast over a horizon under a limit (a short-horizon model-predictive
 * rule). Internal; plain data, no allocation, no clock. */
#ifndef KS_THERMAL_MODEL_H
#define KS_THERMAL_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#define KS_TM_NP 5

typedef struct ks_thermal_model {
    double   dt_s;               /* the sampling interval held */
    /* The sample being gathered. */
    uint64_t start_ns;
    bool     started;
    double   acc_mw_ns;
    uint64_t acc_ns;
    double   t_ref_c;            /* the first temperature: the origin */
    /* History: T[k], T[k-1] (°C from t_ref_c), P[k-1] (W). */
    int      n_hist;
    double   t0_c, t1_c, p1_w;
    double   last_p_w;           /* the latest sample's mean power */
    /* RLS state over phi = (T[k], T[k-1], P[k], P[k-1], 1). */
    double   theta[KS_TM_NP];
    double   cov[KS_TM_NP][KS_TM_NP];
    uint32_t n_fit;
    double   res_c;              /* typical one-step residual */
    bool     valid;              /* a stable fit with positive gain */
    double   r_c_per_w;          /* steady-state gain */
    double   amb_c;              /* the temperature at zero power */
    double   tau_s[2];           /* fast, slow; 0 where absent */
} ks_thermal_model;

/* Starts empty; samples of |dt_s| (0: 1 s). */
void ks_thermal_model_init(ks_thermal_model *m, double dt_s);

/* Adds |power_mw| held over (previous call, now_ns] and the temperature
 * read at now_ns; fits once a whole sample has gathered. */
void ks_thermal_model_add(ks_thermal_model *m, uint64_t now_ns,
                          double temp_c, double power_mw);

/* The temperature |h_s| ahead if the power stays |power_w| (counted from
 * the latest whole sample, plus what has gathered since). Without a valid
 * fit: the latest sample's temperature. */
double ks_thermal_model_forecast(const ks_thermal_model *m, double power_w,
                                 double h_s);

/* The highest constant power (W) whose forecast stays at or under
 * |limit_c| over the next |h_s|; INFINITY when no power reaches it within
 * the horizon; NAN without a valid fit. */
double ks_thermal_model_allowed_w(const ks_thermal_model *m, double limit_c,
                                  double h_s);

#endif
