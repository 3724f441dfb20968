/* kestrel: the sample command-line tool, a client of the public API only.
 *
 *   kestrel run      generate text from a prompt
 *   kestrel chat     talk to an instruction-tuned model
 *   kestrel bench    prefill and decode speed, like llama-bench
 *   kestrel info     a GGUF file's metadata and tensors
 *   kestrel quantize requantize a GGUF file
 *   kestrel serve    an OpenAI-compatible HTTP server (cli/serve.c)
 *
 * Generated text goes to stdout as it comes; everything else to stderr.
 * Text that comes from a model file (names, template strings, error
 * messages quoting metadata) is shown with control bytes escaped, and JSON
 * output is always valid JSON in valid UTF-8 (one escaper, json_string).
 * Exit statuses: see EXIT_STATUS_HELP. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "kestrel/kestrel.h"
#ifdef KESTREL_FALLBACK
#include "fallback.h"
#endif
#include "kestrel/inspect.h"
#include "kestrel/quantize.h"
#include "kestrel/devices.h"
#include "quality.h"
#ifdef KESTREL_SERVE
#include "serve.h"
#endif

#define DEFAULT_MODEL_FILE "SmolLM2-135M-Instruct.Q4_1.gguf"

/* Exit statuses. */
enum {
    EXIT_OK = 0,
    EXIT_ERROR = 1,
    EXIT_USAGE = 2,
    EXIT_CONTEXT = 3,      /* the prompt does not fit the context (-c) */
    EXIT_INTERRUPTED = 130,
};

#define EXIT_STATUS_HELP \
    "Exit status: 0 done (also when generation stopped at the end of the\n" \
    "context after some tokens), 1 error, 2 bad usage, 3 the prompt does not\n" \
    "fit the context (-c), 130 interrupted (Ctrl-C).\n"

static volatile int g_cancel;

static void
on_sigint(int sig)
{
    (void)sig;
    if (g_cancel)
        _exit(130);  /* a second Ctrl-C ends at once */
    g_cancel = 1;
}

typedef struct opts {
    const char *model;
    const char *prompt;
    const char *prompt_file;
    const char *system;
    int32_t     n_predict;
    uint32_t    n_ctx;
    uint32_t    n_batch;
    int32_t     n_threads;
    ks_backend  backend;
    int32_t     device;
    const char *split;
    int32_t     gpu_layers;
    ks_sampling sampling;
    bool        json;
    bool        ignore_eos;
    bool        no_display_prompt;
    ks_kv_type  kv_type;
    float       temp_limit_c;
    float       power_limit_w;
    ks_policy   policy;
    const char *trace_path;
    bool        profile;        /* bench --profile, KESTREL_PROFILE=1 */
    const char *profile_json;   /* --profile-json FILE */
    bool        no_governor;
    bool        pre_fallback_gpt2;
    uint32_t    mem_budget_mb;   /* --mem-budget; 0: none */
    /* speculative decoding */
    const char  *draft;
    ks_spec_mode spec;
    uint32_t     draft_max;
    uint32_t     draft_min;
    uint32_t     self_layers;  /* --spec self, --early-exit: layers the exit runs;
                                  0: half */
    float        early_exit;   /* --early-exit T; 0: off */
    /* remote verification; --privacy strict forbids it */
    const char  *verify_url;
    uint32_t     verify_timeout_ms;
    bool         privacy_strict;
    /* cloud fallback (run) */
    const char  *fallback_url;
    const char  *fallback_key;
    const char  *fallback_model;
    bool         route_fallback;
    /* structured output (run) */
    const char  *json_schema;   /* a file holding a JSON schema */
    /* bench */
    int32_t     n_pp;
    int32_t     n_tg;
    int32_t     reps;
    int32_t     sustained_s;   /* --sustained: seconds of governed decode */
    /* positional arguments (info, quantize) */
    const char *pos[3];
    int         n_pos;
} opts;

static void
die_usage(const char *cmd, const char *fmt, const char *arg)
{
    fprintf(stderr, "kestrel%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'kestrel %s%s--help'.\n", cmd ? cmd : "",
            cmd ? " " : "");
    exit(EXIT_USAGE);
}

static long
parse_long(const char *cmd, const char *flag, const char *v, long lo, long hi)
{
    char *end;
    long x;

    errno = 0;
    x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr,
                "kestrel %s: %s expects an integer in %ld..%ld, got '%s'\n",
                cmd, flag, lo, hi, v);
        exit(2);
    }
    return x;
}

static float
parse_float(const char *cmd, const char *flag, const char *v, float lo,
            float hi)
{
    char *end;
    float x;

    errno = 0;
    x = strtof(v, &end);
    if (errno || *end || end == v || !(x >= lo && x <= hi)) {
        fprintf(stderr, "kestrel %s: %s expects a number in %g..%g, got "
                "'%s'\n", cmd, flag, lo, hi, v);
        exit(2);
    }
    return x;
}

static const char common_help[] =
    "  -m, --model FILE      GGUF model (default: " DEFAULT_MODEL_FILE "\n"
    "                        in $KESTREL_MODEL_DIR or ~/.cache/kestrel/models)\n"
    "  -t, --threads N       CPU threads (default: all cores)\n"
    "  -c, --ctx-size N      context length (default: min(model's, 4096))\n"
    "  -b, --batch-size N    prefill tokens per pass (default: 512)\n"
    "      --backend B       auto|cpu|vulkan (default: auto)\n"
    "      --device N        Vulkan device, as 'kestrel devices' numbers them\n"
    "                        (default: the best)\n"
    "      --gpu-layers N    run the last N layers on the Vulkan device, the\n"
    "                        rest on the CPU\n"
    "      --split MAP       place layer ranges by hand, e.g.\n"
    "                        cpu:0-9,vulkan:10-29 (the head follows the last)\n"
    "      --kv-type T       f16|f32 KV cache (default: f16)\n"
    "      --temp-limit C    keep the device below C degrees Celsius (default:\n"
    "                        its first passive trip point - 5, when it has one)\n"
    "      --power-limit W   keep the device's power below W watts\n"
    "      --policy P        performance|balanced|battery (default: balanced)\n"
    "      --trace FILE.csv  write the governor's trace, a line per token\n"
    "                        (plot it with ci/plot-trace.sh)\n"
    "      --profile         time every op per layer (bench: one extra pp and\n"
    "                        tg run; run: also KESTREL_PROFILE=1) and print\n"
    "                        time, bytes, GB/s and share per op and per layer\n"
    "      --profile-json FILE  also write that profile as JSON\n"
    "      --no-governor     never pace or throttle\n"
    "      --mem-budget MB   RAM (MiB) a mixture of experts' weights may take:\n"
    "                        the hot experts are kept in RAM, the cold ones\n"
    "                        read from the file each time they run\n"
    "      --pre-fallback-gpt2  tokenize with the GPT-2 rules when the model's\n"
    "                        pre-tokenizer is unknown (refused otherwise; ids\n"
    "                        may differ from the model's own tokenizer)\n";

static const char sampling_help[] =
    "      --temp X          temperature; 0 = greedy (default: 0.8)\n"
    "      --top-k N         keep the N most likely tokens (default: 40; 0 off)\n"
    "      --top-p X         nucleus sampling (default: 0.95; 1 off)\n"
    "      --min-p X         drop tokens below X * p(best) (default: 0.05)\n"
    "      --repeat-penalty X penalty for recent tokens (default: 1.0, off)\n"
    "      --repeat-last-n N tokens the penalty looks back on (default: 64)\n"
    "      --seed N          random seed (default: 0xC0FFEE)\n";

static void
help(const char *cmd)
{
    if (!cmd) {
        printf("Usage: kestrel COMMAND [OPTIONS]\n\n"
               "Run small language models from GGUF files on this machine.\n\n"
               "Commands:\n"
               "  run       generate text from a prompt\n"
               "  chat      talk to an instruction-tuned model\n"
               "  bench     measure prefill and decode speed\n"
               "  info      show a GGUF file's metadata and tensors\n"
               "  quantize  requantize a GGUF file (Q4_0, Q8_0, Q4_K, Q6_K)\n"
               "  devices   list Vulkan devices and accelerators\n"
               "  compile   compile a model's Vulkan kernels into the disk cache\n"
               "  serve     serve the model over HTTP with the OpenAI API\n"
               "  perplexity  perplexity and KL divergence over a text\n"
               "  calibrate   quality and speed of early exit and self-drafting\n"
               "  prune     drop the layers that cost the least quality\n"
               "\n'kestrel COMMAND --help' describes each command.\n"
               "Environment: KESTREL_LOG=debug|info|warn|error, "
               "KESTREL_MODEL_DIR, KESTREL_SIMD=scalar|avx2|neon.\n\n"
               EXIT_STATUS_HELP);
        return;
    }
    if (strcmp(cmd, "run") == 0) {
        printf("Usage: kestrel run [OPTIONS] -p PROMPT\n\n"
               "Generates text after PROMPT and streams it to stdout; stats "
               "go to stderr.\nCtrl-C stops generation and prints the "
               "stats.\n\nOptions:\n"
               "  -p, --prompt TEXT     the prompt\n"
               "  -f, --file FILE       read the prompt from FILE\n"
               "  -n, --n-predict N     tokens to generate (default: 128; "
               "-1 until the end)\n"
               "      --ignore-eos      keep going past end-of-text tokens\n"
               "      --draft FILE      speculative decoding with FILE as the draft\n"
               "                        model (same vocabulary; sampled too, lossless)\n"
               "      --spec MODE       auto (draft when --draft is given), off, draft,\n"
               "                        lookup (draft from n-grams of the text), or self\n"
               "                        (draft with the model's first layers)\n"
               "      --self-layers L   --spec self: the draft runs layers 0..L-1 and\n"
               "                        the head (default: half; kestrel calibrate\n"
               "                        measures which L pays)\n"
               "      --early-exit T    lossy, greedy: a token whose exit after layer\n"
               "                        L-1 (--self-layers) has top probability >= T\n"
               "                        skips the other layers (their keys and values\n"
               "                        are filled later); see kestrel calibrate\n"
               "      --draft-max N     most tokens drafted per round (default 8)\n"
               "      --draft-min N     fewest; = --draft-max fixes the length\n"
               "                        (default 0: chosen from what it measures)\n"
               "      --verify-url URL  the model drafts, the `kestrel serve` at URL\n"
               "                        verifies (greedy); local alone when it fails\n"
               "      --verify-timeout MS  the deadline of a verification (3000)\n"
               "      --privacy MODE    off (default) or strict: no outbound request\n"
               "      --fallback-url URL  an OpenAI-compatible base URL (ending in\n"
               "                        /v1) that answers when the prompt does not\n"
               "                        fit the context or the model fails to load\n"
               "      --fallback-key KEY, --fallback-model NAME  for it\n"
               "      --route fallback  send the prompt to --fallback-url at once\n"
               "      --json-schema FILE  output one compact JSON value that the\n"
               "                        schema in FILE accepts (constrained decoding;\n"
               "                        '{\"type\":\"object\"}' for any object; the\n"
               "                        prompt is not echoed; not with --spec)\n"
               "      --json            print one JSON object: prompt ids, "
               "generated ids,\n"
               "                        text, why it stopped (\"stop\": eog, "
               "length, context,\n"
               "                        cancelled, error), stats, and "
               "\"error\" on failure\n"
               "                        (no streaming)\n"
               "%s%s\n" EXIT_STATUS_HELP, common_help, sampling_help);
    } else if (strcmp(cmd, "chat") == 0) {
        printf("Usage: kestrel chat [OPTIONS]\n\n"
               "Talk to an instruction-tuned model through its chat "
               "template. Reads one\nmessage per line from stdin; an empty "
               "line or end of input ends the chat.\n\nOptions:\n"
               "  -p, --prompt TEXT     send TEXT as the only message, print "
               "the answer, exit\n"
               "  -s, --system TEXT     system message (default: the "
               "model's own, if any)\n"
               "  -n, --n-predict N     most tokens per answer (default: "
               "512)\n"
               "      --json            with -p: one JSON object as 'run "
               "--json' prints\n"
               "      --fallback-url URL  an OpenAI-compatible base URL (ending "
               "in /v1) that\n"
               "                        answers when the conversation does not "
               "fit the\n"
               "                        context; when it fails, the local model "
               "goes on\n"
               "      --fallback-key KEY, --fallback-model NAME  for it\n"
               "      --route fallback  send every message to --fallback-url\n"
               "      --privacy MODE    off (default) or strict: no outbound "
               "request\n"
               "%s%s\n" EXIT_STATUS_HELP, common_help, sampling_help);
    } else if (strcmp(cmd, "bench") == 0) {
        printf("Usage: kestrel bench [OPTIONS]\n\n"
               "Measures prompt processing (pp) and text generation (tg) "
               "speed as the\nmedian of R repetitions, like llama-bench. "
               "Prompt tokens are random ids.\n\nOptions:\n"
               "  -p, --n-prompt N      prompt tokens (default: 64; 0 skips "
               "pp)\n"
               "  -n, --n-gen N         generated tokens (default: 32; 0 "
               "skips tg)\n"
               "  -r, --repetitions R   repetitions (default: 5)\n"
               "      --sustained S     decode for S seconds under the governor "
               "(with\n"
               "                        --temp-limit or --power-limit, else the "
               "passive\n"
               "                        trip): tokens/s per minute, the mean, "
               "tokens/J\n"
               "      --json            JSON objects instead of a table\n"
               "      --draft FILE      also measure speculative decoding with "
               "FILE as the\n"
               "                        draft: greedy generation of N tokens "
               "after a text\n"
               "                        prompt, with the target alone and "
               "with speculation,\n"
               "                        each the median of R; adds the "
               "acceptance, the tokens\n"
               "                        per target pass and the speed-up\n"
               "      --spec MODE       auto (draft when --draft is given), "
               "off, draft or\n"
               "                        lookup (no second model)\n"
               "      --draft-max N, --draft-min N   as for run\n"
               "  -f, --file FILE       with speculation: the prompt text "
               "(default: a coding\n"
               "                        request)\n"
               "%s", common_help);
    } else if (strcmp(cmd, "info") == 0) {
        printf("Usage: kestrel info [--json] FILE\n\n"
               "Prints a GGUF file's header, metadata (long arrays cut), "
               "tensor table and\na summary: parameters, bits per weight, "
               "architecture. Exit status 1 with\na message naming the field "
               "or tensor when the file is malformed.\n");
    } else if (strcmp(cmd, "quantize") == 0) {
        printf("Usage: kestrel quantize INPUT OUTPUT TYPE\n\n"
               "Requantizes the 2-D weight matrices of INPUT to TYPE (Q4_0, "
               "Q8_0, Q4_K or\nQ6_K) and writes OUTPUT. Norms and other 1-D "
               "tensors stay F32; rows whose\nlength does not fit TYPE's "
               "block fall back as llama-quantize does.\n");
    } else if (strcmp(cmd, "compile") == 0) {
        printf("Usage: kestrel compile [OPTIONS]\n\n"
               "Generates and compiles every Vulkan kernel the model needs on "
               "the device and\nkeeps the SPIR-V and the pipeline cache under "
               "$XDG_CACHE_HOME/kestrel (or\n~/.cache/kestrel; "
               "KESTREL_CACHE_DIR overrides), so that later runs compile\n"
               "nothing. Prints what it compiled and what it found cached.\n\n"
               "Options:\n%s", common_help);
    } else if (strcmp(cmd, "devices") == 0) {
        printf("Usage: kestrel devices [--json]\n\n"
               "Lists the Vulkan devices and /dev/accel accelerators Kestrel "
               "can see, the\nexecution targets it could place layers on, and the "
               "sensors (temperatures\nand trip points, power, battery, "
               "frequencies) with their current readings.\n");
    }
}

