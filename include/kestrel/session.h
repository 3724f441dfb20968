/* Sessions: one conversation's KV cache and scratch memory over a model.
 *
 * The contract. A session holds a sequence of tokens, ks_session_n_past()
 * of them: every token given to eval or to generate as a prompt, and
 * every token generate passed to on_token / out_tokens. A token that
 * ended generation (end-of-generation, not emitted) is not held.
 * Truncate forgets the tokens past a position. After ANY sequence of
 * generate, eval and truncate calls, the session behaves exactly as a
 * fresh session that was given the held tokens with one eval: the next
 * generate with no prompt samples from the last held token's logits
 * (recomputed when a truncate dropped them), and a prompt continues after
 * the held tokens. The sampler's repeat penalty sees the held tokens too.
 * The keys and values of held tokens may be computed late: the token
 * generate emitted last runs through the model at the next call, and a
 * prompt that a cancel or an error cut short resumes there.
 * A call that fails leaves the tokens it appended held (so a retry
 * resumes) except where it says nothing is appended.
 *
 * A session is used by one thread at a time; several sessions on one model
 * may run on several threads at once. Everything a session needs is
 * allocated at create: generating a token allocates nothing. */
#ifndef KESTREL_SESSION_H
#define KESTREL_SESSION_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "kestrel/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ks_session ks_session;

typedef enum ks_kv_type {
    KS_KV_F16 = 0,
    KS_KV_F32,
} ks_kv_type;

typedef struct ks_session_params {
    uint32_t   n_ctx;      /* 0: min(model's training context, 4096) */
    uint32_t   n_batch;    /* prefill tokens per forward pass; 0: 512, as
                              llama.cpp (its results depend on it) */
    ks_kv_type kv_type;    /* 0: KS_KV_F16 */
    int32_t    n_threads;  /* 0: the runtime's */
    const char *trace_path; /* CSV trace, one line per decoded token: time,
                               tokens/s, temperature, power, budget,
                               threads, pacing, governor state; NULL: none */
    uint32_t   n_layers;   /* layers to run; 0: all. L < the model's: run
                              layers [0, L), then the final norm and the
                              shared output head, so the logits are those
                              of an exit after layer L - 1 (self-drafting,
                              early exit, calibration); on the CPU only */
    bool        profile;    /* time every op of every layer on every target
                               (ks_session_profile); costs two clock reads
                               per op */
} ks_session_params;

KS_API ks_status ks_session_create(ks_model *m, const ks_session_params *p,
                                   ks_session **out);
KS_API void      ks_session_destroy(ks_session *s);  /* NULL is a no-op */

/* Tokens held in the KV cache; 0 for a NULL session. */
KS_API uint32_t ks_session_n_past(const ks_session *s);
KS_API uint32_t ks_session_n_ctx(const ks_session *s);

/* Forgets every position >= n_past (n_past <= ks_session_n_past;
 * KS_ERR_INVALID_ARG otherwise, and nothing changes). */
KS_API ks_status ks_session_truncate(ks_session *s, uint32_t n_past);

/* Appends |n| tokens and runs them (and any held token not yet run)
 * through the model in batches. When logits is not NULL it receives the
 * logits of the last token (n_vocab floats). KS_ERR_CONTEXT_FULL when the
 * tokens do not fit and KS_ERR_INVALID_ARG for an id outside the
 * vocabulary: nothing is appended then. */
KS_API ks_status ks_session_eval(ks_session *s, const int32_t *tokens,
                                 size_t n, float *logits);

/* As ks_session_eval, and |logits| (not NULL) receives the logits of
 * every one of the |n| tokens: logits[i * n_vocab ..] are those that
 * follow tokens[i], bitwise what evaluating the tokens one at a time
 * gives (each token takes the one-token kernels; a weight block is
 * loaded once per batch of n_batch for all its tokens). This is the
 * verification step of speculative decoding: truncate drops the tokens
 * that were not accepted, and the session goes on as if they had never
 * been given.
 * KS_ERR_UNSUPPORTED, with nothing run, when the target that computes
 * the logits cannot give them for every token (the Vulkan target today);
 * the tokens stay held then and the next eval or generate runs them. */
KS_API ks_status ks_session_eval_all(ks_session *s, const int32_t *tokens,
                                     size_t n, float *logits);

