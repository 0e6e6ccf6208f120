/*
 * evtdouble.c - a native test double of advapi32's event-log writer.
 *
 * It exports RegisterEventSourceW, ReportEventW and DeregisterEventSource
 * with the SDK's exact signatures (winbase.h), records every call, counts
 * the handles it hands out, and can be made to fail.  wtsapi.py loads it
 * instead of advapi32 for those three functions when ADVAPI32_DLL names it.
 * Nothing is written to any real event log.
 *
 * Builds:
 *   Linux:   cc -std=c11 -Wall -Wextra -O1 -shared -fPIC -o libevtdouble.so evtdouble.c -lpthread
 *   Windows: python3 -m ziglang cc -target x86_64-windows-gnu -O1 -shared -o evtdouble.dll evtdouble.c
 * On Windows failures are reported with SetLastError(), elsewhere with errno
 * (host wchar_t strings); a successful call leaves the error as it was.
 *
 * What it models:
 *   RegisterEventSourceW  a new handle for any source name, as Windows
 *                         opens even a source never registered (its events
 *                         then go to the Application log).
 *   ReportEventW          on a live handle: recorded, TRUE.  On a handle
 *                         that is not live (never handed out, or already
 *                         deregistered): FALSE, ERROR_INVALID_HANDLE (6),
 *                         and counted as a bad handle.
 *   DeregisterEventSource the handle is closed; a second close or an
 *                         unknown handle is FALSE, 6, a bad handle.
 * Failures on demand, by EV_Fail(func, nth, count, error) or the variable
 * EVTDOUBLE_FAIL="FUNC:NTH[:COUNT[:ERROR]][,...]" (read at the first call
 * after load or EV_Reset): the NTH call of FUNC from then on (1-based) and
 * the COUNT-1 after it (COUNT 0: all after it) fail.
 * Default errors, as the field shows them: RegisterEventSourceW NULL with 5
 * (ERROR_ACCESS_DENIED), ReportEventW FALSE with 1502 (ERROR_LOG_FILE_FULL),
 * DeregisterEventSource FALSE with 6 (the handle is still closed).
 *
 * The call log, one line a call (EV_Log(), and appended to the file named
 * by EVTDOUBLE_LOG if set, then an "#exit" line at process exit):
 *   FUNC <TAB> HANDLE <TAB> OK <TAB> ERROR <TAB> EXTRA
 * HANDLE is the handle's number (1, 2, ... in order of registration; 0 for
 * NULL or one never handed out); EXTRA is key=value pairs joined by ';',
 * values percent-encoded UTF-8:
 *   RegisterEventSourceW  server=...;source=...   (server=- for NULL)
 *   ReportEventW          type=N;category=N;id=N;sid=S-1-...|-|invalid;
 *                         nstrings=N;datasize=N;raw=0|1;s0=...;s1=...
 */
#ifndef _WIN32
#  define _POSIX_C_SOURCE 200809L
#endif

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Platform layer                                                            */
/* ------------------------------------------------------------------------ */
#ifdef _WIN32
/* Declared without dllimport, so that winbase.h's prototypes check the
 * definitions below (a mismatch is a compile error). */
#  define _ADVAPI32_
#  include <windows.h>
/* The definitions below redeclare the header's functions with dllexport
 * (which is honoured); the header keeps checking our signatures. */
#  ifdef __clang__
#    pragma clang diagnostic ignored "-Wdll-attribute-on-redeclaration"
#  endif

static CRITICAL_SECTION g_mu; /* initialised in DllMain(PROCESS_ATTACH) */
#  define LOCK() EnterCriticalSection(&g_mu)
#  define UNLOCK() LeaveCriticalSection(&g_mu)
typedef DWORD ev_err_t;
static ev_err_t err_get(void) { return GetLastError(); }
static void err_set(ev_err_t e) { SetLastError(e); }
#  define EV_EXPORT __declspec(dllexport)
#  if defined(__i386__) || defined(_M_IX86)
/* x86 would export the decorated __stdcall names (ReportEventW@36); the
 * real advapi32.dll exports plain names, which ctypes looks up. */
#    define API_EXPORT
__asm__(".section .drectve\n\t"
        ".ascii \" -export:RegisterEventSourceW=RegisterEventSourceW@8\"\n\t"
        ".ascii \" -export:ReportEventW=ReportEventW@36\"\n\t"
        ".ascii \" -export:DeregisterEventSource=DeregisterEventSource@4\"\n\t"
        ".text");
#  else
#    define API_EXPORT __declspec(dllexport)
#  endif

#else /* POSIX: the Windows types at their Windows sizes */
#  include <errno.h>
#  include <pthread.h>

