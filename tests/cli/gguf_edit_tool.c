/* gguf_edit IN OUT [--str KEY VALUE] [--bool KEY 0|1] [--special TEXT]...
 * Writes a copy of IN with metadata changed (tests/chat/gguf_edit.h), for
 * the CLI tests: a model without BOS, one with a chat template and special
 * tokens. */
#include <stdio.h>
#include <string.h>

#include "kestrel/kestrel.h"
#include "tests/chat/gguf_edit.h"

int
main(int argc, char **argv)
{
    test_gguf_edit edits[16];
    const char *specials[16];
    size_t n_edits = 0, n_specials = 0;

    if (argc < 3) {
        fprintf(stderr, "usage: gguf_edit IN OUT [--str KEY VALUE] "
                "[--bool KEY 0|1] [--special TEXT]...\n");
        return 2;
    }
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--special") == 0 && i + 1 < argc &&
            n_specials < 16) {
            specials[n_specials++] = argv[++i];
        } else if ((strcmp(argv[i], "--str") == 0 ||
                    strcmp(argv[i], "--bool") == 0) && i + 2 < argc &&
                   n_edits < 16) {
            bool str = strcmp(argv[i], "--str") == 0;
            edits[n_edits++] = (test_gguf_edit){
                .key = argv[i + 1],
                .type = str ? TEST_EDIT_STR : TEST_EDIT_BOOL,
                .str = argv[i + 2],
                .b = strcmp(argv[i + 2], "1") == 0,
            };
            i += 2;
        } else {
            fprintf(stderr, "gguf_edit: bad argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (test_gguf_copy(argv[1], argv[2], edits, n_edits, specials,
                       n_specials) != KS_OK) {
        fprintf(stderr, "gguf_edit: %s\n", ks_last_error());
        return 1;
    }
    return 0;
}
