/* Writes the small seed files of tests/fuzz/corpus_gguf/ with the
 * project's own writer: gen_gguf_seeds DIR. Run once by hand when the
 * seeds need renewing; the outputs are committed. */
#include <stdio.h>
#include <string.h>

#include "runtime/gguf.h"
#include "runtime/qtype.h"

static int
finish(ks_gguf_writer *w, const char *dir, const char *name)
{
    char path[1024];

    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (ks_gguf_writer_write_file(w, path) != KS_OK) {
        fprintf(stderr, "%s: %s\n", path, ks_last_error());
        return 1;
    }
    ks_gguf_writer_destroy(w);
    return 0;
}

int
main(int argc, char **argv)
{
    static const uint32_t u32s[] = { 1, 2, 3, 4 };
    static const float    f32s[] = { 0.5f, -1.0f };
    static const int8_t   i8s[] = { -1, 1 };
    static const bool     bools[] = { true, false };
    static const char    *toks[] = { "<unk>", "<s>", "</s>", "\xe2\x96\x81the" };
    static float          w[32 * 2];
    static uint8_t        q4[18 * 2], q8[34];
    uint64_t              ne_w[2] = { 32, 2 }, ne_q4[2] = { 32, 2 };
    uint64_t              ne_q8[1] = { 32 };
    uint8_t               nested[64];
    size_t                n = 0;
    ks_gguf_writer       *gw;
    int                   bad = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    for (int i = 0; i < 64; i++)
        w[i] = (float)i / 8.0f;
    memset(q4, 0x35, sizeof q4);
    memset(q8, 0x11, sizeof q8);

    /* 1: a tiny model-like file, every scalar type, three tensor types. */
    ks_gguf_writer_create(&gw);
    ks_gguf_writer_set_str(gw, "general.architecture", "llama");
    ks_gguf_writer_set_str(gw, "general.name", "seed");
    ks_gguf_writer_set_u32(gw, "llama.block_count", 1);
    ks_gguf_writer_set_u64(gw, "llama.context_length", 128);
    ks_gguf_writer_set_f32(gw, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    ks_gguf_writer_set_f64(gw, "x.f64", 2.5);
    ks_gguf_writer_set_u8(gw, "x.u8", 7);
    ks_gguf_writer_set_i8(gw, "x.i8", -7);
    ks_gguf_writer_set_u16(gw, "x.u16", 700);
    ks_gguf_writer_set_i16(gw, "x.i16", -700);
    ks_gguf_writer_set_i32(gw, "x.i32", -70000);
    ks_gguf_writer_set_i64(gw, "x.i64", -7000000000ll);
    ks_gguf_writer_set_bool(gw, "x.bool", true);
    ks_gguf_writer_set_arr_str(gw, "tokenizer.ggml.tokens", toks, NULL, 4);
    ks_gguf_writer_set_arr(gw, "tokenizer.ggml.scores", KS_GGUF_F32, f32s, 2);
    ks_gguf_writer_add_tensor(gw, "token_embd.weight", KS_QUANT_F32, 2, ne_w,
                              w, sizeof w);
    ks_gguf_writer_add_tensor(gw, "blk.0.attn_q.weight", KS_QUANT_Q4_0, 2,
                              ne_q4, q4, sizeof q4);
    ks_gguf_writer_add_tensor(gw, "output.weight", KS_QUANT_Q8_0, 1, ne_q8,
                              q8, sizeof q8);
    bad |= finish(gw, argv[1], "model.gguf");

    /* 2: version 2, alignment 64, numeric and nested arrays. */
    ks_gguf_writer_create(&gw);
    ks_gguf_writer_set_version(gw, 2);
    ks_gguf_writer_set_alignment(gw, 64);
    ks_gguf_writer_set_arr(gw, "a.u32", KS_GGUF_U32, u32s, 4);
    ks_gguf_writer_set_arr(gw, "a.i8", KS_GGUF_I8, i8s, 2);
    ks_gguf_writer_set_arr(gw, "a.bool", KS_GGUF_BOOL, bools, 2);
    memcpy(nested + n, "\x09\0\0\0", 4); n += 4;          /* of arrays */
    memcpy(nested + n, "\x02\0\0\0\0\0\0\0", 8); n += 8;  /* two */
    memcpy(nested + n, "\x00\0\0\0", 4); n += 4;          /* u8 */
    memcpy(nested + n, "\x02\0\0\0\0\0\0\0", 8); n += 8;
    nested[n++] = 1;
    nested[n++] = 2;
    memcpy(nested + n, "\x08\0\0\0", 4); n += 4;          /* string */
    memcpy(nested + n, "\x01\0\0\0\0\0\0\0", 8); n += 8;
    memcpy(nested + n, "\x02\0\0\0\0\0\0\0hi", 10); n += 10;
    ks_gguf_writer_add_raw_kv(gw, "a.nested", KS_GGUF_ARR, nested, n);
    ks_gguf_writer_add_tensor(gw, "t", KS_QUANT_F32, 1, ne_q8, w, 128);
    bad |= finish(gw, argv[1], "v2_align64_nested.gguf");

    /* 3: metadata only. */
    ks_gguf_writer_create(&gw);
    ks_gguf_writer_set_str(gw, "general.architecture", "qwen2");
    bad |= finish(gw, argv[1], "metadata_only.gguf");
    return bad;
}
