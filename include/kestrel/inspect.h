/* Inspecting model files without loading them: what `kestrel info` prints. */
#ifndef KESTREL_INSPECT_H
#define KESTREL_INSPECT_H

#include <stdio.h>

#include "kestrel/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Output as one JSON object instead of text. */
#define KS_INSPECT_JSON 1u

/* Opens the GGUF file |path| (validating it as a model load would) and
 * writes to |out|: the header (version, tensor and key counts, alignment,
 * file size), every metadata key with its type and value (arrays show their
 * element type, count and first few elements; long strings are cut and
 * marked "…(N bytes)"), the tensor table (name, type, shape, bytes,
 * offset) and a summary (parameter count, bits per weight, architecture,
 * name, tensors per type). |flags| is 0 or KS_INSPECT_JSON.
 * Errors: whatever opening the file returns (KS_ERR_IO, KS_ERR_CORRUPT,
 * KS_ERR_UNSUPPORTED, with ks_last_error() naming the field), KS_ERR_IO if
 * writing |out| fails, KS_ERR_INVALID_ARG for unknown flags. Nothing is
 * written when the file cannot be opened. Thread safe. */
KS_API ks_status ks_inspect_file(const char *path, FILE *out, unsigned flags);

#ifdef __cplusplus
}
#endif
#endif
