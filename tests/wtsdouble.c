/*
 * wtsdouble.c - a native test double of Windows' wtsapi32.dll.
 *
 * It exports the wtsapi32 functions the project uses, with the SDK's exact
 * signatures, on top of a simulated farm of terminal servers, plus a TD_*
 * control API used by the tests to load farms and inspect what the code
 * under test did (call counts, a call log, leaked buffers and handles, bad
 * frees...).
 *
 * Builds:
 *   Linux:   cc -std=c11 -Wall -Wextra -O1 -shared -fPIC -o libwtsdouble.so wtsdouble.c -lpthread
 *   Windows: python3 -m ziglang cc -target x86_64-windows-gnu -O1 -shared -o wtsdouble.dll wtsdouble.c
 * On Windows failures are reported with SetLastError(), elsewhere with errno.
 * A successful call leaves errno / the last error exactly as it found them.
 *
 * Farm file (UTF-8, one directive a line, '#' comments, string values
 * percent-encoded UTF-8):
 *   server NAME [unreachable[=0|1|null]] [noex] [noquery] [fullcontrol=0|1]
 *          [clock=FT] [discmsg=fail|ok|N] [missing=2|7022] [alias=NAME2]...
 *   session id=N [name=S] [state=N] [user=S] [domain=S] [logon=FT] [connect=FT]
 *           [disconnect=FT] [input=FT] [logoff_ms=N] [logoff_hang=0|1]
 *           [response=N|timeout] [discmsg=fail|ok|N] [noquery=0|1]
 *           [client=S] [address=A.B.C.D|IPV6] [locked=0|1|unknown]
 *   process session=N pid=N [name=S]               (a process on the server above)
 *   caller session=N [fullcontrol=0|1]            (default: session 1, full control)
 *   latency server=NAME func=FUNC ms=N
 *   fail server=NAME func=FUNC error=N [count=N] [session=N]
 *   mutate after=FUNC:N server=NAME id=N [state=N] [user=S] [domain=S] [name=S]
 *          [logon=FT] [connect=FT] [input=FT] [disconnect=FT] [remove=1]
 *          [locked=0|1|unknown] [process=IMAGE]   (process: one more process
 *          in the session, with the next free pid)
 *   querysize server=NAME class=N bytes=N [session=N]
 *          (WTSQuerySessionInformationW reports at most N bytes for that
 *          class: a short answer; the buffer itself is unchanged)
 * What the field shows, modelled (the project's windows-field-facts notes):
 *   unreachable      WTSOpenServerW returns a handle; the first call on it
 *                    fails with 1722 (also for a server not in the farm).
 *   unreachable=null WTSOpenServerW itself returns NULL with 1722.
 *   noquery          the caller lacks Query Information on every session:
 *                    both enumerations fail with 259 (ERROR_NO_MORE_ITEMS),
 *                    session queries with 5 (the caller's own session on "."
 *                    excepted).  An empty server answers 259 too.
 *   discmsg          WTSSendMessageW to a disconnected session: fail (the
 *                    default, error 7007), ok (succeeds silently: IDASYNC, or
 *                    IDTIMEOUT with bWait), or N (fails with error N).  A
 *                    session's discmsg overrides its server's.
 *   logoff_ms        WTSLogoffSession returns at once with bWait=FALSE; the
 *                    session stays visible to enumeration and queries until
 *                    logoff_ms has passed, then disappears.  With bWait=TRUE
 *                    the call returns after logoff_ms, the session gone.
 *   logoff_hang=1    WTSLogoffSession with bWait=TRUE blocks for 30 s (or
 *                    until TD_Reset/TD_Load) although the session is logged
 *                    off after logoff_ms.  bWait=FALSE is unaffected.
 *   missing=2|7022   what the per-session calls (WTSQuerySessionInformationW,
 *                    WTSSendMessageW, WTSLogoffSession, WTSDisconnectSession)
 *                    answer for a session id that does not exist on that
 *                    server.  Both occur (field-facts note, Logoff, "A
 *                    missing session"; medium confidence): 2,
 *                    ERROR_FILE_NOT_FOUND, on the LSM session RPC path
 *                    (impacket examples/tstool.py, against real hosts;
 *                    Cassia #68, a query right after a logoff); 7022, the
 *                    default, on the legacy WinStation path ([MS-TSTS]).
 *   session noquery=1  the caller lacks the rights to query that one
 *                    session: enumeration (Ex and legacy) still lists it,
 *                    but every per-session call on it fails with 7022,
 *                    which [MS-TSTS] documents as "the session does not
 *                    exist or the caller does not have WINSTATION_QUERY
 *                    permission" (field-facts note, Logoff).  UNVERIFIED:
 *                    whether Windows ever lists a session it then refuses
 *                    so (the note also says enumeration shows only the
 *                    sessions one may query); modelled so that callers
 *                    must tell "gone" from "no rights" by enumerating
 *                    again, not by the code.
 *   WTS_SESSION_INFO_1W.pHostName and pFarmName are NULL, as documented for
 *   sessions that are not VMs on an RD Virtualization Host.
 *   client, address  WTSQuerySessionInformationW(WTSClientName) answers the
 *                    session's client= ("" by default, as for the console);
 *                    WTSClientAddress a WTS_CLIENT_ADDRESS: AF_INET (2) with
 *                    the four bytes at Address[2..5] (documented, sdk-api
 *                    WTS_CLIENT_ADDRESS; Address[0..1] hold the port in
 *                    [MS-TSTS] CLIENT_STACK_ADDRESS, 0 here), AF_INET6 (23,
 *                    Windows' value) with the 16 bytes at Address[2..17]
 *                    (UNVERIFIED: the sdk-api example shows them from
 *                    Address[0]; System Informer and Veyon read [2..17]),
 *                    AF_UNSPEC (0) and zeros without address=.
 *   locked           WTSQuerySessionInformationW(WTSSessionInfoEx) answers
 *                    a WTSINFOEXW, Level 1, whose SessionFlags are
 *                    WTS_SESSIONSTATE_LOCK (0) for locked=1,
 *                    WTS_SESSIONSTATE_UNLOCK (1) for locked=0 and
 *                    WTS_SESSIONSTATE_UNKNOWN (0xFFFFFFFF, the default)
 *                    otherwise: current Windows as documented (Windows 7 /
 *                    2008 R2 swap LOCK and UNLOCK, a documented defect the
 *                    double does not model).  Its times are WTSSessionInfo's.
 *   disconnect       WTSDisconnectSession turns a session (active, or in any
 *                    other state but listening) into a disconnected one
 *                    whose DisconnectTime is the server's clock; with bWait
 *                    it returns after the session's logoff_ms.  On a
 *                    session already disconnected it succeeds and changes
 *                    nothing (UNVERIFIED: what real Windows answers there
 *                    has not been captured anywhere public).  Its checks
 *                    are the logoff's, in the same order: the server's
 *                    missing code for an unknown id, 7022 for noquery, 87
 *                    for a listener, 5 without the rights (session 0
 *                    always needs full control; the console is a session
 *                    like any other).  UNVERIFIED, as for logoff: the codes
 *                    for the console, session 0 and a listener (field-facts
 *                    note, Logoff); 7041 (ERROR_CTX_CONSOLE_DISCONNECT)
 *                    exists but was not seen answering this call.
 *   processes        WTSEnumerateProcessesW (Reserved 0, Version 1; free
 *                    with WTSFreeMemory) and WTSEnumerateProcessesExW
 *                    (level 0, WTS_PROCESS_INFOW; free with
 *                    WTSFreeMemoryExW(WTSTypeProcessInfoLevel0, p, count);
 *                    SessionId WTS_ANY_SESSION or one session) list the
 *                    server's process lines whose session exists (a logoff
 *                    ends a session's processes).  "The caller must be a
 *                    member of the Administrators group to enumerate
 *                    processes running under another user session" (sdk-api
 *                    WTSEnumerateProcessesEx): without full control, the
 *                    farm's stand-in for that, only the caller's own
 *                    session's processes on "." are listed.  UNVERIFIED:
 *                    whether Windows filters so or fails the call, and what
 *                    a noquery account gets (the double ignores noquery
 *                    here).  An invalid *pLevel is set to 1 and fails with
 *                    87, as documented (the code is unverified); level 1
 *                    (WTS_PROCESS_INFO_EXW) is not served (87).  noex: the
 *                    Ex call answers 120, as for sessions (both came with
 *                    Windows 7 / 2008 R2).  Every pUserSid points to one
 *                    well-formed SID (S-1-5-18) in the same buffer: the
 *                    farm does not model process owners.  The array is
 *                    allocated (and must be freed) even when it is empty.
 * Stubs (Windows builds only): WTSEnumerateServersW, WTSTerminateProcess,
 * WTSQueryUserConfigW, WTSSetUserConfigW, WTSShutdownSystem,
 * WTSWaitSystemEvent, WTSRegisterSessionNotification,
 * WTSUnRegisterSessionNotification and WTSQueryUserToken are exported so
 * that a module importing them (pywin32's win32ts.pyd) loads against the
 * double; each fails with ERROR_CALL_NOT_IMPLEMENTED (120), is not logged or
 * counted, and simulates nothing.
 * Beyond the contract: server=* and func=* match anything in latency/fail
 * rules (server=* also matches the server-less WTSFreeMemory[Ex] calls);
 * several alias= per server; a mutate on a missing session creates it;
 * session lines before any server line belong to ".".  Failure injection
 * on the VOID functions (WTSCloseServer, WTSFreeMemory) sets the error but
 * the close/free still happens; on WTSFreeMemoryExW nothing is freed.
 * Buffers passed to WTSFreeMemory must be live and not "ex" (NULL counts as
 * a bad free); failed frees set error 87.
 * The log's SESSION is the id as passed (WTS_CURRENT_SESSION unresolved);
 * a fail rule's session= matches it or the resolved id.  TD_MaxInFlight
 * (most calls running at once since the last load/reset) and
 * TD_MaxInFlightFor(server, func) (the same, counting only the calls to
 * that server and/or of that function; NULL for any) are extras.  A call is
 * in flight from its entry, through any injected latency, to its return.
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
#  ifndef _WIN32_WINNT
#    define _WIN32_WINNT 0x0601 /* WTSEnumerateSessionsExW needs Windows 7+ */
#  endif
#  include <windows.h>
#  include <wtsapi32.h>
/* The definitions below redeclare the header's functions with dllexport
 * (which is honoured); the header keeps checking our signatures. */
#  ifdef __clang__
#    pragma clang diagnostic ignored "-Wdll-attribute-on-redeclaration"
#  endif

static CRITICAL_SECTION g_mu; /* initialised in DllMain(PROCESS_ATTACH) */
#  define LOCK() EnterCriticalSection(&g_mu)
#  define UNLOCK() LeaveCriticalSection(&g_mu)
typedef DWORD td_err_t;
static td_err_t err_get(void) { return GetLastError(); }
static void err_set(td_err_t e) { SetLastError(e); }
static void sleep_ms(uint32_t ms) { Sleep(ms); }
/* Not GetTickCount64: its 15.6 ms steps would end a logoff_ms early. */
static int64_t now_ms(void)
{
    LARGE_INTEGER t, f;
    QueryPerformanceCounter(&t);
    QueryPerformanceFrequency(&f);
    return (int64_t)(t.QuadPart / f.QuadPart * 1000 +
                     t.QuadPart % f.QuadPart * 1000 / f.QuadPart);
}
#  define LI_SET(li, v) ((li).QuadPart = (v))
#  define TD_EXPORT __declspec(dllexport)
#  if defined(__i386__) || defined(_M_IX86)
/* On x86, dllexport of a __stdcall function exports the decorated name
 * (WTSOpenServerW@4), while the real wtsapi32.dll exports plain names and
 * ctypes looks those up.  So export them undecorated through linker
 * directives instead. */
#    define WTS_EXPORT
__asm__(".section .drectve\n\t"
        ".ascii \" -export:WTSOpenServerW=WTSOpenServerW@4\"\n\t"
        ".ascii \" -export:WTSCloseServer=WTSCloseServer@4\"\n\t"
        ".ascii \" -export:WTSEnumerateSessionsW=WTSEnumerateSessionsW@20\"\n\t"
        ".ascii \" -export:WTSEnumerateSessionsExW=WTSEnumerateSessionsExW@20\"\n\t"
        ".ascii \" -export:WTSFreeMemory=WTSFreeMemory@4\"\n\t"
        ".ascii \" -export:WTSFreeMemoryExW=WTSFreeMemoryExW@12\"\n\t"
        ".ascii \" -export:WTSQuerySessionInformationW=WTSQuerySessionInformationW@20\"\n\t"
        ".ascii \" -export:WTSLogoffSession=WTSLogoffSession@12\"\n\t"
        ".ascii \" -export:WTSDisconnectSession=WTSDisconnectSession@12\"\n\t"
        ".ascii \" -export:WTSSendMessageW=WTSSendMessageW@40\"\n\t"
        ".ascii \" -export:WTSEnumerateProcessesW=WTSEnumerateProcessesW@20\"\n\t"
        ".ascii \" -export:WTSEnumerateProcessesExW=WTSEnumerateProcessesExW@20\"\n\t"
        ".ascii \" -export:WTSEnumerateServersW=WTSEnumerateServersW@20\"\n\t"
        ".ascii \" -export:WTSTerminateProcess=WTSTerminateProcess@12\"\n\t"
        ".ascii \" -export:WTSQueryUserConfigW=WTSQueryUserConfigW@20\"\n\t"
        ".ascii \" -export:WTSSetUserConfigW=WTSSetUserConfigW@20\"\n\t"
        ".ascii \" -export:WTSShutdownSystem=WTSShutdownSystem@8\"\n\t"
        ".ascii \" -export:WTSWaitSystemEvent=WTSWaitSystemEvent@12\"\n\t"
        ".ascii \" -export:WTSRegisterSessionNotification=WTSRegisterSessionNotification@8\"\n\t"
        ".ascii \" -export:WTSUnRegisterSessionNotification=WTSUnRegisterSessionNotification@4\"\n\t"
        ".ascii \" -export:WTSQueryUserToken=WTSQueryUserToken@8\"\n\t"
        ".text");
