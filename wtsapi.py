"""ctypes bindings to wtsapi32.dll (Remote Desktop Services API), and a small
pythonic layer over them.

Standard library only; imports on any OS.  The DLL is loaded lazily, on first
use.  On Windows it is ``%SystemRoot%\\System32\\wtsapi32.dll`` (never the
current directory, the script's directory or PATH).  When the environment
variable ``WTSAPI32_DLL`` names a file, that wtsapi32-compatible library is
loaded instead, on any OS; off Windows with ``ctypes.CDLL(path,
use_errno=True)``, where a failed call's Win32 error code is read from errno.

Layers, top to bottom:

* ``Server`` / ``Session`` / ``SessionTimes``: what callers use.
* ``_checked`` / ``WTSError``: the one place a failed call becomes an error.
* header-like declarations: types, structures, enums, prototypes.

Reference: https://learn.microsoft.com/windows/win32/api/wtsapi32/
"""

import ctypes
import os
import sys
from collections import namedtuple
from ctypes import (POINTER, Structure, byref, c_int32, c_int64, c_uint32,
                    c_void_p, c_wchar, c_wchar_p, sizeof)
from enum import IntEnum

__all__ = [
    "WTSError", "LibraryUnavailable", "Server", "Session", "SessionTimes",
    "WTS_CONNECTSTATE_CLASS", "WTS_INFO_CLASS", "WTS_TYPE_CLASS",
    "WTS_CURRENT_SERVER_HANDLE", "WTS_CURRENT_SESSION", "current_session_id",
    "error_text",
]

_WINDOWS = sys.platform == "win32"

# --- Types, fixed width as on every Windows target --------------------------
# Never ctypes.wintypes: off Windows its DWORD/BOOL/LONG are 8 bytes.
DWORD = c_uint32
ULONG = c_uint32
BOOL = c_int32
ENUM = c_int32                      # C enums are int-sized on Windows
LARGE_INTEGER = c_int64
HANDLE = c_void_p
PVOID = c_void_p
WCHAR = c_wchar                     # 2 bytes on Windows; host wchar_t elsewhere
LPWSTR = c_wchar_p

# --- Constants (wtsapi32.h, winuser.h, winerror.h) --------------------------
WTS_CURRENT_SERVER_HANDLE = None    # ((HANDLE)NULL)
WTS_CURRENT_SESSION = 0xFFFFFFFF    # ((DWORD)-1)
WINSTATIONNAME_LENGTH = 32
DOMAIN_LENGTH = 17
USERNAME_LENGTH = 20

MB_OK = 0x00000000
IDOK = 1
IDTIMEOUT = 32000
IDASYNC = 32001

ERROR_SUCCESS = 0
ERROR_ACCESS_DENIED = 5
ERROR_INVALID_PARAMETER = 87
ERROR_CALL_NOT_IMPLEMENTED = 120
ERROR_NO_MORE_ITEMS = 259
RPC_S_SERVER_UNAVAILABLE = 1722
ERROR_CTX_WINSTATION_NOT_FOUND = 7022
ERROR_CTX_WINSTATION_ACCESS_DENIED = 7045

_MAX_DWORD = 0xFFFFFFFF


class WTS_CONNECTSTATE_CLASS(IntEnum):
    """https://learn.microsoft.com/windows/win32/api/wtsapi32/ne-wtsapi32-wts_connectstate_class"""
    WTSActive = 0
    WTSConnected = 1
    WTSConnectQuery = 2
    WTSShadow = 3
    WTSDisconnected = 4
    WTSIdle = 5
    WTSListen = 6
    WTSReset = 7
    WTSDown = 8
    WTSInit = 9


class WTS_INFO_CLASS(IntEnum):
    """https://learn.microsoft.com/windows/win32/api/wtsapi32/ne-wtsapi32-wts_info_class"""
    WTSInitialProgram = 0
    WTSApplicationName = 1
    WTSWorkingDirectory = 2
    WTSOEMId = 3
    WTSSessionId = 4
    WTSUserName = 5
    WTSWinStationName = 6
    WTSDomainName = 7
    WTSConnectState = 8
    WTSClientBuildNumber = 9
    WTSClientName = 10
    WTSClientDirectory = 11
    WTSClientProductId = 12
    WTSClientHardwareId = 13
    WTSClientAddress = 14
    WTSClientDisplay = 15
    WTSClientProtocolType = 16
    WTSIdleTime = 17
    WTSLogonTime = 18
    WTSIncomingBytes = 19
    WTSOutgoingBytes = 20
    WTSIncomingFrames = 21
    WTSOutgoingFrames = 22
    WTSClientInfo = 23
    WTSSessionInfo = 24
    WTSSessionInfoEx = 25
    WTSConfigInfo = 26
    WTSValidationInfo = 27
    WTSSessionAddressV4 = 28
    WTSIsRemoteSession = 29


