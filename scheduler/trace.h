/* Governor traces: one CSV line per token with what the governor saw and
 * decided, for plotting (ci/plot-trace.sh renders one to PNG). Internal.
 *
 * Columns (header line first):
 *   time_s        seconds since the first line
 *   tokens_per_s  over the governor's latest control period
 *   temp_c        hottest zone ("" when no temperature is read)
 *   power_w       measured power, or modelled when there is no sensor
 *   budget_w      the power budget in force
 *   threads       CPU threads for the next token
 *   pace_ms       the sleep before the next token
 *   state         the governor's state ("cool", "thermal", "power", ...)
 *   target        where the work ran ("cpu", "gpu", "cpu+gpu")
 *   limit_c       the temperature held
 *   place         a placement hint given on this token ("stay" mostly)
 *   layers        which target runs which layer range
 *   tokens_per_j  since the start, over measured (else modelled) energy */
#ifndef KS_TRACE_H
#define KS_TRACE_H

#include <stdint.h>
#include <stdio.h>

#include "kestrel/status.h"
#include "scheduler/governor.h"

typedef struct ks_trace ks_trace;

/* Creates (truncates) |path| and writes the header. KS_ERR_IO names the
 * path on failure; *out is NULL then. */
ks_status ks_trace_open(const char *path, ks_trace **out);

/* Appends one line for a decision made at |now_ns| (the clock the
 * governor was given). Buffered; allocates nothing. A write error is kept
 * and reported by ks_trace_close. */
void ks_trace_token(ks_trace *t, uint64_t now_ns, const ks_gov_decision *d);

/* Flushes and closes; KS_ERR_IO if any write failed. NULL is a no-op. */
ks_status ks_trace_close(ks_trace *t);

/* The layer placement the following lines report in their "layers"
 * column ("cpu:0-9 vulkan:10-29+head": which target runs which range). */
void ks_trace_set_layers(ks_trace *t, const char *plan);

#endif