#  else
#    define WTS_EXPORT __declspec(dllexport)
#  endif

#else /* POSIX: a shim with the Windows types at their Windows sizes */
#  include <errno.h>
#  include <pthread.h>
#  include <time.h>

typedef uint32_t DWORD;
typedef uint32_t ULONG;
typedef int32_t BOOL;
typedef int32_t LONG;
typedef int64_t LARGE_INTEGER;
typedef void *HANDLE;
typedef void *PVOID;
typedef wchar_t WCHAR;
typedef WCHAR *LPWSTR;
#  define VOID void
#  define WINAPI
#  define TRUE 1
#  define FALSE 0
typedef int WTS_CONNECTSTATE_CLASS;
typedef int WTS_INFO_CLASS;
typedef int WTS_TYPE_CLASS;
enum { WTSActive, WTSConnected, WTSConnectQuery, WTSShadow, WTSDisconnected,
       WTSIdle, WTSListen, WTSReset, WTSDown, WTSInit };
enum { WTSSessionId = 4, WTSUserName = 5, WTSWinStationName = 6,
       WTSDomainName = 7, WTSConnectState = 8, WTSClientName = 10,
       WTSClientAddress = 14, WTSSessionInfo = 24, WTSSessionInfoEx = 25 };
#  define WTS_SESSIONSTATE_UNKNOWN 0xFFFFFFFF
#  define WTS_SESSIONSTATE_LOCK 0x00000000
#  define WTS_SESSIONSTATE_UNLOCK 0x00000001
typedef uint8_t BYTE;
enum { WTSTypeProcessInfoLevel0 = 0, WTSTypeSessionInfoLevel1 = 2 };
#  define WTS_CURRENT_SESSION ((DWORD)-1)
#  define WTS_ANY_SESSION ((DWORD)-2)
#  define IDOK 1
#  define IDTIMEOUT 32000
#  define IDASYNC 32001

typedef struct _WTS_SESSION_INFOW {
    DWORD SessionId;
    LPWSTR pWinStationName;
    WTS_CONNECTSTATE_CLASS State;
} WTS_SESSION_INFOW, *PWTS_SESSION_INFOW;

typedef struct _WTS_PROCESS_INFOW {
    DWORD SessionId;
    DWORD ProcessId;
    LPWSTR pProcessName;
    PVOID pUserSid; /* PSID */
} WTS_PROCESS_INFOW, *PWTS_PROCESS_INFOW;

typedef struct _WTS_SESSION_INFO_1W {
    DWORD ExecEnvId;
    WTS_CONNECTSTATE_CLASS State;
    DWORD SessionId;
    LPWSTR pSessionName;
    LPWSTR pHostName;
    LPWSTR pUserName;
    LPWSTR pDomainName;
    LPWSTR pFarmName;
} WTS_SESSION_INFO_1W, *PWTS_SESSION_INFO_1W;

typedef struct _WTSINFOW {
    WTS_CONNECTSTATE_CLASS State;
    DWORD SessionId;
    DWORD IncomingBytes, OutgoingBytes, IncomingFrames, OutgoingFrames;
    DWORD IncomingCompressedBytes, OutgoingCompressedBytes;
    WCHAR WinStationName[32];
    WCHAR Domain[17];
    WCHAR UserName[21];
    LARGE_INTEGER ConnectTime, DisconnectTime, LastInputTime, LogonTime, CurrentTime;
} WTSINFOW, *PWTSINFOW;

typedef struct _WTS_CLIENT_ADDRESS {
    DWORD AddressFamily;
    BYTE Address[20];
} WTS_CLIENT_ADDRESS, *PWTS_CLIENT_ADDRESS;

typedef struct _WTSINFOEX_LEVEL1_W {
    ULONG SessionId;
    WTS_CONNECTSTATE_CLASS SessionState;
    LONG SessionFlags;
    WCHAR WinStationName[32 + 1];
    WCHAR UserName[20 + 1];
    WCHAR DomainName[17 + 1];
    LARGE_INTEGER LogonTime, ConnectTime, DisconnectTime, LastInputTime, CurrentTime;
    DWORD IncomingBytes, OutgoingBytes, IncomingFrames, OutgoingFrames;
    DWORD IncomingCompressedBytes, OutgoingCompressedBytes;
} WTSINFOEX_LEVEL1_W, *PWTSINFOEX_LEVEL1_W;

typedef union _WTSINFOEX_LEVEL_W {
    WTSINFOEX_LEVEL1_W WTSInfoExLevel1;
} WTSINFOEX_LEVEL_W, *PWTSINFOEX_LEVEL_W;

typedef struct _WTSINFOEXW {
    DWORD Level;
    WTSINFOEX_LEVEL_W Data;
} WTSINFOEXW, *PWTSINFOEXW;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
#  define LOCK() pthread_mutex_lock(&g_mu)
#  define UNLOCK() pthread_mutex_unlock(&g_mu)
typedef int td_err_t;
static td_err_t err_get(void) { return errno; }
static void err_set(td_err_t e) { errno = e; }
static void sleep_ms(uint32_t ms)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}
static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
#  define LI_SET(li, v) ((li) = (v))
#  define TD_EXPORT __attribute__((visibility("default")))
#  define WTS_EXPORT __attribute__((visibility("default")))
#endif

/* Windows error codes used by the double */
#define ERR_ACCESS 5u
#define ERR_HANDLE 6u
#define ERR_PARAM 87u
#define ERR_NOTIMPL 120u
#define ERR_NOMORE 259u
#define ERR_RPC 1722u
#define ERR_USERBUF 1784u
#define ERR_NOSESSION 7022u
#define ERR_FILE_NOT_FOUND 2u /* a missing session on the LSM RPC path */

/* WTS_CLIENT_ADDRESS.AddressFamily: Windows' values (winsock2.h), never the
 * host's (Linux's AF_INET6 is 10) */
#define WIN_AF_UNSPEC 0u
#define WIN_AF_INET 2u
#define WIN_AF_INET6 23u
/* What WTSSendMessageW answers for a disconnected session by default.
 * UNVERIFIED: whether real Windows fails that call at all, and with which
 * code, has not been captured anywhere public (field-facts note, "Messages":
 * msg.exe's reference says the session "must be an active one", a user
 * report says Send-RDUserMessage does not reach disconnected sessions).
 * ERROR_CTX_CLOSE_PENDING (7007) is a plausible stand-in: a session-state
 * (CTX) error, and deliberately neither 7022 (which callers read as "the
 * session is gone") nor 5 (which they read as "no rights"), so code under
 * test cannot get away with treating it as either.  discmsg=ok models the
 * other answer the field allows, success without anyone seeing the box. */
#define ERR_DISCMSG_DEFAULT 7007u

#define LOGOFF_HANG_MS 30000u

#define LOCAL_CLOCK_DEFAULT 133500000000000000LL
#define RESP_TIMEOUT (-1)
#define DISCMSG_INHERIT (-1) /* session: as its server says */
#define DISCMSG_OK 0         /* succeed silently; > 0: fail with that code */
#define OPEN_NULL 2          /* server_t.unreachable: WTSOpenServerW -> NULL */

/* ------------------------------------------------------------------------ */
/* Small utilities: allocation, growable buffers, a hash map                  */
/* ------------------------------------------------------------------------ */
static void die_oom(void)
{
    fputs("wtsdouble: out of memory\n", stderr);
    abort();
}
static void *xrealloc(void *p, size_t n)
{
    if (!(p = realloc(p, n ? n : 1)))
        die_oom();
    return p;
}
#define GROW(arr, n, cap)                                                     \
    do {                                                                      \
        if ((n) >= (cap)) {                                                   \
            (cap) = (cap) ? (cap) * 2 : 8;                                    \
            (arr) = xrealloc((arr), (cap) * sizeof *(arr));                   \
        }                                                                     \
    } while (0)

typedef struct { char *p; size_t n, cap; } sbuf;
static void sb_putn(sbuf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        while (b->n + n + 1 > b->cap)
            b->cap = b->cap ? b->cap * 2 : 256;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_puts(sbuf *b, const char *s) { sb_putn(b, s, strlen(s)); }
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    sb_puts(b, tmp);
}

/* Open-addressing hash map uint64 -> int64 (key 0 = empty slot), linear
 * probing with backward-shift deletion, so lookups stay O(1) under churn. */
