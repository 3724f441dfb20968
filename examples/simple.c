/* The smallest program that generates text with libkestrel:
 *   cc simple.c $(pkg-config --cflags --libs kestrel) -o simple
 *   ./simple MODEL.gguf "Once upon a time" */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kestrel/kestrel.h>

static bool
print_token(void *user, int32_t token, const char *piece, size_t len)
{
    (void)user;
    (void)token;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return true;
}

int
main(int argc, char **argv)
{
    ks_runtime *rt = NULL;
    ks_model *model = NULL;
    ks_session *session = NULL;
    ks_generate_params gen = { 0 };
    int32_t ids[512];
    size_t n_ids = 0;
    int rc = 1;

    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL.gguf PROMPT\n", argv[0]);
        return 2;
    }
    if (ks_runtime_create(NULL, &rt) != KS_OK ||
        ks_model_load(rt, argv[1], NULL, &model) != KS_OK ||
        ks_session_create(model, NULL, &session) != KS_OK ||
        ks_model_tokenize(model, argv[2], strlen(argv[2]), true, false, ids,
                          sizeof ids / sizeof ids[0], &n_ids) != KS_OK)
        goto out;
    gen.prompt = ids;
    gen.n_prompt = n_ids;
    gen.n_predict = 32;        /* sampling left zero: greedy */
    gen.on_token = print_token;
    printf("%s", argv[2]);
    if (ks_session_generate(session, &gen) != KS_OK)
        goto out;
    printf("\n");
    rc = 0;
out:
    if (rc)
        fprintf(stderr, "error: %s\n", ks_last_error());
    ks_session_destroy(session);
    ks_model_destroy(model);
    ks_runtime_destroy(rt);
    return rc;
}
