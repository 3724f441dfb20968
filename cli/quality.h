/* kestrel perplexity and kestrel calibrate (cli/quality.c): quality of a
 * model, of an early exit and of self-drafting, measured on a text. */
#ifndef KESTREL_CLI_QUALITY_H
#define KESTREL_CLI_QUALITY_H

/* Each runs its command with the arguments after the command name and
 * returns the process exit status. */
int ks_cli_perplexity(int argc, char **argv);
int ks_cli_calibrate(int argc, char **argv);
int ks_cli_prune(int argc, char **argv);

#endif