typedef uint8_t BYTE;
typedef uint16_t WORD;
typedef uint32_t DWORD;
typedef int32_t BOOL;
typedef void *HANDLE;
typedef void *PSID;
typedef void *LPVOID;
typedef wchar_t WCHAR;
typedef const WCHAR *LPCWSTR;
#  define WINAPI
#  define TRUE 1
#  define FALSE 0

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
#  define LOCK() pthread_mutex_lock(&g_mu)
#  define UNLOCK() pthread_mutex_unlock(&g_mu)
typedef int ev_err_t;
static ev_err_t err_get(void) { return errno; }
static void err_set(ev_err_t e) { errno = e; }
#  define EV_EXPORT __attribute__((visibility("default")))
#  define API_EXPORT __attribute__((visibility("default")))
#endif

#define ERR_ACCESS 5u
#define ERR_HANDLE 6u
#define ERR_LOG_FULL 1502u

enum { F_REGISTER, F_REPORT, F_DEREGISTER, NFUNC };
static const char *const func_names[NFUNC] = {
    "RegisterEventSourceW", "ReportEventW", "DeregisterEventSource"};
static const uint32_t default_errors[NFUNC] = {ERR_ACCESS, ERR_LOG_FULL,
                                               ERR_HANDLE};

/* ------------------------------------------------------------------------ */
/* State                                                                     */
/* ------------------------------------------------------------------------ */
typedef struct { char *p; size_t n, cap; } sbuf;

typedef struct source {
    struct source *next;
    unsigned long number;
    int open;
} source_t;

typedef struct {
    unsigned long from, count; /* count 0: every call from `from` on */
    uint32_t error;
    int set;
} fail_t;

static struct {
    source_t *sources;        /* every handle ever handed out, never freed:
                                 a stale handle stays recognisable */
    unsigned long next_number;
    long open_handles, bad_handles;
    unsigned long calls[NFUNC];
    fail_t fail[NFUNC];
    int env_read;
    sbuf log, line;
    char *snapshot;
} g;

static void die_oom(void)
{
    fputs("evtdouble: out of memory\n", stderr);
    abort();
}

static void sb_putn(sbuf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        while (b->n + n + 1 > b->cap)
            b->cap = b->cap ? b->cap * 2 : 256;
        if (!(b->p = realloc(b->p, b->cap)))
            die_oom();
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_puts(sbuf *b, const char *s) { sb_putn(b, s, strlen(s)); }
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    sb_puts(b, tmp);
}