static void
default_sampling(ks_sampling *s)
{
    s->temp = 0.8f;
    s->top_k = 40;
    s->top_p = 0.95f;
    s->min_p = 0.05f;
    s->repeat_penalty = 1.0f;
    s->repeat_last_n = 64;
    s->seed = 0xC0FFEE;
}

static void
parse(const char *cmd, int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof(*o));
    o->n_predict = strcmp(cmd, "chat") == 0 ? 512 : 128;
    o->n_pp = 64;
    o->n_tg = 32;
    o->reps = 5;
    default_sampling(&o->sampling);
    /* positional arguments: info FILE, quantize INPUT OUTPUT TYPE */
    int max_pos = strcmp(cmd, "quantize") == 0 ? 3
                  : strcmp(cmd, "info") == 0   ? 1 : 0;

    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool bench = strcmp(cmd, "bench") == 0;

#define FALLBACK_CMD(c) (strcmp((c), "run") == 0 || strcmp((c), "chat") == 0)
#define NEED_VALUE() \
    do { if (!v) die_usage(cmd, "%s needs a value", a); i++; } while (0)
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            help(cmd);
            exit(0);
        } else if (strcmp(a, "-m") == 0 || strcmp(a, "--model") == 0) {
            NEED_VALUE(); o->model = v;
        } else if (!bench && (strcmp(a, "-p") == 0 ||
                              strcmp(a, "--prompt") == 0)) {
            NEED_VALUE(); o->prompt = v;
        } else if (bench && (strcmp(a, "-p") == 0 ||
                             strcmp(a, "--n-prompt") == 0)) {
            NEED_VALUE(); o->n_pp = (int32_t)parse_long(cmd, a, v, 0, 65536);
        } else if (bench && (strcmp(a, "-n") == 0 ||
                             strcmp(a, "--n-gen") == 0)) {
            NEED_VALUE(); o->n_tg = (int32_t)parse_long(cmd, a, v, 0, 65536);
        } else if (bench && strcmp(a, "--sustained") == 0) {
            NEED_VALUE(); o->sustained_s = (int32_t)parse_long(cmd, a, v, 1, 86400);
        } else if (bench && (strcmp(a, "-r") == 0 ||
                             strcmp(a, "--repetitions") == 0)) {
            NEED_VALUE(); o->reps = (int32_t)parse_long(cmd, a, v, 1, 1000);
        } else if (strcmp(a, "-f") == 0 || strcmp(a, "--file") == 0) {
            NEED_VALUE(); o->prompt_file = v;
        } else if (strcmp(a, "-s") == 0 || strcmp(a, "--system") == 0) {
            NEED_VALUE(); o->system = v;
        } else if (strcmp(a, "-n") == 0 || strcmp(a, "--n-predict") == 0) {
            NEED_VALUE();
            o->n_predict = (int32_t)parse_long(cmd, a, v, -1, INT32_MAX);
        } else if (strcmp(a, "-c") == 0 || strcmp(a, "--ctx-size") == 0) {
            NEED_VALUE();
            o->n_ctx = (uint32_t)parse_long(cmd, a, v, 0, 1 << 24);
        } else if (strcmp(a, "-b") == 0 || strcmp(a, "--batch-size") == 0) {
            NEED_VALUE();
            o->n_batch = (uint32_t)parse_long(cmd, a, v, 1, 8192);
        } else if (strcmp(a, "-t") == 0 || strcmp(a, "--threads") == 0) {
            NEED_VALUE();
            o->n_threads = (int32_t)parse_long(cmd, a, v, 1, 1024);
        } else if (strcmp(a, "--backend") == 0) {
            NEED_VALUE();
            if (strcmp(v, "auto") == 0)
                o->backend = KS_BACKEND_AUTO;
            else if (strcmp(v, "cpu") == 0)
                o->backend = KS_BACKEND_CPU;
            else if (strcmp(v, "vulkan") == 0)
                o->backend = KS_BACKEND_VULKAN;
            else
                die_usage(cmd, "--backend expects auto, cpu or vulkan, got "
                          "'%s'", v);
        } else if (strcmp(a, "--split") == 0) {
            NEED_VALUE();
            o->split = v;
        } else if (strcmp(a, "--gpu-layers") == 0) {
            NEED_VALUE();
            o->gpu_layers = (int32_t)parse_long(cmd, a, v, 0, 100000);
        } else if (strcmp(a, "--device") == 0) {
            NEED_VALUE();
            o->device = (int32_t)parse_long(cmd, a, v, 0, 255) + 1;
        } else if (strcmp(a, "--kv-type") == 0) {
            NEED_VALUE();
            if (strcmp(v, "f16") == 0)
                o->kv_type = KS_KV_F16;
            else if (strcmp(v, "f32") == 0)
                o->kv_type = KS_KV_F32;
            else
                die_usage(cmd, "--kv-type expects f16 or f32, got '%s'", v);
        } else if (strcmp(a, "--temp-limit") == 0) {
            NEED_VALUE(); o->temp_limit_c = parse_float(cmd, a, v, 1, 150);
        } else if (strcmp(a, "--power-limit") == 0) {
            NEED_VALUE();
            o->power_limit_w = parse_float(cmd, a, v, 0.1f, 100000);
        } else if (strcmp(a, "--policy") == 0) {
            NEED_VALUE();
            if (strcmp(v, "balanced") == 0)
                o->policy = KS_POLICY_BALANCED;
            else if (strcmp(v, "performance") == 0)
                o->policy = KS_POLICY_PERFORMANCE;
            else if (strcmp(v, "battery") == 0)
                o->policy = KS_POLICY_BATTERY;
            else
                die_usage(cmd, "--policy expects performance, balanced or "
                          "battery, got '%s'", v);
        } else if (strcmp(a, "--trace") == 0) {
            NEED_VALUE(); o->trace_path = v;
        } else if (strcmp(a, "--profile") == 0) {
            o->profile = true;
        } else if (strcmp(a, "--profile-json") == 0) {
            NEED_VALUE(); o->profile_json = v; o->profile = true;
        } else if (strcmp(a, "--no-governor") == 0) {
            o->no_governor = true;
        } else if (strcmp(a, "--pre-fallback-gpt2") == 0) {
            o->pre_fallback_gpt2 = true;
        } else if (strcmp(a, "--mem-budget") == 0) {
            NEED_VALUE();
            o->mem_budget_mb = (uint32_t)parse_long(cmd, a, v, 1, 1 << 24);
        } else if (strcmp(a, "--temp") == 0) {
            NEED_VALUE(); o->sampling.temp = parse_float(cmd, a, v, 0, 100);
        } else if (strcmp(a, "--top-k") == 0) {
            NEED_VALUE();
            o->sampling.top_k = (int32_t)parse_long(cmd, a, v, 0, INT32_MAX);
        } else if (strcmp(a, "--top-p") == 0) {
            NEED_VALUE(); o->sampling.top_p = parse_float(cmd, a, v, 0, 1);
        } else if (strcmp(a, "--min-p") == 0) {
            NEED_VALUE(); o->sampling.min_p = parse_float(cmd, a, v, 0, 1);
        } else if (strcmp(a, "--repeat-penalty") == 0) {
            NEED_VALUE();
            o->sampling.repeat_penalty = parse_float(cmd, a, v, 0, 100);
        } else if (strcmp(a, "--repeat-last-n") == 0) {
            NEED_VALUE();
            o->sampling.repeat_last_n =
                (int32_t)parse_long(cmd, a, v, 0, 1 << 20);
        } else if (strcmp(a, "--seed") == 0) {
            NEED_VALUE();
            o->sampling.seed = (uint64_t)parse_long(cmd, a, v, 0, LONG_MAX);
        } else if (strcmp(a, "--draft") == 0) {
            NEED_VALUE(); o->draft = v;
        } else if (strcmp(a, "--spec") == 0) {
            NEED_VALUE();
            if (!ks_spec_parse(v, &o->spec))
                die_usage(cmd, "--spec expects auto, off, draft, lookup or self, got '%s'",
                          v);
        } else if (strcmp(a, "--early-exit") == 0) {
            NEED_VALUE(); o->early_exit = parse_float(cmd, a, v, 0.000001f, 1);
        } else if (strcmp(a, "--self-layers") == 0) {
            NEED_VALUE(); o->self_layers = (uint32_t)parse_long(cmd, a, v, 1, 100000);
        } else if (strcmp(a, "--draft-max") == 0) {
            NEED_VALUE(); o->draft_max = (uint32_t)parse_long(cmd, a, v, 1, 64);
        } else if (strcmp(a, "--draft-min") == 0) {
            NEED_VALUE(); o->draft_min = (uint32_t)parse_long(cmd, a, v, 0, 64);
        } else if (strcmp(a, "--verify-url") == 0) {
            NEED_VALUE(); o->verify_url = v;
        } else if (strcmp(a, "--verify-timeout") == 0) {
            NEED_VALUE();
            o->verify_timeout_ms = (uint32_t)parse_long(cmd, a, v, 1, 600000);
        } else if (FALLBACK_CMD(cmd) && strcmp(a, "--fallback-url") == 0) {
            NEED_VALUE(); o->fallback_url = v;
        } else if (FALLBACK_CMD(cmd) && strcmp(a, "--fallback-key") == 0) {
            NEED_VALUE(); o->fallback_key = v;
        } else if (FALLBACK_CMD(cmd) && strcmp(a, "--fallback-model") == 0) {
            NEED_VALUE(); o->fallback_model = v;
        } else if (FALLBACK_CMD(cmd) && strcmp(a, "--route") == 0) {
            NEED_VALUE();
            if (strcmp(v, "fallback") && strcmp(v, "auto"))
                die_usage(cmd, "--route expects auto or fallback, got '%s'", v);
            o->route_fallback = strcmp(v, "fallback") == 0;
        } else if (strcmp(a, "--privacy") == 0) {
            NEED_VALUE();
            if (strcmp(v, "strict") && strcmp(v, "off"))
                die_usage(cmd, "--privacy expects off or strict, got '%s'", v);
            o->privacy_strict = strcmp(v, "strict") == 0;
        } else if (strcmp(a, "--json") == 0) {
            o->json = true;
        } else if (strcmp(cmd, "run") == 0 && strcmp(a, "--json-schema") == 0) {
            NEED_VALUE(); o->json_schema = v;
        } else if (strcmp(a, "--ignore-eos") == 0) {
            o->ignore_eos = true;
        } else if (a[0] == '-' && a[1] != '\0') {
            die_usage(cmd, "unknown option '%s'", a);
        } else if (o->n_pos < max_pos) {
            o->pos[o->n_pos++] = a;
        } else if (strcmp(cmd, "run") == 0 || strcmp(cmd, "chat") == 0) {
            die_usage(cmd, "unexpected argument '%s' (a prompt of several "
                      "words needs quotes: -p \"...\")", a);
        } else {
            die_usage(cmd, "unexpected argument '%s'", a);
        }
