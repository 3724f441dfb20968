/* Chat formats without a Jinja interpreter. ks_chat_detect reads the turn
 * markers out of tokenizer.chat_template (or guesses from the architecture),
 * ks_chat_format writes the family's format through one small writer that
 * counts always and copies only while the caller's buffer has room, so the
 * same pass serves both halves of count-then-fill. The formats follow the
 * templates the models ship: SmolLM2/Qwen2.5 (ChatML), Gemma 3, Llama 3. */
#include "runtime/chat.h"

#include <stdint.h>
#include <string.h>

#include "driver/base.h"

static bool
name_in(const char *name, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(name, *list) == 0)
            return true;
    return false;
}

ks_chat_family
ks_chat_detect(const char *template_text, const char *arch)
{
    /* Architectures whose every published chat model uses one format.
     * Exact names: gemma4, for one, has a format of its own. */
    static const char *const chatml_archs[] = {
        "qwen2", "qwen2moe", "qwen3", "qwen3moe", NULL,
    };
    static const char *const gemma_archs[] = {
        "gemma", "gemma2", "gemma3", "gemma3n", NULL,
    };

    if (template_text && template_text[0]) {
        if (strstr(template_text, "<|im_start|>"))
            return KS_CHAT_CHATML;
        if (strstr(template_text, "<start_of_turn>"))
            return KS_CHAT_GEMMA;
        if (strstr(template_text, "<|start_header_id|>"))
            return KS_CHAT_LLAMA3;
        /* A template we cannot read: guessing from the architecture would
         * risk a wrong format, and plain text at least does no harm. */
        return KS_CHAT_PLAIN;
    }
    /* No template (base models such as gemma-3-270m ship none). "llama"
     * alone says nothing: SmolLM2 and stories260K are both llama. */
    if (arch && name_in(arch, chatml_archs))
        return KS_CHAT_CHATML;
    if (arch && name_in(arch, gemma_archs))
        return KS_CHAT_GEMMA;
    return KS_CHAT_PLAIN;
}

const char *
ks_chat_family_name(ks_chat_family f)
{
    switch (f) {
    case KS_CHAT_PLAIN: return "plain";
    case KS_CHAT_CHATML: return "chatml";
    case KS_CHAT_GEMMA: return "gemma";
    case KS_CHAT_LLAMA3: return "llama3";
    }
    return "unknown";
}

const char *
ks_chat_end_marker(ks_chat_family f)
{
    switch (f) {
    case KS_CHAT_CHATML: return "<|im_end|>";
    case KS_CHAT_GEMMA: return "<end_of_turn>";
    case KS_CHAT_LLAMA3: return "<|eot_id|>";
    case KS_CHAT_PLAIN: break;
    }
    return NULL;
}

/* ---- formatting --------------------------------------------------------- */

/* Writes either text (buf) or segments (segs), counting always. */
typedef struct writer {
    char        *buf;     /* NULL: count only */
    size_t       cap;
    size_t       len;     /* bytes the full text needs so far */
    ks_chat_seg *segs;    /* NULL: no segments kept */
    size_t       seg_cap;
    size_t       n_segs;  /* segments the full text needs so far */
} writer;

static void
put_seg(writer *w, const char *s, size_t n, bool marker)
{
    if (n == 0)
        return;
    if (w->buf && n < w->cap && w->len < w->cap - n)
        memcpy(w->buf + w->len, s, n);
    w->len += n;
    if (w->segs && w->n_segs < w->seg_cap) {
        w->segs[w->n_segs].text = s;
        w->segs[w->n_segs].len = n;
        w->segs[w->n_segs].marker = marker;
    }
    w->n_segs++;
}

/* Text: message content, roles, the default system, the newlines around
 * them. Never read as special tokens. */
static void
put_n(writer *w, const char *s, size_t n)
{
    put_seg(w, s, n, false);
}

static void
put(writer *w, const char *s)
{
    put_n(w, s, strlen(s));
}

/* A turn marker of the family ("<|im_start|>", ...): the only text that
 * may become a special token. */
static void
mark(writer *w, const char *s)
{
    put_seg(w, s, strlen(s), true);
}

static bool
is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
           c == '\f';
}

/* Jinja's | trim (Python str.strip) on ASCII whitespace. */
static void
put_trimmed(writer *w, const char *s)
{
    size_t n = strlen(s);

    while (n > 0 && is_space(*s)) {
        s++;
        n--;
    }
    while (n > 0 && is_space(s[n - 1]))
        n--;
    put_n(w, s, n);
}