/* A code point as percent-encoded UTF-8 (unreserved ASCII as is). */
static void put_cp(sbuf *b, uint32_t cp)
{
    unsigned char u[4];
    int n, i;
    if (cp < 0x80) {
        if ((cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z') ||
            (cp >= '0' && cp <= '9') || cp == '-' || cp == '_' || cp == '.' ||
            cp == '~') {
            char c = (char)cp;
            sb_putn(b, &c, 1);
            return;
        }
        u[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (unsigned char)(0xC0 | cp >> 6);
        u[1] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) { /* a lone surrogate too, as WTF-8 */
        u[0] = (unsigned char)(0xE0 | cp >> 12);
        u[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        u[2] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (unsigned char)(0xF0 | cp >> 18);
        u[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
        u[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        u[3] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    for (i = 0; i < n; i++)
        sb_printf(b, "%%%02X", u[i]);
}

/* A host wide string, percent-encoded: UTF-16 on Windows, UTF-32 else. */
static void put_wide(sbuf *b, LPCWSTR s)
{
    if (!s) {
        sb_puts(b, "-");
        return;
    }
    while (*s) {
        uint32_t cp = (uint32_t)*s++;
        if (sizeof(WCHAR) == 2 && cp >= 0xD800 && cp < 0xDC00 &&
            (uint32_t)*s >= 0xDC00 && (uint32_t)*s < 0xE000)
            cp = 0x10000 + ((cp - 0xD800) << 10) + ((uint32_t)*s++ - 0xDC00);
        put_cp(b, cp);
    }
}

/* A SID as its string form, S-1-5-21-..., or "invalid". */
static void put_sid(sbuf *b, PSID sid)
{
    const BYTE *p = (const BYTE *)sid;
    uint64_t authority = 0;
    int i;
    if (!p) {
        sb_puts(b, "-");
        return;
    }
    if (p[0] != 1 || p[1] > 15) {
        sb_puts(b, "invalid");
        return;
    }
    for (i = 2; i < 8; i++)
        authority = authority << 8 | p[i];
    if (authority >> 32)
        sb_printf(b, "S-1-0x%012llX", (unsigned long long)authority);
    else
        sb_printf(b, "S-1-%lu", (unsigned long)authority);
    for (i = 0; i < p[1]; i++) {
        const BYTE *q = p + 8 + 4 * i;
        sb_printf(b, "-%lu", (unsigned long)q[0] | (unsigned long)q[1] << 8 |
                                 (unsigned long)q[2] << 16 |
                                 (unsigned long)q[3] << 24);
    }
}

static FILE *open_env(const char *var, const char *mode)
{
    const char *path = getenv(var);
    return path && *path ? fopen(path, mode) : NULL;
}

static void log_file_append(const char *text)
{
    FILE *f = open_env("EVTDOUBLE_LOG", "ab");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static int p_func(const char *name)
{
    int i;
    for (i = 0; i < NFUNC; i++)
        if (name && strcmp(name, func_names[i]) == 0)
            return i;
    return -1;
}

static int set_fail(int f, unsigned long nth, unsigned long count,
                    uint32_t error)
{
    if (f < 0 || nth == 0)
        return -1;
    g.fail[f].from = g.calls[f] + nth; /* counted from now */
    g.fail[f].count = count;
    g.fail[f].error = error ? error : default_errors[f];
    g.fail[f].set = 1;
    return 0;
}

/* EVTDOUBLE_FAIL="FUNC:NTH[:COUNT[:ERROR]][,...]" */
static void read_env_locked(void)
{
    const char *spec;
    char buf[512], *item, *save = NULL;
    if (g.env_read)
        return;
    g.env_read = 1;
    spec = getenv("EVTDOUBLE_FAIL");
    if (!spec || !*spec || strlen(spec) >= sizeof buf)
        return;
    strcpy(buf, spec);
    for (item = buf; item; item = save) {
        char *name = item, *rest;
        unsigned long nth = 0, count = 1, error = 0;
        save = strchr(item, ',');
        if (save)
            *save++ = 0;
        rest = strchr(name, ':');
        if (!rest)
            continue;
        *rest++ = 0;
        if (sscanf(rest, "%lu:%lu:%lu", &nth, &count, &error) < 1)
            continue;
        set_fail(p_func(name), nth, count, (uint32_t)error);
    }
}

static source_t *find_source(HANDLE h)
{
    source_t *s;
    for (s = g.sources; s; s = s->next)
        if ((HANDLE)s == h)
            return s;
    return NULL;
}

/* Counts the call; nonzero (the error) if a failure rule says it fails. */
static uint32_t enter(int f)
{
    unsigned long n;
    read_env_locked();
    n = ++g.calls[f];
    if (g.fail[f].set && n >= g.fail[f].from &&
        (g.fail[f].count == 0 || n < g.fail[f].from + g.fail[f].count))
        return g.fail[f].error;
    return 0;
}

static void begin_line(int f, const source_t *s)
{
    g.line.n = 0;
    sb_puts(&g.line, func_names[f]);
    sb_printf(&g.line, "\t%lu\t", s ? s->number : 0ul);
}

/* Finishes the line (its OK and ERROR fields, then EXTRA) and logs it. */
static void end_line(int ok, uint32_t err, const char *extra)
{
    sbuf out = {0};
    sb_putn(&out, g.line.p, g.line.n);
    sb_printf(&out, "%d\t%lu\t", ok ? 1 : 0, ok ? 0ul : (unsigned long)err);
    sb_puts(&out, extra ? extra : "");
    sb_puts(&out, "\n");
    sb_putn(&g.log, out.p, out.n);
    log_file_append(out.p);
    free(out.p);
}

/* ------------------------------------------------------------------------ */
/* The exports, with winbase.h's signatures                                  */
/* ------------------------------------------------------------------------ */
API_EXPORT HANDLE WINAPI RegisterEventSourceW(LPCWSTR lpUNCServerName,
                                              LPCWSTR lpSourceName)
{
    ev_err_t saved = err_get();
    sbuf extra = {0};
    source_t *s = NULL;
    uint32_t err;
    LOCK();
    err = enter(F_REGISTER);
    if (!err) {
        if (!(s = calloc(1, sizeof *s)))
            die_oom();
        s->number = ++g.next_number;
        s->open = 1;
        s->next = g.sources;
        g.sources = s;
        g.open_handles++;
    }
    sb_puts(&extra, "server=");
    put_wide(&extra, lpUNCServerName);
    sb_puts(&extra, ";source=");
    put_wide(&extra, lpSourceName);
    begin_line(F_REGISTER, s);
    end_line(s != NULL, err, extra.p);
    UNLOCK();
    free(extra.p);
    err_set(s ? saved : (ev_err_t)err);
    return (HANDLE)s;
}

API_EXPORT BOOL WINAPI ReportEventW(HANDLE hEventLog, WORD wType,
                                    WORD wCategory, DWORD dwEventID,
                                    PSID lpUserSid, WORD wNumStrings,
                                    DWORD dwDataSize, LPCWSTR *lpStrings,
                                    LPVOID lpRawData)
{
    ev_err_t saved = err_get();
    sbuf extra = {0};
    source_t *s;
    uint32_t err;
    WORD i;
    LOCK();
    err = enter(F_REPORT);
    s = find_source(hEventLog);
    if (!s || !s->open) {
        g.bad_handles++;
        err = ERR_HANDLE;
    }
    sb_printf(&extra, "type=%u;category=%u;id=%lu;sid=", (unsigned)wType,
              (unsigned)wCategory, (unsigned long)dwEventID);
    put_sid(&extra, lpUserSid);
    sb_printf(&extra, ";nstrings=%u;datasize=%lu;raw=%d", (unsigned)wNumStrings,
              (unsigned long)dwDataSize, lpRawData ? 1 : 0);
    for (i = 0; lpStrings && i < wNumStrings; i++) {
        sb_printf(&extra, ";s%u=", (unsigned)i);
        put_wide(&extra, lpStrings[i]);
    }
    begin_line(F_REPORT, s);
    end_line(!err, err, extra.p);
    UNLOCK();
    free(extra.p);
    err_set(err ? (ev_err_t)err : saved);
    return !err;
}

API_EXPORT BOOL WINAPI DeregisterEventSource(HANDLE hEventLog)
{
    ev_err_t saved = err_get();
    source_t *s;
    uint32_t err;
    LOCK();
    err = enter(F_DEREGISTER);
    s = find_source(hEventLog);
    if (!s || !s->open) {
        g.bad_handles++;
        err = ERR_HANDLE;
    } else {
        s->open = 0; /* closed even when the call is made to fail */
        g.open_handles--;
    }
    begin_line(F_DEREGISTER, s);
    end_line(!err, err, "");
    UNLOCK();
    err_set(err ? (ev_err_t)err : saved);
    return !err;
}

/* ------------------------------------------------------------------------ */
/* Control API                                                               */
/* ------------------------------------------------------------------------ */

/* Forgets the log, the call counts and the failure rules (EVTDOUBLE_FAIL
 * is read again at the next call); handles stay as they are. */
EV_EXPORT void EV_Reset(void)
{
    LOCK();
    g.log.n = 0;
    if (g.log.p)
        g.log.p[0] = 0;
    memset(g.calls, 0, sizeof g.calls);
    memset(g.fail, 0, sizeof g.fail);
    g.env_read = 0;
    UNLOCK();
}

/* The NTH call of FUNC from now on and the COUNT-1 after it fail (COUNT
 * 0: all from then on) with ERROR (0: the default).  0, or -1 for an
 * unknown FUNC or NTH 0. */
EV_EXPORT int EV_Fail(const char *func, unsigned long nth,
                      unsigned long count, uint32_t error)
{
    int r;
    LOCK();
    g.env_read = 1; /* an explicit rule replaces the variable's */
    r = set_fail(p_func(func), nth, count, error);
    UNLOCK();
    return r;
}

/* Calls of FUNC (NULL: of all three) since the last reset. */
EV_EXPORT unsigned long EV_Calls(const char *func)
{
    unsigned long n = 0;
    int f, i;
    LOCK();
    f = func ? p_func(func) : -1;
    for (i = 0; i < NFUNC; i++)
        if (!func || i == f)
            n += g.calls[i];
    UNLOCK();
    return n;
}

EV_EXPORT long EV_OpenHandles(void)
{
    long n;
    LOCK();
    n = g.open_handles;
    UNLOCK();
    return n;
}

EV_EXPORT long EV_BadHandles(void)
{
    long n;
    LOCK();
    n = g.bad_handles;
    UNLOCK();
    return n;
}

/* The call log since the last reset; valid until the next EV_Log call. */
EV_EXPORT const char *EV_Log(void)
{
    LOCK();
    free(g.snapshot);
    if (!(g.snapshot = malloc(g.log.n + 1)))
        die_oom();
    memcpy(g.snapshot, g.log.p ? g.log.p : "", g.log.n);
    g.snapshot[g.log.n] = 0;
    UNLOCK();
    return g.snapshot;
}

static void write_exit_line(void)
{
    char line[128];
    snprintf(line, sizeof line, "#exit\thandles=%ld\tbadhandles=%ld\n",
             g.open_handles, g.bad_handles);
    log_file_append(line);
}

#ifdef _WIN32
BOOL WINAPI DllMain(HINSTANCE hinst, DWORD reason, LPVOID reserved)
{
    (void)hinst;
    if (reason == DLL_PROCESS_ATTACH) {
        InitializeCriticalSection(&g_mu);
    } else if (reason == DLL_PROCESS_DETACH) {
        /* At process exit (reserved != NULL) the other threads are gone,
         * possibly holding the lock: do not take it then. */
        if (!reserved) LOCK();
        write_exit_line();
        if (!reserved) UNLOCK();
    }
    return TRUE;
}
#else
__attribute__((destructor)) static void ev_fini(void)
{
    LOCK();
    write_exit_line();
    UNLOCK();
}
#endif