typedef struct { uint64_t *k; int64_t *v; size_t cap, n; } hmap;
static size_t hm_hash(uint64_t x)
{
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return (size_t)x;
}
static int64_t *hm_find(hmap *m, uint64_t key)
{
    size_t i;
    if (!m->cap)
        return NULL;
    for (i = hm_hash(key) & (m->cap - 1); m->k[i]; i = (i + 1) & (m->cap - 1))
        if (m->k[i] == key)
            return &m->v[i];
    return NULL;
}
static void hm_put(hmap *m, uint64_t key, int64_t val)
{
    size_t i;
    int64_t *old = hm_find(m, key);
    if (old) {
        *old = val;
        return;
    }
    if ((m->n + 1) * 2 > m->cap) { /* keep load <= 1/2: rehash */
        hmap nm;
        nm.cap = m->cap ? m->cap * 2 : 64;
        nm.n = 0;
        nm.k = calloc(nm.cap, sizeof *nm.k);
        nm.v = calloc(nm.cap, sizeof *nm.v);
        if (!nm.k || !nm.v)
            die_oom();
        for (i = 0; i < m->cap; i++)
            if (m->k[i])
                hm_put(&nm, m->k[i], m->v[i]);
        free(m->k);
        free(m->v);
        *m = nm;
    }
    for (i = hm_hash(key) & (m->cap - 1); m->k[i]; i = (i + 1) & (m->cap - 1)) {
    }
    m->k[i] = key;
    m->v[i] = val;
    m->n++;
}
static int hm_del(hmap *m, uint64_t key, int64_t *out)
{
    size_t mask = m->cap - 1, i, j, h;
    int64_t *slot = hm_find(m, key);
    if (!slot)
        return 0;
    i = (size_t)(slot - m->v);
    if (out)
        *out = m->v[i];
    m->k[i] = 0;
    m->n--;
    for (j = i;;) {
        j = (j + 1) & mask;
        if (!m->k[j])
            break;
        h = hm_hash(m->k[j]) & mask;
        /* entry j may stay if its home h lies cyclically in (i, j] */
        if (i <= j ? (i < h && h <= j) : (i < h || h <= j))
            continue;
        m->k[i] = m->k[j];
        m->v[i] = m->v[j];
        m->k[j] = 0;
        i = j;
    }
    return 1;
}
static void hm_free(hmap *m)
{
    free(m->k);
    free(m->v);
    memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------------------ */
/* Strings: UTF-8 <-> WCHAR (UTF-16 on Windows, UTF-32 elsewhere), without    */
/* the C locale functions.                                                    */
/* ------------------------------------------------------------------------ */
static size_t wlen(const WCHAR *w)
{
    size_t n = 0;
    while (w[n])
        n++;
    return n;
}
static WCHAR *wdup(const WCHAR *w)
{
    size_t n = wlen(w) + 1;
    WCHAR *r = xrealloc(NULL, n * sizeof(WCHAR));
    memcpy(r, w, n * sizeof(WCHAR));
    return r;
}
/* Decodes one strict UTF-8 sequence; returns the code point or -1. */
static long u8_next(const unsigned char *s, size_t n, size_t *i)
{
    unsigned c = s[*i];
    unsigned long cp, min;
    size_t len, k;
    if (c < 0x80) {
        (*i)++;
        return (long)c;
    }
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; min = 0x10000; }
    else return -1;
    if (*i + len > n)
        return -1;
    for (k = 1; k < len; k++) {
        unsigned b = s[*i + k];
        if ((b & 0xC0) != 0x80)
            return -1;
        cp = (cp << 6) | (b & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return -1;
    *i += len;
    return (long)cp;
}
/* UTF-8 -> new NUL-terminated WCHAR string, or NULL if not valid UTF-8. */
static WCHAR *utf8_to_w(const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s), i = 0, units = 0;
    WCHAR *w, *o;
    long cp;
    while (i < n) {
        if ((cp = u8_next(u, n, &i)) < 0)
            return NULL;
        units += (sizeof(WCHAR) == 2 && cp >= 0x10000) ? 2 : 1;
    }
    o = w = xrealloc(NULL, (units + 1) * sizeof(WCHAR));
    for (i = 0; i < n;) {
        cp = u8_next(u, n, &i);
        if (sizeof(WCHAR) == 2 && cp >= 0x10000) { /* surrogate pair */
            *o++ = (WCHAR)(0xD800 + ((cp - 0x10000) >> 10));
            *o++ = (WCHAR)(0xDC00 + ((cp - 0x10000) & 0x3FF));
        } else {
            *o++ = (WCHAR)cp;
        }
    }
    *o = 0;
    return w;
}
static void u8_put(sbuf *b, uint32_t cp)
{
    char t[4];
    size_t n;
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        cp = 0xFFFD; /* lone surrogate or garbage from the caller */
    if (cp < 0x80) { t[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { t[0] = (char)(0xC0 | (cp >> 6)); n = 2; }
    else if (cp < 0x10000) { t[0] = (char)(0xE0 | (cp >> 12)); n = 3; }
    else { t[0] = (char)(0xF0 | (cp >> 18)); n = 4; }
    if (n >= 4) t[n - 3] = (char)(0x80 | ((cp >> 12) & 0x3F));
    if (n >= 3) t[n - 2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    if (n >= 2) t[n - 1] = (char)(0x80 | (cp & 0x3F));
    sb_putn(b, t, n);
}
/* WCHAR string -> UTF-8 appended to b (lenient: bad units become U+FFFD). */
static void w_to_utf8(sbuf *b, const WCHAR *w)
{
    size_t i;
    sb_putn(b, "", 0);
    for (i = 0; w[i]; i++) {
        uint32_t c = (uint32_t)w[i];
        if (sizeof(WCHAR) == 2 && c >= 0xD800 && c <= 0xDBFF) {
            uint32_t d = (uint32_t)w[i + 1];
            if (d >= 0xDC00 && d <= 0xDFFF) {
                c = 0x10000 + ((c - 0xD800) << 10) + (d - 0xDC00);
                i++;
            }
        }
        u8_put(b, c);
    }
}
/* Percent-encodes UTF-8 bytes for the log (all but unreserved characters). */
static void pct_encode(sbuf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~') {
            sb_putn(b, (const char *)s, 1);
        } else {
            char t[3] = { '%', hex[c >> 4], hex[c & 15] };
            sb_putn(b, t, 3);
        }
    }
}
static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}
/* Percent-decodes in place; fails on a bad escape or an encoded NUL. */
static int pct_decode(char *s)
{
    char *o = s;
    for (; *s; s++) {
        if (*s == '%') {
            int hi = hexval(s[1]), lo = hi < 0 ? -1 : hexval(s[2]);
            if (lo < 0 || (hi | lo) == 0)
                return -1;
            *o++ = (char)(hi * 16 + lo);
            s += 2;
        } else {
            *o++ = *s;
        }
    }
    *o = 0;
    return 0;
}
/* Case-insensitive (ASCII letters only) equality of UTF-8 names. */
static int ieq(const char *a, const char *b)
{
    for (;; a++, b++) {
        int x = (unsigned char)*a, y = (unsigned char)*b;
        if (x >= 'A' && x <= 'Z') x += 32;
        if (y >= 'A' && y <= 'Z') y += 32;
        if (x != y) return 0;
        if (!x) return 1;
    }
}

/* ------------------------------------------------------------------------ */
/* State                                                                     */
/* ------------------------------------------------------------------------ */
enum { F_OPEN, F_CLOSE, F_ENUM, F_ENUMEX, F_FREE, F_FREEEX, F_QUERY,
       F_LOGOFF, F_DISC, F_SEND, F_ENUMPROC, F_ENUMPROCEX, NFUNC, F_ANY = -2 };
/* flight_key() keeps func + 1 in 4 bits */
typedef char nfunc_fits_flight_key[NFUNC + 1 < 16 ? 1 : -1];
static const char *const func_names[NFUNC] = {
    "WTSOpenServerW", "WTSCloseServer", "WTSEnumerateSessionsW",
    "WTSEnumerateSessionsExW", "WTSFreeMemory", "WTSFreeMemoryExW",
    "WTSQuerySessionInformationW", "WTSLogoffSession", "WTSDisconnectSession",
    "WTSSendMessageW", "WTSEnumerateProcessesW", "WTSEnumerateProcessesExW" };

typedef struct {
    uint32_t id;
    int state, removed;
    WCHAR *name, *user, *domain; /* never NULL while not removed */
    int64_t logon, connect, disconnect, input;
    uint32_t logoff_ms;
    int logoff_hang;
    int response; /* IDOK.. or RESP_TIMEOUT */
    long discmsg; /* DISCMSG_* or an error code */
    int64_t gone_at; /* logged off: removed at this now_ms(); 0: not */
    int noquery; /* listed, but the caller may not query it: 7022 */
    WCHAR *client; /* WTSClientName; never NULL while not removed */
    uint32_t af; /* WIN_AF_* */
    unsigned char addr[16]; /* IPv4 in addr[0..3], or IPv6 */
    uint32_t lockflags; /* WTSINFOEX_LEVEL1_W.SessionFlags: WTS_SESSIONSTATE_* */
} sess_t;

typedef struct {
    uint32_t session, pid;
    WCHAR *name; /* never NULL */
} proc_t;

typedef struct {
    const char *name; /* interned UTF-8 */
    WCHAR *wname;
    const char **aliases;
    size_t naliases, capaliases;
    int unreachable; /* 0, 1 (first call fails) or OPEN_NULL */
    int noex, noquery, fullcontrol;
    long discmsg; /* default for its sessions: DISCMSG_OK or an error */
    uint32_t missing; /* the error for a session id it does not have */
    int64_t clock;
    sess_t *s; /* farm order; removed sessions stay as tombstones */
    size_t n, cap, live;
    size_t pending; /* sessions logged off but not yet gone */
    int64_t next_gone; /* earliest gone_at among them */
    hmap ids; /* session id + 1 -> index into s */
    proc_t *procs; /* farm order */
    size_t nprocs, capprocs;
} server_t;

typedef struct { const char *server; int func; uint32_t ms; } latency_t;
typedef struct {
    const char *server;
    int func, has_session;
    uint32_t error, session;
    long remaining; /* < 0: unlimited */
} fail_t;
enum { M_STATE = 1, M_USER = 2, M_DOMAIN = 4, M_INPUT = 8, M_DISC = 16,
       M_NAME = 32, M_LOGON = 64, M_CONNECT = 128, M_LOCKED = 256 };
typedef struct {
    int func, remove, done, state;
    unsigned long nth;
    const char *server;
    uint32_t id, lockflags;
    unsigned set; /* M_* */
    WCHAR *user, *domain, *name, *process;
    int64_t input, disconnect, logon, connect;
} mutate_t;

typedef struct {
    const char *server;
    int info_class, has_session;
    uint32_t session, bytes;
} qsize_t;

typedef struct { int func; const char *canon, *opened; } callrec_t;
typedef struct { const char *name; int open, srv; unsigned gen; } hrec_t;

/* Allocation kinds: WTSFreeMemory frees K_PLAIN only; WTSFreeMemoryExW
 * frees K_EX with WTSTypeSessionInfoLevel1 and K_EXPROC0 with
 * WTSTypeProcessInfoLevel0, each with its entry count. */
enum { K_PLAIN = 1, K_EX = 2, K_EXPROC0 = 3 };

static int g_loaded; /* farm initialised (by TD_Load, TD_Reset or lazily) */
static struct {
    /* the farm; reset by TD_Load / TD_Reset */
    server_t *srv; /* srv[0] is always the local server "." */
    size_t nsrv, capsrv;
    unsigned gen; /* bumped on reset: invalidates handle -> server caches */
    uint32_t caller_session;
    int caller_fullcontrol;
    latency_t *lat; size_t nlat, caplat;
    fail_t *fail; size_t nfail, capfail;
    mutate_t *mut; size_t nmut, capmut;
    qsize_t *qsize; size_t nqsize, capqsize;
    callrec_t *calls; size_t ncalls, capcalls;
    unsigned long func_calls[NFUNC];
    long bad_frees, bad_handles;
    sbuf log, line, extra;
    char *snapshot; /* what TD_Log returned last */
    /* persistent across resets, so leaks stay visible */
    hmap allocs;    /* pointer -> kind << 32 | entry count */
    hrec_t *h; size_t nh, caph;
    long open_handles;
    int inflight, max_inflight; /* max: since the last load/reset */
    hmap flight; /* flight_key() -> max << 32 | current, as max_inflight */
    const char **interned; size_t ninterned, capinterned;
} g;

/* Names are interned (never freed) so call records and handles can keep
 * pointers to them across resets. */
static const char *intern(const char *s)
{
    size_t i, n;
    char *c;
    for (i = 0; i < g.ninterned; i++)
        if (!strcmp(g.interned[i], s))
            return g.interned[i];
    n = strlen(s) + 1;
    c = memcpy(xrealloc(NULL, n), s, n);
    GROW(g.interned, g.ninterned, g.capinterned);
    return g.interned[g.ninterned++] = c;
}

static int server_find(const char *name)
{
    size_t i, j;
    for (i = 0; i < g.nsrv; i++)
        if (ieq(g.srv[i].name, name))
            return (int)i;
    for (i = 0; i < g.nsrv; i++)
        for (j = 0; j < g.srv[i].naliases; j++)
            if (ieq(g.srv[i].aliases[j], name))
                return (int)i;
    return -1;
}
static int server_add(const char *name)
{
    server_t *s;
    GROW(g.srv, g.nsrv, g.capsrv);
    s = memset(&g.srv[g.nsrv], 0, sizeof *s);
    s->name = intern(name);
    s->wname = utf8_to_w(name);
    if (!s->wname) { /* cannot happen: names are validated before */
        WCHAR empty = 0;
        s->wname = wdup(&empty);
    }
    s->fullcontrol = 1;
    s->discmsg = ERR_DISCMSG_DEFAULT;
    s->missing = ERR_NOSESSION;
    s->clock = LOCAL_CLOCK_DEFAULT;
    return (int)g.nsrv++;
}
static sess_t *sess_find(server_t *s, uint32_t id)
{
    int64_t *ix = hm_find(&s->ids, (uint64_t)id + 1);
    return ix ? &s->s[*ix] : NULL;
}
static sess_t *sess_add(server_t *s, uint32_t id)
{
    sess_t *ss;
    WCHAR empty = 0;
    GROW(s->s, s->n, s->cap);
    ss = memset(&s->s[s->n], 0, sizeof *ss);
    ss->id = id;
    ss->name = wdup(&empty);
    ss->user = wdup(&empty);
    ss->domain = wdup(&empty);
    ss->response = IDOK;
    ss->discmsg = DISCMSG_INHERIT;
    ss->client = wdup(&empty);
    ss->lockflags = WTS_SESSIONSTATE_UNKNOWN;
    hm_put(&s->ids, (uint64_t)id + 1, (int64_t)s->n);
    s->n++;
    s->live++;
    return ss;
}
static void sess_strings_free(sess_t *ss)
{
    free(ss->name);
    free(ss->user);
    free(ss->domain);
    free(ss->client);
    ss->name = ss->user = ss->domain = ss->client = NULL;
}
static void sess_remove(server_t *s, sess_t *ss)
{
    hm_del(&s->ids, (uint64_t)ss->id + 1, NULL);
    sess_strings_free(ss);
    ss->removed = 1;
    s->live--;
    if (ss->gone_at) {
        ss->gone_at = 0;
        s->pending--;
    }
}

/* A logoff without waiting: the session goes when its logoff_ms is up
 * (a second logoff meanwhile keeps the first deadline).  Returns it. */
static int64_t logoff_schedule(server_t *s, sess_t *ss)
{
    if (!ss->gone_at) {
        ss->gone_at = now_ms() + ss->logoff_ms;
        if (!s->pending || ss->gone_at < s->next_gone)
            s->next_gone = ss->gone_at;
        s->pending++;
    }
    return ss->gone_at;
}

/* Removes the sessions whose logoff is done: O(1) while none is due. */
static void reap(server_t *s)
{
    size_t i;
    int64_t now, next = 0;
    if (!s->pending || (now = now_ms()) < s->next_gone)
        return;
    for (i = 0; i < s->n && s->pending; i++) {
        sess_t *ss = &s->s[i];
        if (ss->removed || !ss->gone_at)
            continue;
        if (ss->gone_at <= now)
            sess_remove(s, ss);
        else if (!next || ss->gone_at < next)
            next = ss->gone_at;
    }
    s->next_gone = next;
}

static long discmsg_of(const server_t *s, const sess_t *ss)
{
    return ss->discmsg == DISCMSG_INHERIT ? s->discmsg : ss->discmsg;
}

/* Calls in flight per server and function, keyed by the server's interned
 * name (NULL: any server) and the function (NFUNC: any function). */
static uint64_t flight_key(const char *server, int func)
{
    return ((uint64_t)(uintptr_t)server << 4) | (uint64_t)(func + 1);
}
static void flight_add(const char *server, int func, int delta)
{
    uint64_t k = flight_key(server, func);
    int64_t *v = hm_find(&g.flight, k);
    int64_t cur = (v ? (*v & 0xFFFFFFFF) : 0) + delta;
    int64_t max = v ? (*v >> 32) : 0;
    if (cur > max)
        max = cur;
    hm_put(&g.flight, k, (max << 32) | cur);
}
static void mutate_free(mutate_t *m)
{
    free(m->user);
    free(m->domain);
    free(m->name);
    free(m->process);
}

/* Empties the farm (just "."), counters, log and rules; keeps the tracking
 * of live allocations and handles. */
static void farm_reset(void)
{
    size_t i, j;
    for (i = 0; i < g.nsrv; i++) {
        for (j = 0; j < g.srv[i].n; j++)
            sess_strings_free(&g.srv[i].s[j]);
        free(g.srv[i].s);
        for (j = 0; j < g.srv[i].nprocs; j++)
            free(g.srv[i].procs[j].name);
        free(g.srv[i].procs);
        free(g.srv[i].wname);
        free(g.srv[i].aliases);
        hm_free(&g.srv[i].ids);
    }
    for (i = 0; i < g.nmut; i++)
        mutate_free(&g.mut[i]);
    free(g.srv); free(g.lat); free(g.fail); free(g.mut); free(g.calls);
    free(g.qsize);
    g.qsize = NULL;
    g.nqsize = g.capqsize = 0;
    free(g.log.p); free(g.snapshot);
    g.srv = NULL; g.lat = NULL; g.fail = NULL; g.mut = NULL; g.calls = NULL;
    g.nsrv = g.capsrv = g.nlat = g.caplat = g.nfail = g.capfail = 0;
    g.nmut = g.capmut = g.ncalls = g.capcalls = 0;
    memset(&g.log, 0, sizeof g.log);
    g.snapshot = NULL;
    memset(g.func_calls, 0, sizeof g.func_calls);
    g.bad_frees = g.bad_handles = 0;
    g.max_inflight = g.inflight;
    for (i = 0; i < g.flight.cap; i++) /* max := current, like max_inflight */
        if (g.flight.k[i])
            g.flight.v[i] = ((g.flight.v[i] & 0xFFFFFFFF) << 32) | (g.flight.v[i] & 0xFFFFFFFF);
    g.gen++;
    g.caller_session = 1;
    g.caller_fullcontrol = 1;
    server_add(".");
}

/* ------------------------------------------------------------------------ */
/* Farm file                                                                 */
/* ------------------------------------------------------------------------ */
static char *kv(char *tok, const char *key)
{
    size_t n = strlen(key);
    return (!strncmp(tok, key, n) && tok[n] == '=') ? tok + n + 1 : NULL;
}
static int p_u64(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (max - (uint64_t)(*s - '0')) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return 0;
}
static int p_u32(const char *s, uint32_t *out)
{
    uint64_t v;
    if (p_u64(s, 0xFFFFFFFFu, &v)) return -1;
    *out = (uint32_t)v;
    return 0;
}
static int p_ft(const char *s, int64_t *out)
{
    uint64_t v;
    if (p_u64(s, (uint64_t)INT64_MAX, &v)) return -1;
    *out = (int64_t)v;
    return 0;
}
static int p_bool(const char *s, int *out)
{
    if (strcmp(s, "0") && strcmp(s, "1")) return -1;
    *out = s[0] == '1';
    return 0;
}
static int p_state(const char *s, int *out)
{
    uint32_t v;
    if (p_u32(s, &v) || v > INT32_MAX) return -1; /* any number: future states too */
    *out = (int)v;
    return 0;
}
/* discmsg=fail|ok|N (N > 0: the error code) */
static int p_discmsg(const char *s, long *out)
{
    uint32_t v;
    if (!strcmp(s, "fail")) *out = (long)ERR_DISCMSG_DEFAULT;
    else if (!strcmp(s, "ok")) *out = DISCMSG_OK;
    else if (!p_u32(s, &v) && v > 0 && v <= 0x7FFFFFFFu) *out = (long)v;
    else return -1;
    return 0;
}
/* Dotted-quad IPv4 into out[0..3]. */
static int p_ipv4(const char *s, unsigned char out[4])
{
    int i;
    for (i = 0; i < 4; i++) {
        unsigned v = 0;
        int digits = 0;
        for (; *s >= '0' && *s <= '9'; s++) {
            v = v * 10 + (unsigned)(*s - '0');
            if (++digits > 3 || v > 255) return -1;
        }
        if (!digits) return -1;
        out[i] = (unsigned char)v;
        if (i < 3 && *s++ != '.') return -1;
    }
    return *s ? -1 : 0;
}
/* An IPv6 literal (hex groups, at most one "::"; no embedded IPv4). */
static int p_ipv6(const char *s, unsigned char out[16])
{
    unsigned head[8], tail[8];
    int nh = 0, nt = 0, gap = 0, i;
    if (s[0] == ':') {
        if (s[1] != ':') return -1;
        gap = 1;
        s += 2;
    }
    while (*s) {
        unsigned v = 0;
        int digits = 0;
        for (; hexval(*s) >= 0; s++) {
            v = v * 16 + (unsigned)hexval(*s);
            if (++digits > 4) return -1;
        }
        if (!digits || nh + nt == 8) return -1;
        if (gap) tail[nt++] = v; else head[nh++] = v;
        if (!*s) break;
        if (*s++ != ':' || !*s) return -1;
        if (*s == ':') {
            if (gap) return -1;
            gap = 1;
            s++;
        }
    }
    if (gap ? nh + nt > 7 : nh != 8) return -1;
    memset(out, 0, 16);
    for (i = 0; i < nh; i++) {
        out[2 * i] = (unsigned char)(head[i] >> 8);
        out[2 * i + 1] = (unsigned char)head[i];
    }
    for (i = 0; i < nt; i++) {
        int k = 8 - nt + i;
        out[2 * k] = (unsigned char)(tail[i] >> 8);
        out[2 * k + 1] = (unsigned char)tail[i];
    }
    return 0;
}
/* address=A.B.C.D or an IPv6 literal (percent-encoded like any value). */
static int p_addr(char *s, sess_t *t)
{
    if (pct_decode(s)) return -1;
    memset(t->addr, 0, sizeof t->addr);
    if (!p_ipv4(s, t->addr)) t->af = WIN_AF_INET;
    else if (!p_ipv6(s, t->addr)) t->af = WIN_AF_INET6;
    else return -1;
    return 0;
}
/* locked=1 (WTS_SESSIONSTATE_LOCK), 0 (..._UNLOCK) or unknown */
static int p_locked(const char *s, uint32_t *out)
{
    if (!strcmp(s, "1")) *out = WTS_SESSIONSTATE_LOCK;
    else if (!strcmp(s, "0")) *out = WTS_SESSIONSTATE_UNLOCK;
    else if (!strcmp(s, "unknown")) *out = WTS_SESSIONSTATE_UNKNOWN;
    else return -1;
    return 0;
}

/* A percent-encoded UTF-8 value, decoded in place and validated. */
static const char *p_name(char *s)
{
    WCHAR *w;
    if (pct_decode(s) || !*s || !(w = utf8_to_w(s)))
        return NULL;
    free(w);
    return intern(s);
}
static int p_wstr(char *s, WCHAR **out)
{
    WCHAR *w;
    if (pct_decode(s) || !(w = utf8_to_w(s)))
        return -1;
    free(*out);
    *out = w;
    return 0;
}
static int p_func(const char *s, int allow_any)
{
    int i;
    if (allow_any && !strcmp(s, "*"))
        return F_ANY;
    for (i = 0; i < NFUNC; i++)
        if (!strcmp(s, func_names[i]))
            return i;
    return -1;
}

/* Parses one directive; *cur is the server the session lines belong to.
 * Returns 0 or -1 for a bad line.  Tokens are modified in place. */
static int parse_line(char *line, int *cur)
{
    char *tok[64], *v;
    int nt = 0, i;
    char *s = line;
    for (;;) { /* split on blanks; a token starting with '#' ends the line */
        while (*s == ' ' || *s == '\t') s++;
        if (!*s || *s == '#') break;
        if (nt == 64) return -1;
        tok[nt++] = s;
        while (*s && *s != ' ' && *s != '\t') s++;
        if (*s) *s++ = 0;
    }
    if (!nt)
        return 0;

    if (!strcmp(tok[0], "server")) {
        const char *name;
        server_t *sv;
        int ix;
        if (nt < 2 || !(name = p_name(tok[1])))
            return -1;
        ix = -1;
        for (i = 0; i < (int)g.nsrv; i++) /* a repeated server line reopens it */
            if (ieq(g.srv[i].name, name)) ix = i;
        if (ix < 0) ix = server_add(name);
        sv = &g.srv[ix];
        for (i = 2; i < nt; i++) {
            if (!strcmp(tok[i], "unreachable")) sv->unreachable = 1;
            else if (!strcmp(tok[i], "noex")) sv->noex = 1;
            else if (!strcmp(tok[i], "noquery")) sv->noquery = 1;
            else if ((v = kv(tok[i], "unreachable"))) {
                if (!strcmp(v, "null")) sv->unreachable = OPEN_NULL;
                else if (p_bool(v, &sv->unreachable)) return -1;
            }
            else if ((v = kv(tok[i], "noex"))) { if (p_bool(v, &sv->noex)) return -1; }
            else if ((v = kv(tok[i], "noquery"))) { if (p_bool(v, &sv->noquery)) return -1; }
            else if ((v = kv(tok[i], "discmsg"))) { if (p_discmsg(v, &sv->discmsg)) return -1; }
            else if ((v = kv(tok[i], "missing"))) {
                if (!strcmp(v, "2")) sv->missing = ERR_FILE_NOT_FOUND;
                else if (!strcmp(v, "7022")) sv->missing = ERR_NOSESSION;
                else return -1;
            }
            else if ((v = kv(tok[i], "fullcontrol"))) { if (p_bool(v, &sv->fullcontrol)) return -1; }
            else if ((v = kv(tok[i], "clock"))) { if (p_ft(v, &sv->clock)) return -1; }
            else if ((v = kv(tok[i], "alias"))) {
                const char *a = p_name(v);
                if (!a) return -1;
                GROW(sv->aliases, sv->naliases, sv->capaliases);
                sv->aliases[sv->naliases++] = a;
            } else return -1;
        }
        *cur = ix;
        return 0;
    }

    if (!strcmp(tok[0], "session")) {
        server_t *sv = &g.srv[*cur];
        sess_t t, *ss;
        int have_id = 0, rc = 0;
        WCHAR empty = 0;
        memset(&t, 0, sizeof t);
        t.response = IDOK;
        t.discmsg = DISCMSG_INHERIT;
        t.lockflags = WTS_SESSIONSTATE_UNKNOWN;
        for (i = 1; i < nt && !rc; i++) {
            if ((v = kv(tok[i], "id"))) { rc = p_u32(v, &t.id) || t.id == WTS_CURRENT_SESSION; have_id = 1; }
            else if ((v = kv(tok[i], "name"))) rc = p_wstr(v, &t.name);
            else if ((v = kv(tok[i], "state"))) rc = p_state(v, &t.state);
            else if ((v = kv(tok[i], "user"))) rc = p_wstr(v, &t.user);
            else if ((v = kv(tok[i], "domain"))) rc = p_wstr(v, &t.domain);
            else if ((v = kv(tok[i], "logon"))) rc = p_ft(v, &t.logon);
            else if ((v = kv(tok[i], "connect"))) rc = p_ft(v, &t.connect);
            else if ((v = kv(tok[i], "disconnect"))) rc = p_ft(v, &t.disconnect);
            else if ((v = kv(tok[i], "input"))) rc = p_ft(v, &t.input);
            else if ((v = kv(tok[i], "logoff_ms"))) rc = p_u32(v, &t.logoff_ms);
            else if ((v = kv(tok[i], "logoff_hang"))) rc = p_bool(v, &t.logoff_hang);
            else if ((v = kv(tok[i], "discmsg"))) rc = p_discmsg(v, &t.discmsg);
            else if ((v = kv(tok[i], "noquery"))) rc = p_bool(v, &t.noquery);
            else if ((v = kv(tok[i], "client"))) rc = p_wstr(v, &t.client);
            else if ((v = kv(tok[i], "address"))) rc = p_addr(v, &t);
            else if ((v = kv(tok[i], "locked"))) rc = p_locked(v, &t.lockflags);
            else if ((v = kv(tok[i], "response"))) {
                uint32_t r;
                if (!strcmp(v, "timeout")) t.response = RESP_TIMEOUT;
                else if (!(rc = p_u32(v, &r))) t.response = (int)r;
            } else rc = -1;
        }
        if (rc || !have_id || sess_find(sv, t.id)) {
            sess_strings_free(&t);
            return -1;
        }
        ss = sess_add(sv, t.id);
        sess_strings_free(ss); /* take the parsed strings instead */
        if (!t.name) t.name = wdup(&empty);
        if (!t.user) t.user = wdup(&empty);
        if (!t.domain) t.domain = wdup(&empty);
        if (!t.client) t.client = wdup(&empty);
        *ss = t;
        return 0;
    }

    if (!strcmp(tok[0], "process")) {
        server_t *sv = &g.srv[*cur];
        proc_t pr;
        int have_session = 0, have_pid = 0, rc = 0;
        memset(&pr, 0, sizeof pr);
        for (i = 1; i < nt && !rc; i++) {
            if ((v = kv(tok[i], "session"))) { rc = p_u32(v, &pr.session); have_session = 1; }
            else if ((v = kv(tok[i], "pid"))) { rc = p_u32(v, &pr.pid); have_pid = 1; }
            else if ((v = kv(tok[i], "name"))) rc = p_wstr(v, &pr.name);
            else rc = -1;
        }
        if (rc || !have_session || !have_pid || pr.session >= WTS_ANY_SESSION) {
            free(pr.name);
            return -1;
        }
        if (!pr.name) {
            WCHAR empty = 0;
            pr.name = wdup(&empty);
        }
        GROW(sv->procs, sv->nprocs, sv->capprocs);
        sv->procs[sv->nprocs++] = pr;
        return 0;
    }

    if (!strcmp(tok[0], "caller")) {
        for (i = 1; i < nt; i++) {
            if ((v = kv(tok[i], "session"))) { if (p_u32(v, &g.caller_session)) return -1; }
            else if ((v = kv(tok[i], "fullcontrol"))) { if (p_bool(v, &g.caller_fullcontrol)) return -1; }
            else return -1;
        }
        return 0;
    }

    if (!strcmp(tok[0], "latency")) {
        latency_t l = { NULL, -1, 0 };
        int have_ms = 0;
        for (i = 1; i < nt; i++) {
            if ((v = kv(tok[i], "server"))) { if (!(l.server = p_name(v))) return -1; }
            else if ((v = kv(tok[i], "func"))) { if ((l.func = p_func(v, 1)) == -1) return -1; }
            else if ((v = kv(tok[i], "ms"))) { if (p_u32(v, &l.ms)) return -1; have_ms = 1; }
            else return -1;
        }
        if (!l.server || l.func == -1 || !have_ms) return -1;
        GROW(g.lat, g.nlat, g.caplat);
        g.lat[g.nlat++] = l;
        return 0;
    }

    if (!strcmp(tok[0], "fail")) {
        fail_t f;
        int have_err = 0;
        memset(&f, 0, sizeof f);
        f.func = -1;
        f.remaining = -1;
        for (i = 1; i < nt; i++) {
            uint32_t n;
            if ((v = kv(tok[i], "server"))) { if (!(f.server = p_name(v))) return -1; }
            else if ((v = kv(tok[i], "func"))) { if ((f.func = p_func(v, 1)) == -1) return -1; }
            else if ((v = kv(tok[i], "error"))) { if (p_u32(v, &f.error)) return -1; have_err = 1; }
            else if ((v = kv(tok[i], "count"))) { if (p_u32(v, &n)) return -1; f.remaining = (long)n; }
            else if ((v = kv(tok[i], "session"))) { if (p_u32(v, &f.session)) return -1; f.has_session = 1; }
            else return -1;
        }
        if (!f.server || f.func == -1 || !have_err) return -1;
        GROW(g.fail, g.nfail, g.capfail);
        g.fail[g.nfail++] = f;
        return 0;
    }

    if (!strcmp(tok[0], "querysize")) {
        qsize_t q;
        int have_class = 0, have_bytes = 0;
        memset(&q, 0, sizeof q);
        for (i = 1; i < nt; i++) {
            uint32_t n;
            if ((v = kv(tok[i], "server"))) { if (!(q.server = p_name(v))) return -1; }
            else if ((v = kv(tok[i], "class"))) { if (p_u32(v, &n) || n > INT32_MAX) return -1; q.info_class = (int)n; have_class = 1; }
            else if ((v = kv(tok[i], "bytes"))) { if (p_u32(v, &q.bytes)) return -1; have_bytes = 1; }
            else if ((v = kv(tok[i], "session"))) { if (p_u32(v, &q.session)) return -1; q.has_session = 1; }
            else return -1;
        }
        if (!q.server || !have_class || !have_bytes) return -1;
        GROW(g.qsize, g.nqsize, g.capqsize);
        g.qsize[g.nqsize++] = q;
        return 0;
    }

    if (!strcmp(tok[0], "mutate")) {
        mutate_t m;
        int rc = 0, have_id = 0;
        memset(&m, 0, sizeof m);
        m.func = -1;
        for (i = 1; i < nt && !rc; i++) {
            if ((v = kv(tok[i], "after"))) {
                char *colon = strrchr(v, ':');
                uint64_t n;
                rc = -1;
                if (colon) {
                    *colon = 0;
                    m.func = p_func(v, 0);
                    if (m.func >= 0 && !p_u64(colon + 1, 0xFFFFFFFFu, &n) && n > 0) {
                        m.nth = (unsigned long)n;
                        rc = 0;
                    }
                }
            }
            else if ((v = kv(tok[i], "server"))) rc = (m.server = p_name(v)) ? 0 : -1;
            else if ((v = kv(tok[i], "id"))) { rc = p_u32(v, &m.id); have_id = 1; }
            else if ((v = kv(tok[i], "state"))) { rc = p_state(v, &m.state); m.set |= M_STATE; }
            else if ((v = kv(tok[i], "user"))) { rc = p_wstr(v, &m.user); m.set |= M_USER; }
            else if ((v = kv(tok[i], "domain"))) { rc = p_wstr(v, &m.domain); m.set |= M_DOMAIN; }
            else if ((v = kv(tok[i], "name"))) { rc = p_wstr(v, &m.name); m.set |= M_NAME; }
            else if ((v = kv(tok[i], "input"))) { rc = p_ft(v, &m.input); m.set |= M_INPUT; }
            else if ((v = kv(tok[i], "disconnect"))) { rc = p_ft(v, &m.disconnect); m.set |= M_DISC; }
            else if ((v = kv(tok[i], "logon"))) { rc = p_ft(v, &m.logon); m.set |= M_LOGON; }
            else if ((v = kv(tok[i], "connect"))) { rc = p_ft(v, &m.connect); m.set |= M_CONNECT; }
            else if ((v = kv(tok[i], "remove"))) rc = p_bool(v, &m.remove);
            else if ((v = kv(tok[i], "locked"))) { rc = p_locked(v, &m.lockflags); m.set |= M_LOCKED; }
            else if ((v = kv(tok[i], "process"))) rc = p_wstr(v, &m.process);
            else rc = -1;
        }
        if (rc || m.func < 0 || !m.server || !have_id) {
            mutate_free(&m);
            return -1;
        }
        GROW(g.mut, g.nmut, g.capmut);
        g.mut[g.nmut++] = m;
        return 0;
    }
    return -1;
}

/* Opens a file by UTF-8 path (on Windows through _wfopen, so non-ANSI
 * paths work). */
static FILE *open_path(const char *path, const char *mode)
{
#ifdef _WIN32
    WCHAR wmode[8], *w = utf8_to_w(path);
    FILE *f;
    size_t i;
    if (!w)
        return NULL;
    for (i = 0; mode[i] && i < 7; i++) wmode[i] = (WCHAR)mode[i];
    wmode[i] = 0;
    f = _wfopen(w, wmode);
    free(w);
    return f;
#else
    return fopen(path, mode);
#endif
}

/* Opens the file an environment variable names; NULL if unset or empty. */
static FILE *open_env(const char *var, const char *mode)
{
#ifdef _WIN32
    /* Read the OS environment block, not this CRT's copy: Python may set
     * os.environ after loading us, and only the former sees it. */
    WCHAR wvar[64], wmode[8], buf[4096];
    size_t i;
    DWORD n;
    for (i = 0; var[i] && i < 63; i++) wvar[i] = (WCHAR)var[i];
    wvar[i] = 0;
    for (i = 0; mode[i] && i < 7; i++) wmode[i] = (WCHAR)mode[i];
    wmode[i] = 0;
    n = GetEnvironmentVariableW(wvar, buf, 4096);
    return (n == 0 || n >= 4096) ? NULL : _wfopen(buf, wmode);
#else
    const char *path = getenv(var);
    return (path && *path) ? fopen(path, mode) : NULL;
#endif
}

/* Resets the farm and loads the file f: 0, the bad line number, or -1. */
static int load_file_locked(FILE *f)
{
    sbuf text = { NULL, 0, 0 };
    char chunk[4096], *p;
    size_t n;
    int lineno = 0, cur = 0, bad = 0;
    farm_reset();
    if (!f)
        return -1;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        sb_putn(&text, chunk, n);
    fclose(f);
    sb_putn(&text, "", 0);
    p = text.p;
    if (!strncmp(p, "\xEF\xBB\xBF", 3)) /* UTF-8 BOM */
        p += 3;
    while (*p && !bad) {
        char *e = strchr(p, '\n');
        size_t len;
        if (e) *e = 0;
        lineno++;
        len = strlen(p);
        if (len && p[len - 1] == '\r') p[len - 1] = 0;
        if (parse_line(p, &cur)) bad = lineno;
        if (!e) break;
        p = e + 1;
    }
    free(text.p);
    if (bad)
        farm_reset();
    return bad;
}

/* Lazy load: the first call loads WTSDOUBLE_FARM unless TD_Load/TD_Reset
 * already set the farm up. */
static void ensure_loaded(void)
{
    FILE *f;
    int r;
    if (g_loaded)
        return;
    g_loaded = 1;
    farm_reset();
    if ((f = open_env("WTSDOUBLE_FARM", "rb")) && (r = load_file_locked(f)) != 0)
        fprintf(stderr, "wtsdouble: WTSDOUBLE_FARM: bad line %d\n", r);
}

/* ------------------------------------------------------------------------ */
/* Tracking of buffers and handles                                           */
/* ------------------------------------------------------------------------ */
static void *t_alloc(size_t size, int kind, uint32_t count)
{
    void *p = calloc(1, size ? size : 1);
    if (!p)
        die_oom();
    hm_put(&g.allocs, (uint64_t)(uintptr_t)p, ((int64_t)kind << 32) | count);
    return p;
}
/* Frees a tracked buffer; returns its kind, or -1 (untouched) if unknown. */
static int t_free(void *p, uint32_t *count)
{
    int64_t v;
    if (!p || !hm_del(&g.allocs, (uint64_t)(uintptr_t)p, &v))
        return -1;
    free(p);
    *count = (uint32_t)(v & 0xFFFFFFFF);
    return (int)(v >> 32);
}

/* Handles are opaque numbers, never pointers we dereference, so stale or
 * garbage values are recognised safely.  Records are kept after closing to
 * tell "already closed" apart (both are bad handles). */
#define HBASE ((uintptr_t)0x5D000000u)
#define HSTEP ((uintptr_t)16)
static hrec_t *h_get(HANDLE h)
{
    uintptr_t v = (uintptr_t)h, ix;
    if (v < HBASE || (v - HBASE) % HSTEP)
        return NULL;
    ix = (v - HBASE) / HSTEP;
    return ix < g.nh ? &g.h[ix] : NULL;
}

/* ------------------------------------------------------------------------ */
/* The skeleton shared by every exported call                                */
/* ------------------------------------------------------------------------ */
enum { HK_NONE, HK_NAME, HK_HANDLE };
typedef struct {
    int func, hkind;
    HANDLE h;
    const WCHAR *wname;        /* HK_NAME: the name being opened */
    const char *name;          /* ... interned UTF-8 (NULL if wname NULL) */
    int srv;                   /* server index, -1 if none/unknown */
    const char *canon, *opened;/* server of the call: farm name, name as opened */
    uint32_t status;           /* 0, ERR_HANDLE or ERR_RPC */
    int has_sess;
    uint32_t raw_sess, sess;   /* sess: WTS_CURRENT_SESSION resolved */
    int fired;                 /* a fail rule fired with error ferr */
    uint32_t ferr;
    const char *fserver;       /* server counted in flight (canon at entry) */
    td_err_t saved;
} ctx_t;

/* What a call does after its work, with the lock released (bWait). */
typedef struct {
    uint32_t ms;               /* sleep this long */
    int hang;                  /* then block until LOGOFF_HANG_MS or a reset */
    int srv;                   /* >= 0: then make sure session id is gone */
    uint32_t id;
    int64_t gone_at;           /* ... if it is still the same logoff */
    unsigned gen;              /* the farm the above refers to */
} post_t;

static void ctx_init(ctx_t *c, int func, int hkind, HANDLE h)
{
    memset(c, 0, sizeof *c);
    c->func = func;
    c->hkind = hkind;
    c->h = h;
}

static void resolve(ctx_t *c)
{
    c->srv = -1;
    c->status = 0;
    c->canon = c->opened = "";
    if (c->hkind == HK_NAME && c->name && *c->name) {
        c->opened = c->name;
        c->srv = server_find(c->name);
        c->canon = c->srv >= 0 ? g.srv[c->srv].name : c->name;
    } else if (c->hkind == HK_HANDLE) {
        if (!c->h) { /* WTS_CURRENT_SERVER_HANDLE */
            c->srv = 0;
            c->canon = c->opened = g.srv[0].name;
        } else {
            hrec_t *r = h_get(c->h);
            if (!r || !r->open) {
                c->status = ERR_HANDLE;
            } else {
                if (r->gen != g.gen) { /* the farm was reloaded */
                    r->srv = server_find(r->name);
                    r->gen = g.gen;
                }
                c->srv = r->srv;
                c->opened = r->name;
                c->canon = c->srv >= 0 ? g.srv[c->srv].name : r->name;
            }
        }
        if (!c->status && (c->srv < 0 || g.srv[c->srv].unreachable))
            c->status = ERR_RPC;
    }
    c->sess = c->raw_sess;
    if (c->has_sess && c->srv == 0 && c->raw_sess == WTS_CURRENT_SESSION)
        c->sess = g.caller_session;
}

static int rule_server_matches(const char *rule, const ctx_t *c)
{
    return !strcmp(rule, "*") || ieq(rule, c->canon) || ieq(rule, c->opened);
}

/* Waits the injected latency (lock released), then takes the lock for the
 * work and checks the failure injections.  Returns with the lock held. */
static void flight(const ctx_t *c, int delta)
{
    flight_add(c->fserver, c->func, delta);
    flight_add(c->fserver, NFUNC, delta);
    flight_add(NULL, c->func, delta);
}

static void call_enter(ctx_t *c)
{
    uint32_t ms = 0;
    size_t i;
    c->saved = err_get();
    LOCK();
    ensure_loaded();
    if (++g.inflight > g.max_inflight)
        g.max_inflight = g.inflight;
    if (c->hkind == HK_NAME && c->wname) {
        w_to_utf8(&g.extra, c->wname);
        c->name = intern(g.extra.p);
        g.extra.n = 0;
    }
    resolve(c);
    c->fserver = c->canon; /* interned or a literal: outlives any reset */
    flight(c, +1);
    for (i = 0; i < g.nlat; i++)
        if ((g.lat[i].func == F_ANY || g.lat[i].func == c->func) &&
            rule_server_matches(g.lat[i].server, c))
            ms += g.lat[i].ms;
    UNLOCK();
    if (ms)
        sleep_ms(ms);
    LOCK();
    resolve(c); /* the farm or the handle may have changed meanwhile */
    if (c->srv >= 0)
        reap(&g.srv[c->srv]);
    for (i = 0; i < g.nfail; i++) {
        fail_t *f = &g.fail[i];
        if (f->remaining == 0 || (f->func != F_ANY && f->func != c->func) ||
            !rule_server_matches(f->server, c) ||
            (f->has_session && (!c->has_sess ||
                                (f->session != c->sess && f->session != c->raw_sess))))
            continue;
        if (f->remaining > 0)
            f->remaining--;
        c->fired = 1;
        c->ferr = f->error;
        break;
    }
}

/* Appends to WTSDOUBLE_LOG, if set (open/append/close each time). */
static void log_file_append(const char *text)
{
    FILE *f = open_env("WTSDOUBLE_LOG", "ab");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void apply_mutations(int func, unsigned long count)
{
    size_t i;
    for (i = 0; i < g.nmut; i++) {
        mutate_t *m = &g.mut[i];
        server_t *s;
        sess_t *ss;
        int si;
        if (m->done || m->func != func || m->nth != count)
            continue;
        m->done = 1;
        if ((si = server_find(m->server)) < 0)
            continue;
        s = &g.srv[si];
        ss = sess_find(s, m->id);
        if (m->remove) {
            if (ss) sess_remove(s, ss);
            continue;
        }
        if (!ss) /* a session appearing while the caller works */
            ss = sess_add(s, m->id);
        if (m->set & M_STATE) ss->state = m->state;
        if (m->set & M_USER) { free(ss->user); ss->user = wdup(m->user); }
        if (m->set & M_DOMAIN) { free(ss->domain); ss->domain = wdup(m->domain); }
        if (m->set & M_NAME) { free(ss->name); ss->name = wdup(m->name); }
        if (m->set & M_INPUT) ss->input = m->input;
        if (m->set & M_DISC) ss->disconnect = m->disconnect;
        if (m->set & M_LOGON) ss->logon = m->logon;
        if (m->set & M_CONNECT) ss->connect = m->connect;
        if (m->set & M_LOCKED) ss->lockflags = m->lockflags;
        if (m->process) { /* a program started while the caller works */
            proc_t pr;
            size_t j;
            pr.session = m->id;
            pr.pid = 4;
            for (j = 0; j < s->nprocs; j++)
                if (s->procs[j].pid >= pr.pid)
                    pr.pid = s->procs[j].pid + 4;
            pr.name = wdup(m->process);
            GROW(s->procs, s->nprocs, s->capprocs);
            s->procs[s->nprocs++] = pr;
        }
    }
}

/* Logs and counts the call, applies mutations, releases the lock, does
 * what post says (logoff with bWait) and sets or restores the error. */
static void call_leave(ctx_t *c, int ok, uint32_t err, const post_t *post)
{
    if (ok)
        err = 0;
    g.line.n = 0;
    sb_puts(&g.line, func_names[c->func]);
    sb_putn(&g.line, "\t", 1);
    sb_puts(&g.line, c->canon);
    if (c->has_sess)
        sb_printf(&g.line, "\t%lu", (unsigned long)c->raw_sess); /* as passed */
    else
        sb_puts(&g.line, "\t-");
    sb_printf(&g.line, "\t%d\t%lu\t", ok ? 1 : 0, (unsigned long)err);
    sb_putn(&g.line, g.extra.p ? g.extra.p : "", g.extra.n);
    sb_putn(&g.line, "\n", 1);
    g.extra.n = 0;
    sb_putn(&g.log, g.line.p, g.line.n);
    log_file_append(g.line.p);

    GROW(g.calls, g.ncalls, g.capcalls);
    g.calls[g.ncalls].func = c->func;
    g.calls[g.ncalls].canon = c->canon;
    g.calls[g.ncalls].opened = c->opened;
    g.ncalls++;
    if (c->status == ERR_HANDLE)
        g.bad_handles++;
    apply_mutations(c->func, ++g.func_calls[c->func]);
    if (post && (post->ms || post->hang || post->srv >= 0)) {
        int64_t start = now_ms();
        UNLOCK();
        if (post->ms)
            sleep_ms(post->ms);
        while (post->srv >= 0 && now_ms() < post->gone_at)
            sleep_ms(1); /* a sleep may end a tick early */
        LOCK();
        if (post->srv >= 0 && post->gen == g.gen) {
            /* by time it is gone already; this makes sure of it at return
             * even where the sleep was a tick short */
            server_t *s = &g.srv[post->srv];
            sess_t *ss = sess_find(s, post->id);
            if (ss && ss->gone_at == post->gone_at)
                sess_remove(s, ss);
        }
        while (post->hang && post->gen == g.gen &&
               now_ms() - start < (int64_t)LOGOFF_HANG_MS) {
            UNLOCK();
            sleep_ms(20);
            LOCK();
        }
    }
    g.inflight--;
    flight(c, -1);
    UNLOCK();
    /* last, so nothing above can clobber it */
    err_set(!ok && err ? (td_err_t)err : c->saved);
}

/* Checks common to the calls on a server handle, in the order Windows'
 * client does them; returns 0 if the call may proceed to its own checks. */
static uint32_t pre_check(const ctx_t *c)
{
    if (c->fired) return c->ferr ? c->ferr : 0xFFFFFFFFu;
    if (c->status == ERR_HANDLE) return ERR_HANDLE;
    return 0;
}
#define PRE_ERR(e) ((e) == 0xFFFFFFFFu ? 0u : (e)) /* fail rule with error=0 */

/* Rights for logoff/disconnect/message: own session on the local server,
 * or full control; session 0 always needs full control. */
static int full_control(const ctx_t *c)
{
    return c->srv == 0 ? (g.caller_fullcontrol && g.srv[0].fullcontrol)
                       : g.srv[c->srv].fullcontrol;
}
static int has_rights(const ctx_t *c, const sess_t *ss)
{
    int own = c->srv == 0 && ss->id == g.caller_session;
    int full = full_control(c);
    return ss->id == 0 ? full : (own || full);
}

/* The session a per-session call is about, or NULL with *err set: the
 * server's "missing" code for an id it does not have, 7022 for a session
 * the caller may not query (noquery=1). */
static sess_t *session_for(const ctx_t *c, uint32_t *err)
{
    server_t *s = &g.srv[c->srv];
    sess_t *ss = sess_find(s, c->sess);
    if (!ss) {
        *err = s->missing;
    } else if (ss->noquery) {
        *err = ERR_NOSESSION;
        ss = NULL;
    }
    return ss;
}

/* ------------------------------------------------------------------------ */
/* wtsapi32 exports                                                          */
/* ------------------------------------------------------------------------ */
WTS_EXPORT HANDLE WINAPI WTSOpenServerW(LPWSTR pServerName)
{
    ctx_t c;
    HANDLE h = NULL;
    uint32_t err;
    ctx_init(&c, F_OPEN, HK_NAME, NULL);
    c.wname = pServerName;
    call_enter(&c);
    if ((err = pre_check(&c)) == 0) {
        if (!c.name || !*c.name) {
            err = ERR_PARAM;
        } else if (c.srv >= 0 && g.srv[c.srv].unreachable == OPEN_NULL) {
            err = ERR_RPC; /* as Cassia's RemoteServerHandle.Open expects */
        } else {
            GROW(g.h, g.nh, g.caph);
            g.h[g.nh].name = c.name;
            g.h[g.nh].open = 1;
            g.h[g.nh].srv = c.srv;
            g.h[g.nh].gen = g.gen;
            h = (HANDLE)(HBASE + (uintptr_t)g.nh * HSTEP);
            g.nh++;
            g.open_handles++;
        }
    }
    call_leave(&c, h != NULL, PRE_ERR(err), NULL);
    return h;
}

WTS_EXPORT VOID WINAPI WTSCloseServer(HANDLE hServer)
{
    ctx_t c;
    uint32_t err = 0;
    ctx_init(&c, F_CLOSE, HK_HANDLE, hServer);
    call_enter(&c);
    if (!hServer) /* the current-server pseudo handle cannot be closed */
        c.status = ERR_HANDLE;
    if (c.status == ERR_HANDLE) {
        err = ERR_HANDLE;
    } else {
        /* VOID: an injected failure sets the error but the close happens */
        h_get(hServer)->open = 0;
        g.open_handles--;
        if (c.fired)
            err = c.ferr;
    }
    call_leave(&c, !c.fired && !err, err, NULL);
}

WTS_EXPORT BOOL WINAPI WTSEnumerateSessionsW(HANDLE hServer, DWORD Reserved, DWORD Version,
                                             PWTS_SESSION_INFOW *ppSessionInfo, DWORD *pCount)
{
    ctx_t c;
    uint32_t err;
    ctx_init(&c, F_ENUM, HK_HANDLE, hServer);
    call_enter(&c);
    if ((err = pre_check(&c)) != 0) {
    } else if (Reserved != 0 || Version != 1) {
        err = ERR_PARAM;
    } else if (!ppSessionInfo || !pCount) {
        err = ERR_USERBUF;
    } else if (c.status) {
        err = c.status;
    } else if (g.srv[c.srv].noquery || !g.srv[c.srv].live) {
        err = ERR_NOMORE; /* nothing this caller may see */
    } else {
        /* one allocation: the array, then all the strings */
        server_t *s = &g.srv[c.srv];
        size_t i, k = 0, chars = 0, n = s->live;
        WTS_SESSION_INFOW *a;
        WCHAR *str;
        for (i = 0; i < s->n; i++)
            if (!s->s[i].removed)
                chars += wlen(s->s[i].name) + 1;
        a = t_alloc(n * sizeof *a + chars * sizeof(WCHAR), K_PLAIN, 0);
        str = (WCHAR *)(a + n);
        for (i = 0; i < s->n; i++) {
            sess_t *ss = &s->s[i];
            size_t len;
            if (ss->removed)
                continue;
            len = wlen(ss->name) + 1;
            a[k].SessionId = ss->id;
            a[k].State = (WTS_CONNECTSTATE_CLASS)ss->state;
            a[k].pWinStationName = memcpy(str, ss->name, len * sizeof(WCHAR));
            str += len;
            k++;
        }
        *ppSessionInfo = a;
        *pCount = (DWORD)n;
    }
    call_leave(&c, !err, PRE_ERR(err), NULL);
    return !err;
}

WTS_EXPORT BOOL WINAPI WTSEnumerateSessionsExW(HANDLE hServer, DWORD *pLevel, DWORD Filter,
                                               PWTS_SESSION_INFO_1W *ppSessionInfo, DWORD *pCount)
{
    ctx_t c;
    uint32_t err;
    ctx_init(&c, F_ENUMEX, HK_HANDLE, hServer);
    call_enter(&c);
    if ((err = pre_check(&c)) != 0) {
    } else if (!pLevel || *pLevel != 1 || Filter != 0) {
        err = ERR_PARAM;
    } else if (!ppSessionInfo || !pCount) {
        err = ERR_USERBUF;
    } else if (c.status) {
        err = c.status;
    } else if (g.srv[c.srv].noex) {
        err = ERR_NOTIMPL;
    } else if (g.srv[c.srv].noquery || !g.srv[c.srv].live) {
        err = ERR_NOMORE; /* nothing this caller may see */
    } else {
        server_t *s = &g.srv[c.srv];
        size_t i, k = 0, chars = 0, n = s->live;
        WTS_SESSION_INFO_1W *a;
        WCHAR *str;
        for (i = 0; i < s->n; i++)
            if (!s->s[i].removed)
                chars += wlen(s->s[i].name) + wlen(s->s[i].user) +
                         wlen(s->s[i].domain) + 3;
        a = t_alloc(n * sizeof *a + chars * sizeof(WCHAR), K_EX, (uint32_t)n);
        str = (WCHAR *)(a + n);
#define PUT_W(field, src)                                                     \
        do {                                                                  \
            size_t len_ = wlen(src) + 1;                                      \
            a[k].field = memcpy(str, (src), len_ * sizeof(WCHAR));            \
            str += len_;                                                      \
        } while (0)
        for (i = 0; i < s->n; i++) {
            sess_t *ss = &s->s[i];
            if (ss->removed)
                continue;
            a[k].ExecEnvId = (DWORD)k;
            a[k].State = (WTS_CONNECTSTATE_CLASS)ss->state;
            a[k].SessionId = ss->id;
            PUT_W(pSessionName, ss->name);
            a[k].pHostName = NULL; /* documented: NULL but for RDVH VMs */
            PUT_W(pUserName, ss->user);
            PUT_W(pDomainName, ss->domain);
            a[k].pFarmName = NULL;
            k++;
        }
#undef PUT_W
        *ppSessionInfo = a;
        *pCount = (DWORD)n;
    }
    call_leave(&c, !err, PRE_ERR(err), NULL);
    return !err;
}

WTS_EXPORT VOID WINAPI WTSFreeMemory(PVOID pMemory)
{
    ctx_t c;
    uint32_t err = 0, count;
    int kind;
    ctx_init(&c, F_FREE, HK_NONE, NULL);
    call_enter(&c);
    /* VOID: an injected failure sets the error but the free happens */
    kind = t_free(pMemory, &count);
    if (kind != K_PLAIN) { /* unknown, already freed, NULL, or an "ex" one */
        g.bad_frees++;
        err = ERR_PARAM;
    } else if (c.fired) {
        err = c.ferr;
    }
    call_leave(&c, !c.fired && !err, err, NULL);
}

WTS_EXPORT BOOL WINAPI WTSFreeMemoryExW(WTS_TYPE_CLASS WTSTypeClass, PVOID pMemory,
                                        ULONG NumberOfEntries)
{
    ctx_t c;
    uint32_t err, count = 0;
    ctx_init(&c, F_FREEEX, HK_NONE, NULL);
    call_enter(&c);
    if ((err = pre_check(&c)) == 0) {
        int kind = t_free(pMemory, &count);
        int want = kind == K_EX ? WTSTypeSessionInfoLevel1
                 : kind == K_EXPROC0 ? WTSTypeProcessInfoLevel0 : -1;
        if (want < 0 || (int)WTSTypeClass != want || count != NumberOfEntries) {
            g.bad_frees++; /* a known buffer was still freed: no leak too */
            err = ERR_PARAM;
        }
    }
    call_leave(&c, !err, PRE_ERR(err), NULL);
    return !err;
}

/* Whether process p of server c->srv is listed for session `only`
 * (WTS_ANY_SESSION: all) to a caller with (`all`) or without full control. */
static int proc_listed(const ctx_t *c, const proc_t *p, uint32_t only, int all)
{
    return (only == WTS_ANY_SESSION || p->session == only) &&
           sess_find(&g.srv[c->srv], p->session) &&
           (all || (c->srv == 0 && p->session == g.caller_session));
}

/* The processes of server c->srv the caller may see, of session `only`,
 * as one allocation of `kind` (K_PLAIN or K_EXPROC0): the array, one SID,
 * then the names.  Returns the count. */
static DWORD processes_alloc(const ctx_t *c, uint32_t only, int kind,
                             WTS_PROCESS_INFOW **out)
{
    /* S-1-5-18 (LocalSystem): revision 1, one sub-authority, authority 5 */
    static const unsigned char system_sid[12] = { 1, 1, 0, 0, 0, 0, 0, 5,
                                                  18, 0, 0, 0 };
    server_t *s = &g.srv[c->srv];
    int all = full_control(c);
    size_t i, n = 0, k = 0, chars = 0;
    WTS_PROCESS_INFOW *a;
    unsigned char *sid;
    WCHAR *str;
    for (i = 0; i < s->nprocs; i++) {
        if (proc_listed(c, &s->procs[i], only, all)) {
            n++;
            chars += wlen(s->procs[i].name) + 1;
        }
    }
    a = t_alloc(n * sizeof *a + sizeof system_sid + chars * sizeof(WCHAR), kind,
                (uint32_t)n);
    sid = memcpy((unsigned char *)(a + n), system_sid, sizeof system_sid);
    str = (WCHAR *)(sid + sizeof system_sid);
    for (i = 0; i < s->nprocs; i++) {
        const proc_t *p = &s->procs[i];
        size_t len;
        if (!proc_listed(c, p, only, all))
            continue;
        len = wlen(p->name) + 1;
        a[k].SessionId = p->session;
        a[k].ProcessId = p->pid;
        a[k].pProcessName = memcpy(str, p->name, len * sizeof(WCHAR));
        a[k].pUserSid = sid;
        str += len;
        k++;
    }
    *out = a;
    return (DWORD)n;
}

WTS_EXPORT BOOL WINAPI WTSEnumerateProcessesW(HANDLE hServer, DWORD Reserved, DWORD Version,
                                              PWTS_PROCESS_INFOW *ppProcessInfo, DWORD *pCount)
{
    ctx_t c;
    uint32_t err;
    ctx_init(&c, F_ENUMPROC, HK_HANDLE, hServer);
    call_enter(&c);
    if ((err = pre_check(&c)) != 0) {
    } else if (Reserved != 0 || Version != 1) {
        err = ERR_PARAM;
    } else if (!ppProcessInfo || !pCount) {
        err = ERR_USERBUF;
    } else if (c.status) {
        err = c.status;
    } else {
        *pCount = processes_alloc(&c, WTS_ANY_SESSION, K_PLAIN, ppProcessInfo);
    }
    call_leave(&c, !err, PRE_ERR(err), NULL);
    return !err;
}

WTS_EXPORT BOOL WINAPI WTSEnumerateProcessesExW(HANDLE hServer, DWORD *pLevel, DWORD SessionId,
                                                LPWSTR *ppProcessInfo, DWORD *pCount)
{
    ctx_t c;
    uint32_t err;
    ctx_init(&c, F_ENUMPROCEX, HK_HANDLE, hServer);
    call_enter(&c);
    sb_printf(&g.extra, "level=%ld;session=%lu", pLevel ? (long)*pLevel : -1L,
              (unsigned long)SessionId);
    if ((err = pre_check(&c)) != 0) {
    } else if (!pLevel) {
        err = ERR_PARAM;
    } else if (*pLevel > 1) {
        *pLevel = 1; /* documented: set to one, and an error */
        err = ERR_PARAM;
    } else if (*pLevel != 0) {
        err = ERR_PARAM; /* level 1 (WTS_PROCESS_INFO_EXW) is not modelled */
    } else if (!ppProcessInfo || !pCount) {
        err = ERR_USERBUF;
    } else if (c.status) {
        err = c.status;
    } else if (g.srv[c.srv].noex) {
        err = ERR_NOTIMPL;
    } else {
        WTS_PROCESS_INFOW *a;
        uint32_t only = SessionId;
        if (only == WTS_CURRENT_SESSION && c.srv == 0)
            only = g.caller_session;
        *pCount = processes_alloc(&c, only, K_EXPROC0, &a);
        *ppProcessInfo = (LPWSTR)a;
    }
    call_leave(&c, !err, PRE_ERR(err), NULL);
    return !err;
}

static void copy_trunc(WCHAR *dst, size_t cap, const WCHAR *src)
{
    size_t n = wlen(src);
    if (n > cap - 1) {
        n = cap - 1;
        /* do not split a surrogate pair */
        if (sizeof(WCHAR) == 2 && (uint32_t)src[n - 1] >= 0xD800 && (uint32_t)src[n - 1] <= 0xDBFF)
            n--;
    }
    memcpy(dst, src, n * sizeof(WCHAR));
    dst[n] = 0;
}

WTS_EXPORT BOOL WINAPI WTSQuerySessionInformationW(HANDLE hServer, DWORD SessionId,
                                                   WTS_INFO_CLASS WTSInfoClass,
                                                   LPWSTR *ppBuffer, DWORD *pBytesReturned)
{
    ctx_t c;
    uint32_t err;
    sess_t *ss = NULL;
    ctx_init(&c, F_QUERY, HK_HANDLE, hServer);
    c.has_sess = 1;
    c.raw_sess = SessionId;
    call_enter(&c);
    sb_printf(&g.extra, "class=%d", (int)WTSInfoClass);
    if ((err = pre_check(&c)) != 0) {
    } else if (!ppBuffer || !pBytesReturned) {
        err = ERR_USERBUF;
    } else if (c.status) {
        err = c.status;
    } else if (!(ss = session_for(&c, &err))) {
    } else if (g.srv[c.srv].noquery && !(c.srv == 0 && ss->id == g.caller_session)) {
        err = ERR_ACCESS; /* no Query Information on that session */
    } else {
        void *buf = NULL;
        size_t bytes = 0;
        const WCHAR *str = NULL;
        switch (WTSInfoClass) {
        case WTSSessionId:
            buf = t_alloc(bytes = sizeof(DWORD), K_PLAIN, 0);
            *(DWORD *)buf = ss->id;
            break;
        case WTSConnectState:
            buf = t_alloc(bytes = sizeof(int32_t), K_PLAIN, 0);
            *(int32_t *)buf = ss->state;
            break;
        case WTSUserName: str = ss->user; break;
        case WTSDomainName: str = ss->domain; break;
        case WTSWinStationName: str = ss->name; break;
        case WTSClientName: str = ss->client; break;
        case WTSClientAddress: {
            WTS_CLIENT_ADDRESS *ca = t_alloc(bytes = sizeof(WTS_CLIENT_ADDRESS), K_PLAIN, 0);
            ca->AddressFamily = ss->af;
            /* Address[0..1]: the port in [MS-TSTS]; 0 here */
            if (ss->af == WIN_AF_INET)
                memcpy(&ca->Address[2], ss->addr, 4);
            else if (ss->af == WIN_AF_INET6)
                memcpy(&ca->Address[2], ss->addr, 16); /* UNVERIFIED offset */
            buf = ca;
            break;
        }
        case WTSSessionInfoEx: {
            WTSINFOEXW *x = t_alloc(bytes = sizeof(WTSINFOEXW), K_PLAIN, 0);
            WTSINFOEX_LEVEL1_W *l = &x->Data.WTSInfoExLevel1;
            x->Level = 1;
            l->SessionId = ss->id;
            l->SessionState = (WTS_CONNECTSTATE_CLASS)ss->state;
            l->SessionFlags = (LONG)ss->lockflags;
            copy_trunc(l->WinStationName, sizeof l->WinStationName / sizeof(WCHAR), ss->name);
            copy_trunc(l->UserName, sizeof l->UserName / sizeof(WCHAR), ss->user);
            copy_trunc(l->DomainName, sizeof l->DomainName / sizeof(WCHAR), ss->domain);
            LI_SET(l->LogonTime, ss->logon);
            LI_SET(l->ConnectTime, ss->connect);
            LI_SET(l->DisconnectTime, ss->disconnect);
            LI_SET(l->LastInputTime, ss->input);
            LI_SET(l->CurrentTime, g.srv[c.srv].clock);
            buf = x;
            break;
        }
        case WTSSessionInfo: {
            WTSINFOW *wi = t_alloc(bytes = sizeof(WTSINFOW), K_PLAIN, 0);
            wi->State = (WTS_CONNECTSTATE_CLASS)ss->state;
            wi->SessionId = ss->id;
            copy_trunc(wi->WinStationName, sizeof wi->WinStationName / sizeof(WCHAR), ss->name);
            copy_trunc(wi->Domain, sizeof wi->Domain / sizeof(WCHAR), ss->domain);
            copy_trunc(wi->UserName, sizeof wi->UserName / sizeof(WCHAR), ss->user);
            LI_SET(wi->ConnectTime, ss->connect);
            LI_SET(wi->DisconnectTime, ss->disconnect);
            LI_SET(wi->LastInputTime, ss->input);
            LI_SET(wi->LogonTime, ss->logon);
            LI_SET(wi->CurrentTime, g.srv[c.srv].clock);
            buf = wi;
            break;
        }
        default:
            err = ERR_PARAM;
        }
        if (str) {
            bytes = (wlen(str) + 1) * sizeof(WCHAR);
            buf = memcpy(t_alloc(bytes, K_PLAIN, 0), str, bytes);
        }
        for (size_t q = 0; !err && q < g.nqsize; q++) {
            const qsize_t *r = &g.qsize[q];
            if (r->info_class == (int)WTSInfoClass && rule_server_matches(r->server, &c) &&
                (!r->has_session || r->session == c.sess || r->session == c.raw_sess) &&
                r->bytes < bytes)
                bytes = r->bytes;
        }
        if (!err) {
            *ppBuffer = (LPWSTR)buf;
            *pBytesReturned = (DWORD)bytes;
        }
    }
    call_leave(&c, !err, PRE_ERR(err), NULL);
    return !err;
}

/* Shared by logoff and disconnect. */
static BOOL end_session(int func, HANDLE hServer, DWORD SessionId, BOOL bWait)
{
    ctx_t c;
    uint32_t err;
    sess_t *ss = NULL;
    post_t post;
    memset(&post, 0, sizeof post);
    post.srv = -1;
    ctx_init(&c, func, HK_HANDLE, hServer);
    c.has_sess = 1;
    c.raw_sess = SessionId;
    call_enter(&c);
    sb_printf(&g.extra, "wait=%d", bWait ? 1 : 0);
    if ((err = pre_check(&c)) != 0) {
    } else if (c.status) {
        err = c.status;
    } else if (!(ss = session_for(&c, &err))) {
    } else if (ss->state == WTSListen) {
        err = ERR_PARAM;
    } else if (!has_rights(&c, ss)) {
        err = ERR_ACCESS;
    } else {
        server_t *s = &g.srv[c.srv];
        post.gen = g.gen;
        if (func == F_DISC) {
            /* see "disconnect" in the top comment */
            if (ss->state != WTSDisconnected) {
                ss->state = WTSDisconnected;
                ss->disconnect = s->clock;
                if (bWait)
                    post.ms = ss->logoff_ms;
            }
        } else {
            /* "sometimes blocks indefinitely (even after a session has been
             * logged off)": the field-facts note, Logoff */
            post.hang = bWait && ss->logoff_hang;
            if (!ss->logoff_ms) {
                sess_remove(s, ss);
            } else {
                int64_t gone = logoff_schedule(s, ss), left = gone - now_ms();
                if (bWait) {
                    post.ms = left > 0 ? (uint32_t)left : 0;
                    post.srv = c.srv;
                    post.id = ss->id;
                    post.gone_at = gone;
                }
            }
        }
    }
    call_leave(&c, !err, PRE_ERR(err), &post);
    return !err;
}

WTS_EXPORT BOOL WINAPI WTSLogoffSession(HANDLE hServer, DWORD SessionId, BOOL bWait)
{
    return end_session(F_LOGOFF, hServer, SessionId, bWait);
}

WTS_EXPORT BOOL WINAPI WTSDisconnectSession(HANDLE hServer, DWORD SessionId, BOOL bWait)
{
    return end_session(F_DISC, hServer, SessionId, bWait);
}

WTS_EXPORT BOOL WINAPI WTSSendMessageW(HANDLE hServer, DWORD SessionId, LPWSTR pTitle,
                                       DWORD TitleLength, LPWSTR pMessage, DWORD MessageLength,
                                       DWORD Style, DWORD Timeout, DWORD *pResponse, BOOL bWait)
{
    ctx_t c;
    uint32_t err;
    sess_t *ss = NULL;
    sbuf u = { NULL, 0, 0 };
    WCHAR empty = 0;
    ctx_init(&c, F_SEND, HK_HANDLE, hServer);
    c.has_sess = 1;
    c.raw_sess = SessionId;
    call_enter(&c);
    w_to_utf8(&u, pTitle ? pTitle : &empty);
    sb_puts(&g.extra, "title=");
    pct_encode(&g.extra, u.p);
    u.n = 0;
    w_to_utf8(&u, pMessage ? pMessage : &empty);
    sb_puts(&g.extra, ";text=");
    pct_encode(&g.extra, u.p);
    free(u.p);
    sb_printf(&g.extra, ";timeout=%lu;wait=%d;style=%lu", (unsigned long)Timeout,
              bWait ? 1 : 0, (unsigned long)Style);
    if ((err = pre_check(&c)) != 0) {
    } else if (!pResponse) {
        err = ERR_USERBUF;
    } else if (!pTitle || !pMessage ||
               (size_t)TitleLength != wlen(pTitle) * sizeof(WCHAR) ||
               (size_t)MessageLength != wlen(pMessage) * sizeof(WCHAR)) {
        err = ERR_PARAM; /* lengths are in bytes, without the NUL */
    } else if (c.status) {
        err = c.status;
    } else if (!(ss = session_for(&c, &err))) {
    } else if (!has_rights(&c, ss)) {
        err = ERR_ACCESS;
    } else if (ss->state == WTSDisconnected &&
               discmsg_of(&g.srv[c.srv], ss) != DISCMSG_OK) {
        err = (uint32_t)discmsg_of(&g.srv[c.srv], ss);
    } else if (!bWait) {
        *pResponse = IDASYNC;
    } else if (ss->state == WTSDisconnected) {
        *pResponse = IDTIMEOUT; /* nobody there to answer */
    } else if (ss->response == RESP_TIMEOUT) {
        *pResponse = Timeout > 0 ? IDTIMEOUT : IDOK;
    } else {
        *pResponse = (DWORD)ss->response;
    }
    call_leave(&c, !err, PRE_ERR(err), NULL);
    return !err;
}

#ifdef _WIN32
/* ------------------------------------------------------------------------ */
/* Stubs: the rest of pywin32's win32ts imports                              */
/* ------------------------------------------------------------------------ */
/* Windows only.  A Windows loader resolves a module's imports when it loads
 * it, so a DLL that stands in for wtsapi32.dll must export every function
 * a client imports, called or not: pywin32's win32ts.pyd imports these nine
 * besides the ones above (benchmarks/run.py runs it against the double).
 * Each fails at once with ERROR_CALL_NOT_IMPLEMENTED (120), as Wine's own
 * stubs do, and touches neither its out-parameters nor the farm; they are
 * not logged, counted or subject to fail/latency rules. */
#  define STUB_FAIL() do { SetLastError(ERR_NOTIMPL); return FALSE; } while (0)
WTS_EXPORT BOOL WINAPI WTSEnumerateServersW(LPWSTR pDomainName, DWORD Reserved, DWORD Version,
                                            PWTS_SERVER_INFOW *ppServerInfo, DWORD *pCount)
{
    (void)pDomainName; (void)Reserved; (void)Version; (void)ppServerInfo; (void)pCount;
    STUB_FAIL();
}

WTS_EXPORT BOOL WINAPI WTSTerminateProcess(HANDLE hServer, DWORD ProcessId, DWORD ExitCode)
{
    (void)hServer; (void)ProcessId; (void)ExitCode;
    STUB_FAIL();
}

WTS_EXPORT BOOL WINAPI WTSQueryUserConfigW(LPWSTR pServerName, LPWSTR pUserName,
                                           WTS_CONFIG_CLASS WTSConfigClass, LPWSTR *ppBuffer,
                                           DWORD *pBytesReturned)
{
    (void)pServerName; (void)pUserName; (void)WTSConfigClass; (void)ppBuffer;
    (void)pBytesReturned;
    STUB_FAIL();
}

WTS_EXPORT BOOL WINAPI WTSSetUserConfigW(LPWSTR pServerName, LPWSTR pUserName,
                                         WTS_CONFIG_CLASS WTSConfigClass, LPWSTR pBuffer,
                                         DWORD DataLength)
{
    (void)pServerName; (void)pUserName; (void)WTSConfigClass; (void)pBuffer; (void)DataLength;
    STUB_FAIL();
}

WTS_EXPORT BOOL WINAPI WTSShutdownSystem(HANDLE hServer, DWORD ShutdownFlag)
{
    (void)hServer; (void)ShutdownFlag;
    STUB_FAIL();
}

WTS_EXPORT BOOL WINAPI WTSWaitSystemEvent(HANDLE hServer, DWORD EventMask, DWORD *pEventFlags)
{
    (void)hServer; (void)EventMask; (void)pEventFlags;
    STUB_FAIL();
}

WTS_EXPORT BOOL WINAPI WTSRegisterSessionNotification(HWND hWnd, DWORD dwFlags)
{
    (void)hWnd; (void)dwFlags;
    STUB_FAIL();
}

WTS_EXPORT BOOL WINAPI WTSUnRegisterSessionNotification(HWND hWnd)
{
    (void)hWnd;
    STUB_FAIL();
}

WTS_EXPORT BOOL WINAPI WTSQueryUserToken(ULONG SessionId, PHANDLE phToken)
{
    (void)SessionId; (void)phToken;
    STUB_FAIL();
}
#  undef STUB_FAIL
#endif /* _WIN32 */

/* ------------------------------------------------------------------------ */
/* Control API                                                               */
/* ------------------------------------------------------------------------ */
TD_EXPORT int TD_Load(const char *path)
{
    int r;
    LOCK();
    g_loaded = 1;
    r = load_file_locked(path ? open_path(path, "rb") : NULL);
    UNLOCK();
    return r;
}

TD_EXPORT void TD_Reset(void)
{
    LOCK();
    g_loaded = 1;
    farm_reset();
    UNLOCK();
}

TD_EXPORT int TD_Calls(const char *server, const char *func)
{
    size_t i;
    int n = 0, f = -1;
    LOCK();
    ensure_loaded();
    if (func && (f = p_func(func, 0)) < 0) {
        UNLOCK();
        return 0;
    }
    for (i = 0; i < g.ncalls; i++) {
        const callrec_t *r = &g.calls[i];
        if ((!func || r->func == f) &&
            (!server || ieq(server, r->canon) || ieq(server, r->opened)))
            n++;
    }
    UNLOCK();
    return n;
}

#define TD_GETTER(type, name, expr)                                           \
    TD_EXPORT type name(void)                                                 \
    {                                                                         \
        type n_;                                                              \
        LOCK();                                                               \
        n_ = (type)(expr);                                                    \
        UNLOCK();                                                             \
        return n_;                                                            \
    }
TD_GETTER(long, TD_LiveAllocations, g.allocs.n)
TD_GETTER(long, TD_OpenHandles, g.open_handles)
TD_GETTER(long, TD_BadFrees, g.bad_frees)
TD_GETTER(long, TD_BadHandles, g.bad_handles)
TD_GETTER(int, TD_InFlight, g.inflight)
TD_GETTER(int, TD_MaxInFlight, g.max_inflight)

/* The most calls in flight at once since the last load/reset, counting only
 * those to SERVER (its farm name, case-insensitive; NULL: any) and of FUNC
 * (NULL: any).  Several farm-less names differing in case count apart. */
TD_EXPORT int TD_MaxInFlightFor(const char *server, const char *func)
{
    int f = NFUNC, best = 0;
    size_t i;
    LOCK();
    ensure_loaded();
    if (func && (f = p_func(func, 0)) < 0) {
        UNLOCK();
        return 0;
    }
    if (!server && !func) {
        best = g.max_inflight;
    } else if (!server) {
        int64_t *v = hm_find(&g.flight, flight_key(NULL, f));
        best = v ? (int)(*v >> 32) : 0;
    } else {
        for (i = 0; i < g.flight.cap; i++) {
            uint64_t k = g.flight.k[i];
            const char *name = (const char *)(uintptr_t)(k >> 4);
            int max = (int)(g.flight.v[i] >> 32);
            if (k && (int)(k & 15) == f + 1 && name && ieq(server, name) && max > best)
                best = max;
        }
    }
    UNLOCK();
    return best;
}

TD_EXPORT const char *TD_Log(void)
{
    LOCK();
    ensure_loaded();
    free(g.snapshot);
    g.snapshot = memcpy(xrealloc(NULL, g.log.n + 1), g.log.p ? g.log.p : "", g.log.n);
    g.snapshot[g.log.n] = 0;
    UNLOCK();
    return g.snapshot;
}

static sess_t *td_session(const char *server, uint32_t id)
{
    int si;
    ensure_loaded();
    si = server_find(server ? server : ".");
    if (si < 0)
        return NULL;
    reap(&g.srv[si]);
    return sess_find(&g.srv[si], id);
}

TD_EXPORT int TD_SessionExists(const char *server, uint32_t id)
{
    int r;
    LOCK();
    r = td_session(server, id) != NULL;
    UNLOCK();
    return r;
}

TD_EXPORT int TD_SessionState(const char *server, uint32_t id)
{
    sess_t *ss;
    int r;
    LOCK();
    ss = td_session(server, id);
    r = ss ? ss->state : -1;
    UNLOCK();
    return r;
}

/* The "#exit" summary line, written at process exit. */
static void write_exit_line(void)
{
    char line[256];
    snprintf(line, sizeof line,
             "#exit\tlive=%ld\thandles=%ld\tbadfrees=%ld\tbadhandles=%ld\tinflight=%d\n",
             (long)g.allocs.n, g.open_handles, g.bad_frees, g.bad_handles, g.inflight);
    log_file_append(line);
}

#ifdef _WIN32
BOOL WINAPI DllMain(HINSTANCE hinst, DWORD reason, LPVOID reserved)
{
    (void)hinst;
    if (reason == DLL_PROCESS_ATTACH) {
        InitializeCriticalSection(&g_mu);
    } else if (reason == DLL_PROCESS_DETACH) {
        /* At process exit (reserved != NULL) the other threads are already
         * gone, possibly holding the lock: do not take it then. */
        if (!reserved) LOCK();
        write_exit_line();
        if (!reserved) UNLOCK();
    }
    return TRUE;
}
#else
__attribute__((destructor)) static void td_fini(void)
{
    LOCK();
    write_exit_line();
    UNLOCK();
}
#endif