static bool
is_role(const ks_chat_msg *m, const char *role)
{
    return strcmp(m->role, role) == 0;
}

static void
format_chatml(writer *w, const ks_chat_msg *msgs, size_t n, bool gen,
              const char *def_sys)
{
    if (def_sys && (n == 0 || !is_role(&msgs[0], "system"))) {
        mark(w, "<|im_start|>");
        put(w, "system\n");
        put(w, def_sys);
        mark(w, "<|im_end|>");
        put(w, "\n");
    }
    for (size_t i = 0; i < n; i++) {
        mark(w, "<|im_start|>");
        put(w, msgs[i].role);
        put(w, "\n");
        put(w, msgs[i].content);
        mark(w, "<|im_end|>");
        put(w, "\n");
    }
    if (gen) {
        mark(w, "<|im_start|>");
        put(w, "assistant\n");
    }
}

/* Gemma has no system role: the Gemma 3 template writes the first
 * message's text (when it is a system message) plus "\n\n" in front of the
 * first user turn, untrimmed, and trims every turn's own content. Here any
 * run of system messages is held for the next user turn the same way. */
static void
format_gemma(writer *w, const ks_chat_msg *msgs, size_t n, bool gen,
             const char *def_sys)
{
    bool pending_def = def_sys && (n == 0 || !is_role(&msgs[0], "system"));
    size_t held = SIZE_MAX;   /* first system message not yet written */

    for (size_t i = 0; i < n; i++) {
        const ks_chat_msg *m = &msgs[i];
        bool model = is_role(m, "assistant") || is_role(m, "model");

        if (is_role(m, "system")) {
            if (held == SIZE_MAX)
                held = i;
            continue;
        }
        mark(w, "<start_of_turn>");
        put(w, model ? "model" : m->role);
        put(w, "\n");
        if (!model) {
            if (pending_def) {
                put(w, def_sys);
                put(w, "\n\n");
                pending_def = false;
            }
            for (size_t j = held; j < i; j++) {
                if (is_role(&msgs[j], "system")) {
                    put(w, msgs[j].content);
                    put(w, "\n\n");
                }
            }
            held = SIZE_MAX;
        }
        put_trimmed(w, m->content);
        mark(w, "<end_of_turn>");
        put(w, "\n");
    }
    if (pending_def || held != SIZE_MAX) {
        /* System text with no user turn after it: give it a user turn of
         * its own rather than dropping it. */
        const char *sep = "";
        mark(w, "<start_of_turn>");
        put(w, "user\n");
        if (pending_def) {
            put(w, def_sys);
            sep = "\n\n";
        }
        for (size_t j = held; j < n; j++) {
            if (is_role(&msgs[j], "system")) {
                put(w, sep);
                put(w, msgs[j].content);
                sep = "\n\n";
            }
        }
        mark(w, "<end_of_turn>");
        put(w, "\n");
    }
    if (gen) {
        mark(w, "<start_of_turn>");
        put(w, "model\n");
    }
}

static void
llama3_turn(writer *w, const char *role, const char *content)
{
    mark(w, "<|start_header_id|>");
    put(w, role);
    mark(w, "<|end_header_id|>");
    put(w, "\n\n");
    put_trimmed(w, content);
    mark(w, "<|eot_id|>");
}

static void
format_llama3(writer *w, const ks_chat_msg *msgs, size_t n, bool gen,
              const char *def_sys)
{
    if (def_sys && (n == 0 || !is_role(&msgs[0], "system")))
        llama3_turn(w, "system", def_sys);
    for (size_t i = 0; i < n; i++)
        llama3_turn(w, msgs[i].role, msgs[i].content);
    if (gen) {
        mark(w, "<|start_header_id|>");
        put(w, "assistant");
        mark(w, "<|end_header_id|>");
        put(w, "\n\n");
    }
}

static void
format_plain(writer *w, const ks_chat_msg *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        put(w, msgs[i].content);
}

