/*
 * stats.h -- statistics printers' field tables (lib/stats.c): a field is
 * named once, in a table row, and the same row prints it as JSON and as
 * text.  Used by dp_stats_print (lib/stats.c) and by the drop-in malloc's
 * printer (lib/malloc/stats.c).  docs/design.md, "Statistics".
 */
#ifndef DP_STATS_H
#define DP_STATS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifndef DP_HIDDEN
#define DP_HIDDEN __attribute__((visibility("hidden")))
#endif

/* The C type of a field, at its offset in the row the table describes. */
enum dp_sf_kind {
    DP_SF_U64,     /* uint64_t                                          */
    DP_SF_SIZE,    /* size_t                                            */
    DP_SF_INT,     /* int, printed as a number                          */
    DP_SF_RUNNING, /* int: JSON a number, text "running" or "stopped"   */
};

/* A JSON object of its own inside the row's object, and the name of its
 * line in the text form. */
struct dp_sf_section {
    const char *key;  /* JSON key                                       */
    const char *text; /* text: "  <text>: " opens the line              */
};

/* One field.  Tables are constant. */
struct dp_sfield {
    const struct dp_sf_section *sec; /* NULL: in the row's own object   */
    const char *key;   /* JSON key                                      */
    const char *text;  /* text: column header (width > 0) or the label
                          before the value; NULL: JSON only             */
    unsigned char kind;  /* enum dp_sf_kind                             */
    unsigned char width; /* text column width; 0: a "label value" item  */
    uint32_t div;        /* text shows value / div (ns as ms); 0: as is */
    size_t off;          /* offset in the row                           */
};

#define DP_SF_COUNT(t) (sizeof(t) / sizeof((t)[0]))

/* A JSON string: quotes, backslashes and control bytes escaped. */
DP_HIDDEN void dp_json_str(FILE *f, const char *s);
/* The fields as JSON members, each section an object; a comma before the
 * first unless `first`. */
DP_HIDDEN void dp_sf_json(FILE *f, const struct dp_sfield *t, size_t n,
                          const void *row, int first);
/* Text columns (fields with a width): the header, then one row each. */
DP_HIDDEN void dp_sf_text_head(FILE *f, const struct dp_sfield *t, size_t n);
DP_HIDDEN void dp_sf_text_row(FILE *f, const struct dp_sfield *t, size_t n,
                              const void *row);
/* Text items: one line per section, "  <section>: label value, ...". */
DP_HIDDEN void dp_sf_text_lines(FILE *f, const struct dp_sfield *t, size_t n,
                                const void *row);

#endif /* DP_STATS_H */