/* Whether eval_all can run on this session's placement (NULL: yes), else
 * why not, in words. */
KS_API const char *ks_session_eval_all_unsupported(const ks_session *s);

typedef struct ks_sampling {
    float    temp;            /* <= 0: greedy */
    int32_t  top_k;           /* 0: off */
    float    top_p;           /* 0 or >= 1: off */
    float    min_p;           /* 0: off */
    float    repeat_penalty;  /* 0 or 1: off */
    int32_t  repeat_last_n;   /* 0: 64 */
    uint64_t seed;
} ks_sampling;

/* Called with each generated token and its text as it comes; return false
 * to stop. The piece may be part of a UTF-8 character. */
typedef bool (*ks_token_fn)(void *user, int32_t token, const char *piece,
                            size_t len);

/* Why ks_session_generate stopped (ks_generate_params.stop). */
typedef enum ks_stop {
    KS_STOP_NONE = 0,   /* it did not run */
    KS_STOP_EOG,        /* the model ended its turn (end-of-generation) */
    KS_STOP_LENGTH,     /* n_predict tokens were generated */
    KS_STOP_CALLBACK,   /* on_token returned false */
    KS_STOP_CONTEXT,    /* the context is full (KS_ERR_CONTEXT_FULL) */
    KS_STOP_CANCELLED,  /* the cancel flag (KS_ERR_CANCELLED) */
    KS_STOP_ERROR,      /* any other error: see the status */
} ks_stop;

/* "none", "eog", "length", "callback", "context", "cancelled", "error". */
KS_API const char *ks_stop_name(ks_stop stop);

/* Speculative decoding (ks_generate_params.spec). Greedy (sampling.temp
 * <= 0; the repeat penalty may be on): the tokens, the stop reason and
 * the tokens held afterwards are those of plain greedy decoding, bit for
 * bit (verification computes every token as decoding it alone would).
 * Sampled (temp > 0, with any top-k, top-p, min-p and repeat penalty):
 * lossless rejection sampling (Leviathan et al., Chen et al. 2023). The
 * draft samples from q, its logits through the same sampler chain (the
 * penalty sees the same tokens); a drafted x is kept with probability
 * min(1, p(x) / q(x)), p the target's distribution through the chain,
 * else the token is drawn from max(0, p - q) normalized; the row after
 * the last kept draft gives a token from p. The tokens follow the
 * target's distribution exactly, though for one seed they differ from
 * plain sampling's. Lookup drafts count as q = 1 at the drafted token.
 * Each round drafts k tokens,
 * verifies them with one pass of the target (ks_session_eval_all), emits
 * the longest prefix the target agrees with plus the target's own next
 * token, and truncates the rest from the target and the draft. k is
 * chosen every round, in [draft_min, draft_max], for the most expected
 * tokens per millisecond, from the measured acceptance rate, the
 * measured time of a draft step and of a verifying pass of k + 1 tokens
 * (a line fitted over the rounds); while drafting does not pay, k is 0
 * with one token drafted every 16th round to keep measuring. Prompt
 * lookup (mode lookup, and mode draft with an adaptive length, before
 * the draft model) drafts where the last 3 or 2 held tokens occurred
 * before: the tokens that followed that occurrence (past the end, the
 * copy repeats its period), as many as pay for their verifying rows at
 * lookup's own measured acceptance; with a fixed length, mode lookup
 * takes 1-token matches too and mode draft never looks up. A placement
 * that cannot verify (the output head on Vulkan) is refused at the start
 * with KS_ERR_UNSUPPORTED.
 * Under the governor, drafting runs only where it raises the expected
 * tokens per joule: the governor is stepped once per round with the
 * round's tokens and its whole busy time (drafting and verifying); while
 * a limit binds (power cap, temperature, battery policy, no temperature
 * reading), the chosen length must beat plain decoding's expected tokens
 * per computing ms by 1.25x (a verifying pass draws more power per ms
 * than a one-token step), and no round drafts just to keep measuring;
 * within 5 C of the critical trip nothing is drafted. */
