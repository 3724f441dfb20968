/* How far the Vulkan backend's logits are from the CPU's over a text: the
 * mean KL divergence KL(cpu || vulkan) of the next-token distributions and
 * how often the two agree on the most likely token (issue 12, item 5: the
 * fast mode's distance to the CPU, measured rather than assumed).
 *
 * usage: bench_vk_distance MODEL [N_TOKENS] [TEXT_FILE]
 * Both backends read the same tokens (the text's first N_TOKENS, default
 * 128; a built-in paragraph without a file) one at a time, teacher-forced,
 * so a difference at one step does not change the next. The Vulkan mode is
 * the environment's: KESTREL_VK_FAST=1 for the fast kernels, unset for the
 * exact ones (which should give KL 0 and full agreement). Not a test. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kestrel/kestrel.h"

static const char default_text[] =
    "The old lighthouse keeper climbed the spiral stairs every evening at dusk. "
    "He had done so for forty years, through storms that shook the glass and calm "
    "nights when the sea lay flat as a mirror. The village below depended on the "
    "light, though few of the younger fishermen ever thought about who kept it "
    "burning. One winter a girl from the village began to follow him up the stairs, "
    "asking questions about the lens, the clockwork, and the ships that passed in "
    "the dark. He answered each one patiently, and by spring she could trim the "
    "wick and wind the mechanism as well as he could.";

static ks_model *
load(const char *path, ks_backend be, ks_runtime **rt)
{
    ks_runtime_params rp = { .backend = be, .n_threads = 2, .no_governor = true };
    ks_model *m = NULL;

    if (ks_runtime_create(&rp, rt) != KS_OK || ks_model_load(*rt, path, NULL, &m) != KS_OK) {
        fprintf(stderr, "bench_vk_distance: %s\n", ks_last_error());
        exit(1);
    }
    return m;
}

/* log-softmax of |lg| into |out|. */
static void
log_softmax(const float *lg, uint32_t n, double *out)
{
    double mx = lg[0], sum = 0.0;

    for (uint32_t i = 1; i < n; i++)
        if (lg[i] > mx)
            mx = lg[i];
    for (uint32_t i = 0; i < n; i++)
        sum += exp((double)lg[i] - mx);
    for (uint32_t i = 0; i < n; i++)
        out[i] = (double)lg[i] - mx - log(sum);
}

static uint32_t
argmax(const float *v, uint32_t n)
{
    uint32_t best = 0;

    for (uint32_t i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

static char *
read_text(const char *path)
{
    FILE *fp = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (!fp || fseek(fp, 0, SEEK_END) != 0 || (n = ftell(fp)) < 0 ||
        fseek(fp, 0, SEEK_SET) != 0 || !(buf = malloc((size_t)n + 1)) ||
        fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        fprintf(stderr, "bench_vk_distance: cannot read %s\n", path);
        exit(1);
    }
    buf[n] = '\0';
    fclose(fp);
    return buf;
}

int
main(int argc, char **argv)
{
    ks_runtime *rt_c, *rt_v;
    ks_model *mc, *mv;
    ks_session *sc = NULL, *sv = NULL;
    ks_session_params sp = { .n_ctx = 1024 };
    ks_model_desc d;
    char *text;
    int32_t *ids;
    size_t n_ids = 0, n_max;
    float *lc, *lv;
    double *pc, *pv, kl_sum = 0.0, kl_max = 0.0;
    uint32_t agree = 0, n_steps = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: bench_vk_distance MODEL [N_TOKENS] [TEXT_FILE]\n");
        return 2;
    }
    n_max = argc > 2 ? (size_t)strtoul(argv[2], NULL, 10) : 128u;
    if (n_max < 2 || n_max > 1000) {
        fprintf(stderr, "bench_vk_distance: N_TOKENS from 2 to 1000\n");
        return 2;
    }
    text = argc > 3 ? read_text(argv[3]) : strdup(default_text);
    mc = load(argv[1], KS_BACKEND_CPU, &rt_c);
    mv = load(argv[1], KS_BACKEND_VULKAN, &rt_v);
    ks_model_describe(mc, &d);
    ids = malloc(n_max * sizeof(int32_t));
    lc = malloc(d.n_vocab * sizeof(float));
    lv = malloc(d.n_vocab * sizeof(float));
    pc = malloc(d.n_vocab * sizeof(double));
    pv = malloc(d.n_vocab * sizeof(double));
    if (!text || !ids || !lc || !lv || !pc || !pv)
        return 1;
    /* a text longer than n_max tokens fills ids and reports the overflow:
     * its first n_max tokens are what is wanted */
    ks_model_tokenize(mc, text, strlen(text), true, false, ids, n_max, &n_ids);
    if (n_ids > n_max)
        n_ids = n_max;
    if (ks_session_create(mc, &sp, &sc) != KS_OK || ks_session_create(mv, &sp, &sv) != KS_OK) {
        fprintf(stderr, "bench_vk_distance: %s\n", ks_last_error());
        return 1;
    }
    for (size_t i = 0; i + 1 < n_ids; i++) {
        double kl = 0.0;
        if (ks_session_eval(sc, &ids[i], 1, lc) != KS_OK ||
            ks_session_eval(sv, &ids[i], 1, lv) != KS_OK) {
            fprintf(stderr, "bench_vk_distance: %s\n", ks_last_error());
            return 1;
        }
        log_softmax(lc, d.n_vocab, pc);
        log_softmax(lv, d.n_vocab, pv);
        for (uint32_t t = 0; t < d.n_vocab; t++)
            kl += exp(pc[t]) * (pc[t] - pv[t]);
        kl_sum += kl;
        if (kl > kl_max)
            kl_max = kl;
        agree += argmax(lc, d.n_vocab) == argmax(lv, d.n_vocab);
        n_steps++;
    }
    printf("%s, Vulkan %s kernels against the CPU over %u positions: mean KL %.3g nats "
           "(max %.3g), top-1 agreement %.1f%%\n", argv[1],
           getenv("KESTREL_VK_FAST") ? "fast" : "exact", n_steps,
           n_steps ? kl_sum / n_steps : 0.0, kl_max,
           n_steps ? 100.0 * agree / n_steps : 0.0);
    ks_session_destroy(sv);
    ks_session_destroy(sc);
    ks_model_destroy(mv);
    ks_model_destroy(mc);
    ks_runtime_destroy(rt_v);
    ks_runtime_destroy(rt_c);
    free(text);
    free(ids);
    free(lc);
    free(lv);
    free(pc);
    free(pv);
    return 0;
}