#undef NEED_VALUE
    }
    if (o->n_threads > 0) {
        long n_cpu = sysconf(_SC_NPROCESSORS_ONLN);
        if (n_cpu > 0 && o->n_threads > n_cpu)
            fprintf(stderr, "kestrel %s: warning: -t %d is more than the %ld "
                    "online CPUs; threads will wait on one another\n", cmd,
                    o->n_threads, n_cpu);
    }
    if (o->device && o->backend == KS_BACKEND_CPU)
        fprintf(stderr, "kestrel %s: warning: --device has no effect with "
                "--backend cpu\n", cmd);
}

/* ---- text for terminals and JSON ---- */

/* The length of the valid UTF-8 sequence at s[0..n) (1 to 4), or 0 when
 * s[0] does not start one: overlong forms, surrogates and code points above
 * U+10FFFF are invalid (RFC 3629, section 4). */
static size_t
utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t len;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4;
    else
        return 0;
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

/* Writes s[0..n) for a terminal: valid UTF-8 and newlines and tabs as they
 * are; control characters (C0, DEL, C1: ESC among them) and bytes that are
 * not valid UTF-8 as \xNN, so text from a model file cannot move the
 * cursor, retitle the window or hide what follows. */
static void
term_write(FILE *f, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;

    for (size_t i = 0; i < n;) {
        size_t len = utf8_len(u + i, n - i);
        bool ctl = len == 0 || (len == 1 && u[i] < 0x20 && u[i] != '\n' &&
                                u[i] != '\t') ||
                   (len == 1 && u[i] == 0x7F) ||
                   (len == 2 && u[i] == 0xC2 && u[i + 1] < 0xA0);

        if (!ctl) {
            fwrite(u + i, 1, len, f);
            i += len;
            continue;
        }
        if (len == 0)
            len = 1;
        for (size_t k = 0; k < len; k++)
            fprintf(f, "\\x%02x", u[i + k]);
        i += len;
    }
}

/* Writes s[0..n) as one JSON string (RFC 8259): '"' and '\\' escaped,
 * control characters as \uXXXX, valid UTF-8 as it is, and each byte that
 * is not part of valid UTF-8 as U+FFFD, so the output is always valid JSON
 * in valid UTF-8 even when a token piece ends inside a character. */
static void
json_string(FILE *f, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;

    fputc('"', f);
    for (size_t i = 0; i < n;) {
        size_t len = utf8_len(u + i, n - i);
        unsigned char c = u[i];

        if (len == 0) {
            fputs("\xEF\xBF\xBD", f);   /* U+FFFD */
            i++;
        } else if (len > 1) {
            fwrite(u + i, 1, len, f);
            i += len;
        } else {
            if (c == '"' || c == '\\')
                fprintf(f, "\\%c", c);
            else if (c == '\n')
                fputs("\\n", f);
            else if (c == '\t')
                fputs("\\t", f);
            else if (c == '\r')
                fputs("\\r", f);
            else if (c < 0x20 || c == 0x7F)
                fprintf(f, "\\u%04x", c);
            else
                fputc(c, f);
            i++;
        }
    }
    fputc('"', f);
}

/* Reports the last error once, with metadata quoted in it made safe. */
static int
fail(const char *what)
{
    const char *msg = ks_last_error();

    fprintf(stderr, "kestrel: error: %s%s", what ? what : "",
            what ? ": " : "");
    term_write(stderr, msg, strlen(msg));
    fputc('\n', stderr);
    return EXIT_ERROR;
}

/* The model path: -m, else the default model in the model cache. */
static const char *
model_path(const opts *o, char *buf, size_t cap)
{
    const char *dir = getenv("KESTREL_MODEL_DIR");
    const char *home = getenv("HOME");

    if (o->model)
        return o->model;
    if (dir && *dir)
        snprintf(buf, cap, "%s/%s", dir, DEFAULT_MODEL_FILE);
    else
        snprintf(buf, cap, "%s/.cache/kestrel/models/%s", home ? home : ".",
                 DEFAULT_MODEL_FILE);
    if (access(buf, R_OK) != 0) {
        fprintf(stderr,
                "kestrel: error: no model given (-m FILE) and the default "
                "model %s is absent; fetch it with ci/fetch-models.sh\n",
                buf);
        exit(1);
    }
    return buf;
}

typedef struct loaded {
    ks_runtime *rt;
    ks_model   *model;
    ks_session *session;
    ks_model   *draft_model;   /* --draft */
    ks_session *draft;
} loaded;

static void
unload(loaded *l)
{
    ks_session_destroy(l->draft);
    ks_model_destroy(l->draft_model);
    ks_session_destroy(l->session);
    ks_model_destroy(l->model);
    ks_runtime_destroy(l->rt);
}

static int
load(const opts *o, loaded *l)
{
    ks_runtime_params rp = { 0 };
    ks_session_params sp = { 0 };
    char buf[4096];
    const char *path = model_path(o, buf, sizeof buf);

    memset(l, 0, sizeof(*l));
    rp.backend = o->backend;
    rp.n_threads = o->n_threads;
    rp.device = o->device;
    rp.split = o->split;
    rp.gpu_layers = o->gpu_layers;
    rp.temp_limit_c = o->temp_limit_c;
    rp.power_limit_w = o->power_limit_w;
    rp.policy = o->policy;
    rp.no_governor = o->no_governor;
    if (ks_runtime_create(&rp, &l->rt) != KS_OK)
        return fail(NULL);
    ks_model_params mp = { 0 };
    mp.pre_fallback_gpt2 = o->pre_fallback_gpt2;
    mp.mem_budget_bytes = (uint64_t)o->mem_budget_mb << 20;
    if (ks_model_load(l->rt, path, &mp, &l->model) != KS_OK) {
        unload(l);
        return fail(NULL);
    }
    sp.n_ctx = o->n_ctx;
    sp.n_batch = o->n_batch;
    sp.kv_type = o->kv_type;
    sp.trace_path = o->trace_path;
    sp.profile = o->profile;
    if (ks_session_create(l->model, &sp, &l->session) != KS_OK) {
        unload(l);
        return fail(NULL);
    }
    if (o->spec == KS_SPEC_SELF || o->early_exit > 0) {
        /* the draft: the same model, exiting after its first layers */
        ks_model_desc d;
        ks_model_describe(l->model, &d);
        sp.trace_path = NULL;
        sp.n_layers = o->self_layers ? o->self_layers : (d.n_layers + 1) / 2;
        if (ks_session_create(l->model, &sp, &l->draft) != KS_OK) {
            unload(l);
            return fail("cannot start the self-drafting session (--self-layers)");
        }
    } else if (o->draft) {
        sp.trace_path = NULL;
        if (ks_model_load(l->rt, o->draft, &mp, &l->draft_model) != KS_OK ||
            ks_session_create(l->draft_model, &sp, &l->draft) != KS_OK) {
            unload(l);
            return fail("cannot load the draft model (--draft)");
        }
    }
    return 0;
}

/* ---- the op profile (--profile, KESTREL_PROFILE=1) ---- */

/* One profiled stretch of work (bench's pp or tg run, or a whole run). */
typedef struct profile_take {
    const char     *name;      /* "pp", "tg", "run" */
    int             n_tokens;
    ks_profile_row *rows;
    size_t          n;
} profile_take;

/* Reads the session's profile into |pt| and zeroes it. */
static int
profile_read(ks_session *s, profile_take *pt)
{
    size_t n = 0;

    if (ks_session_profile(s, NULL, &n) != KS_OK)
        return fail("profile");
    pt->rows = calloc(n ? n : 1, sizeof(*pt->rows));
    if (!pt->rows)
        return fail("no memory");
    pt->n = n;
    if (ks_session_profile(s, pt->rows, &pt->n) != KS_OK)
        return fail("profile");
    ks_session_profile_reset(s);
    return 0;
}

static void
profile_line(FILE *f, const char *target, const char *what, uint64_t calls, uint64_t ns,
             uint64_t bytes, uint64_t total_ns, int n_tokens)
{
    fprintf(f, "| %s | %s | %llu | %.3f | %.3f | %.2f | %.2f | %.1f%% |\n", target, what,
            (unsigned long long)calls, (double)ns / 1e6,
            n_tokens ? (double)ns / 1e6 / n_tokens : 0.0, (double)bytes / 1e6,
            ns ? (double)bytes / (double)ns : 0.0,
            total_ns ? 100.0 * (double)ns / (double)total_ns : 0.0);
}

/* Two tables on |f|: per (target, op) over all layers, then per (target,
 * layer) over all ops; GB/s is bytes over time (bytes/ns). */