typedef enum ks_spec_mode {
    KS_SPEC_AUTO = 0,  /* KS_SPEC_DRAFT when draft is set, else off */
    KS_SPEC_OFF,
    KS_SPEC_DRAFT,     /* draft with the draft session's model */
    KS_SPEC_LOOKUP,    /* draft from n-gram matches in the held tokens */
    KS_SPEC_SELF,      /* draft with the model's own first layers: |draft|
                          is a session on the same model whose n_layers
                          (ks_session_params) is below the model's, so its
                          logits come from an exit through the final norm
                          and the shared head; the full model verifies
                          (kestrel calibrate measures which L pays) */
} ks_spec_mode;

/* "auto", "off", "draft", "lookup", "self" ("unknown" for another value);
 * ks_spec_parse: the mode of a name, false when it names none or a
 * pointer is NULL. */
KS_API const char *ks_spec_name(ks_spec_mode m);
KS_API bool ks_spec_parse(const char *name, ks_spec_mode *out);

typedef struct ks_generate_params {
    const int32_t     *prompt;     /* appended after what the session holds */
    size_t             n_prompt;
    uint32_t           n_predict;  /* 0: until end of generation or context */
    ks_sampling        sampling;   /* all zero: greedy */
    ks_token_fn        on_token;   /* may be NULL */
    void              *user;
    const volatile int *cancel;    /* when it reads non-zero: stop, status
                                      KS_ERR_CANCELLED; may be NULL */
    bool               ignore_eog; /* keep going past end-of-generation */
    int32_t           *out_tokens; /* optional: the generated ids */
    size_t             out_cap;
    size_t             n_out;      /* set: how many tokens were generated */
    ks_stop            stop;       /* set: why generation stopped */
    /* Speculation: all zero is off. */
    ks_spec_mode       spec;
    ks_session        *draft;      /* KS_SPEC_DRAFT: a session on a model with
                                      the target's vocabulary (it may hold
                                      anything: generate truncates it to the
                                      common prefix and feeds it the rest) */
    uint32_t           draft_max;  /* most tokens drafted per round; 0: 8 */
    uint32_t           draft_min;  /* fewest (<= draft_max): the length chosen
                                      from the measured acceptance and costs
                                      is kept at least this; draft_min =
                                      draft_max fixes it. 0: adaptive may
                                      draft nothing when it does not pay */
    float              draft_p_min;/* stop drafting when the draft's top
                                      probability is below it; 0: 0.5,
                                      negative: never */
    /* Structured output: NULL is off. Otherwise a JSON schema (the text,
     * NUL-terminated, read at the start of the call) and the tokens this
     * call generates form one compact JSON value (no whitespace) that the
     * schema accepts: at each step the tokens whose text would leave the
     * output no longer a prefix of such a value get -inf logits before
     * sampling (greedy and temperature alike), end-of-generation is
     * allowed only once the value is whole, and generation stops (stop
     * KS_STOP_EOG) when nothing else may follow. "{\"type\":\"object\"}"
     * is OpenAI's json_object mode (any object); "{}" any JSON value. The
     * subset: ks_json_schema_check. The output is whole only when the call
     * stops at KS_STOP_EOG; n_predict, a callback or the context can cut
     * it short. Not with speculation (KS_ERR_UNSUPPORTED); an unsupported
     * schema fails the call before anything is appended. The logits the
     * session keeps are not masked. */
    const char        *json_schema;
    /* Early exit: lossy, off at 0. Greedy decoding in which |draft| (a
     * session on the same model with fewer layers, n_layers = L) runs
     * every token, and when its top probability through the shared head
     * is at least early_exit (0 < T <= 1) its top token is the next one
     * without running layers L.. of the full model; otherwise the full
     * model runs the tokens it skipped and the new one in one pass, and
     * its top token is the next. Skipped layers get their keys and values
     * that way, bit for bit as a full run's, so only the tokens chosen by
     * an exit differ from plain greedy decoding. Not with sampling, the
     * repeat penalty, speculation or json_schema (KS_ERR_UNSUPPORTED). */
    float              early_exit;
    /* Remote verification: NULL is off. Otherwise the root URL of a
     * `kestrel serve` holding the target (POST URL/v1/kestrel/verify):
     * this session drafts greedily with its model, the server verifies,
     * and the tokens are those of greedy decoding with the target. The
     * draft length (in [draft_min, draft_max], 0: 1 and 16) grows with the
     * measured round trip. A server that cannot be reached, answers later
     * than verify_timeout_ms (0: 3000) plus 50 ms for each context token it
     * has not run yet (a first round prefills the whole context), fails or
     * answers garbage is given
     * up for the rest of the call, which goes on with the local model
     * (verify_stats says so); nothing emitted is lost. Greedy only
     * (sampling.temp <= 0), not with json_schema or spec:
     * KS_ERR_UNSUPPORTED. KS_ERR_UNSUPPORTED too when the library was
     * built without libcurl. */
    const char        *verify_url;
    uint32_t           verify_timeout_ms;
    struct ks_verify_stats *verify_stats;  /* optional: filled */
    /* Confidence: NULL is off. out_entropy[i] is set to the entropy, in
     * nats, of the model's distribution (the softmax of its logits, before
     * temperature, truncation or a schema's mask) that generated token i
     * was sampled from (the target's, with speculation), for the first
     * entropy_cap tokens. Left as is where the token does not come from
     * this session's logits (remote verification, early exit). */
    float             *out_entropy;
    size_t             entropy_cap;
} ks_generate_params;