class WTS_TYPE_CLASS(IntEnum):
    """https://learn.microsoft.com/windows/win32/api/wtsapi32/ne-wtsapi32-wts_type_class"""
    WTSTypeProcessInfoLevel0 = 0
    WTSTypeProcessInfoLevel1 = 1
    WTSTypeSessionInfoLevel1 = 2


# --- Structures --------------------------------------------------------------

class WTS_SESSION_INFOW(Structure):
    """https://learn.microsoft.com/windows/win32/api/wtsapi32/ns-wtsapi32-wts_session_infow"""
    _fields_ = [
        ("SessionId", DWORD),
        ("pWinStationName", LPWSTR),
        ("State", ENUM),                # WTS_CONNECTSTATE_CLASS
    ]


class WTS_SESSION_INFO_1W(Structure):
    """https://learn.microsoft.com/windows/win32/api/wtsapi32/ns-wtsapi32-wts_session_info_1w"""
    _fields_ = [
        ("ExecEnvId", DWORD),
        ("State", ENUM),                # WTS_CONNECTSTATE_CLASS
        ("SessionId", DWORD),
        ("pSessionName", LPWSTR),
        ("pHostName", LPWSTR),
        ("pUserName", LPWSTR),
        ("pDomainName", LPWSTR),
        ("pFarmName", LPWSTR),
    ]


class WTSINFOW(Structure):
    """https://learn.microsoft.com/windows/win32/api/wtsapi32/ns-wtsapi32-wtsinfow"""
    _fields_ = [
        ("State", ENUM),                # WTS_CONNECTSTATE_CLASS
        ("SessionId", DWORD),
        ("IncomingBytes", DWORD),
        ("OutgoingBytes", DWORD),
        ("IncomingFrames", DWORD),
        ("OutgoingFrames", DWORD),
        ("IncomingCompressedBytes", DWORD),
        ("OutgoingCompressedBytes", DWORD),
        ("WinStationName", WCHAR * WINSTATIONNAME_LENGTH),
        ("Domain", WCHAR * DOMAIN_LENGTH),
        ("UserName", WCHAR * (USERNAME_LENGTH + 1)),
        # FILETIMEs: 100 ns ticks since 1601-01-01 UTC, 0 when unset.
        ("ConnectTime", LARGE_INTEGER),
        ("DisconnectTime", LARGE_INTEGER),
        ("LastInputTime", LARGE_INTEGER),
        ("LogonTime", LARGE_INTEGER),
        ("CurrentTime", LARGE_INTEGER),
    ]


