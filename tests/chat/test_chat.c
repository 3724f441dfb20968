/* Chat format tests: family detection, the exact text of each family,
 * default system extraction from template text, count-then-fill. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"
#include "runtime/chat.h"

static const ks_chat_msg conv[] = {
    { "system", "You are terse." },
    { "user", "Hi" },
    { "assistant", "Hello!" },
    { "user", "What is 2+2?" },
};
#define N_CONV (sizeof conv / sizeof conv[0])

/* Formats with count-then-fill and returns a malloc'd string. */
static char *
fmt(ks_chat_family f, const ks_chat_msg *m, size_t n, bool gen,
    const char *def)
{
    size_t len = 0, len2 = 0;
    char *buf;

    ck_assert_int_eq(ks_chat_format(f, m, n, gen, def, NULL, 0, &len), KS_OK);
    buf = malloc(len + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(ks_chat_format(f, m, n, gen, def, buf, len + 1, &len2),
                     KS_OK);
    ck_assert_uint_eq(len, len2);
    ck_assert_uint_eq(strlen(buf), len);
    return buf;
}

static void
expect(ks_chat_family f, const ks_chat_msg *m, size_t n, bool gen,
       const char *def, const char *want)
{
    char *got = fmt(f, m, n, gen, def);
    ck_assert_str_eq(got, want);
    free(got);
}

/* ---- detection ---- */

/* Fragments written in the style of the models' templates. */
static const char smollm2_tmpl[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] "
    "!= 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant "
    "named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}";

static const char qwen25_tmpl[] =
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.' }}\n    {%- endif %}\n{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + "
    "'<|im_end|>\\n' }}\n    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba "
    "Cloud. You are a helpful assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n{%- endif %}\n"
    "{%- for message in messages %}{{- '<|im_start|>' + message.role + "
    "'\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endfor %}\n"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}\n";

static const char qwen3_tmpl[] =
    "{%- if messages[0].role == 'system' %}\n"
    "    {{- '<|im_start|>system\\n' + messages[0].content + "
    "'<|im_end|>\\n' }}\n{%- endif %}\n"
    "{%- for message in messages %}{{- '<|im_start|>' + message.role + "
    "'\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endfor %}\n"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}";

static const char gemma_tmpl[] =
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}{%- else -%}"
    "{%- set first_user_prefix = \"\" -%}{%- set loop_messages = messages "
    "-%}{%- endif -%}{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first "
    "else \"\") }}{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}{%- if add_generation_prompt -%}"
    "{{'<start_of_turn>model\n'}}{%- endif -%}";

