/* Kestrel: run small language models on Linux edge devices.
 *
 * Include this one header. The flow: ks_runtime_create → ks_model_load →
 * ks_session_create → ks_model_tokenize → ks_session_generate, then the
 * destroy calls in reverse order. See examples/simple.c. */
#ifndef KESTREL_H
#define KESTREL_H

#include "kestrel/status.h"
#include "kestrel/model.h"
#include "kestrel/session.h"

#endif