# --- Prototypes ----------------------------------------------------------------
# name: (restype, argtypes, Microsoft Learn page under .../api/wtsapi32/)
_PROTOTYPES = {
    # HANDLE WTSOpenServerW(LPWSTR pServerName)
    "WTSOpenServerW": (HANDLE, (LPWSTR,), "nf-wtsapi32-wtsopenserverw"),
    # void WTSCloseServer(HANDLE hServer)
    "WTSCloseServer": (None, (HANDLE,), "nf-wtsapi32-wtscloseserver"),
    # BOOL WTSEnumerateSessionsW(HANDLE hServer, DWORD Reserved, DWORD Version,
    #                            PWTS_SESSION_INFOW *ppSessionInfo, DWORD *pCount)
    "WTSEnumerateSessionsW": (
        BOOL, (HANDLE, DWORD, DWORD, POINTER(POINTER(WTS_SESSION_INFOW)),
               POINTER(DWORD)),
        "nf-wtsapi32-wtsenumeratesessionsw"),
    # BOOL WTSEnumerateSessionsExW(HANDLE hServer, DWORD *pLevel, DWORD Filter,
    #                              PWTS_SESSION_INFO_1W *ppSessionInfo, DWORD *pCount)
    "WTSEnumerateSessionsExW": (
        BOOL, (HANDLE, POINTER(DWORD), DWORD,
               POINTER(POINTER(WTS_SESSION_INFO_1W)), POINTER(DWORD)),
        "nf-wtsapi32-wtsenumeratesessionsexw"),
    # void WTSFreeMemory(PVOID pMemory)
    "WTSFreeMemory": (None, (PVOID,), "nf-wtsapi32-wtsfreememory"),
    # BOOL WTSFreeMemoryExW(WTS_TYPE_CLASS WTSTypeClass, PVOID pMemory,
    #                       ULONG NumberOfEntries)
    "WTSFreeMemoryExW": (BOOL, (ENUM, PVOID, ULONG),
                         "nf-wtsapi32-wtsfreememoryexw"),
    # BOOL WTSQuerySessionInformationW(HANDLE hServer, DWORD SessionId,
    #     WTS_INFO_CLASS WTSInfoClass, LPWSTR *ppBuffer, DWORD *pBytesReturned)
    # ppBuffer is declared as PVOID*: the buffer is not always a string.
    "WTSQuerySessionInformationW": (
        BOOL, (HANDLE, DWORD, ENUM, POINTER(PVOID), POINTER(DWORD)),
        "nf-wtsapi32-wtsquerysessioninformationw"),
    # BOOL WTSLogoffSession(HANDLE hServer, DWORD SessionId, BOOL bWait)
    "WTSLogoffSession": (BOOL, (HANDLE, DWORD, BOOL),
                         "nf-wtsapi32-wtslogoffsession"),
    # BOOL WTSDisconnectSession(HANDLE hServer, DWORD SessionId, BOOL bWait)
    "WTSDisconnectSession": (BOOL, (HANDLE, DWORD, BOOL),
                             "nf-wtsapi32-wtsdisconnectsession"),
    # BOOL WTSSendMessageW(HANDLE hServer, DWORD SessionId, LPWSTR pTitle,
    #     DWORD TitleLength, LPWSTR pMessage, DWORD MessageLength, DWORD Style,
    #     DWORD Timeout, DWORD *pResponse, BOOL bWait)
    "WTSSendMessageW": (
        BOOL, (HANDLE, DWORD, LPWSTR, DWORD, LPWSTR, DWORD, DWORD, DWORD,
               POINTER(DWORD), BOOL),
        "nf-wtsapi32-wtssendmessagew"),
}


# --- Loading -------------------------------------------------------------------

class LibraryUnavailable(OSError):
    """wtsapi32 (or the library named by WTSAPI32_DLL) could not be loaded."""


class _Api:
    """The loaded library: its prototyped functions and its last-error pair."""

    def __init__(self, dll, path, get_error, set_error):
        self.path = path
        self.get_error = get_error
        self.set_error = set_error
        for name, (restype, argtypes, _doc) in _PROTOTYPES.items():
            try:
                fn = getattr(dll, name)
            except AttributeError:
                # Older systems lack the Ex functions; callers fall back.
                fn = None
            else:
                fn.restype = restype
                fn.argtypes = argtypes
            setattr(self, name, fn)


_api = None


def _system_directory():
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    buf = ctypes.create_unicode_buffer(260)
    n = kernel32.GetSystemDirectoryW(buf, len(buf))
    if not 0 < n < len(buf):
        return os.path.join(os.environ.get("SystemRoot", r"C:\Windows"),
                            "System32")
    return buf.value


def _load():
    global _api
    if _api is not None:
        return _api
    override = os.environ.get("WTSAPI32_DLL")
    try:
        if _WINDOWS:
            # A full path, so neither the current nor the script's directory
            # nor PATH can plant a wtsapi32.dll of their own.
            path = (os.path.abspath(override) if override else
                    os.path.join(_system_directory(), "wtsapi32.dll"))
            dll = ctypes.WinDLL(path, use_last_error=True)
            _api = _Api(dll, path, ctypes.get_last_error,
                        ctypes.set_last_error)
        else:
            if not override:
                raise LibraryUnavailable(
                    "wtsapi32 exists only on Windows; set WTSAPI32_DLL to a "
                    "wtsapi32-compatible library (such as the test double "
                    "in tests/) to use it on this system")
            path = os.path.abspath(override)
            dll = ctypes.CDLL(path, use_errno=True)
            _api = _Api(dll, path, ctypes.get_errno, ctypes.set_errno)
    except LibraryUnavailable:
        raise
    except OSError as e:
        raise LibraryUnavailable("cannot load %s: %s" % (
            override or "wtsapi32.dll", e.strerror or e)) from None
    return _api