static const char llama3_tmpl[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

START_TEST(detect_from_template)
{
    ck_assert_int_eq(ks_chat_detect(smollm2_tmpl, "llama"), KS_CHAT_CHATML);
    ck_assert_int_eq(ks_chat_detect(qwen25_tmpl, "qwen2"), KS_CHAT_CHATML);
    ck_assert_int_eq(ks_chat_detect(qwen3_tmpl, "qwen3"), KS_CHAT_CHATML);
    ck_assert_int_eq(ks_chat_detect(gemma_tmpl, "gemma3"), KS_CHAT_GEMMA);
    ck_assert_int_eq(ks_chat_detect(llama3_tmpl, "llama"), KS_CHAT_LLAMA3);
    /* the template wins over the architecture */
    ck_assert_int_eq(ks_chat_detect(gemma_tmpl, "qwen2"), KS_CHAT_GEMMA);
}
END_TEST

START_TEST(detect_fallbacks)
{
    ck_assert_int_eq(ks_chat_detect(NULL, "qwen2"), KS_CHAT_CHATML);
    ck_assert_int_eq(ks_chat_detect(NULL, "qwen3"), KS_CHAT_CHATML);
    ck_assert_int_eq(ks_chat_detect(NULL, "gemma3"), KS_CHAT_GEMMA);
    ck_assert_int_eq(ks_chat_detect(NULL, "llama"), KS_CHAT_PLAIN);
    ck_assert_int_eq(ks_chat_detect("", "qwen3"), KS_CHAT_CHATML);
    /* a template with unknown markers is not overridden by the arch */
    ck_assert_int_eq(ks_chat_detect("{{ messages }}", "llama"),
                     KS_CHAT_PLAIN);
    ck_assert_int_eq(ks_chat_detect("{{ '<|turn>model\n' }}", "gemma4"),
                     KS_CHAT_PLAIN);
    ck_assert_int_eq(ks_chat_detect(NULL, "gemma4"), KS_CHAT_PLAIN);
    ck_assert_int_eq(ks_chat_detect(NULL, NULL), KS_CHAT_PLAIN);
    ck_assert_str_eq(ks_chat_family_name(KS_CHAT_GEMMA), "gemma");
}
END_TEST

START_TEST(end_markers)
{
    ck_assert_str_eq(ks_chat_end_marker(KS_CHAT_CHATML), "<|im_end|>");
    ck_assert_str_eq(ks_chat_end_marker(KS_CHAT_GEMMA), "<end_of_turn>");
    ck_assert_str_eq(ks_chat_end_marker(KS_CHAT_LLAMA3), "<|eot_id|>");
    ck_assert_ptr_null(ks_chat_end_marker(KS_CHAT_PLAIN));
}
END_TEST

/* ---- formats ---- */

START_TEST(chatml_text)
{
    expect(KS_CHAT_CHATML, conv, N_CONV, true, NULL,
           "<|im_start|>system\nYou are terse.<|im_end|>\n"
           "<|im_start|>user\nHi<|im_end|>\n"
           "<|im_start|>assistant\nHello!<|im_end|>\n"
           "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
           "<|im_start|>assistant\n");
    /* an explicit system message wins over the default */
    expect(KS_CHAT_CHATML, conv, 2, false, "ignored",
           "<|im_start|>system\nYou are terse.<|im_end|>\n"
           "<|im_start|>user\nHi<|im_end|>\n");
}
END_TEST

START_TEST(chatml_default_system)
{
    const char *def = ks_chat_default_system(KS_CHAT_CHATML, smollm2_tmpl);

    ck_assert_ptr_nonnull(def);
    expect(KS_CHAT_CHATML, conv + 1, 1, true, def,
           "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
           "trained by Hugging Face<|im_end|>\n"
           "<|im_start|>user\nHi<|im_end|>\n"
           "<|im_start|>assistant\n");
}
END_TEST

START_TEST(gemma_text)
{
    static const ks_chat_msg untrimmed[] = {
        { "user", "  Hi there \n" },
    };

    expect(KS_CHAT_GEMMA, conv, N_CONV, true, NULL,
           "<start_of_turn>user\nYou are terse.\n\nHi<end_of_turn>\n"
           "<start_of_turn>model\nHello!<end_of_turn>\n"
           "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n"
           "<start_of_turn>model\n");
    expect(KS_CHAT_GEMMA, conv + 1, N_CONV - 1, false, NULL,
           "<start_of_turn>user\nHi<end_of_turn>\n"
           "<start_of_turn>model\nHello!<end_of_turn>\n"
           "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n");
    expect(KS_CHAT_GEMMA, untrimmed, 1, true, "Be kind.",
           "<start_of_turn>user\nBe kind.\n\nHi there<end_of_turn>\n"
           "<start_of_turn>model\n");
    /* a system message with no user turn after it is not lost */
    expect(KS_CHAT_GEMMA, conv, 1, true, NULL,
           "<start_of_turn>user\nYou are terse.<end_of_turn>\n"
           "<start_of_turn>model\n");
}
END_TEST

START_TEST(llama3_text)
{
    expect(KS_CHAT_LLAMA3, conv, N_CONV, true, NULL,
           "<|start_header_id|>system<|end_header_id|>\n\n"
           "You are terse.<|eot_id|>"
           "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
           "<|start_header_id|>assistant<|end_header_id|>\n\n"
           "Hello!<|eot_id|>"
           "<|start_header_id|>user<|end_header_id|>\n\n"
           "What is 2+2?<|eot_id|>"
           "<|start_header_id|>assistant<|end_header_id|>\n\n");
}
END_TEST

START_TEST(plain_text)
{
    static const ks_chat_msg story[] = {
        { "user", "Once upon a time" },
    };

    expect(KS_CHAT_PLAIN, story, 1, true, "ignored", "Once upon a time");
    expect(KS_CHAT_PLAIN, conv + 1, 3, true, NULL,
           "HiHello!What is 2+2?");
}
END_TEST

START_TEST(generation_prompt_is_a_prefix_of_the_reply)
{
    static const ks_chat_family fams[] = {
        KS_CHAT_PLAIN, KS_CHAT_CHATML, KS_CHAT_GEMMA, KS_CHAT_LLAMA3,
    };

    for (size_t i = 0; i < sizeof fams / sizeof fams[0]; i++) {
        char *open = fmt(fams[i], conv, 2, true, NULL);
        char *full = fmt(fams[i], conv, 3, false, NULL);
        ck_assert_msg(strncmp(open, full, strlen(open)) == 0,
                      "%s: prompt is not a prefix of the reply",
                      ks_chat_family_name(fams[i]));
        free(open);
        free(full);
    }
}
END_TEST

/* ---- default system extraction ---- */

START_TEST(default_system_smollm2)
{
    const char *d = ks_chat_default_system(KS_CHAT_CHATML, smollm2_tmpl);

    ck_assert_ptr_nonnull(d);
    ck_assert_str_eq(d, "You are a helpful AI assistant named SmolLM, "
                        "trained by Hugging Face");
}
END_TEST

START_TEST(default_system_qwen25_escaped)
{
    /* the first "<|im_start|>system\n" (tools branch) and the second one
     * (followed by a variable) carry no literal; the third one does */
    const char *d = ks_chat_default_system(KS_CHAT_CHATML, qwen25_tmpl);

    ck_assert_ptr_nonnull(d);
    ck_assert_str_eq(d, "You are Qwen, created by Alibaba Cloud. "
                        "You are a helpful assistant.");
}
END_TEST

START_TEST(default_system_absent_or_unknown)
{
    static const char custom[] =
        "{% if messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\\nYou\\'re a pirate.\\tArr<|im_end|>\\n' }}"
        "{% endif %}";
    static const char raw[] =
        "{% if messages[0]['role'] != 'system' %}<|im_start|>system\n"
        "Plain default<|im_end|>\n{% endif %}";
    const char *d;

    ck_assert_ptr_null(ks_chat_default_system(KS_CHAT_CHATML, qwen3_tmpl));
    ck_assert_ptr_null(ks_chat_default_system(KS_CHAT_CHATML, NULL));
    ck_assert_ptr_null(ks_chat_default_system(KS_CHAT_GEMMA, gemma_tmpl));
    ck_assert_ptr_null(ks_chat_default_system(KS_CHAT_LLAMA3, llama3_tmpl));
    ck_assert_ptr_null(ks_chat_default_system(KS_CHAT_PLAIN, smollm2_tmpl));
    d = ks_chat_default_system(KS_CHAT_CHATML, custom);
    ck_assert_ptr_nonnull(d);
    ck_assert_str_eq(d, "You're a pirate.\tArr");
    d = ks_chat_default_system(KS_CHAT_CHATML, raw);
    ck_assert_ptr_nonnull(d);
    ck_assert_str_eq(d, "Plain default");
}
END_TEST

/* ---- count-then-fill and errors ---- */

START_TEST(count_then_fill)
{
    static const char want[] = "<|im_start|>user\nHi<|im_end|>\n";
    char small[8], exact[sizeof want];
    size_t n = 0;

    ck_assert_int_eq(ks_chat_format(KS_CHAT_CHATML, conv + 1, 1, false, NULL,
                                    NULL, 0, &n), KS_OK);
    ck_assert_uint_eq(n, strlen(want));
    n = 0;
    ck_assert_int_eq(ks_chat_format(KS_CHAT_CHATML, conv + 1, 1, false, NULL,
                                    small, sizeof small, &n),
                     KS_ERR_INVALID_ARG);
    ck_assert_uint_eq(n, strlen(want));
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "too small"));
    /* room for the text but not the NUL */
    ck_assert_int_eq(ks_chat_format(KS_CHAT_CHATML, conv + 1, 1, false, NULL,
                                    exact, strlen(want), &n),
                     KS_ERR_INVALID_ARG);
    ck_assert_int_eq(ks_chat_format(KS_CHAT_CHATML, conv + 1, 1, false, NULL,
                                    exact, sizeof exact, &n), KS_OK);
    ck_assert_str_eq(exact, want);
    /* no messages: only the generation prompt */
    ck_assert_int_eq(ks_chat_format(KS_CHAT_CHATML, NULL, 0, true, NULL,
                                    exact, sizeof exact, &n), KS_OK);
    ck_assert_str_eq(exact, "<|im_start|>assistant\n");
}
END_TEST

