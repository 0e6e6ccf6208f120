/*
 * coordshim.c - an LD_PRELOAD shim for tests/test_coordinator.py (Linux).
 *
 * It makes the process's own I/O and threads misbehave on demand, so that
 * the tests can show that time spent waiting on ourselves is never charged
 * to a server and that a run survives a process that cannot start threads.
 * Everything is off unless its environment variables are set.
 *
 *   COORDSHIM_WRITE_PATH=FILE   the write() calls it watches: those to FILE
 *                               (compared with the descriptor's
 *                               /proc/self/fd link, i.e. FILE's real path).
 *   COORDSHIM_WRITE_MATCH=A|B   only watched writes whose buffer contains
 *                               every |-separated substring count (default:
 *                               every watched write counts).
 *   COORDSHIM_WRITE_NTH=N       the N-th counted write (default 1) ...
 *   COORDSHIM_WRITE_MS=MS       ... sleeps MS milliseconds, then is written.
 *   COORDSHIM_WRITE_ERRNO=E     ... instead fails with errno E (and from
 *                               then on every counted write fails so).
 *   COORDSHIM_MAX_THREADS=N     pthread_create fails with EAGAIN while N
 *                               threads it started are alive ("can't start
 *                               new thread" in Python).
 *
 * Build (as farm.build builds the double):
 *   cc -std=c11 -O1 -g -shared -fPIC -o libcoordshim.so coordshim.c -lpthread
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static char g_path[PATH_MAX];      /* real path of COORDSHIM_WRITE_PATH */
static const char *g_match;        /* COORDSHIM_WRITE_MATCH or NULL */
static long g_nth = 1, g_ms, g_errno, g_max_threads;
static long g_counted;             /* counted writes so far (atomic) */
static long g_live;                /* threads we started, alive (atomic) */
static pthread_key_t g_key;

static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : dflt;
}

static void thread_gone(void *p)
{
    (void)p;
    __atomic_sub_fetch(&g_live, 1, __ATOMIC_SEQ_CST);
}

__attribute__((constructor)) static void shim_init(void)
{
    const char *p = getenv("COORDSHIM_WRITE_PATH");
    if (p && *p && !realpath(p, g_path)) {
        /* The file may not exist yet: keep the name as given. */
        strncpy(g_path, p, sizeof g_path - 1);
    }
    g_match = getenv("COORDSHIM_WRITE_MATCH");
    if (g_match && !*g_match)
        g_match = NULL;
    g_nth = env_long("COORDSHIM_WRITE_NTH", 1);
    g_ms = env_long("COORDSHIM_WRITE_MS", 0);
    g_errno = env_long("COORDSHIM_WRITE_ERRNO", 0);
    g_max_threads = env_long("COORDSHIM_MAX_THREADS", 0);
    pthread_key_create(&g_key, thread_gone);
}

/* Does the buffer hold every |-separated part of MATCH? */
static int matches(const char *buf, size_t n)
{
    const char *part = g_match;
    while (part && *part) {
        const char *end = strchr(part, '|');
        size_t len = end ? (size_t)(end - part) : strlen(part);
        if (len && !memmem(buf, n, part, len))
            return 0;
        part = end ? end + 1 : NULL;
    }
    return 1;
}

static int watched(int fd)
{
    char link[64], target[PATH_MAX];
    ssize_t n;
    if (!g_path[0])
        return 0;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    n = readlink(link, target, sizeof target - 1);
    if (n <= 0)
        return 0;
    target[n] = 0;
    return strcmp(target, g_path) == 0;
}

ssize_t write(int fd, const void *buf, size_t count)
{
    if (watched(fd) && matches(buf, count)) {
        long k = __atomic_add_fetch(&g_counted, 1, __ATOMIC_SEQ_CST);
        if (g_errno && k >= g_nth) {
            errno = (int)g_errno;
            return -1;
        }
        if (k == g_nth && g_ms > 0) {
            struct timespec ts = { g_ms / 1000, (g_ms % 1000) * 1000000L };
            while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
            }
        }
    }
    return syscall(SYS_write, fd, buf, count);
}

typedef int (*create_fn)(pthread_t *, const pthread_attr_t *,
                         void *(*)(void *), void *);
struct start { void *(*fn)(void *); void *arg; };

static void *trampoline(void *p)
{
    struct start s = *(struct start *)p;
    free(p);
    /* A TLS destructor runs however the thread ends (return or
     * pthread_exit, which CPython uses). */
    pthread_setspecific(g_key, (void *)1);
    return s.fn(s.arg);
}

int pthread_create(pthread_t *t, const pthread_attr_t *attr,
                   void *(*fn)(void *), void *arg)
{
    static create_fn real;
    struct start *s;
    int rc;
    if (!real)
        real = (create_fn)dlsym(RTLD_NEXT, "pthread_create");
    if (!g_max_threads)
        return real(t, attr, fn, arg);
    if (__atomic_add_fetch(&g_live, 1, __ATOMIC_SEQ_CST) > g_max_threads) {
        __atomic_sub_fetch(&g_live, 1, __ATOMIC_SEQ_CST);
        return EAGAIN;
    }
    s = malloc(sizeof *s);
    if (!s) {
        __atomic_sub_fetch(&g_live, 1, __ATOMIC_SEQ_CST);
        return EAGAIN;
    }
    s->fn = fn;
    s->arg = arg;
    rc = real(t, attr, trampoline, s);
    if (rc) {
        free(s);
        __atomic_sub_fetch(&g_live, 1, __ATOMIC_SEQ_CST);
    }
    return rc;
}