# --- Errors --------------------------------------------------------------------

# English texts for the codes this tool meets, used where the system cannot
# supply its own (off Windows).  Wording follows Windows' own messages.
_ERROR_TEXT = {
    2: "The system cannot find the file specified.",
    5: "Access is denied.",
    6: "The handle is invalid.",
    8: "Not enough memory resources are available to process this command.",
    50: "The request is not supported.",
    53: "The network path was not found.",
    87: "The parameter is incorrect.",
    120: "This function is not supported on this system.",
    259: "No more data is available.",
    1460: "This operation returned because the timeout period expired.",
    1722: "The RPC server is unavailable.",
    1726: "The remote procedure call failed.",
    1784: "The supplied user buffer is not valid for the requested operation.",
    7007: "A close operation is pending on the session.",
    7022: "The specified session cannot be found.",
    7024: "The requested operation cannot be completed because the terminal "
          "connection is currently busy processing a connect, disconnect, "
          "reset, or delete operation.",
    7041: "Disconnecting the console session is not supported.",
    7045: "The requested session access is denied.",
}


def error_text(code):
    """The message text for a Win32 error code: the system's on Windows (in
    its display language), the built-in English table elsewhere."""
    if code == 0:
        return ("The call failed but did not say why (the last error was 0); "
                "the cause is unknown.")
    if _WINDOWS:
        try:
            text = ctypes.FormatError(code).strip()
        except (OSError, ValueError):
            text = ""
        if text and not text.startswith("<no description"):
            return text
    return _ERROR_TEXT.get(code, "Unknown error %d." % code)


class WTSError(OSError):
    """A wtsapi32 call failed.

    ``winerror`` is the Win32 error code (0 when the call did not set one),
    ``function`` the API name, ``server`` the server name (``None`` for the
    local server) and ``session`` the session id the call was about, if any.
    """

    def __init__(self, winerror, function, server=None, session=None):
        text = error_text(winerror)
        super().__init__(None, text)
        self.winerror = winerror
        self.function = function
        self.server = server
        self.session = session

    def __str__(self):
        where = "the local server" if self.server is None else self.server
        about = "" if self.session is None else ", session %d" % self.session
        return "%s failed on %s%s: %s (error %d)" % (
            self.function, where, about, self.strerror, self.winerror)

    def __reduce__(self):
        return (type(self), (self.winerror, self.function, self.server,
                             self.session))


def _checked(api, name, server, session, *args):
    """Call ``name`` and raise WTSError when it returns FALSE/NULL.

    The last error is cleared first so that a failure that does not set it
    reads as 0 ("unknown"), not as a stale code from an earlier call.
    """
    fn = getattr(api, name)
    if fn is None:
        raise WTSError(ERROR_CALL_NOT_IMPLEMENTED, name, server, session)
    api.set_error(0)
    result = fn(*args)
    if not result:
        raise WTSError(api.get_error(), name, server, session)
    return result


def _check_session_id(session_id, allow_current=False):
    # ctypes would silently truncate an out-of-range int to 32 bits and act
    # on some other session.
    if isinstance(session_id, bool) or not isinstance(session_id, int):
        raise TypeError("session id must be an int, not %s"
                        % type(session_id).__name__)
    limit = _MAX_DWORD if allow_current else _MAX_DWORD - 1
    if not 0 <= session_id <= limit:
        raise ValueError("session id %d is out of range (0 to %d)"
                         % (session_id, limit))
    return session_id


# --- Values ---------------------------------------------------------------------

def _state(value):
    try:
        return WTS_CONNECTSTATE_CLASS(value)
    except ValueError:
        return value          # a state newer than this module: keep the number


