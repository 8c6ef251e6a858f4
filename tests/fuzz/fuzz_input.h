/*
 * fuzz_input.h -- what the fuzzers share: the failure report (a message
 * naming the fuzzer, then abort, which libFuzzer records as a crash with
 * its input) and the reader of the input bytes (0 once they run out, so
 * every input is a whole operation sequence).  Each fuzzer defines
 * FUZZ_NAME before including it.
 */
#ifndef DP_FUZZ_INPUT_H
#define DP_FUZZ_INPUT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FAIL(...)                                                          \
    do {                                                                   \
        fprintf(stderr, FUZZ_NAME ": " __VA_ARGS__);                       \
        fputc('\n', stderr);                                               \
        abort();                                                           \
    } while (0)
#define CHECK(c, ...)                                                      \
    do {                                                                   \
        if (!(c))                                                          \
            FAIL(__VA_ARGS__);                                             \
    } while (0)

struct in {
    const uint8_t *p;
    size_t n;
};

static inline uint8_t u8(struct in *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

#endif /* DP_FUZZ_INPUT_H */
