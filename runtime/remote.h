/* Remote verification (ks_generate_params.verify_url): the local session
 * drafts, a `kestrel serve` holding the target verifies. */
#ifndef KS_RUNTIME_REMOTE_H
#define KS_RUNTIME_REMOTE_H

#include "kestrel/session.h"

/* ks_session_generate with p->verify_url set: same contract. */
ks_status ks_remote_generate(ks_session *s, ks_generate_params *p);

#endif