START_TEST(bad_messages)
{
    static const ks_chat_msg bad[] = {
        { "user", "Hi" },
        { NULL, "x" },
    };
    static const ks_chat_msg bad2[] = {
        { "user", NULL },
    };
    size_t n = 0;

    ck_assert_int_eq(ks_chat_format(KS_CHAT_CHATML, bad, 2, true, NULL,
                                    NULL, 0, &n), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "message 1 has no role"));
    ck_assert_int_eq(ks_chat_format(KS_CHAT_GEMMA, bad2, 1, true, NULL,
                                    NULL, 0, &n), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "message 0 has no content"));
    ck_assert_int_eq(ks_chat_format(KS_CHAT_GEMMA, NULL, 3, true, NULL,
                                    NULL, 0, &n), KS_ERR_INVALID_ARG);
    ck_assert_int_eq(ks_chat_format((ks_chat_family)42, conv, 1, true, NULL,
                                    NULL, 0, &n), KS_ERR_INVALID_ARG);
}
END_TEST

static Suite *
chat_suite(void)
{
    Suite *s = suite_create("chat");
    TCase *tc;

    tc = tcase_create("detect");
    tcase_add_test(tc, detect_from_template);
    tcase_add_test(tc, detect_fallbacks);
    tcase_add_test(tc, end_markers);
    suite_add_tcase(s, tc);

    tc = tcase_create("format");
    tcase_add_test(tc, chatml_text);
    tcase_add_test(tc, chatml_default_system);
    tcase_add_test(tc, gemma_text);
    tcase_add_test(tc, llama3_text);
    tcase_add_test(tc, plain_text);
    tcase_add_test(tc, generation_prompt_is_a_prefix_of_the_reply);
    suite_add_tcase(s, tc);

    tc = tcase_create("default_system");
    tcase_add_test(tc, default_system_smollm2);
    tcase_add_test(tc, default_system_qwen25_escaped);
    tcase_add_test(tc, default_system_absent_or_unknown);
    suite_add_tcase(s, tc);

    tc = tcase_create("buffers");
    tcase_add_test(tc, count_then_fill);
    tcase_add_test(tc, bad_messages);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(chat_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
