/* kestrel serve: an OpenAI-compatible HTTP server over the public API
 * (cli/serve.c). Built only when libmicrohttpd and cJSON are found. */
#ifndef KESTREL_CLI_SERVE_H
#define KESTREL_CLI_SERVE_H

/* Runs `kestrel serve` with the arguments after the command name; returns
 * the process exit status. */
int ks_cli_serve(int argc, char **argv);

#endif