static ks_status
run_format(ks_chat_family f, const ks_chat_msg *msgs, size_t n,
           bool add_generation_prompt, const char *default_system,
           writer *w)
{
    if (n > 0 && !msgs)
        return ks_error(KS_ERR_INVALID_ARG,
                        "chat: %zu messages but no message array", n);
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content)
            return ks_error(KS_ERR_INVALID_ARG,
                            "chat: message %zu has no %s", i,
                            msgs[i].role ? "content" : "role");
    }
    switch (f) {
    case KS_CHAT_CHATML:
        format_chatml(w, msgs, n, add_generation_prompt, default_system);
        break;
    case KS_CHAT_GEMMA:
        format_gemma(w, msgs, n, add_generation_prompt, default_system);
        break;
    case KS_CHAT_LLAMA3:
        format_llama3(w, msgs, n, add_generation_prompt, default_system);
        break;
    case KS_CHAT_PLAIN:
        format_plain(w, msgs, n);
        break;
    default:
        return ks_error(KS_ERR_INVALID_ARG, "chat: unknown family %d",
                        (int)f);
    }
    return KS_OK;
}

ks_status
ks_chat_format(ks_chat_family f, const ks_chat_msg *msgs, size_t n,
               bool add_generation_prompt, const char *default_system,
               char *buf, size_t cap, size_t *n_out)
{
    writer w = { .buf = buf, .cap = cap };
    ks_status st;

    *n_out = 0;
    st = run_format(f, msgs, n, add_generation_prompt, default_system, &w);
    if (st != KS_OK)
        return st;
    *n_out = w.len;
    if (buf) {
        if (cap <= w.len)
            return ks_error(KS_ERR_INVALID_ARG,
                            "chat: buffer of %zu bytes is too small, the "
                            "%s text needs %zu plus a NUL", cap,
                            ks_chat_family_name(f), w.len);
        buf[w.len] = '\0';
    }
    return KS_OK;
}

ks_status
ks_chat_format_segments(ks_chat_family f, const ks_chat_msg *msgs, size_t n,
                        bool add_generation_prompt,
                        const char *default_system, ks_chat_seg *segs,
                        size_t cap, size_t *n_out)
{
    writer w = { .segs = segs, .seg_cap = cap };
    ks_status st;

    *n_out = 0;
    st = run_format(f, msgs, n, add_generation_prompt, default_system, &w);
    if (st != KS_OK)
        return st;
    *n_out = w.n_segs;
    if (segs && cap < w.n_segs)
        return ks_error(KS_ERR_INVALID_ARG,
                        "chat: room for %zu segments, the %s text needs %zu",
                        cap, ks_chat_family_name(f), w.n_segs);
    return KS_OK;
}

/* ---- default system message --------------------------------------------- */

static const char *const known_defaults[] = {
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
};

static _Thread_local char extracted[1024];

/* Looks at one "<|im_start|>system" at |at| inside |tmpl|: if the template
 * writes a literal text there (up to "<|im_end|>", inside the same string
 * literal or raw template text), unescapes it into |extracted|. */
static bool
literal_system_at(const char *tmpl, const char *at)
{
    static const char marker[] = "<|im_start|>system";
    static const char end[] = "<|im_end|>";
    const char *p = at + sizeof marker - 1;
    char quote = 0;
    size_t o = 0;

    if (at > tmpl && (at[-1] == '\'' || at[-1] == '"'))
        quote = at[-1];
    if (*p == '\n')
        p++;
    else if (p[0] == '\\' && p[1] == 'n')
        p += 2;
    else
        return false;
    while (*p && strncmp(p, end, sizeof end - 1) != 0) {
        char c = *p;
        if (quote && c == '\\' && p[1]) {
            switch (p[1]) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            default: c = p[1]; break;   /* \\ \' \" */
            }
            p += 2;
        } else if (c == quote || (!quote && c == '{' &&
                                  (p[1] == '{' || p[1] == '%'))) {
            return false;   /* the literal stops: a variable follows */
        } else {
            p++;
        }
        if (o + 1 >= sizeof extracted)
            return false;
        extracted[o++] = c;
    }
    if (!*p || o == 0)
        return false;
    extracted[o] = '\0';
    return true;
}

const char *
ks_chat_default_system(ks_chat_family f, const char *template_text)
{
    const char *at;

    if (f != KS_CHAT_CHATML || !template_text)
        return NULL;
    for (at = strstr(template_text, "<|im_start|>system"); at;
         at = strstr(at + 1, "<|im_start|>system")) {
        if (!literal_system_at(template_text, at))
            continue;
        for (size_t i = 0; i < sizeof known_defaults / sizeof *known_defaults;
             i++)
            if (strcmp(extracted, known_defaults[i]) == 0)
                return known_defaults[i];
        return extracted;
    }
    return NULL;
}
