/* ks-synth: writes a synthetic model (random weights) for benchmarks.
 *   ks-synth OUT.gguf [ARCH] [TYPE] [n_embd n_layers n_head n_head_kv n_ff n_vocab
 *                                   [n_expert n_expert_used n_ff_exp router_skew]]
 * The last four make a mixture of experts (ARCH qwen3moe, olmoe, qwen2moe).
 * Defaults: llama Q4_0 768 12 12 12 2048 32000 (about 110M parameters
 * without the tied output; 134M with it, as the peer notes describe). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/qtype.h"
#include "runtime/synth.h"

int
main(int argc, char **argv)
{
    ks_synth_params p = {
        .arch = "llama", .n_embd = 768, .n_layers = 12, .n_head = 12,
        .n_head_kv = 12, .n_ff = 2048, .n_vocab = 32000, .n_ctx = 2048,
        .wtype = KS_QUANT_Q4_0, .seed = 1,
    };
    uint32_t *dims[] = { &p.n_embd, &p.n_layers, &p.n_head, &p.n_head_kv,
                         &p.n_ff, &p.n_vocab, &p.n_expert, &p.n_expert_used,
                         &p.n_ff_exp };

    /* an option where the output path goes is a mistake, not a file name */
    if (argc < 2 || argc > 14 || argv[1][0] == '-') {
        fprintf(stderr, "usage: %s OUT.gguf [ARCH] [TYPE] [n_embd n_layers "
                "n_head n_head_kv n_ff n_vocab [n_expert n_expert_used n_ff_exp "
                "router_skew]]\n", argv[0]);
        return 2;
    }
    if (argc > 2)
        p.arch = argv[2];
    if (argc > 3) {
        int t = -1;
        for (int i = 0; i < KS_QUANT_COUNT; i++) {
            const ks_qtype_info *qi = ks_qtype_get((uint32_t)i);
            if (qi && strcmp(qi->name, argv[3]) == 0)
                t = i;
        }
        if (t < 0) {
            fprintf(stderr, "%s: unknown type %s\n", argv[0], argv[3]);
            return 2;
        }
        p.wtype = (ks_qtype)t;
    }
    for (int i = 4; i < argc && i < 13; i++)
        *dims[i - 4] = (uint32_t)strtoul(argv[i], NULL, 10);
    if (argc > 13)
        p.router_skew = strtof(argv[13], NULL);
    if (ks_synth_write(&p, argv[1]) != KS_OK) {
        fprintf(stderr, "%s: %s\n", argv[0], ks_last_error());
        return 1;
    }
    return 0;
}
