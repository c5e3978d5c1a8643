/* The bench's no-op batch handler: answers {"id":...,"result":"ok"} for every line of its
 * batch, as `throughput --noop-handler` does, at the cost of a minimal program. A Rust
 * program pays about 250 µs more per start here (std's start-up and libgcc_s), which
 * would be billed to the handlers and blur chore's own figures.
 *
 * Like the Rust one, it appends to the file each variable names, when set:
 *   CHORE_BENCH_STAMPS  the wall-clock time it started, in ns (the latency probe);
 *   CHORE_BENCH_COUNT   how many lines it answered;
 *   CHORE_BENCH_CPU     its own CPU time at the end, in µs.
 * `--hold-ms N` sleeps N ms before each answer (a slow batch).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/resource.h>

/* One write per line, so that lines from handlers running at once never interleave. */
static void append_to(const char *var, unsigned long long value) {
    const char *path = getenv(var);
    if (!path) return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) { perror(path); exit(1); }
    char line[32];
    int n = snprintf(line, sizeof line, "%llu\n", value);
    if (write(fd, line, n) != n) { perror(path); exit(1); }
    close(fd);
}

int main(int argc, char **argv) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    append_to("CHORE_BENCH_STAMPS", (unsigned long long)now.tv_sec * 1000000000ULL + now.tv_nsec);
    long hold_ms = 0;
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "--hold-ms") == 0) hold_ms = atol(argv[i + 1]);
    char *line = NULL;
    size_t cap = 0;
    unsigned long long processed = 0;
    while (getline(&line, &cap, stdin) > 0) {
        if (hold_ms > 0) usleep(hold_ms * 1000);
        /* The id is the first field chore writes: {"id":"...",...} */
        char *id = strstr(line, "\"id\":\"");
        if (!id) { fprintf(stderr, "noop handler: a line without an id\n"); return 1; }
        id += 6;
        char *end = strchr(id, '"');
        if (!end) { fprintf(stderr, "noop handler: an id without its end\n"); return 1; }
        printf("{\"id\":\"%.*s\",\"result\":\"ok\"}\n", (int)(end - id), id);
        processed++;
    }
    if (fflush(stdout) != 0) return 1;
    append_to("CHORE_BENCH_COUNT", processed);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    append_to("CHORE_BENCH_CPU",
              (unsigned long long)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000ULL +
                  ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
    return 0;
}