class Session(namedtuple("Session", "server id name state user domain")):
    """An immutable snapshot of one session, as the server reported it.

    ``server`` is the name it was read from (``None`` for the local server),
    ``state`` a ``WTS_CONNECTSTATE_CLASS`` (or a plain int for a state this
    module does not know), ``user``/``domain`` empty strings for a session
    nobody is logged on to.
    """
    __slots__ = ()

    @property
    def account(self):
        """``DOMAIN\\user``, ``user`` without a domain, '' without a user."""
        if not self.user:
            return ""
        return "%s\\%s" % (self.domain, self.user) if self.domain else self.user


# FILETIMEs converted to aware UTC datetimes (None where unset); ``idle`` in
# seconds by the server's clock, or None where the server gives no basis.
SessionTimes = namedtuple(
    "SessionTimes", "state logon connect disconnect last_input current idle")

_FILETIME_TICKS_PER_SECOND = 10 ** 7


_EPOCH = []                 # datetime(1601, 1, 1, UTC), made on first use


def _filetime(ticks):
    if ticks <= 0:
        return None
    from datetime import datetime, timedelta, timezone
    if not _EPOCH:
        _EPOCH.append(datetime(1601, 1, 1, tzinfo=timezone.utc))
    return _EPOCH[0] + timedelta(microseconds=ticks // 10)


def idle_seconds(state, last_input, disconnect, current):
    """Idle time in seconds from raw FILETIMEs, by the server's own clock.

    A disconnected session has been idle since it was disconnected.  None
    when the server gave no reference time; never negative (clock skew).
    """
    ref = disconnect if state == WTS_CONNECTSTATE_CLASS.WTSDisconnected \
        else last_input
    if ref <= 0 or current <= 0:
        return None
    return max(0, current - ref) / _FILETIME_TICKS_PER_SECOND


# --- Servers ---------------------------------------------------------------------

class Server:
    """A Remote Desktop Session Host server: the local one by default.

    Use as a context manager, or call ``close()``; the handle is closed
    exactly once, and the local server's pseudo-handle never.
    """

    def __init__(self, name=None):
        self._api = _load()
        self.name = name or None
        self._handle = WTS_CURRENT_SERVER_HANDLE
        self._closed = False
        self._no_ex = False        # this server answered the Ex call with 120
        if self.name is not None:
            self._handle = _checked(self._api, "WTSOpenServerW", self.name,
                                    None, self.name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "Server(%r)" % (self.name,)

    def close(self):
        if not self._closed:
            self._closed = True
            if self._handle is not WTS_CURRENT_SERVER_HANDLE:
                self._api.WTSCloseServer(self._handle)
            self._handle = None

    def _h(self):
        if self._closed:
            raise ValueError("I/O operation on a closed Server")
        return self._handle

    def _call(self, name, session, *args):
        return _checked(self._api, name, self.name, session, self._h(), *args)

    # -- enumeration ----------------------------------------------------------

    def sessions(self):
        """Every session on the server, as a list of ``Session``.

        One call to the library (``WTSEnumerateSessionsExW`` level 1); only
        where that function is missing or answers 120 does it fall back to
        ``WTSEnumerateSessionsW`` plus two queries a session.  An account
        that may see no session gets an empty list (error 259).
        """
        if not self._no_ex and self._api.WTSEnumerateSessionsExW is not None:
            try:
                return self._sessions_ex()
            except WTSError as e:
                if e.winerror != ERROR_CALL_NOT_IMPLEMENTED:
                    raise
                self._no_ex = True
        return self._sessions_legacy()

    def _sessions_ex(self):
        level = DWORD(1)
        info = POINTER(WTS_SESSION_INFO_1W)()
        count = DWORD(0)
        try:
            self._call("WTSEnumerateSessionsExW", None, byref(level), 0,
                       byref(info), byref(count))
        except WTSError as e:
            if e.winerror == ERROR_NO_MORE_ITEMS:
                return []
            raise
        try:
            server = self.name
            return [Session(server, s.SessionId, s.pSessionName or "",
                            _state(s.State), s.pUserName or "",
                            s.pDomainName or "")
                    for s in info[:count.value]]
        finally:
            self._api.WTSFreeMemoryExW(
                WTS_TYPE_CLASS.WTSTypeSessionInfoLevel1, info, count.value)

    def _sessions_legacy(self):
        info = POINTER(WTS_SESSION_INFOW)()
        count = DWORD(0)
        try:
            self._call("WTSEnumerateSessionsW", None, 0, 1, byref(info),
                       byref(count))
        except WTSError as e:
            if e.winerror == ERROR_NO_MORE_ITEMS:
                return []
            raise
        try:
            found = [(s.SessionId, s.pWinStationName or "", _state(s.State))
                     for s in info[:count.value]]
        finally:
            self._api.WTSFreeMemory(info)
        sessions = []
        for sid, name, state in found:
            try:
                user = self._query_string(sid, WTS_INFO_CLASS.WTSUserName)
                domain = self._query_string(sid, WTS_INFO_CLASS.WTSDomainName)
            except WTSError as e:
                if e.winerror == ERROR_CTX_WINSTATION_NOT_FOUND:
                    continue          # logged off between the two calls
                raise
            sessions.append(Session(self.name, sid, name, state, user, domain))
        return sessions

    # -- queries ----------------------------------------------------------------

    def _query(self, session_id, info_class, copy_out):
        buf = PVOID()
        size = DWORD(0)
        self._call("WTSQuerySessionInformationW", session_id, session_id,
                   info_class, byref(buf), byref(size))
        try:
            return copy_out(buf.value, size.value)
        finally:
            self._api.WTSFreeMemory(buf)

    def _query_string(self, session_id, info_class):
        return self._query(session_id, info_class,
                           lambda p, n: ctypes.wstring_at(p) if p else "")

    def session_id(self, session_id=WTS_CURRENT_SESSION):
        """The id behind ``session_id``; by default the caller's own session."""
        _check_session_id(session_id, allow_current=True)

        def copy_out(p, n):
            if not p or n < sizeof(DWORD):
                raise WTSError(ERROR_INVALID_PARAMETER,
                               "WTSQuerySessionInformationW", self.name,
                               session_id)
            return DWORD.from_address(p).value
        return self._query(session_id, WTS_INFO_CLASS.WTSSessionId, copy_out)

    def times(self, session_id):
        """A ``SessionTimes`` for the session (one call to the library)."""
        _check_session_id(session_id)

        def copy_out(p, n):
            if not p or n < sizeof(WTSINFOW):
                raise WTSError(ERROR_INVALID_PARAMETER,
                               "WTSQuerySessionInformationW", self.name,
                               session_id)
            i = WTSINFOW.from_address(p)
            return (i.State, i.LogonTime, i.ConnectTime, i.DisconnectTime,
                    i.LastInputTime, i.CurrentTime)
        state, logon, connect, disconnect, last_input, current = self._query(
            session_id, WTS_INFO_CLASS.WTSSessionInfo, copy_out)
        return SessionTimes(
            _state(state), _filetime(logon), _filetime(connect),
            _filetime(disconnect), _filetime(last_input), _filetime(current),
            idle_seconds(state, last_input, disconnect, current))

    # -- actions ----------------------------------------------------------------

    def logoff(self, session_id, wait=False):
        """Log off a session (``WTS_CURRENT_SESSION``: the caller's own)."""
        _check_session_id(session_id, allow_current=True)
        self._call("WTSLogoffSession", session_id, session_id, bool(wait))

    def disconnect(self, session_id, wait=False):
        _check_session_id(session_id, allow_current=True)
        self._call("WTSDisconnectSession", session_id, session_id, bool(wait))

    def send_message(self, session_id, title, text, timeout=0, wait=False,
                     style=MB_OK):
        """Show a message box in a session; return the response (``IDASYNC``
        when not waiting, ``IDTIMEOUT`` when ``timeout`` seconds passed)."""
        _check_session_id(session_id, allow_current=True)
        title_buf = ctypes.create_unicode_buffer(title)
        text_buf = ctypes.create_unicode_buffer(text)
        # Lengths are in bytes without the terminating NUL: sizeof() is right
        # for UTF-16 surrogate pairs on Windows and for 4-byte wchar_t alike.
        response = DWORD(0)
        self._call("WTSSendMessageW", session_id, session_id, title_buf,
                   sizeof(title_buf) - sizeof(WCHAR), text_buf,
                   sizeof(text_buf) - sizeof(WCHAR), style, int(timeout),
                   byref(response), bool(wait))
        return response.value


def current_session_id():
    """The caller's own session id on the local server."""
    with Server() as local:
        return local.session_id()
