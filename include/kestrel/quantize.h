/* Requantizing GGUF files. */
#ifndef KESTREL_QUANTIZE_H
#define KESTREL_QUANTIZE_H

#include "kestrel/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Reads |in| (F32/F16/BF16 or any type the CPU kernels can dequantize),
 * writes |out| with every 2-D weight matrix in |type| ("Q4_0", "Q8_0",
 * "Q4_K", "Q6_K", also "Q4_1", "Q5_0", "Q5_1", "IQ4_NL", "F16", "F32");
 * 1-D tensors stay F32. Rows whose length is not a multiple of the type's
 * block fall back as llama-quantize does (Q4_K→Q5_0, Q6_K→Q8_0, then F16).
 * Metadata is copied, with general.file_type updated. n_threads 0: all.
 * |out| must be new or a regular file: a FIFO, device or directory there
 * is refused at once (KS_ERR_INVALID_ARG naming it), never written over. */
KS_API ks_status ks_quantize_file(const char *in, const char *out,
                                  const char *type, int n_threads);

#ifdef __cplusplus
}
#endif
#endif