/* What remote verification did in one generate call. */
typedef struct ks_verify_stats {
    uint32_t n_rounds;      /* requests the server answered */
    uint32_t n_drafted;     /* drafted tokens it was sent */
    uint32_t n_accepted;    /* of them, accepted */
    uint32_t n_remote;      /* tokens emitted from its answers */
    uint32_t n_local;       /* tokens generated locally after it was lost */
    double   rtt_ms;        /* mean time of an answered request */
    double   draft_ms;      /* time spent drafting */
    bool     lost;          /* the server was given up */
    char     why[200];      /* why, in words ("" when not lost) */
} ks_verify_stats;

/* KS_OK when |schema| is a JSON schema that json_schema supports, else
 * the status and ks_last_error() naming the keyword or the fault. The
 * subset: type (object, array, string, number, integer, boolean, null;
 * one type, not a list), properties, required, additionalProperties
 * (false only; an object with properties allows no others either way),
 * items, minItems, maxItems, minLength, maxLength, enum and const (of
 * strings, numbers, booleans, null), nesting to depth 30; title,
 * description, $schema, $id, default and examples are ignored. Numbers
 * have at most 15 integer digits (exact as doubles), 16 fraction and 3
 * exponent digits. Every property appears at most once, in any order. */
KS_API ks_status ks_json_schema_check(const char *schema);

/* Appends and prefills the prompt (the cancel flag is read between
 * batches), then samples and decodes until n_predict tokens, an
 * end-of-generation token (not emitted to on_token), a callback's false,
 * the cancel flag or a full context (KS_ERR_CONTEXT_FULL after the tokens
 * that fitted). p->stop says which. Logits that are NaN or infinite stop
 * it with KS_ERR_CORRUPT instead of sampling garbage. A device that is
 * lost mid-run does not stop it: the layers move to the CPU, which
 * rebuilds their KV cache from the held tokens, and generation goes on
 * with the tokens a CPU-only run gives (stats: n_fallbacks, fallback).
 * p->prompt may be NULL only when n_prompt is 0; on_token, cancel and
 * out_tokens may be NULL. */
KS_API ks_status ks_session_generate(ks_session *s, ks_generate_params *p);

typedef struct ks_stats {
    double   load_ms;        /* the model's load time */
    uint32_t n_prompt;       /* tokens prefilled by the last generate */
    uint32_t n_gen;          /* tokens generated by the last generate */
    double   prefill_ms;
    double   decode_ms;
    double   prefill_tps;
    double   decode_tps;
    uint64_t peak_rss_bytes; /* of the whole process */
    uint64_t kv_bytes;       /* the session's KV cache */
    bool     governed;       /* the governor ran */
    double   paced_ms;       /* time the governor made decoding wait */
    int32_t  n_threads;      /* threads in use now (the governor may lower
                                them between tokens) */
    /* Vulkan backend only: kernels found in the disk cache and compiled
     * while the session started, and the time that start took. */
    uint32_t n_shader_hits;
    uint32_t n_shader_compiled;
    double   backend_setup_ms;
    /* Times a device fault moved layers to the CPU in this session, and
     * the last such fault in words ("" when none). */
    uint32_t n_fallbacks;
    char     fallback[160];
    /* Speculative decoding (the last generate): tokens drafted and
     * accepted, passes of the target that verified them, the acceptance
     * rate (accepted / drafted), the tokens emitted per verifying pass,
     * and the time spent drafting and verifying. */
    uint32_t n_drafted;
    uint32_t n_lookup;       /* of n_drafted, those prompt lookup drafted
                                (with a draft model and an adaptive length,
                                lookup drafts first where the last 2 or 3
                                tokens occurred before, when its measured
                                acceptance makes that pay) */
    uint32_t n_accepted;
    uint32_t n_verify;
    double   accept_rate;
    double   tokens_per_verify;
    double   draft_ms;
    double   verify_ms;
    double   sample_ms;      /* choosing tokens (the sampler; speculation's
                                acceptance), plain decoding too */
    /* Early exit (the last generate): tokens an exit decided (the other
     * generated tokens were decided by the full model). */
    uint32_t n_early_exit;
    /* Governed sessions: tokens per joule of system energy since the
     * session's first governed token, from RAPL, hwmon or battery power
     * where the device has a sensor (energy_measured), else from the
     * governor's power model; 0 before the first control period. */
    double   tokens_per_j;
    bool     energy_measured;
} ks_stats;

