/* Built-in chat formats. Kestrel does not interpret the Jinja template in
 * tokenizer.chat_template; it recognizes the family from the template's
 * markers and writes that family's format itself. Internal. */
#ifndef KS_CHAT_H
#define KS_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "kestrel/status.h"

typedef enum ks_chat_family {
    KS_CHAT_PLAIN = 0,  /* no template: message texts back to back */
    KS_CHAT_CHATML,     /* <|im_start|>: SmolLM2, Qwen2/2.5, Qwen3 */
    KS_CHAT_GEMMA,      /* <start_of_turn>: Gemma 2/3 */
    KS_CHAT_LLAMA3,     /* <|start_header_id|>: Llama 3.x */
} ks_chat_family;

typedef struct ks_chat_msg {
    const char *role;     /* "system", "user", "assistant" (others pass
                           * through as written where the family allows) */
    const char *content;
} ks_chat_msg;

/* Picks the family from the GGUF key tokenizer.chat_template (may be NULL)
 * by its turn markers. A template without any known marker gives plain.
 * Only when the template is absent or empty does the architecture name
 * (general.architecture, may be NULL) decide: qwen2, qwen2moe, qwen3,
 * qwen3moe -> ChatML; gemma, gemma2, gemma3, gemma3n -> Gemma (the base
 * gemma-3-270m ships no template); anything else -> plain. Never fails. */
ks_chat_family ks_chat_detect(const char *template_text, const char *arch);

/* "plain", "chatml", "gemma", "llama3". */
const char *ks_chat_family_name(ks_chat_family f);

/* Formats |n| messages into |buf| (count-then-fill): *n_out receives the
 * length in bytes without the terminating NUL. With buf == NULL (cap
 * ignored) only the length is computed. Otherwise cap must be at least
 * *n_out + 1; the text is written NUL-terminated. add_generation_prompt
 * appends the opening of an assistant turn. |default_system| (NULL: none)
 * is used as a system message when msgs[0] is not one, as the SmolLM2 and
 * Qwen2.5 templates do.
 *
 * Per family (BOS is the tokenizer's job, never written here):
 *   ChatML: "<|im_start|>{role}\n{content}<|im_end|>\n" per message;
 *           prompt "<|im_start|>assistant\n".
 *   Gemma:  "<start_of_turn>{user|model}\n{content}<end_of_turn>\n", with
 *           "assistant" written "model"; a system text goes in front of
 *           the next user turn's content followed by "\n\n" (Gemma has no
 *           system role); content is trimmed as the template's | trim does;
 *           prompt "<start_of_turn>model\n".
 *   Llama3: "<|start_header_id|>{role}<|end_header_id|>\n\n" then the
 *           trimmed content then "<|eot_id|>"; prompt
 *           "<|start_header_id|>assistant<|end_header_id|>\n\n". This is
 *           Llama 3.0's format: the 3.1+ templates also open with a system
 *           turn carrying "Cutting Knowledge Date: ..." lines, not written.
 *   Plain:  every message's content back to back; no default system.
 * For every family, formatting msgs with the generation prompt gives a
 * prefix of formatting msgs plus the assistant's reply (for Gemma and
 * Llama 3, a reply without surrounding whitespace, which they trim), so a
 * session can keep its KV cache between turns.
 * Errors: KS_ERR_INVALID_ARG when msgs is NULL with n > 0, a role or content
 * is NULL (names the message index), or cap is too small (says how many
 * bytes are needed; *n_out is set all the same). Thread safe. */
ks_status ks_chat_format(ks_chat_family f, const ks_chat_msg *msgs, size_t n,
                         bool add_generation_prompt,
                         const char *default_system, char *buf, size_t cap,
                         size_t *n_out);

/* One piece of a formatted conversation: a turn marker of the family
 * ("<|im_start|>", "<end_of_turn>", ...; the only text that may be read as
 * a special token) or text (message content, roles, newlines, the default
 * system: never special). |text| points into the messages, the default
 * system or static storage: it is valid while those are. */
typedef struct ks_chat_seg {
    const char *text;
    size_t      len;     /* > 0 */
    bool        marker;
} ks_chat_seg;

/* The text ks_chat_format writes, as segments in order (their texts
 * concatenated are that text), count-then-fill: *n_out receives the number
 * of segments; segs == NULL counts only. Errors as ks_chat_format, and
 * KS_ERR_INVALID_ARG when cap is below the count. Thread safe. */
ks_status ks_chat_format_segments(ks_chat_family f, const ks_chat_msg *msgs,
                                  size_t n, bool add_generation_prompt,
                                  const char *default_system,
                                  ks_chat_seg *segs, size_t cap,
                                  size_t *n_out);

/* The system message the model's template injects when the conversation has
 * none, found in the template text: the literal of a "<|im_start|>system"
 * turn that the template writes itself (SmolLM2: "You are a helpful AI
 * assistant named SmolLM, trained by Hugging Face"; Qwen2.5: "You are Qwen,
 * created by Alibaba Cloud. You are a helpful assistant."). NULL when the
 * family has no such default or the template has none (Qwen3, Gemma,
 * Llama 3). The known defaults are returned as static strings; any other
 * extracted text lives in thread-local storage valid until the next call
 * on the same thread: copy it to keep it. */
const char *ks_chat_default_system(ks_chat_family f,
                                   const char *template_text);

/* The text that ends an assistant turn, to stop generation on: ChatML
 * "<|im_end|>", Gemma "<end_of_turn>", Llama3 "<|eot_id|>"; NULL for
 * plain (stop on the tokenizer's end-of-generation set only). */
const char *ks_chat_end_marker(ks_chat_family f);

#endif