static void
profile_print(FILE *f, const profile_take *pt)
{
    uint64_t total = 0;
    static const char *const ops[] = { "norm", "qkv", "rope_kv", "attn", "attn_out", "add",
                                       "gate_up", "act", "down", "moe", "head" };

    for (size_t i = 0; i < pt->n; i++)
        total += pt->rows[i].ns;
    fprintf(f, "\nprofile of %s (%d tokens): %.3f ms in ops\n"
            "| target | op | calls | ms | ms/token | MB | GB/s | share |\n"
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
            pt->name, pt->n_tokens, (double)total / 1e6);
    for (size_t i = 0; i < pt->n; i++) {
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = !strcmp(pt->rows[j].target, pt->rows[i].target);
        for (size_t o = 0; !seen && o < sizeof ops / sizeof ops[0]; o++) {
            uint64_t calls = 0, ns = 0, bytes = 0;
            for (size_t j = i; j < pt->n; j++) {
                const ks_profile_row *r = &pt->rows[j];
                if (strcmp(r->target, pt->rows[i].target) || strcmp(r->op, ops[o]))
                    continue;
                calls += r->calls, ns += r->ns, bytes += r->bytes;
            }
            if (calls)
                profile_line(f, pt->rows[i].target, ops[o], calls, ns, bytes, total,
                             pt->n_tokens);
        }
    }
    fprintf(f, "\n| target | layer | calls | ms | ms/token | MB | GB/s | share |\n"
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (size_t i = 0; i < pt->n;) {
        const ks_profile_row *r0 = &pt->rows[i];
        uint64_t calls = 0, ns = 0, bytes = 0;
        char what[16];
        size_t j = i;
        for (; j < pt->n && pt->rows[j].layer == r0->layer &&
               !strcmp(pt->rows[j].target, r0->target); j++)
            calls += pt->rows[j].calls, ns += pt->rows[j].ns, bytes += pt->rows[j].bytes;
        if (r0->layer < 0)
            snprintf(what, sizeof what, "head");
        else
            snprintf(what, sizeof what, "%d", r0->layer);
        profile_line(f, r0->target, what, calls, ns, bytes, total, pt->n_tokens);
        i = j;
    }
}

/* {"pp":{"n_tokens":N,"total_ns":T,"rows":[{...}]},"tg":...}: every row
 * as the library gives it; totals per op or layer are sums of rows. */
static int
profile_write_json(const char *path, const profile_take *pts, int n_pts)
{
    FILE *f = fopen(path, "w");

    if (!f) {
        fprintf(stderr, "kestrel: error: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    fputc('{', f);
    for (int k = 0; k < n_pts; k++) {
        uint64_t total = 0;
        for (size_t i = 0; i < pts[k].n; i++)
            total += pts[k].rows[i].ns;
        fprintf(f, "%s\"%s\":{\"n_tokens\":%d,\"total_ns\":%llu,\"rows\":[", k ? "," : "",
                pts[k].name, pts[k].n_tokens, (unsigned long long)total);
        for (size_t i = 0; i < pts[k].n; i++) {
            const ks_profile_row *r = &pts[k].rows[i];
            fprintf(f, "%s{\"target\":", i ? "," : "");
            json_string(f, r->target, strlen(r->target));
            fprintf(f, ",\"op\":\"%s\",\"layer\":%d,\"calls\":%llu,\"ns\":%llu,"
                    "\"bytes\":%llu,\"gb_per_s\":%.3f,\"share\":%.5f}", r->op, r->layer,
                    (unsigned long long)r->calls, (unsigned long long)r->ns,
                    (unsigned long long)r->bytes,
                    r->ns ? (double)r->bytes / (double)r->ns : 0.0,
                    total ? (double)r->ns / (double)total : 0.0);
        }
        fputs("]}", f);
    }
    fputs("}\n", f);
    if (fclose(f) != 0) {
        fprintf(stderr, "kestrel: error: cannot write %s\n", path);
        return 1;
    }
    return 0;
}

/* Prints the takes on stderr and writes --profile-json. */
static int
profile_report(const opts *o, profile_take *pts, int n_pts)
{
    int rc = 0;

    for (int k = 0; k < n_pts; k++)
        profile_print(stderr, &pts[k]);
    if (o->profile_json)
        rc = profile_write_json(o->profile_json, pts, n_pts);
    for (int k = 0; k < n_pts; k++)
        free(pts[k].rows);
    return rc;
}

/* What remote verification did in the last generate (--verify-url). */
static ks_verify_stats verify_stats;

/* The speculation settings of -spec, --draft, --draft-max, --draft-min,
 * --verify-url (unless --privacy strict). */
static void
spec_params(const opts *o, const loaded *l, ks_generate_params *gp)
{
    gp->spec = o->spec;
    gp->draft = l->draft;
    gp->draft_max = o->draft_max;
    gp->draft_min = o->draft_min;
    gp->early_exit = o->early_exit;
    static bool told;
    if (o->verify_url && !told) {
        /* the log says what goes where, never the content */
        fprintf(stderr, o->privacy_strict
                ? "kestrel: --privacy strict: nothing is sent to %s\n"
                : "kestrel: token ids go to %s for verification\n",
                o->verify_url);
        told = true;
    }
    if (o->verify_url && !o->privacy_strict) {
        gp->verify_url = o->verify_url;
        gp->verify_timeout_ms = o->verify_timeout_ms;
        gp->verify_stats = &verify_stats;
    }
}

/* Reads a whole file (the prompt of -f) into a NUL-terminated buffer;
 * *n_out gets its length, NUL bytes included. */
static char *
read_file(const char *path, size_t *n_out)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 0;

    if (!f) {
        fprintf(stderr, "kestrel: error: cannot open %s: %s\n", path,
                strerror(errno));
        return NULL;
    }
    for (;;) {
        if (n + 4096 + 1 > cap) {
            char *nb = realloc(buf, cap = cap * 2 + 8192);
            if (!nb) {
                fprintf(stderr, "kestrel: error: no memory to read %s\n",
                        path);
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, 4096, f);
        n += got;
        if (got < 4096)
            break;
    }
    if (ferror(f)) {
        fprintf(stderr, "kestrel: error: cannot read %s: %s\n", path,
                strerror(errno));
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    buf[n] = '\0';
    *n_out = n;
    return buf;
}

/* The prompt's ids (BOS as the model asks, no special parsing: a prompt's
 * text is never a control token); reports its own errors. */
static int32_t *
tokenize(const ks_model *m, const char *text, size_t len, size_t *n_out)
{
    size_t n = 0;
    int32_t *ids;

    if (ks_model_tokenize(m, text, len, true, false, NULL, 0, &n) != KS_OK) {
        fail("tokenize");
        return NULL;
    }
    ids = malloc((n ? n : 1) * sizeof(*ids));
    if (!ids) {
        fprintf(stderr, "kestrel: error: no memory for %zu tokens\n", n);
        return NULL;
    }
    if (ks_model_tokenize(m, text, len, true, false, ids, n, n_out) != KS_OK) {
        fail("tokenize");
        free(ids);
        return NULL;
    }
    return ids;
}

static bool
print_piece(void *user, int32_t tok, const char *piece, size_t len)
{
    (void)user;
    (void)tok;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return true;
}

static void
print_stats(const ks_session *s, const ks_stats *st)
{
    fprintf(stderr,
            "\n\nkestrel: load %.1f ms | prompt %u tokens, %.1f ms, %.2f t/s "
            "| generated %u tokens, %.1f ms, %.2f t/s | peak RSS %.1f MiB\n",
            st->load_ms, st->n_prompt, st->prefill_ms, st->prefill_tps,
            st->n_gen, st->decode_ms, st->decode_tps,
            (double)st->peak_rss_bytes / 1048576.0);
    if (st->governed)
        fprintf(stderr, "kestrel: governor paced %.1f ms; %d threads at the "
                "end; %.2f tokens/J (%s)\n", st->paced_ms, st->n_threads,
                st->tokens_per_j, st->energy_measured ? "measured" : "modelled");
    if (st->n_verify > 0)
        fprintf(stderr, "kestrel: speculation: %u drafted, %u accepted (%.1f %%), %.2f "
                "tokens per target pass, draft %.1f ms, verify %.1f ms in %u passes, "
                "sampling %.1f ms\n",
                st->n_drafted, st->n_accepted, 100.0 * st->accept_rate,
                st->tokens_per_verify, st->draft_ms, st->verify_ms, st->n_verify,
                st->sample_ms);
    if (st->n_early_exit > 0)
        fprintf(stderr, "kestrel: early exit decided %u of %u tokens\n", st->n_early_exit,
                st->n_gen);
    if (st->n_fallbacks > 0)
        fprintf(stderr, "kestrel: a device fault moved the layers to the CPU (%s)\n",
                st->fallback);
    if (verify_stats.n_rounds > 0 || verify_stats.lost)
        fprintf(stderr, "kestrel: remote verification: %u requests, %.1f ms "
                "each, %u tokens from them%s%s; %u generated locally\n",
                verify_stats.n_rounds, verify_stats.rtt_ms,
                verify_stats.n_remote, verify_stats.lost ? "; given up: " : "",
                verify_stats.why, verify_stats.n_local);
    if (st->n_shader_hits + st->n_shader_compiled > 0)
        fprintf(stderr, "kestrel: %s, placement %s | Vulkan set-up %.1f ms, kernels: "
                "%u from the disk cache, %u compiled\n", ks_session_backend_name(s),
                ks_session_placement(s), st->backend_setup_ms, st->n_shader_hits,
                st->n_shader_compiled);
}

/* --mem-budget: the experts' hit rate, storage reads and placement. */
static void
print_experts(const ks_model *m)
{
    ks_expert_stats x;
    ks_model_desc d;
    uint64_t uses;

    ks_model_expert_stats(m, &x);
    if (!x.placed)
        return;
    ks_model_describe(m, &d);
    uses = x.n_hits + x.n_misses;
    fprintf(stderr, "kestrel: experts: budget %.0f MiB, %u resident in %u slots of %u "
            "experts (%.2f MiB each%s), "
            "hit rate %.1f %%, %.2f MiB of cold experts per token (%llu tokens), "
            "read from storage %.2f MiB per token (/proc/self/io), %u moves, "
            "read-ahead right for %.1f %% of the experts used\n",
            (double)x.budget_bytes / 1048576.0, x.n_resident, x.n_slots, x.n_experts,
            (double)x.expert_bytes / 1048576.0, x.locked ? ", locked" : "",
            uses ? 100.0 * (double)x.n_hits / (double)uses : 0.0,
            x.n_tokens ? (double)x.cold_bytes / (double)x.n_tokens / 1048576.0 : 0.0,
            (unsigned long long)x.n_tokens,
            x.n_tokens ? (double)x.io_read_bytes / (double)x.n_tokens / 1048576.0 : 0.0,
            x.n_moves,
            x.n_used_after_prediction
                ? 100.0 * (double)x.n_predicted_used / (double)x.n_used_after_prediction
                : 0.0);
    fputs("kestrel: experts resident per layer:", stderr);
    for (uint32_t il = 0; il < d.n_layers; il++)
        fprintf(stderr, " %u", ks_model_expert_resident(m, il, NULL, 0));
    fputc('\n', stderr);
}

static void
json_experts(FILE *f, const ks_model *m)
{
    ks_expert_stats x;
    ks_model_desc d;
    uint32_t ids[1024];

    ks_model_expert_stats(m, &x);
    if (!x.placed)
        return;
    ks_model_describe(m, &d);
    fprintf(f, ",\"experts\":{\"budget_bytes\":%llu,\"expert_bytes\":%llu,\"locked\":%s,"
            "\"n_slots\":%u,\"n_resident\":%u,\"n_experts\":%u,\"n_tokens\":%llu,"
            "\"n_hits\":%llu,\"n_misses\":%llu,\"cold_bytes\":%llu,"
            "\"io_read_bytes\":%llu,\"n_predicted\":%llu,\"n_predicted_used\":%llu,"
            "\"n_used_after_prediction\":%llu,\"n_moves\":%u,\"n_fills\":%u,"
            "\"resident\":[",
            (unsigned long long)x.budget_bytes, (unsigned long long)x.expert_bytes,
            x.locked ? "true" : "false", x.n_slots, x.n_resident, x.n_experts,
            (unsigned long long)x.n_tokens, (unsigned long long)x.n_hits,
            (unsigned long long)x.n_misses, (unsigned long long)x.cold_bytes,
            (unsigned long long)x.io_read_bytes, (unsigned long long)x.n_predicted,
            (unsigned long long)x.n_predicted_used,
            (unsigned long long)x.n_used_after_prediction, x.n_moves, x.n_fills);
    for (uint32_t il = 0; il < d.n_layers; il++) {
        uint32_t n = ks_model_expert_resident(m, il, ids, 1024);
        fprintf(f, "%s[", il ? "," : "");
        for (uint32_t i = 0; i < n && i < 1024; i++)
            fprintf(f, "%s%u", i ? "," : "", ids[i]);
        fputc(']', f);
    }
    fputs("]}", f);
}

static void
json_ids(FILE *f, const char *key, const int32_t *ids, size_t n)
{
    fprintf(f, "\"%s\":[", key);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s%d", i ? "," : "", ids[i]);
    fputc(']', f);
}

static void
json_stats(FILE *f, const ks_session *s, const ks_stats *st)
{
    fprintf(f,
            "\"placement\":\"%s\",\"stats\":{\"load_ms\":%.3f,\"n_prompt\":%u,"
            "\"prefill_ms\":%.3f,"
            "\"prefill_tps\":%.3f,\"n_gen\":%u,\"decode_ms\":%.3f,"
            "\"decode_tps\":%.3f,\"peak_rss_bytes\":%llu,\"kv_bytes\":%llu,"
            "\"backend_setup_ms\":%.3f,\"shader_cache_hits\":%u,"
            "\"shaders_compiled\":%u,\"fallbacks\":%u,\"n_drafted\":%u,"
            "\"n_lookup\":%u,\"n_accepted\":%u,\"n_verify\":%u,\"accept_rate\":%.4f,"
            "\"tokens_per_verify\":%.4f,\"draft_ms\":%.3f,\"verify_ms\":%.3f,"
            "\"sample_ms\":%.3f,\"tokens_per_j\":%.4f,\"energy_measured\":%s,"
            "\"fallback\":",
            ks_session_placement(s), st->load_ms, st->n_prompt, st->prefill_ms,
            st->prefill_tps, st->n_gen, st->decode_ms, st->decode_tps,
            (unsigned long long)st->peak_rss_bytes,
            (unsigned long long)st->kv_bytes, st->backend_setup_ms, st->n_shader_hits,
            st->n_shader_compiled, st->n_fallbacks, st->n_drafted, st->n_lookup,
            st->n_accepted,
            st->n_verify, st->accept_rate, st->tokens_per_verify, st->draft_ms,
            st->verify_ms, st->sample_ms, st->tokens_per_j,
            st->energy_measured ? "true" : "false");
    json_string(f, st->fallback, strlen(st->fallback));
    if (verify_stats.n_rounds > 0 || verify_stats.lost) {
        fprintf(f, ",\"remote\":{\"requests\":%u,\"rtt_ms\":%.3f,"
                "\"n_drafted\":%u,\"n_accepted\":%u,\"n_remote\":%u,"
                "\"n_local\":%u,\"lost\":%s,\"why\":",
                verify_stats.n_rounds, verify_stats.rtt_ms,
                verify_stats.n_drafted, verify_stats.n_accepted,
                verify_stats.n_remote, verify_stats.n_local,
                verify_stats.lost ? "true" : "false");
        json_string(f, verify_stats.why, strlen(verify_stats.why));
        fputc('}', f);
    }
    fputc('}', f);
}

/* What one generation produced, for --json and the exit status. */
typedef struct outcome {
    const char    *prompt;     /* the prompt as given (may hold NULs) */
    size_t         n_prompt;   /* bytes */
    const int32_t *ids;        /* the prompt's tokens */
    size_t         n_ids;
    const int32_t *gen;        /* the generated tokens */
    size_t         n_gen;
    ks_stop        stop;
    ks_status      st;
    const char    *error;      /* NULL: none */
} outcome;

/* One JSON object: the prompt, its ids, the generated ids and their text
 * (pieces joined; bytes that are not valid UTF-8 become U+FFFD, the ids
 * stay exact), why generation stopped, stats, and "error" when it failed. */
static void
print_json(const loaded *l, const outcome *r)
{
    ks_stats stats;
    size_t n_text = 0;
    char *text = NULL;
    const char *err = r->error;

    if (ks_model_detokenize(l->model, r->gen, r->n_gen, NULL, 0, &n_text) ==
            KS_OK &&
        (text = malloc(n_text + 1)) != NULL &&
        ks_model_detokenize(l->model, r->gen, r->n_gen, text, n_text + 1,
                            &n_text) != KS_OK) {
        free(text);
        text = NULL;
    }
    if (!text && !err)
        err = "cannot turn the generated ids into text";
    ks_session_stats(l->session, &stats);
    printf("{\"prompt\":");
    json_string(stdout, r->prompt, r->n_prompt);
    putchar(',');
    json_ids(stdout, "prompt_ids", r->ids, r->n_ids);
    putchar(',');
    json_ids(stdout, "ids", r->gen, r->n_gen);
    printf(",\"text\":");
    json_string(stdout, text ? text : "", text ? n_text : 0);
    printf(",\"stop\":");
    json_string(stdout, ks_stop_name(r->stop), strlen(ks_stop_name(r->stop)));
    printf(",\"backend\":");
    json_string(stdout, ks_session_backend_name(l->session),
                strlen(ks_session_backend_name(l->session)));
    putchar(',');
    json_stats(stdout, l->session, &stats);
    json_experts(stdout, l->model);
    if (err) {
        printf(",\"error\":");
        json_string(stdout, err, strlen(err));
    }
    printf("}\n");
    fflush(stdout);
    free(text);
}

/* The exit status of a generation; reports what went wrong once. */
static int
finish(const outcome *r)
{
    switch (r->st) {
    case KS_OK:
        return EXIT_OK;
    case KS_ERR_CANCELLED:
        fprintf(stderr, "\nkestrel: interrupted\n");
        return EXIT_INTERRUPTED;
    case KS_ERR_CONTEXT_FULL:
        if (r->n_gen > 0) {   /* the answer was cut, not lost */
            fprintf(stderr, "\nkestrel: %s\n", r->error);
            return EXIT_OK;
        }
        fprintf(stderr, "kestrel: error: %s\n", r->error);
        return EXIT_CONTEXT;
    default:
        fprintf(stderr, "\nkestrel: error: generate: ");
        term_write(stderr, r->error, strlen(r->error));
        fputc('\n', stderr);
        return EXIT_ERROR;
    }
}

/* The prompt must fit the context (the session then generates at least
 * one token). */
static bool
prompt_fits(const loaded *l, size_t n_ids, outcome *r, char *msg, size_t cap)
{
    uint32_t n_ctx = ks_session_n_ctx(l->session);

    if (n_ids <= n_ctx)
        return true;
    snprintf(msg, cap, "the prompt is %zu tokens but the context holds %u: "
             "give a larger -c or a shorter prompt", n_ids, n_ctx);
    r->st = KS_ERR_CONTEXT_FULL;
    r->stop = KS_STOP_CONTEXT;
    r->error = msg;
    return false;
}

/* The cloud fallback for `run`: -1 when it is not to be used (not set,
 * or --privacy strict, which is logged), else the exit status after the
 * fallback's answer was printed (text, or JSON with route "fallback" and
 * why) or its failure reported. The log says what went where, never the
 * content. */
static int
run_fallback(const opts *o, const char *prompt, const char *why)
{
    if (!o->fallback_url)
        return -1;
    if (o->privacy_strict) {
        fprintf(stderr, "kestrel: --privacy strict: nothing is sent to %s "
                "(%s)\n", o->fallback_url, why);
        return -1;
    }
#ifdef KESTREL_FALLBACK
    ks_fallback_req q = {
        .base_url = o->fallback_url, .api_key = o->fallback_key,
        .model = o->fallback_model, .prompt = prompt,
        .max_tokens = o->n_predict, .temperature = o->sampling.temp,
        .timeout_ms = 120000,
    };
    char *text = NULL, finish[32], err[256];

    fprintf(stderr, "kestrel: fallback: the prompt (%zu bytes) goes to "
            "%s/completions: %s\n", strlen(prompt), o->fallback_url, why);
    if (!ks_cli_fallback(&q, &text, finish, sizeof finish, err, sizeof err)) {
        fprintf(stderr, "kestrel: error: fallback: %s\n", err);
        return EXIT_ERROR;
    }
    if (o->json) {
        printf("{\"prompt\":");
        json_string(stdout, prompt, strlen(prompt));
        printf(",\"text\":");
        json_string(stdout, text, strlen(text));
        printf(",\"stop\":");
        json_string(stdout, finish, strlen(finish));
        printf(",\"route\":\"fallback\",\"route_why\":");
        json_string(stdout, why, strlen(why));
        printf("}\n");
    } else {
        printf("%s%s\n", prompt, text);
    }
    free(text);
    return EXIT_OK;
#else
    (void)prompt;
    fprintf(stderr, "kestrel: error: --fallback-url: this kestrel was built "
            "without libcurl\n");
    return EXIT_ERROR;
#endif
}

static int
cmd_run(const opts *o)
{
    loaded l;
    char *file_text = NULL, *schema = NULL;
    int32_t *ids = NULL, *gen = NULL;
    ks_generate_params gp = { 0 };
    ks_stats stats;
    outcome r = { 0 };
    char msg[512];
    int rc = 0;

    r.prompt = o->prompt;
    r.n_prompt = o->prompt ? strlen(o->prompt) : 0;
    if (o->prompt && o->prompt_file) {
        fprintf(stderr, "kestrel run: give -p TEXT or -f FILE, not both\n"
                "Try 'kestrel run --help'.\n");
        return EXIT_USAGE;
    }
    if (o->prompt_file) {
        if (!(file_text = read_file(o->prompt_file, &r.n_prompt)))
            return EXIT_ERROR;
        r.prompt = file_text;
    }
    if (!r.prompt) {
        fprintf(stderr, "kestrel run: no prompt: give -p TEXT or -f FILE\n"
                "Try 'kestrel run --help'.\n");
        free(file_text);
        return EXIT_USAGE;
    }
    if (o->json_schema) {  /* checked before the model loads */
        size_t n;
        if (!(schema = read_file(o->json_schema, &n))) {
            free(file_text);
            return EXIT_ERROR;
        }
        if (ks_json_schema_check(schema) != KS_OK) {
            fprintf(stderr, "kestrel run: --json-schema %s: %s\n", o->json_schema,
                    ks_last_error());
            free(schema);
            free(file_text);
            return EXIT_USAGE;
        }
    }
    if (o->route_fallback && !schema &&
        (rc = run_fallback(o, r.prompt, "the request asks for it")) >= 0) {
        free(file_text);
        return rc;
    }
    if (load(o, &l) != 0) {
        char why[300];
        snprintf(why, sizeof why, "the local model failed to load (%s)",
                 ks_last_error());
        rc = schema ? -1 : run_fallback(o, r.prompt, why);
        free(schema);
        free(file_text);
        return rc >= 0 ? rc : EXIT_ERROR;
    }
    if (!(ids = tokenize(l.model, r.prompt, r.n_prompt, &r.n_ids))) {
        rc = EXIT_ERROR;
        goto out;
    }
    r.ids = ids;
    if (o->n_predict == 0) {   /* tokenize only: "stop" is "none" */
        if (o->json)
            print_json(&l, &r);
        goto out;
    }
    gp.out_cap = ks_session_n_ctx(l.session);
    gen = malloc(gp.out_cap * sizeof(*gen));
    if (!gen) {
        fprintf(stderr, "kestrel: error: no memory for %zu tokens\n",
                gp.out_cap);
        rc = EXIT_ERROR;
        goto out;
    }
    r.gen = gen;
    if (prompt_fits(&l, r.n_ids, &r, msg, sizeof msg)) {
        gp.prompt = ids;
        gp.n_prompt = r.n_ids;
        gp.n_predict = o->n_predict < 0 ? 0 : (uint32_t)o->n_predict;
        gp.sampling = o->sampling;
        gp.cancel = &g_cancel;
        gp.ignore_eog = o->ignore_eos;
        gp.out_tokens = gen;
        spec_params(o, &l, &gp);
        gp.json_schema = schema;
        if (!o->json) {
            gp.on_token = print_piece;
            if (!schema)
                fwrite(r.prompt, 1, r.n_prompt, stdout);
            fflush(stdout);
        }
        r.st = ks_session_generate(l.session, &gp);
        r.stop = gp.stop;
        r.n_gen = gp.n_out < gp.out_cap ? gp.n_out : gp.out_cap;
        if (r.st != KS_OK) {
            snprintf(msg, sizeof msg, "%s", ks_last_error());
            r.error = msg;
        }
    } else if (!schema) {
        char why[160];
        snprintf(why, sizeof why, "the prompt (%zu tokens) does not fit the "
                 "local context of %u", r.n_ids, ks_session_n_ctx(l.session));
        if ((rc = run_fallback(o, r.prompt, why)) >= 0)
            goto out;
    }
    if (o->json) {
        print_json(&l, &r);
    } else {
        ks_session_stats(l.session, &stats);
        if (r.stop != KS_STOP_NONE) {
            print_stats(l.session, &stats);
            print_experts(l.model);
        }
    }
    rc = finish(&r);
    if (o->profile) {
        profile_take pt = { "run", (int)(r.n_ids + r.n_gen), NULL, 0 };
        if (profile_read(l.session, &pt) || profile_report(o, &pt, 1))
            rc = rc ? rc : EXIT_ERROR;
    }
out:
    free(gen);
    free(ids);
    free(file_text);
    free(schema);
    unload(&l);
    return rc;
}

/* ---- chat ---- */

typedef struct chat {
    ks_chat_message *msgs;
    size_t           n_msgs;
    size_t           cap_msgs;
    int32_t         *hist;     /* tokens in the session's KV cache */
    size_t           n_hist;
    size_t           cap_hist;
    char            *answer;   /* the reply being generated */
    size_t           n_answer;
    size_t           cap_answer;
    size_t           first_gen; /* hist index of the reply's first token */
    bool             stream;    /* print the reply as it comes */
} chat;

static bool
chat_push(chat *c, const char *role, const char *content)
{
    char *copy;

    if (c->n_msgs == c->cap_msgs) {
        size_t cap = c->cap_msgs * 2 + 8;
        ks_chat_message *nm = realloc(c->msgs, cap * sizeof(*nm));
        if (!nm)
            return false;
        c->msgs = nm;
        c->cap_msgs = cap;
    }
    if (!(copy = strdup(content)))
        return false;
    c->msgs[c->n_msgs].role = role;
    c->msgs[c->n_msgs].content = copy;
    c->n_msgs++;
    return true;
}

static bool
hist_push(chat *c, int32_t tok)
{
    if (c->n_hist == c->cap_hist) {
        size_t cap = c->cap_hist * 2 + 256;
        int32_t *nh = realloc(c->hist, cap * sizeof(*nh));
        if (!nh)
            return false;
        c->hist = nh;
        c->cap_hist = cap;
    }
    c->hist[c->n_hist++] = tok;
    return true;
}

static bool
answer_append(chat *c, const char *piece, size_t len)
{
    if (c->n_answer + len + 1 > c->cap_answer) {
        size_t cap = (c->cap_answer + len) * 2 + 256;
        char *na = realloc(c->answer, cap);
        if (!na)
            return false;
        c->answer = na;
        c->cap_answer = cap;
    }
    memcpy(c->answer + c->n_answer, piece, len);
    c->n_answer += len;
    c->answer[c->n_answer] = '\0';
    if (c->stream) {
        fwrite(piece, 1, len, stdout);
        fflush(stdout);
    }
    return true;
}

static bool
chat_on_token(void *user, int32_t tok, const char *piece, size_t len)
{
    chat *c = user;

    return answer_append(c, piece, len) && hist_push(c, tok);
}

#ifdef KESTREL_FALLBACK
static bool
chat_fb_text(void *user, const char *text, size_t n)
{
    return answer_append(user, text, n);
}

static bool
chat_fb_cancelled(void *user)
{
    (void)user;
    return g_cancel != 0;
}
#endif

/* The cloud fallback for one chat turn: the conversation goes to
 * BASE/chat/completions and its answer streams into c->answer (and to
 * stdout unless --json). -1: not used (not set, or --privacy strict,
 * logged); EXIT_OK: answered (finish in finish); EXIT_ERROR: it failed,
 * reported, the text it sent kept in c->answer. The log says where and how
 * many bytes, never the content. */
static int
chat_fallback(const opts *o, chat *c, const char *why, char *finish,
              size_t finish_cap)
{
    if (!o->fallback_url)
        return -1;
    if (o->privacy_strict) {
        fprintf(stderr, "kestrel: --privacy strict: nothing is sent to %s "
                "(%s)\n", o->fallback_url, why);
        return -1;
    }
#ifdef KESTREL_FALLBACK
    char host[256], err[200];
    char *body = ks_cli_fallback_chat_body(c->msgs, c->n_msgs,
                                           o->fallback_model, o->n_predict,
                                           o->sampling.temp);
    ks_fallback_stream q = {
        .base_url = o->fallback_url, .api_key = o->fallback_key,
        .path = "/chat/completions", .body = body, .timeout_ms = 30000,
        .on_text = chat_fb_text, .cancelled = chat_fb_cancelled, .user = c,
    };

    if (!body) {
        fprintf(stderr, "kestrel: error: no memory\n");
        return EXIT_ERROR;
    }
    ks_cli_url_host(o->fallback_url, host, sizeof host);
    fprintf(stderr, "kestrel chat: fallback: %zu bytes to %s (%s)\n",
            strlen(body), host, why);
    bool ok = ks_cli_fallback_stream(&q, finish, finish_cap, err, sizeof err);
    free(body);
    if (!ok) {
        fprintf(stderr, "%skestrel: error: fallback: %s (%zu bytes of its "
                "answer kept)\n", c->n_answer && c->stream ? "\n" : "", err,
                c->n_answer);
        return EXIT_ERROR;
    }
    return EXIT_OK;
#else
    (void)c;
    (void)finish;
    (void)finish_cap;
    fprintf(stderr, "kestrel: error: --fallback-url: this kestrel was built "
            "without libcurl\n");
    return EXIT_ERROR;
#endif
}

/* The conversation's tokens: template markers as special tokens, message
 * text never (ks_model_chat_tokenize). Reports its own errors. */
static int32_t *
chat_tokens(const loaded *l, const chat *c, size_t *n_out)
{
    size_t n = 0;
    int32_t *ids;

    if (ks_model_chat_tokenize(l->model, c->msgs, c->n_msgs, true, NULL, 0,
                               &n) != KS_OK) {
        fail("chat template");
        return NULL;
    }
    if (!(ids = malloc((n ? n : 1) * sizeof(*ids)))) {
        fprintf(stderr, "kestrel: error: no memory for %zu tokens\n", n);
        return NULL;
    }
    if (ks_model_chat_tokenize(l->model, c->msgs, c->n_msgs, true, ids, n,
                               n_out) != KS_OK) {
        fail("chat template");
        free(ids);
        return NULL;
    }
    return ids;
}

/* One turn: tokenize the whole conversation, keep the KV cache for the
 * part of it that the session already holds, run the rest, stream the
 * reply (or print it as JSON). Returns the exit status. */
static int
chat_turn(const opts *o, loaded *l, chat *c, const char *prompt)
{
    size_t n_ids = 0, keep = 0, n_past = ks_session_n_past(l->session);
    int32_t *ids = NULL;
    ks_generate_params gp = { 0 };
    outcome r = { 0 };
    char msg[512];
    ks_status st;
    int rc = 0;

    r.prompt = prompt ? prompt : "";
    r.n_prompt = strlen(r.prompt);
    if (!(ids = chat_tokens(l, c, &n_ids)))
        return EXIT_ERROR;
    r.ids = ids;
    r.n_ids = n_ids;
    if (n_ids == 0) {
        /* a plain-format model without BOS and an empty message */
        fprintf(stderr, "kestrel chat: the conversation is empty: nothing "
                "for the model to answer\n");
        rc = EXIT_ERROR;
        goto out;
    }
    bool fits = prompt_fits(l, n_ids, &r, msg, sizeof msg);
    c->n_answer = 0;
    if (c->answer)
        c->answer[0] = '\0';
    c->stream = !o->json;
    if (o->fallback_url && (o->route_fallback || !fits)) {
        char why[160], fin[32];
        if (fits)
            snprintf(why, sizeof why, "the request asks for it");
        else
            snprintf(why, sizeof why, "the conversation (%zu tokens) does "
                     "not fit the local context of %u", n_ids,
                     ks_session_n_ctx(l->session));
        int frc = chat_fallback(o, c, why, fin, sizeof fin);
        if (frc == EXIT_OK) {
            if (o->json) {
                printf("{\"prompt\":");
                json_string(stdout, r.prompt, r.n_prompt);
                printf(",\"text\":");
                json_string(stdout, c->answer ? c->answer : "", c->n_answer);
                printf(",\"stop\":");
                json_string(stdout, fin, strlen(fin));
                printf(",\"route\":\"fallback\",\"route_why\":");
                json_string(stdout, why, strlen(why));
                printf("}\n");
            } else {
                fputc('\n', stdout);
                fflush(stdout);
                fprintf(stderr, "[fallback: %s]\n", why);
            }
            if (!chat_push(c, "assistant", c->answer ? c->answer : "")) {
                fprintf(stderr, "kestrel: error: no memory\n");
                rc = EXIT_ERROR;
            }
            goto out;
        }
        /* it failed: the local model goes on from the text it sent */
        size_t n_more = 0;
        int32_t *grown;
        if (frc > 0 && fits && c->n_answer > 0 &&
            ks_model_tokenize(l->model, c->answer, c->n_answer, false, false,
                              NULL, 0, &n_more) == KS_OK &&
            (grown = realloc(ids, (n_ids + n_more + 1) * sizeof(*ids)))) {
            r.ids = ids = grown;
            if (ks_model_tokenize(l->model, c->answer, c->n_answer, false,
                                  false, ids + n_ids, n_more, &n_more) == KS_OK) {
                n_ids += n_more;
                r.n_ids = n_ids;
                fits = prompt_fits(l, n_ids, &r, msg, sizeof msg);
            }
        }
        if (frc > 0 && fits)
            fprintf(stderr, "kestrel chat: the local model goes on\n");
    }
    if (!fits) {
        if (o->json)
            print_json(l, &r);
        rc = finish(&r);
        goto out;
    }
    /* only tokens the session holds can be kept */
    while (keep < n_ids && keep < c->n_hist && keep < n_past &&
           ids[keep] == c->hist[keep])
        keep++;
    if (keep == n_ids)  /* always run at least one token for fresh logits */
        keep--;
    if ((st = ks_session_truncate(l->session, (uint32_t)keep)) != KS_OK) {
        rc = fail("chat: cannot reuse the conversation's KV cache");
        goto out;
    }
    c->n_hist = keep;
    for (size_t i = keep; i < n_ids; i++)
        if (!hist_push(c, ids[i])) {
            fprintf(stderr, "kestrel: error: no memory\n");
            rc = EXIT_ERROR;
            goto out;
        }
    c->first_gen = c->n_hist;
    gp.prompt = ids + keep;
    gp.n_prompt = n_ids - keep;
    gp.n_predict = o->n_predict < 0 ? 0 : (uint32_t)o->n_predict;
    gp.sampling = o->sampling;
    gp.on_token = chat_on_token;
    gp.user = c;
    gp.cancel = &g_cancel;
    spec_params(o, l, &gp);
    r.st = ks_session_generate(l->session, &gp);
    r.stop = gp.stop;
    r.gen = c->hist + c->first_gen;
    r.n_gen = c->n_hist - c->first_gen;
    if (r.st != KS_OK) {
        snprintf(msg, sizeof msg, "%s", ks_last_error());
        r.error = msg;
    }
    if (r.stop == KS_STOP_CALLBACK && !r.error) {
        r.stop = KS_STOP_ERROR;
        r.st = KS_ERR_NOMEM;
        r.error = "no memory for the answer";
    }
    if (o->json) {
        print_json(l, &r);
    } else {
        ks_stats stats;
        fputc('\n', stdout);
        fflush(stdout);
        ks_session_stats(l->session, &stats);
        fprintf(stderr, "[%u tokens, %.1f t/s, stop: %s]\n", stats.n_gen,
                stats.decode_tps, ks_stop_name(r.stop));
    }
    rc = finish(&r);
    if ((rc == EXIT_OK || rc == EXIT_INTERRUPTED) &&
        !chat_push(c, "assistant", c->answer ? c->answer : "")) {
        fprintf(stderr, "kestrel: error: no memory\n");
        rc = EXIT_ERROR;
    }
out:
    free(ids);
    return rc;
}

static int
cmd_chat(const opts *o)
{
    loaded l;
    chat c = { 0 };
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t got;
    unsigned long line_no = 0;
    int rc = 0;
    bool tty = isatty(STDIN_FILENO);

    if (o->json && !o->prompt) {
        fprintf(stderr, "kestrel chat: --json needs -p (one message, one "
                "answer)\nTry 'kestrel chat --help'.\n");
        return EXIT_USAGE;
    }
    if (load(o, &l) != 0)
        return EXIT_ERROR;
    if (o->system && !chat_push(&c, "system", o->system)) {
        fprintf(stderr, "kestrel: error: no memory\n");
        rc = EXIT_ERROR;
        goto out;
    }
    if (o->prompt) {
        if (!chat_push(&c, "user", o->prompt)) {
            fprintf(stderr, "kestrel: error: no memory\n");
            rc = EXIT_ERROR;
        } else {
            rc = chat_turn(o, &l, &c, o->prompt);
        }
        goto out;
    }
    if (tty)
        fprintf(stderr, "kestrel chat: type a message and press Enter; an "
                "empty line or Ctrl-D ends.\n");
    for (;;) {
        size_t len;

        if (tty)
            fputs("> ", stderr);
        /* whole lines of any length: one line, one message */
        if ((got = getline(&line, &line_cap, stdin)) < 0)
            break;
        line_no++;
        len = (size_t)got;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0)
            break;
        if (strlen(line) != len) {
            fprintf(stderr, "kestrel chat: error: line %lu holds a NUL byte; "
                    "a message is text\n", line_no);
            rc = EXIT_ERROR;
            break;
        }
        if (!chat_push(&c, "user", line)) {
            fprintf(stderr, "kestrel: error: no memory\n");
            rc = EXIT_ERROR;
            break;
        }
        g_cancel = 0;  /* a Ctrl-C while typing cancels nothing yet */
        rc = chat_turn(o, &l, &c, line);
        if (rc == EXIT_INTERRUPTED) {
            /* Ctrl-C stops this answer, not the chat */
            g_cancel = 0;
            rc = EXIT_OK;
            continue;
        }
        if (rc != EXIT_OK)
            break;
    }
    if (ferror(stdin)) {
        fprintf(stderr, "kestrel chat: error: reading stdin: %s\n",
                strerror(errno));
        rc = EXIT_ERROR;
    }
out:
    free(line);
    for (size_t i = 0; i < c.n_msgs; i++)
        free((char *)c.msgs[i].content);
    free(c.msgs);
    free(c.hist);
    free(c.answer);
    unload(&l);
    return rc;
}

/* ---- bench ---- */

static uint64_t
peak_rss(void)
{
    struct rusage ru;

    return getrusage(RUSAGE_SELF, &ru) == 0 ? (uint64_t)ru.ru_maxrss * 1024
                                            : 0;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double
median(const double *v, int n)
{
    double tmp[1000];

    memcpy(tmp, v, (size_t)n * sizeof(*v));
    qsort(tmp, (size_t)n, sizeof(*tmp), cmp_double);
    return n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int
bench_pp(loaded *l, const int32_t *toks, int n, double *tps)
{
    double t0;

    if (ks_session_truncate(l->session, 0) != KS_OK)
        return fail("bench");
    t0 = now_s();
    if (ks_session_eval(l->session, toks, (size_t)n, NULL) != KS_OK)
        return fail("bench");
    *tps = n / (now_s() - t0);
    return 0;
}

static int
bench_tg(loaded *l, const int32_t *toks, int n, double *tps)
{
    double t0;

    if (ks_session_truncate(l->session, 0) != KS_OK)
        return fail("bench");
    t0 = now_s();
    for (int i = 0; i < n; i++)
        if (ks_session_eval(l->session, &toks[i], 1, NULL) != KS_OK)
            return fail("bench");
    *tps = n / (now_s() - t0);
    return 0;
}

static void
json_samples(const char *key, const double *v, int n)
{
    printf("\"%s\":[", key);
    for (int i = 0; i < n; i++)
        printf("%s%.3f", i ? "," : "", v[i]);
    putchar(']');
}

/* One row of the table; the file name may hold anything. */
/* Speculation in bench: what one greedy generation measured. */
typedef struct spec_sample {
    double tps;          /* decode tokens/s */
    double accept;       /* accepted / drafted */
    double per_pass;     /* tokens emitted per verifying pass */
} spec_sample;

/* One row of the table; the file name may hold anything. With |spec_cols|
 * the row has the acceptance and tokens-per-pass columns, "-" unless |sp|
 * is a speculative measurement (sp->per_pass > 0). */
static void
bench_row(const char *base, const ks_model_desc *d, const loaded *l,
          int n_threads, const char *test, int n, double tps, bool spec_cols,
          const spec_sample *sp)
{
    fputs("| ", stdout);
    term_write(stdout, base, strlen(base));
    printf(" | %.2f MiB | %.2f M | %s | %d | %s%d | %.2f |",
           (double)d->file_bytes / 1048576.0, (double)d->n_params / 1e6,
           ks_session_backend_name(l->session), n_threads, test, n, tps);
    if (spec_cols && sp && sp->per_pass > 0)
        printf(" %.1f %% | %.2f |", 100.0 * sp->accept, sp->per_pass);
    else if (spec_cols)
        fputs(" - | - |", stdout);
    putchar('\n');
}

static const char bench_spec_prompt[] =
    "Write a Python function that returns the n-th Fibonacci number "
    "iteratively, with a docstring and type hints.";

/* Truncates the session, prefills |prompt| and generates |n| tokens
 * greedily (end of generation ignored) with speculation |mode| (OFF: the
 * target alone); |out| gets the decode speed and speculation stats. */
static int
bench_gen(const opts *o, loaded *l, const int32_t *prompt, size_t n_prompt,
          int n, ks_spec_mode mode, int32_t *gen, spec_sample *out)
{
    ks_generate_params gp = { 0 };
    ks_stats st;

    if (ks_session_truncate(l->session, 0) != KS_OK)
        return fail("bench");
    gp.prompt = prompt;
    gp.n_prompt = n_prompt;
    gp.n_predict = (uint32_t)n;
    gp.ignore_eog = true;
    gp.cancel = &g_cancel;
    gp.out_tokens = gen;
    gp.out_cap = (size_t)n;
    if (mode != KS_SPEC_OFF) {
        spec_params(o, l, &gp);
        gp.spec = mode;
    } else {
        gp.spec = KS_SPEC_OFF;
    }
    if (ks_session_generate(l->session, &gp) != KS_OK)
        return fail(mode == KS_SPEC_OFF ? "bench" : "bench (speculation)");
    ks_session_stats(l->session, &st);
    out->tps = st.decode_tps;
    out->accept = st.accept_rate;
    out->per_pass = st.tokens_per_verify;
    return 0;
}

/* bench --sustained: what the governor sustains. Generation restarts
 * from the prompt whenever the context fills; tokens are counted per
 * minute (the last bucket may be shorter). */
typedef struct sustained {
    double t0_s, end_s;
    double bucket_tokens[1440];
    uint32_t n_tokens;
} sustained;

static bool
sustained_token(void *user, int32_t tok, const char *piece, size_t len)
{
    sustained *su = user;
    double t = now_s() - su->t0_s;
    size_t b = (size_t)(t / 60.0);

    (void)tok;
    (void)piece;
    (void)len;
    if (b < sizeof su->bucket_tokens / sizeof su->bucket_tokens[0])
        su->bucket_tokens[b]++;
    su->n_tokens++;
    return t < su->end_s;
}

static int
bench_sustained(const opts *o)
{
    static sustained su;
    loaded l;
    opts lo = *o;
    ks_stats st;
    int32_t prompt[8];
    double secs, mean;
    size_t n_b;
    int rc = 0;

    if (lo.n_ctx == 0)
        lo.n_ctx = 512;
    if (load(&lo, &l) != 0)
        return 1;
    for (int i = 0; i < 8; i++)
        prompt[i] = 1 + i * 7;
    su.t0_s = now_s();
    su.end_s = o->sustained_s;
    while (now_s() - su.t0_s < su.end_s && !g_cancel) {
        ks_generate_params gp = { 0 };

        gp.prompt = prompt;
        gp.n_prompt = 8;
        gp.n_predict = ks_session_n_ctx(l.session) - 9;
        gp.ignore_eog = true;
        gp.cancel = &g_cancel;
        gp.on_token = sustained_token;
        gp.user = &su;
        if (ks_session_truncate(l.session, 0) != KS_OK ||
            ks_session_generate(l.session, &gp) != KS_OK) {
            rc = fail("bench --sustained");
            goto out;
        }
    }
    secs = now_s() - su.t0_s;
    mean = su.n_tokens / secs;
    n_b = (size_t)ceil(secs / 60.0);
    if (n_b > sizeof su.bucket_tokens / sizeof su.bucket_tokens[0])
        n_b = sizeof su.bucket_tokens / sizeof su.bucket_tokens[0];
    ks_session_stats(l.session, &st);
    if (o->json) {
        printf("{\"sustained_s\":%.3f,\"n_tokens\":%u,\"mean_tps\":%.3f,"
               "\"governed\":%s,\"tokens_per_j\":%.4f,\"energy_measured\":%s,"
               "\"paced_ms\":%.3f,\"threads_end\":%d,\"per_minute_tps\":[",
               secs, su.n_tokens, mean, st.governed ? "true" : "false",
               st.tokens_per_j, st.energy_measured ? "true" : "false",
               st.paced_ms, st.n_threads);
        for (size_t b = 0; b < n_b; b++)
            printf("%s%.3f", b ? "," : "", su.bucket_tokens[b] /
                   fmin(60.0, secs - 60.0 * (double)b));
        printf("]}\n");
    } else {
        printf("| minute | tokens/s |\n| ---: | ---: |\n");
        for (size_t b = 0; b < n_b; b++)
            printf("| %zu | %.2f |\n", b + 1, su.bucket_tokens[b] /
                   fmin(60.0, secs - 60.0 * (double)b));
        printf("| mean | %.2f |\n", mean);
        printf("%u tokens in %.1f s; %s; %.2f tokens/J (%s); paced %.1f s; "
               "%d threads at the end\n", su.n_tokens, secs,
               st.governed ? "governed" : "not governed (no limit and no "
               "passive trip)", st.tokens_per_j,
               st.energy_measured ? "measured" : "modelled",
               st.paced_ms / 1000.0, st.n_threads);
    }
out:
    unload(&l);
    return rc;
}

static int
cmd_bench(const opts *o)
{
    loaded l;
    opts lo = *o;
    ks_model_desc d;
    ks_stats stats;
    double pp[1000], tg[1000], pp_med = 0, tg_med = 0, warm;
    double sp_plain[1000], sp_tps[1000], sp_acc[1000], sp_pass[1000];
    double plain_med = 0, spec_med = 0, acc_med = 0, pass_med = 0;
    spec_sample smp;
    int32_t *toks = NULL, *gen = NULL, *ids = NULL;
    size_t n_ids = 0, n_text = 0;
    char *file_text = NULL;
    const char *text = bench_spec_prompt;
    int n_tok = o->n_pp > o->n_tg ? o->n_pp : o->n_tg;
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    int rc = 0;
    char path_buf[4096];
    const char *path = model_path(o, path_buf, sizeof path_buf);
    const char *base = strrchr(path, '/');
    const char *dbase = o->draft ? strrchr(o->draft, '/') : NULL;
    ks_spec_mode mode = o->spec;

    if (o->sustained_s > 0)
        return bench_sustained(o);
    base = base ? base + 1 : path;
    dbase = dbase ? dbase + 1 : o->draft;
    if (mode == KS_SPEC_AUTO)
        mode = o->draft ? KS_SPEC_DRAFT : KS_SPEC_OFF;
    if (mode == KS_SPEC_DRAFT && !o->draft)
        die_usage("bench", "%s needs --draft FILE", "--spec draft");
    if (mode != KS_SPEC_OFF && o->n_tg == 0)
        die_usage("bench", "%s: speculation is measured on generated tokens",
                  "-n 0");
    if (mode != KS_SPEC_OFF && o->prompt_file) {
        if (!(file_text = read_file(o->prompt_file, &n_text)))
            return 1;
        text = file_text;
    } else {
        n_text = strlen(text);
    }
    if (lo.n_ctx == 0) {
        lo.n_ctx = (uint32_t)n_tok + 16;
        /* a token takes at least one byte of the text, but BOS and a
         * space prefix may add one each; drafting looks draft_max ahead */
        if (mode != KS_SPEC_OFF &&
            lo.n_ctx < n_text + (size_t)o->n_tg + 80)
            lo.n_ctx = (uint32_t)(n_text + (size_t)o->n_tg + 80);
    }
    if (lo.n_batch == 0)
        lo.n_batch = o->n_pp > 0 ? (uint32_t)o->n_pp : 1;
    /* bench measures the kernels: no pacing unless a limit is asked for */
    if (lo.temp_limit_c == 0 && lo.power_limit_w == 0)
        lo.no_governor = true;
    if (mode == KS_SPEC_OFF)
        lo.draft = NULL;   /* --spec off: the draft is not loaded */
    if (load(&lo, &l) != 0) {
        free(file_text);
        return 1;
    }
    ks_model_describe(l.model, &d);
    toks = malloc((size_t)(n_tok ? n_tok : 1) * sizeof(*toks));
    gen = malloc((size_t)(o->n_tg ? o->n_tg : 1) * sizeof(*gen));
    if (!toks || !gen) {
        rc = fail("no memory");
        goto out;
    }
    for (int i = 0; i < n_tok; i++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        toks[i] = (int32_t)((rng >> 33) % d.n_vocab);
    }
    if (mode != KS_SPEC_OFF) {
        if (!(ids = tokenize(l.model, text, n_text, &n_ids))) {
            rc = 1;
            goto out;
        }
        if (n_ids + (size_t)o->n_tg + 1 > ks_session_n_ctx(l.session)) {
            fprintf(stderr, "kestrel bench: the prompt (%zu tokens) and -n %d "
                    "do not fit the context of %zu tokens; raise -c\n", n_ids,
                    o->n_tg, (size_t)ks_session_n_ctx(l.session));
            rc = 1;
            goto out;
        }
    }
    /* one warm-up of each, as llama-bench does */
    if ((o->n_pp && (rc = bench_pp(&l, toks, o->n_pp, &warm))) ||
        (o->n_tg && (rc = bench_tg(&l, toks, o->n_tg, &warm))) ||
        (mode != KS_SPEC_OFF &&
         (rc = bench_gen(o, &l, ids, n_ids, o->n_tg, mode, gen, &smp))))
        goto out;
    for (int r = 0; r < o->reps && !g_cancel; r++) {
        if ((o->n_pp && (rc = bench_pp(&l, toks, o->n_pp, &pp[r]))) ||
            (o->n_tg && (rc = bench_tg(&l, toks, o->n_tg, &tg[r]))))
            goto out;
        if (mode == KS_SPEC_OFF)
            continue;
        /* the target alone and with speculation, on the same prompt */
        if ((rc = bench_gen(o, &l, ids, n_ids, o->n_tg, KS_SPEC_OFF, gen,
                            &smp)))
            goto out;
        sp_plain[r] = smp.tps;
        if ((rc = bench_gen(o, &l, ids, n_ids, o->n_tg, mode, gen, &smp)))
            goto out;
        sp_tps[r] = smp.tps;
        sp_acc[r] = smp.accept;
        sp_pass[r] = smp.per_pass;
    }
    /* the profile comes from one more run of each, after the timed ones,
     * so that its clock reads do not touch the figures */
    if (o->profile && !g_cancel) {
        profile_take pts[2];
        int n_pts = 0;
        ks_session_profile_reset(l.session);
        if (o->n_pp) {
            pts[n_pts] = (profile_take){ "pp", o->n_pp, NULL, 0 };
            if ((rc = bench_pp(&l, toks, o->n_pp, &warm)) ||
                (rc = profile_read(l.session, &pts[n_pts++])))
                goto out;
        }
        if (o->n_tg) {
            pts[n_pts] = (profile_take){ "tg", o->n_tg, NULL, 0 };
            if ((rc = bench_tg(&l, toks, o->n_tg, &warm)) ||
                (rc = profile_read(l.session, &pts[n_pts++]))) {
                free(pts[0].rows);
                goto out;
            }
        }
        if ((rc = profile_report(o, pts, n_pts)))
            goto out;
    }
    if (o->n_pp)
        pp_med = median(pp, o->reps);
    if (o->n_tg)
        tg_med = median(tg, o->reps);
    if (mode != KS_SPEC_OFF) {
        plain_med = median(sp_plain, o->reps);
        spec_med = median(sp_tps, o->reps);
        acc_med = median(sp_acc, o->reps);
        pass_med = median(sp_pass, o->reps);
    }
    ks_session_stats(l.session, &stats);
    if (o->json) {
        printf("{\"model\":");
        json_string(stdout, base, strlen(base));
        printf(",\"arch\":\"%s\",\"model_bytes\":%llu,\"active_bytes\":%llu,"
               "\"n_params\":%llu,"
               "\"backend\":\"%s\",\"threads\":%d,\"n_prompt\":%d,"
               "\"n_gen\":%d,\"repetitions\":%d,\"pp_tps\":%.3f,"
               "\"tg_tps\":%.3f,", d.arch, (unsigned long long)d.file_bytes,
               (unsigned long long)d.active_bytes,
               (unsigned long long)d.n_params, ks_session_backend_name(l.session),
               o->n_threads ? o->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN),
               o->n_pp, o->n_tg, o->reps, pp_med, tg_med);
        json_samples("pp_samples", pp, o->n_pp ? o->reps : 0);
        putchar(',');
        json_samples("tg_samples", tg, o->n_tg ? o->reps : 0);
        if (mode != KS_SPEC_OFF) {
            printf(",\"spec\":{\"mode\":\"%s\",\"draft\":", ks_spec_name(mode));
            if (mode == KS_SPEC_DRAFT)
                json_string(stdout, dbase, strlen(dbase));
            else
                fputs("null", stdout);
            printf(",\"n_prompt_text\":%zu,\"plain_tps\":%.3f,"
                   "\"spec_tps\":%.3f,\"speedup\":%.4f,\"accept_rate\":%.4f,"
                   "\"tokens_per_verify\":%.4f,", n_ids, plain_med, spec_med,
                   plain_med > 0 ? spec_med / plain_med : 0.0, acc_med,
                   pass_med);
            json_samples("plain_samples", sp_plain, o->reps);
            putchar(',');
            json_samples("spec_samples", sp_tps, o->reps);
            putchar('}');
        }
        json_experts(stdout, l.model);
        printf(",\"load_ms\":%.3f,\"peak_rss_bytes\":%llu}\n", d.load_ms,
               (unsigned long long)peak_rss());
    } else {
        printf("| model | size | params | backend | threads | test | t/s |%s\n"
               "| --- | ---: | ---: | --- | ---: | ---: | ---: |%s\n",
               mode != KS_SPEC_OFF ? " accept | tokens/pass |" : "",
               mode != KS_SPEC_OFF ? " ---: | ---: |" : "");
        if (o->n_pp)
            bench_row(base, &d, &l, o->n_threads, "pp", o->n_pp, pp_med,
                      mode != KS_SPEC_OFF, NULL);
        if (o->n_tg)
            bench_row(base, &d, &l, o->n_threads, "tg", o->n_tg, tg_med,
                      mode != KS_SPEC_OFF, NULL);
        if (mode != KS_SPEC_OFF) {
            spec_sample plain = { plain_med, 0, 0 };
            spec_sample spec = { spec_med, acc_med, pass_med };
            bench_row(base, &d, &l, o->n_threads, "gen", o->n_tg, plain_med,
                      true, &plain);
            bench_row(base, &d, &l, o->n_threads, ks_spec_name(mode),
                      o->n_tg, spec_med, true, &spec);
        }
        fprintf(stderr, "kestrel bench: median of %d runs; load %.1f ms; "
                "peak RSS %.1f MiB\n", o->reps, d.load_ms,
                (double)peak_rss() / 1048576.0);
        print_experts(l.model);
        if (mode != KS_SPEC_OFF) {
            fprintf(stderr, "kestrel bench: gen%d and %s%d: greedy after a "
                    "%zu-token text prompt; speculation %.2fx the target "
                    "alone", o->n_tg, ks_spec_name(mode), o->n_tg, n_ids,
                    plain_med > 0 ? spec_med / plain_med : 0.0);
            if (mode == KS_SPEC_DRAFT) {
                fputs(" (draft ", stderr);
                term_write(stderr, dbase, strlen(dbase));
                fputc(')', stderr);
            }
            fputc('\n', stderr);
        }
    }
out:
    free(ids);
    free(gen);
    free(toks);
    free(file_text);
    unload(&l);
    return rc;
}

/* ---- info, quantize ---- */

/* Text reports (info, devices) quote the model file and sysfs: they are
 * written to memory first, then shown with control bytes escaped. JSON
 * escapes its own strings. */
static int
print_report(ks_status (*report)(void *arg, FILE *out, unsigned flags),
             void *arg, bool json, unsigned json_flag)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *mem;
    ks_status st;

    if (json)
        return report(arg, stdout, json_flag) == KS_OK ? EXIT_OK : fail(NULL);
    if (!(mem = open_memstream(&buf, &n))) {
        fprintf(stderr, "kestrel: error: no memory for the report\n");
        return EXIT_ERROR;
    }
    st = report(arg, mem, 0);
    fclose(mem);
    term_write(stdout, buf, n);
    free(buf);
    return st == KS_OK ? EXIT_OK : fail(NULL);
}

static ks_status
info_report(void *arg, FILE *out, unsigned flags)
{
    return ks_inspect_file(arg, out, flags);
}

static ks_status
devices_report(void *arg, FILE *out, unsigned flags)
{
    (void)arg;
    return ks_devices_print(out, flags);
}

static int
cmd_info(const opts *o)
{
    const char *path = o->model ? o->model : (o->n_pos ? o->pos[0] : NULL);

    if (!path) {
        fprintf(stderr, "kestrel info: no file given\nTry 'kestrel info "
                "--help'.\n");
        return EXIT_USAGE;
    }
    return print_report(info_report, (void *)path, o->json, KS_INSPECT_JSON);
}

static int
cmd_quantize(const opts *o)
{
    if (o->n_pos != 3) {
        fprintf(stderr, "kestrel quantize: expected INPUT OUTPUT TYPE\n"
                "Try 'kestrel quantize --help'.\n");
        return 2;
    }
    if (ks_quantize_file(o->pos[0], o->pos[1], o->pos[2], o->n_threads) !=
        KS_OK)
        return fail(NULL);
    return 0;
}

/* Starting a session on Vulkan generates, compiles (or finds in the disk
 * cache) and builds every kernel the model needs: that is the whole job. */
static int
cmd_compile(const opts *o)
{
    opts lo = *o;
    loaded l;
    ks_stats st;

    if (lo.backend == KS_BACKEND_AUTO)
        lo.backend = KS_BACKEND_VULKAN;
    lo.no_governor = true;
    if (load(&lo, &l) != 0)
        return 1;
    ks_session_stats(l.session, &st);
    printf("%s: placement %s; %u kernels compiled, %u found in the disk cache; set-up "
           "%.1f ms\n", ks_session_backend_name(l.session), ks_session_placement(l.session),
           st.n_shader_compiled, st.n_shader_hits, st.backend_setup_ms);
    unload(&l);
    return 0;
}

int
main(int argc, char **argv)
{
    const char *cmd;
    opts o;

    if (argc < 2 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "--help") == 0) {
        help(NULL);
        return argc < 2 ? 2 : 0;
    }
    cmd = argv[1];
    if (strcmp(cmd, "serve") == 0) {
#ifdef KESTREL_SERVE
        return ks_cli_serve(argc - 2, argv + 2);
#else
        fprintf(stderr, "kestrel: 'serve' is not built in: this build did "
                "not find libmicrohttpd and cJSON (Debian: libmicrohttpd-dev "
                "libcjson-dev)\n");
        return 1;
#endif
    }
    if (strcmp(cmd, "perplexity") == 0)
        return ks_cli_perplexity(argc - 2, argv + 2);
    if (strcmp(cmd, "calibrate") == 0)
        return ks_cli_calibrate(argc - 2, argv + 2);
    if (strcmp(cmd, "prune") == 0)
        return ks_cli_prune(argc - 2, argv + 2);
    if (strcmp(cmd, "run") && strcmp(cmd, "chat") && strcmp(cmd, "bench") &&
        strcmp(cmd, "info") && strcmp(cmd, "quantize") &&
        strcmp(cmd, "devices") && strcmp(cmd, "compile")) {
        fprintf(stderr, "kestrel: unknown command '%s'\nTry 'kestrel "
                "--help'.\n", cmd);
        return 2;
    }
    parse(cmd, argc - 2, argv + 2, &o);
    if (strcmp(cmd, "run") == 0 && getenv("KESTREL_PROFILE") &&
        strcmp(getenv("KESTREL_PROFILE"), "0") && *getenv("KESTREL_PROFILE"))
        o.profile = true;
    signal(SIGINT, on_sigint);
    if (strcmp(cmd, "run") == 0)
        return cmd_run(&o);
    if (strcmp(cmd, "chat") == 0)
        return cmd_chat(&o);
    if (strcmp(cmd, "bench") == 0)
        return cmd_bench(&o);
    if (strcmp(cmd, "info") == 0)
        return cmd_info(&o);
    if (strcmp(cmd, "devices") == 0)
        return print_report(devices_report, NULL, o.json, KS_DEVICES_JSON);
    if (strcmp(cmd, "compile") == 0)
        return cmd_compile(&o);
    return cmd_quantize(&o);
}