/* A NULL |s| zeroes *out. */
KS_API void ks_session_stats(const ks_session *s, ks_stats *out);

/* Thermal headroom, after Android's getThermalHeadroom: how close the
 * device will be to its temperature limit in |forecast_s| seconds (0:
 * now) if the present load holds; 0 at the idle temperature, 1 at or past
 * the limit. The forecast comes from the plant that the session's
 * governor identifies online from the power and temperature it sees
 * (thermal resistance, two time constants); until it has one, the latest
 * reading, with idle taken as 25 °C. NAN when no governor runs, no
 * temperature is read, or |forecast_s| is negative or not finite. Call it
 * from the thread that generates, or between generates. */
KS_API double ks_thermal_headroom(const ks_session *s, double forecast_s);

/* The temperature forecast behind it, in °C; NAN as above. */
KS_API double ks_thermal_forecast_c(const ks_session *s, double forecast_s);

/* Called with the new headroom when it crosses a threshold. */
typedef void (*ks_headroom_fn)(void *user, double headroom);

/* Asks for |fn| whenever the headroom |forecast_s| ahead crosses
 * |threshold| either way (and once if it is first seen above it); it
 * counts as back below only 0.02 under the threshold. Runs on
 * the generating thread after a governor control period (about every
 * 500 ms); it must not call back into the session. NULL |fn| turns it
 * off. KS_ERR_INVALID_ARG: threshold outside 0..1, forecast_s outside
 * 0..600. */
KS_API ks_status ks_thermal_headroom_notify(ks_session *s, double threshold,
                                            double forecast_s,
                                            ks_headroom_fn fn, void *user);

/* "cpu", "vulkan", or "split" when the layers run on several targets:
 * where this session's model runs (with backend auto, what auto chose). */
KS_API const char *ks_session_backend_name(const ks_session *s);

/* The placement, e.g. "cpu:0-9,vulkan:10-29+head". Both give "" for a NULL
 * session. */
KS_API const char *ks_session_placement(const ks_session *s);

/* One line of the op profile (ks_session_params.profile): what the ops
 * of one kind in one layer on one target took since the session began or
 * the last ks_session_profile_reset. Bytes are those the op reads and
 * writes (weights, activations, KV cache) as the target counts them, so
 * bytes / ns is the bandwidth it achieved. */
typedef struct ks_profile_row {
    char        target[16]; /* the target kind: "cpu", "vulkan" */
    const char *op;         /* "norm", "qkv", "rope_kv", "attn", "attn_out",
                               "add", "gate_up", "act", "down", "moe" (the
                               experts' FFN; bytes not counted), "head";
                               static */
    int32_t     layer;      /* -1: outside the layers (the head) */
    uint64_t    calls;
    uint64_t    ns;
    uint64_t    bytes;
} ks_profile_row;

/* Count-then-fill: with |rows| NULL, *n receives the number of rows;
 * else up to *n rows are written (by target, then layer with -1 last,
 * then op) and *n receives how many. Ops that never ran have no row. A
 * session made without profile has none (*n = 0). */
KS_API ks_status ks_session_profile(const ks_session *s, ks_profile_row *rows, size_t *n);
/* Zeroes the profile (NULL is a no-op). */
KS_API void      ks_session_profile_reset(ks_session *s);

#ifdef __cplusplus
}
#endif
#endif
