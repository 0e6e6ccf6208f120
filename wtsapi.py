"""ctypes bindings to wtsapi32.dll (Remote Desktop Services API), the few
other Windows calls the tool needs, and a small pythonic layer over them.

Standard library only; imports on any OS.  The DLL is loaded lazily, on first
use.  On Windows it is ``%SystemRoot%\\System32\\wtsapi32.dll`` (never the
current directory, the script's directory or PATH).  When the environment
variable ``WTSAPI32_DLL`` names a file, that wtsapi32-compatible library is
loaded instead, on any OS; off Windows with ``ctypes.CDLL(path,
use_errno=True)``, where a failed call's Win32 error code is read from errno.
kernel32, secur32 and advapi32 (error texts, UI languages, the account the
process runs as and its SID) always come from the system, and only on
Windows; but ``ADVAPI32_DLL``, when set, names a library to take the three
event-log functions (RegisterEventSourceW, ReportEventW,
DeregisterEventSource) from instead, on any OS, as ``WTSAPI32_DLL`` does.

Layers, top to bottom:

* ``Server`` / ``Session`` / ``SessionTimes`` / ``Process`` / ``Client``,
  ``current_session_id()``, ``own_session()``,
  ``process_account()``, ``process_sid()``, ``EventSource``,
  ``ui_languages()``, ``error_text()``: what callers use.
* ``_checked`` / ``WTSError``: the one place a failed call becomes an error.
* header-like declarations: types, structures, enums, prototypes.

Reference: https://learn.microsoft.com/windows/win32/api/wtsapi32/
"""

import ctypes
import os
import sys
# threading.Lock is _thread's lock: taken from there, so that a run with no
# thread of its own (logoff's drop-in forms) does not import threading.
from _thread import allocate_lock
from collections import namedtuple
from ctypes import (POINTER, Structure, byref, c_int32, c_int64, c_size_t,
                    c_uint8, c_uint16, c_uint32, c_void_p, c_wchar, c_wchar_p,
                    sizeof)
from enum import IntEnum
from time import perf_counter

__all__ = [
    "WTSError", "LibraryUnavailable", "Server", "Session", "SessionTimes",
    "WTS_CONNECTSTATE_CLASS", "WTS_INFO_CLASS", "WTS_TYPE_CLASS",
    "WTS_CURRENT_SERVER_HANDLE", "WTS_CURRENT_SESSION", "current_session_id",
    "own_session", "idle_seconds", "filetime", "error_text",
    "process_account", "host_name", "ui_languages", "EventSource",
    "EventLogError", "process_sid",
    "sid_string", "SESSION_GONE_CODES", "Process", "Client",
]

_WINDOWS = sys.platform == "win32"

# --- Types, fixed width as on every Windows target --------------------------
# Never ctypes.wintypes: off Windows its DWORD/BOOL/LONG are 8 bytes.
DWORD = c_uint32
ULONG = c_uint32
LONG = c_int32
UINT = c_uint32
WORD = c_uint16
BYTE = c_uint8
LANGID = c_uint16                   # WORD
BOOL = c_int32
BOOLEAN = c_uint8                   # BYTE: secext.h returns it, not BOOL
ENUM = c_int32                      # C enums are int-sized on Windows
LARGE_INTEGER = c_int64
HANDLE = c_void_p
HLOCAL = c_void_p
PVOID = c_void_p
LPVOID = c_void_p
LPCVOID = c_void_p
PSID = c_void_p                     # a SID is variable-length: by address
WCHAR = c_wchar                     # 2 bytes on Windows; host wchar_t elsewhere
LPWSTR = c_wchar_p
LPCWSTR = c_wchar_p


class ULONG_PTR(c_size_t):
    """An unsigned integer as wide as a pointer on the target (the ABI test
    reads this mark); only in OVERLAPPED, whose such fields are never
    read."""
    _pointer_sized_ = True


# --- Constants (wtsapi32.h, winuser.h, winerror.h, winbase.h, winnls.h) -----
WTS_CURRENT_SERVER_HANDLE = None    # ((HANDLE)NULL)
WTS_CURRENT_SESSION = 0xFFFFFFFF    # ((DWORD)-1)
WTS_ANY_SESSION = 0xFFFFFFFE        # ((DWORD)-2): every session's processes
WINSTATIONNAME_LENGTH = 32
DOMAIN_LENGTH = 17
USERNAME_LENGTH = 20

# WTSINFOEX_LEVEL1_W.SessionFlags, as current Windows documents them
# (Windows 7 / 2008 R2 swap LOCK and UNLOCK: a documented defect).
WTS_SESSIONSTATE_LOCK = 0x00000000
WTS_SESSIONSTATE_UNLOCK = 0x00000001
WTS_SESSIONSTATE_UNKNOWN = 0xFFFFFFFF

# WTS_CLIENT_ADDRESS.AddressFamily (winsock2.h): Windows' own values.
AF_UNSPEC = 0
AF_INET = 2
AF_INET6 = 23

LOCKFILE_FAIL_IMMEDIATELY = 0x00000001
LOCKFILE_EXCLUSIVE_LOCK = 0x00000002

MB_OK = 0x00000000
IDOK = 1
IDTIMEOUT = 32000
IDASYNC = 32001

# Every code the tool names, so that callers never write a bare number.
ERROR_SUCCESS = 0
ERROR_FILE_NOT_FOUND = 2            # a session gone, on the LSM RPC path
ERROR_ACCESS_DENIED = 5
ERROR_LOCK_VIOLATION = 33
ERROR_INVALID_HANDLE = 6
ERROR_NOT_SUPPORTED = 50
ERROR_BAD_NETPATH = 53
ERROR_INVALID_PARAMETER = 87
ERROR_CALL_NOT_IMPLEMENTED = 120
ERROR_INSUFFICIENT_BUFFER = 122
ERROR_MORE_DATA = 234
ERROR_NO_MORE_ITEMS = 259           # enumerating: no session one may see
ERROR_MR_MID_NOT_FOUND = 317
ERROR_LOG_FILE_FULL = 1502          # "The event log file is full."
ERROR_TIMEOUT = 1460
RPC_S_SERVER_UNAVAILABLE = 1722
RPC_S_CALL_FAILED = 1726
ERROR_INVALID_USER_BUFFER = 1784
ERROR_RESOURCE_LANG_NOT_FOUND = 1815
ERROR_CTX_CLOSE_PENDING = 7007
ERROR_CTX_WINSTATION_NOT_FOUND = 7022
ERROR_CTX_WINSTATION_BUSY = 7024
ERROR_CTX_NOT_CONSOLE = 7038
ERROR_CTX_CONSOLE_DISCONNECT = 7041
ERROR_CTX_SHADOW_DENIED = 7044
ERROR_CTX_WINSTATION_ACCESS_DENIED = 7045
ERROR_CTX_SHADOW_INVALID = 7050
ERROR_CTX_SHADOW_DISABLED = 7051
ERROR_CTX_LICENSE_NOT_AVAILABLE = 7054
ERROR_MUI_FILE_NOT_FOUND = 15100
ERROR_MUI_FILE_NOT_LOADED = 15105

# What a per-session call answers about a session that has ended: 2 on the
# LSM RPC path (impacket examples/tstool.py; Cassia #68), 7022 on the
# legacy WinStation path.  Perhaps gone: decide with a fresh enumeration,
# because [MS-TSTS] documents 7022 as "the session does not exist or the
# caller does not have WINSTATION_QUERY permission".
SESSION_GONE_CODES = (ERROR_FILE_NOT_FOUND, ERROR_CTX_WINSTATION_NOT_FOUND)

FORMAT_MESSAGE_ALLOCATE_BUFFER = 0x00000100
FORMAT_MESSAGE_IGNORE_INSERTS = 0x00000200
FORMAT_MESSAGE_FROM_SYSTEM = 0x00001000
MUI_LANGUAGE_NAME = 0x8
LANG_USER_DEFAULT = 0x0400          # MAKELANGID(LANG_NEUTRAL, SUBLANG_DEFAULT)
# Not an SDK name: MAKELANGID(LANG_ENGLISH, SUBLANG_ENGLISH_US).
LANGID_EN_US = 0x0409
NameSamCompatible = 2               # EXTENDED_NAME_FORMAT (secext.h)
ComputerNamePhysicalDnsHostname = 5  # COMPUTER_NAME_FORMAT (sysinfoapi.h)
TokenUser = 1                       # TOKEN_INFORMATION_CLASS (winnt.h)

# Event types (winnt.h): ReportEventW's wType.
EVENTLOG_SUCCESS = 0x0000
EVENTLOG_ERROR_TYPE = 0x0001
EVENTLOG_WARNING_TYPE = 0x0002
EVENTLOG_INFORMATION_TYPE = 0x0004
TOKEN_QUERY = 0x0008

_MAX_DWORD = 0xFFFFFFFF
_MAX_PATH = 260
# ReportEventW: "Each string is limited to 31,839 characters."
_MAX_EVENT_STRING = 31839


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
        ("pHostName", LPWSTR),          # NULL except for RDVH virtual machines
        ("pUserName", LPWSTR),
        ("pDomainName", LPWSTR),
        ("pFarmName", LPWSTR),          # likewise
    ]


class WTS_PROCESS_INFOW(Structure):
    """https://learn.microsoft.com/windows/win32/api/wtsapi32/ns-wtsapi32-wts_process_infow"""
    _fields_ = [
        ("SessionId", DWORD),
        ("ProcessId", DWORD),
        ("pProcessName", LPWSTR),
        ("pUserSid", PSID),             # never read: a SID of its own size
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


class WTS_CLIENT_ADDRESS(Structure):
    """https://learn.microsoft.com/windows/win32/api/wtsapi32/ns-wtsapi32-wts_client_address"""
    _fields_ = [
        ("AddressFamily", DWORD),       # AF_INET, AF_INET6, ... AF_UNSPEC
        ("Address", BYTE * 20),
    ]


class WTSINFOEX_LEVEL1_W(Structure):
    """https://learn.microsoft.com/windows/win32/api/wtsapi32/ns-wtsapi32-wtsinfoex_level1_w"""
    _fields_ = [
        ("SessionId", ULONG),
        ("SessionState", ENUM),         # WTS_CONNECTSTATE_CLASS
        ("SessionFlags", LONG),         # WTS_SESSIONSTATE_*
        ("WinStationName", WCHAR * (WINSTATIONNAME_LENGTH + 1)),
        ("UserName", WCHAR * (USERNAME_LENGTH + 1)),
        ("DomainName", WCHAR * (DOMAIN_LENGTH + 1)),
        ("LogonTime", LARGE_INTEGER),
        ("ConnectTime", LARGE_INTEGER),
        ("DisconnectTime", LARGE_INTEGER),
        ("LastInputTime", LARGE_INTEGER),
        ("CurrentTime", LARGE_INTEGER),
        ("IncomingBytes", DWORD),
        ("OutgoingBytes", DWORD),
        ("IncomingFrames", DWORD),
        ("OutgoingFrames", DWORD),
        ("IncomingCompressedBytes", DWORD),
        ("OutgoingCompressedBytes", DWORD),
    ]


class WTSINFOEX_LEVEL_W(ctypes.Union):
    """https://learn.microsoft.com/windows/win32/api/wtsapi32/ns-wtsapi32-wtsinfoex_level_w"""
    _fields_ = [("WTSInfoExLevel1", WTSINFOEX_LEVEL1_W)]


class WTSINFOEXW(Structure):
    """https://learn.microsoft.com/windows/win32/api/wtsapi32/ns-wtsapi32-wtsinfoexw"""
    _fields_ = [
        ("Level", DWORD),               # 1: Data is WTSInfoExLevel1
        ("Data", WTSINFOEX_LEVEL_W),
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
    # BOOL WTSEnumerateProcessesW(HANDLE hServer, DWORD Reserved,
    #     DWORD Version, PWTS_PROCESS_INFOW *ppProcessInfo, DWORD *pCount)
    "WTSEnumerateProcessesW": (
        BOOL, (HANDLE, DWORD, DWORD, POINTER(POINTER(WTS_PROCESS_INFOW)),
               POINTER(DWORD)),
        "nf-wtsapi32-wtsenumerateprocessesw"),
    # BOOL WTSEnumerateProcessesExW(HANDLE hServer, DWORD *pLevel,
    #     DWORD SessionId, LPWSTR *ppProcessInfo, DWORD *pCount)
    # ppProcessInfo is declared as PVOID*: the buffer holds structures
    # (WTS_PROCESS_INFOW at level 0), not a string.
    "WTSEnumerateProcessesExW": (
        BOOL, (HANDLE, POINTER(DWORD), DWORD, POINTER(PVOID), POINTER(DWORD)),
        "nf-wtsapi32-wtsenumerateprocessesexw"),
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


def replaced():
    """True when WTSAPI32_DLL names a replacement library: server names are
    then that library's own, not hosts on the network."""
    return bool(os.environ.get("WTSAPI32_DLL"))


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


# --- Other Windows calls the tool needs: kernel32, secur32, advapi32 ---------
# (advapi32: GetUserNameW where secur32 cannot name the account, the process
# token's SID, and the event log).  Only ever called on Windows;
# WTSAPI32_DLL does not replace these.  ADVAPI32_DLL, when set, replaces
# the three event-log functions alone, on any OS (see _event_api).
# name: (DLL, restype, argtypes, Microsoft Learn page under .../win32/api/)
class OVERLAPPED(Structure):
    """https://learn.microsoft.com/windows/win32/api/minwinbase/ns-minwinbase-overlapped

    The union of Offset/OffsetHigh with Pointer is spelled as its two
    DWORDs: the union is pointer-aligned, which they are at that offset."""
    _fields_ = [
        ("Internal", ULONG_PTR),
        ("InternalHigh", ULONG_PTR),
        ("Offset", DWORD),
        ("OffsetHigh", DWORD),
        ("hEvent", HANDLE),
    ]


class SID_IDENTIFIER_AUTHORITY(Structure):
    """https://learn.microsoft.com/windows/win32/api/winnt/ns-winnt-sid_identifier_authority"""
    _fields_ = [("Value", BYTE * 6)]        # big-endian 48-bit number


class SID(Structure):
    """https://learn.microsoft.com/windows/win32/api/winnt/ns-winnt-sid

    SubAuthority is SubAuthorityCount DWORDs long; declared, as in the
    header, with ANYSIZE_ARRAY (1).  Only ever read in place."""
    _fields_ = [
        ("Revision", BYTE),
        ("SubAuthorityCount", BYTE),
        ("IdentifierAuthority", SID_IDENTIFIER_AUTHORITY),
        ("SubAuthority", DWORD * 1),
    ]


class SID_AND_ATTRIBUTES(Structure):
    """https://learn.microsoft.com/windows/win32/api/winnt/ns-winnt-sid_and_attributes"""
    _fields_ = [
        ("Sid", PSID),
        ("Attributes", DWORD),
    ]


class TOKEN_USER(Structure):
    """https://learn.microsoft.com/windows/win32/api/winnt/ns-winnt-token_user

    GetTokenInformation(TokenUser) writes this, followed in the same
    buffer by the SID its Sid points to."""
    _fields_ = [("User", SID_AND_ATTRIBUTES)]


_SYSTEM_PROTOTYPES = {
    # UINT GetSystemDirectoryW(LPWSTR lpBuffer, UINT uSize)
    "GetSystemDirectoryW": ("kernel32", UINT, (LPWSTR, UINT),
                            "sysinfoapi/nf-sysinfoapi-getsystemdirectoryw"),
    # DWORD FormatMessageW(DWORD dwFlags, LPCVOID lpSource, DWORD dwMessageId,
    #     DWORD dwLanguageId, LPWSTR lpBuffer, DWORD nSize, va_list *Arguments)
    # lpBuffer is declared as PVOID: with FORMAT_MESSAGE_ALLOCATE_BUFFER it
    # receives the address of the buffer (an LPWSTR *).
    "FormatMessageW": ("kernel32", DWORD,
                       (DWORD, LPCVOID, DWORD, DWORD, PVOID, DWORD, PVOID),
                       "winbase/nf-winbase-formatmessagew"),
    # HLOCAL LocalFree(HLOCAL hMem)
    "LocalFree": ("kernel32", HLOCAL, (HLOCAL,),
                  "winbase/nf-winbase-localfree"),
    # BOOL GetUserPreferredUILanguages(DWORD dwFlags, PULONG pulNumLanguages,
    #     PZZWSTR pwszLanguagesBuffer, PULONG pcchLanguagesBuffer)
    "GetUserPreferredUILanguages": (
        "kernel32", BOOL, (DWORD, POINTER(ULONG), LPWSTR, POINTER(ULONG)),
        "winnls/nf-winnls-getuserpreferreduilanguages"),
    # LANGID GetUserDefaultUILanguage(void)
    "GetUserDefaultUILanguage": ("kernel32", LANGID, (),
                                 "winnls/nf-winnls-getuserdefaultuilanguage"),
    # BOOLEAN SEC_ENTRY GetUserNameExW(EXTENDED_NAME_FORMAT NameFormat,
    #     LPWSTR lpNameBuffer, PULONG nSize)
    "GetUserNameExW": ("secur32", BOOLEAN, (ENUM, LPWSTR, POINTER(ULONG)),
                       "secext/nf-secext-getusernameexw"),
    # BOOL GetUserNameW(LPWSTR lpBuffer, LPDWORD pcbBuffer)
    "GetUserNameW": ("advapi32", BOOL, (LPWSTR, POINTER(DWORD)),
                     "winbase/nf-winbase-getusernamew"),
    # BOOL LockFileEx(HANDLE hFile, DWORD dwFlags, DWORD dwReserved,
    #     DWORD nNumberOfBytesToLockLow, DWORD nNumberOfBytesToLockHigh,
    #     LPOVERLAPPED lpOverlapped)
    "LockFileEx": ("kernel32", BOOL,
                   (HANDLE, DWORD, DWORD, DWORD, DWORD, POINTER(OVERLAPPED)),
                   "fileapi/nf-fileapi-lockfileex"),
    # BOOL UnlockFileEx(HANDLE hFile, DWORD dwReserved,
    #     DWORD nNumberOfBytesToUnlockLow, DWORD nNumberOfBytesToUnlockHigh,
    #     LPOVERLAPPED lpOverlapped)
    "UnlockFileEx": ("kernel32", BOOL,
                     (HANDLE, DWORD, DWORD, DWORD, POINTER(OVERLAPPED)),
                     "fileapi/nf-fileapi-unlockfileex"),
    # BOOL GetComputerNameExW(COMPUTER_NAME_FORMAT NameType,
    #     LPWSTR lpBuffer, LPDWORD nSize)
    "GetComputerNameExW": ("kernel32", BOOL, (ENUM, LPWSTR, POINTER(DWORD)),
                           "sysinfoapi/nf-sysinfoapi-getcomputernameexw"),
    # HANDLE GetCurrentProcess(void)
    "GetCurrentProcess": (
        "kernel32", HANDLE, (),
        "processthreadsapi/nf-processthreadsapi-getcurrentprocess"),
    # DWORD GetCurrentProcessId(void)
    "GetCurrentProcessId": (
        "kernel32", DWORD, (),
        "processthreadsapi/nf-processthreadsapi-getcurrentprocessid"),
    # BOOL ProcessIdToSessionId(DWORD dwProcessId, DWORD *pSessionId)
    # The caller's own session where Remote Desktop Services (and so
    # WTSQuerySessionInformationW) is not running, as that page advises.
    "ProcessIdToSessionId": (
        "kernel32", BOOL, (DWORD, POINTER(DWORD)),
        "processthreadsapi/nf-processthreadsapi-processidtosessionid"),
    # BOOL CloseHandle(HANDLE hObject)
    "CloseHandle": ("kernel32", BOOL, (HANDLE,),
                    "handleapi/nf-handleapi-closehandle"),
    # BOOL OpenProcessToken(HANDLE ProcessHandle, DWORD DesiredAccess,
    #     PHANDLE TokenHandle)
    "OpenProcessToken": (
        "advapi32", BOOL, (HANDLE, DWORD, POINTER(HANDLE)),
        "processthreadsapi/nf-processthreadsapi-openprocesstoken"),
    # BOOL GetTokenInformation(HANDLE TokenHandle,
    #     TOKEN_INFORMATION_CLASS TokenInformationClass,
    #     LPVOID TokenInformation, DWORD TokenInformationLength,
    #     PDWORD ReturnLength)
    "GetTokenInformation": (
        "advapi32", BOOL, (HANDLE, ENUM, LPVOID, DWORD, POINTER(DWORD)),
        "securitybaseapi/nf-securitybaseapi-gettokeninformation"),
    # HANDLE RegisterEventSourceW(LPCWSTR lpUNCServerName,
    #     LPCWSTR lpSourceName)
    "RegisterEventSourceW": ("advapi32", HANDLE, (LPCWSTR, LPCWSTR),
                             "winbase/nf-winbase-registereventsourcew"),
    # BOOL ReportEventW(HANDLE hEventLog, WORD wType, WORD wCategory,
    #     DWORD dwEventID, PSID lpUserSid, WORD wNumStrings,
    #     DWORD dwDataSize, LPCWSTR *lpStrings, LPVOID lpRawData)
    "ReportEventW": (
        "advapi32", BOOL, (HANDLE, WORD, WORD, DWORD, PSID, WORD, DWORD,
                           POINTER(LPCWSTR), LPVOID),
        "winbase/nf-winbase-reporteventw"),
    # BOOL DeregisterEventSource(HANDLE hEventLog)
    "DeregisterEventSource": ("advapi32", BOOL, (HANDLE,),
                              "winbase/nf-winbase-deregistereventsource"),
}

# The functions ADVAPI32_DLL replaces.
_EVENTLOG_FUNCTIONS = ("RegisterEventSourceW", "ReportEventW",
                       "DeregisterEventSource")


class _SystemApi:
    """One system DLL's prototyped functions (None where it lacks one) and
    the last-error pair they report through."""

    def __init__(self, dll, dll_name, get_error, set_error):
        self.get_error = get_error
        self.set_error = set_error
        for name, (owner, restype, argtypes, _doc) in \
                _SYSTEM_PROTOTYPES.items():
            if owner != dll_name:
                continue
            fn = getattr(dll, name, None)
            if fn is not None:
                fn.restype = restype
                fn.argtypes = argtypes
            setattr(self, name, fn)


_system_apis = {}                   # DLL name -> _SystemApi, once loaded


def _system_api(dll_name):
    """``kernel32``, ``secur32`` or ``advapi32``, loaded on first use from
    the system directory; OSError where it cannot be loaded."""
    api = _system_apis.get(dll_name)
    if api is None:
        # kernel32 is a KnownDLL, always the system's own; the system
        # directory is asked of it.
        path = dll_name if dll_name == "kernel32" else os.path.join(
            _system_directory(), dll_name + ".dll")
        api = _system_apis[dll_name] = _SystemApi(
            ctypes.WinDLL(path, use_last_error=True), dll_name,
            ctypes.get_last_error, ctypes.set_last_error)
    return api


def _system_directory():
    buf = ctypes.create_unicode_buffer(_MAX_PATH)
    n = _system_api("kernel32").GetSystemDirectoryW(buf, len(buf))
    if not 0 < n < len(buf):
        return os.path.join(os.environ.get("SystemRoot", r"C:\Windows"),
                            "System32")
    return buf.value


_FORMAT_FLAGS = (FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_SYSTEM
                 | FORMAT_MESSAGE_IGNORE_INSERTS)

# What FormatMessageW answers for a LANGID whose texts are not installed:
# 1815 is documented, 15100 and 15105 are what the field reports, and 317
# (no text for that code in that language) is seen too.
_LANGUAGE_MISSING = frozenset((
    ERROR_RESOURCE_LANG_NOT_FOUND, ERROR_MUI_FILE_NOT_FOUND,
    ERROR_MUI_FILE_NOT_LOADED, ERROR_MR_MID_NOT_FOUND))


def _format_message(code, langid):
    """(Windows' text for ``code`` in ``langid``, 0), or (None, the error
    FormatMessageW failed with)."""
    kernel32 = _system_api("kernel32")
    buf = PVOID()
    kernel32.set_error(0)
    n = kernel32.FormatMessageW(_FORMAT_FLAGS, None, code, langid,
                                byref(buf), 0, None)
    if not n or not buf.value:
        return None, kernel32.get_error()
    try:
        return ctypes.wstring_at(buf.value, n).strip(), 0
    finally:
        kernel32.LocalFree(buf)


def _system_error_text(code, langid):
    try:
        if langid is None:
            # What ctypes.FormatError asks for: the user's default language.
            return _format_message(code, LANG_USER_DEFAULT)[0]
        text, err = _format_message(code, langid)
        if text is None and langid != LANGID_EN_US and \
                err in _LANGUAGE_MISSING:
            # Neutral, thread, user, system language, then US English.
            text = _format_message(code, 0)[0]
        return text
    except OSError:
        return None


# LANGID -> name, for systems without GetUserPreferredUILanguages.  Chinese
# shares one primary language (0x04): only the full LANGID says which.
_LANGUAGE_NAMES = {
    0x0409: "en-US", 0x0411: "ja-JP", 0x0804: "zh-CN", 0x1004: "zh-SG",
    0x0404: "zh-TW", 0x0C04: "zh-HK", 0x1404: "zh-MO",
}


def ui_languages():
    """The user's display languages, most preferred first, as names such as
    ``["ja-JP", "en-US"]``: what Windows shows its own texts in.

    ``GetUserPreferredUILanguages(MUI_LANGUAGE_NAME)``; where that fails,
    ``GetUserDefaultUILanguage()`` through a small table (en-US, ja-JP and the
    Chinese variants; [] for another LANGID).  [] off Windows, where no
    display language can be read without guessing from the locale (which is
    the regional format, not the language).
    """
    if not _WINDOWS:
        return []
    try:
        kernel32 = _system_api("kernel32")
    except OSError:
        return []
    names = _preferred_ui_languages(kernel32)
    if names:
        return names
    fn = kernel32.GetUserDefaultUILanguage
    name = _LANGUAGE_NAMES.get(fn()) if fn is not None else None
    return [name] if name else []


def _preferred_ui_languages(kernel32):
    fn = kernel32.GetUserPreferredUILanguages
    if fn is None:                  # before Windows Vista
        return []
    count = ULONG(0)
    chars = ULONG(0)
    # Once for the size (in WCHARs, both terminating NULs included), once
    # for the double-NUL multi-string itself.
    if not fn(MUI_LANGUAGE_NAME, byref(count), None, byref(chars)) \
            or not chars.value:
        return []
    buf = ctypes.create_unicode_buffer(chars.value)
    if not fn(MUI_LANGUAGE_NAME, byref(count), buf, byref(chars)):
        return []                   # e.g. it grew in between: no retry
    return [n for n in buf[:min(chars.value, len(buf))].split("\0") if n]


def file_handle(fd):
    """The Windows HANDLE behind a C runtime file descriptor."""
    import msvcrt                   # Windows only
    return msvcrt.get_osfhandle(fd)


def _byte_at(offset):
    ov = OVERLAPPED()
    ov.Offset = offset & 0xFFFFFFFF
    ov.OffsetHigh = offset >> 32
    return ov


def lock_byte(handle, offset, wait=True):
    """Lock one byte of an open file, exclusively (``LockFileEx``).

    With ``wait`` the call blocks in the kernel until the lock is granted,
    however long another process holds it: no retry loop, no deadline
    (``msvcrt.locking`` gives up after ten tries).  Without, it returns
    False at once when another holds the byte.  OSError otherwise.
    """
    kernel32 = _system_api("kernel32")
    flags = LOCKFILE_EXCLUSIVE_LOCK | (0 if wait else
                                       LOCKFILE_FAIL_IMMEDIATELY)
    ov = _byte_at(offset)
    kernel32.set_error(0)
    if kernel32.LockFileEx(handle, flags, 0, 1, 0, byref(ov)):
        return True
    code = kernel32.get_error()
    if not wait and code == ERROR_LOCK_VIOLATION:
        return False
    raise OSError(None, error_text(code), None, code)


def unlock_byte(handle, offset):
    """Release a byte locked with ``lock_byte``."""
    kernel32 = _system_api("kernel32")
    ov = _byte_at(offset)
    kernel32.set_error(0)
    if not kernel32.UnlockFileEx(handle, 0, 1, 0, byref(ov)):
        code = kernel32.get_error()
        raise OSError(None, error_text(code), None, code)


_UNLEN = 256                        # lmcons.h: longest user name
_DNLEN = 15                         # lmcons.h: longest NetBIOS domain name


def process_account():
    """Who this process runs as: ``DOMAIN\\user`` on Windows, the user name
    elsewhere; "" when the system cannot say.

    Never from environment variables (USERNAME, USERDOMAIN, USER, LOGNAME):
    any caller can set those.  On Windows ``GetUserNameExW(NameSamCompatible)``
    (secur32), falling back to ``GetUserNameW`` (advapi32, the user name
    alone); elsewhere the real uid's name from the password database.
    """
    if _WINDOWS:
        return _windows_account()
    try:
        import pwd                  # POSIX only
        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError, OSError):
        return ""                   # e.g. a uid without a passwd entry


def _windows_account():
    try:
        name = _user_name_ex(_system_api("secur32"))
    except OSError:
        name = ""
    if name:
        return name
    try:
        fn = _system_api("advapi32").GetUserNameW
    except OSError:
        return ""
    if fn is None:
        return ""
    buf = ctypes.create_unicode_buffer(_UNLEN + 1)
    size = DWORD(len(buf))
    return buf.value if fn(buf, byref(size)) else ""


def host_name():
    """This machine's host name, as ``socket.gethostname()`` gives it,
    without importing socket (and with it selectors and select: tens of
    milliseconds on a cold start): ``GetComputerNameExW(
    ComputerNamePhysicalDnsHostname)`` on Windows, which is what
    ``socket.gethostname()`` calls there; ``os.uname()``'s node name
    elsewhere.  "" when the system cannot say."""
    if not _WINDOWS:
        return os.uname().nodename
    try:
        kernel32 = _system_api("kernel32")
    except OSError:
        return ""
    return _name(kernel32, kernel32.GetComputerNameExW,
                 ComputerNamePhysicalDnsHostname, 64)


def _user_name_ex(secur32):
    fn = secur32.GetUserNameExW
    if fn is None:
        return ""
    return _name(secur32, fn, NameSamCompatible, _DNLEN + 1 + _UNLEN + 1)


def _name(api, fn, name_format, size):
    """``fn(name_format, buffer, &size)`` (GetUserNameExW,
    GetComputerNameExW): once more with the size an ERROR_MORE_DATA asks
    for; "" on any other failure."""
    size = ULONG(size)
    for _attempt in range(2):
        buf = ctypes.create_unicode_buffer(size.value)
        api.set_error(0)
        if fn(name_format, buf, byref(size)):
            return buf.value
        # On ERROR_MORE_DATA, size is what it takes, NUL included.
        if api.get_error() != ERROR_MORE_DATA or size.value <= len(buf):
            return ""
    return ""


# --- Errors --------------------------------------------------------------------

# English texts for the codes this tool meets, used where the system cannot
# supply its own (off Windows, or without the English texts installed).
# Wording follows Windows' own messages (Microsoft Learn, System Error Codes).
_ERROR_TEXT = {
    2: "The system cannot find the file specified.",
    5: "Access is denied.",
    6: "The handle is invalid.",
    8: "Not enough memory resources are available to process this command.",
    50: "The request is not supported.",
    53: "The network path was not found.",
    87: "The parameter is incorrect.",
    120: "This function is not supported on this system.",
    122: "The data area passed to a system call is too small.",
    234: "More data is available.",
    259: "No more data is available.",
    317: "The system cannot find message text for message number 0x%1 in "
         "the message file for %2.",
    1460: "This operation returned because the timeout period expired.",
    1502: "The event log file is full.",
    1722: "The RPC server is unavailable.",
    1726: "The remote procedure call failed.",
    1784: "The supplied user buffer is not valid for the requested operation.",
    1815: "The specified resource language ID cannot be found in the image "
          "file.",
    7007: "A close operation is pending on the session.",
    7022: "The specified session cannot be found.",
    7024: "The task you are trying to do can't be completed because Remote "
          "Desktop Services is currently busy. Please try again in a few "
          "minutes. Other users should still be able to log on.",
    7038: "The requested operation can be performed only on the system "
          "console. This is most often the result of a driver or system DLL "
          "requiring direct console access.",
    7041: "Disconnecting the console session is not supported.",
    7044: "The request to control another session remotely was denied.",
    7045: "The requested session access is denied.",
    7050: "The requested session cannot be controlled remotely. This may be "
          "because the session is disconnected or does not currently have a "
          "user logged on.",
    7051: "The requested session is not configured to allow remote control.",
    7054: "The number of connections to this computer is limited and all "
          "connections are in use right now. Try connecting later or contact "
          "your system administrator.",
    15100: "The resource loader failed to find MUI file.",
    15105: "The resource loader cache doesn't have loaded MUI entry.",
}


def error_text(code, langid=None):
    """The message text for a Win32 error code.

    ``langid`` None: the system's text in the user's display language on
    Windows (``FormatMessageW`` with ``LANG_USER_DEFAULT``, as
    ``ctypes.FormatError`` asks), the built-in English table elsewhere.  An
    explicit LANGID (such as 0x0411, ja-JP) asks Windows for that language,
    and where its texts are not installed (1815, 15100, 15105, 317) for
    language 0 (neutral, thread, user, system language, US English).
    ``LANGID_EN_US`` (0x0409) means English: Windows' en-US text, else the
    built-in table, never another language.  Off Windows ``langid`` changes
    nothing: the table is English.  Windows' trailing CR LF is stripped.
    """
    if code == 0:
        return ("The call failed but did not say why (the last error was 0); "
                "the cause is unknown.")
    if _WINDOWS:
        text = _system_error_text(code, langid)
        if text:
            return text
    return _ERROR_TEXT.get(code, "Unknown error %d." % code)


class WTSError(OSError):
    """A wtsapi32 call failed.

    ``winerror`` is the Win32 error code (0 when the call did not set one),
    ``function`` the API name, ``server`` the server name (``None`` for the
    local server) and ``session`` the session id the call was about, if any
    (``WTS_CURRENT_SESSION`` where the call named the caller's own).
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
        if self.session is None:
            about = ""
        elif self.session == WTS_CURRENT_SESSION:
            about = ", the current session"
        else:
            about = ", session %d" % self.session
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

_STATES = {member.value: member for member in WTS_CONNECTSTATE_CLASS}


def _state(value):
    # A state newer than this module stays a plain int.
    return _STATES.get(value, value)


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


class Process(namedtuple("Process", "server session_id pid name")):
    """An immutable snapshot of one process on a server: ``server`` as in
    ``Session``, the ``session_id`` it runs in, its ``pid`` and its image
    ``name`` ('' where Windows gives none, as for the System Idle
    Process)."""
    __slots__ = ()


_FILETIME_TICKS_PER_SECOND = 10 ** 7
# The last FILETIME a datetime holds: 9999-12-31 23:59:59.9999999 UTC.
_FILETIME_MAX = 2650467743999999999
_WTS_DISCONNECTED = WTS_CONNECTSTATE_CLASS.WTSDisconnected


def filetime(ticks):
    """FILETIME ticks (100 ns since 1601-01-01 UTC) as an aware UTC
    datetime, or None for 0, negative, or past year 9999:
    one absurd value from a server must never fail the whole answer."""
    if not 0 < ticks <= _FILETIME_MAX:
        return None
    # Only a caller that reads a time pays for importing datetime (about
    # 2 ms, a tenth of this tool's start-up).
    import datetime
    return datetime.datetime(1601, 1, 1, tzinfo=datetime.timezone.utc) + \
        datetime.timedelta(0, 0, ticks // 10)


def idle_seconds(state, last_input, disconnect, current, logon=0):
    """Idle time in seconds, or None where it is unknown, from the raw
    FILETIME ticks of one WTSINFOW record.

    Idle since LastInputTime, or since DisconnectTime for a disconnected
    session, up to CurrentTime, all from the same record: never the local
    clock.  CurrentTime is the server's time as documented; whether a
    remote query fills it from the server's clock or the caller's is
    UNVERIFIED (Cassia #42 saw an error equal to the skew between the two),
    so the idle time is by CurrentTime's clock, whichever that is.  None
    when the reference time or CurrentTime is 0 or past what a datetime
    holds; when the reference is later than CurrentTime (clock skew); and,
    for a session with a LogonTime (``logon`` > 0), when a LastInputTime is
    earlier than the logon or the idle time would be longer than the
    session's age (CurrentTime - LogonTime).  The console's LastInputTime is
    unreliable on real Windows.  A session without a user is not idle
    either: ``SessionTimes.idle`` applies that rule on top.
    """
    ref = disconnect if state == _WTS_DISCONNECTED else last_input
    if not 0 < ref <= current <= _FILETIME_MAX:
        return None
    if logon > 0 and (0 < last_input < logon or ref < logon):
        return None
    return (current - ref) / _FILETIME_TICKS_PER_SECOND


_set = object.__setattr__
_new = object.__new__


class SessionTimes:
    """An immutable snapshot of one session's WTSINFOW record (one query).

    ``session_id`` (the real id, also when asked as WTS_CURRENT_SESSION),
    ``state`` (as ``Session.state``), ``user`` and ``domain`` ('' without a
    user; WTSINFOW holds at most 20 and 16 characters) and the raw FILETIME
    ticks ``logon_ticks``, ``connect_ticks``, ``disconnect_ticks``,
    ``last_input_ticks`` and ``current_ticks`` (ints, 0 where unset: compare
    these for exact equality).

    ``locked``: True when the session is locked, False when not, None
    when unknown or not asked: only ``Server.times_ex()`` reads it
    (``WTSSessionInfoEx``), ``times()`` leaves it None.

    ``logon``, ``connect``, ``disconnect``, ``last_input`` and ``current``
    are lazy: each access builds an aware UTC datetime from the ticks (None
    where unset or not representable), so a snapshot whose times nobody
    reads costs no datetime.  ``idle`` (seconds, or None where unknown, see
    ``idle_seconds``; always None without a user) is computed on access too.
    Not a tuple: unpacking it fails rather than silently meaning something
    else than the namedtuple it replaces.
    """
    __slots__ = ("_fields",)
    _NAMES = ("session_id", "state", "user", "domain", "logon_ticks",
              "connect_ticks", "disconnect_ticks", "last_input_ticks",
              "current_ticks", "locked")

    def __init__(self, session_id, state, user, domain, logon_ticks=0,
                 connect_ticks=0, disconnect_ticks=0, last_input_ticks=0,
                 current_ticks=0, locked=None):
        # One slot holding one tuple: a snapshot per session is made by the
        # ten thousand, and this is a third of the cost of ten slots.
        _set(self, "_fields", (session_id, state, user, domain, logon_ticks,
                               connect_ticks, disconnect_ticks,
                               last_input_ticks, current_ticks, locked))

    session_id = property(lambda self: self._fields[0])
    state = property(lambda self: self._fields[1])
    user = property(lambda self: self._fields[2])
    domain = property(lambda self: self._fields[3])
    logon_ticks = property(lambda self: self._fields[4])
    connect_ticks = property(lambda self: self._fields[5])
    disconnect_ticks = property(lambda self: self._fields[6])
    last_input_ticks = property(lambda self: self._fields[7])
    current_ticks = property(lambda self: self._fields[8])
    locked = property(lambda self: self._fields[9])

    def __setattr__(self, name, value):
        raise AttributeError("SessionTimes is immutable")

    def __delattr__(self, name):
        raise AttributeError("SessionTimes is immutable")

    def __eq__(self, other):
        if not isinstance(other, SessionTimes):
            return NotImplemented
        return self._fields == other._fields

    def __hash__(self):
        return hash(self._fields)

    def __reduce__(self):
        return (type(self), self._fields)

    def __repr__(self):
        return "SessionTimes(%s)" % ", ".join(
            "%s=%r" % item for item in zip(self._NAMES, self._fields))

    @property
    def logon(self):
        return filetime(self._fields[4])

    @property
    def connect(self):
        return filetime(self._fields[5])

    @property
    def disconnect(self):
        return filetime(self._fields[6])

    @property
    def last_input(self):
        return filetime(self._fields[7])

    @property
    def current(self):
        return filetime(self._fields[8])

    @property
    def idle(self):
        f = self._fields
        if not f[2]:
            return None
        return idle_seconds(f[1], f[7], f[6], f[8], f[4])

    @property
    def account(self):
        """``DOMAIN\\user``, ``user`` without a domain, '' without a user."""
        user, domain = self._fields[2], self._fields[3]
        if not user:
            return ""
        return "%s\\%s" % (domain, user) if domain else user


def _times_from_info(i):
    # Read while the server's buffer is alive; nothing keeps a view of it.
    # Made without __init__'s call: ten thousand a listing.
    times = _new(SessionTimes)
    _set(times, "_fields", (i.SessionId, _STATES.get(i.State, i.State),
                            i.UserName, i.Domain, i.LogonTime, i.ConnectTime,
                            i.DisconnectTime, i.LastInputTime, i.CurrentTime,
                            None))
    return times


# SessionFlags (as a DWORD) -> SessionTimes.locked; UNKNOWN and anything
# else read as None.
_LOCKED = {WTS_SESSIONSTATE_LOCK: True, WTS_SESSIONSTATE_UNLOCK: False}


def _times_from_info_ex(x):
    """A WTSINFOEXW view as SessionTimes, or None unless its Level is 1
    (the only level documented)."""
    if x.Level != 1:
        return None
    i = x.Data.WTSInfoExLevel1
    times = _new(SessionTimes)
    _set(times, "_fields", (i.SessionId,
                            _STATES.get(i.SessionState, i.SessionState),
                            i.UserName, i.DomainName, i.LogonTime,
                            i.ConnectTime, i.DisconnectTime, i.LastInputTime,
                            i.CurrentTime,
                            _LOCKED.get(i.SessionFlags & _MAX_DWORD)))
    return times


class Client(namedtuple("Client", "name address")):
    """The client of a session, as the client itself reported it when it
    connected: its computer ``name`` and network ``address`` (a string
    such as ``"10.0.0.5"`` or ``"2001:db8::5"``; '' when there is none,
    as for the console).  Behind a NAT, a VPN or an RD Gateway the
    address may be another one, or missing: never use it to authenticate
    (sdk-api, WTS_CLIENT_ADDRESS)."""
    __slots__ = ()


def _client_address(a):
    """WTS_CLIENT_ADDRESS as text.  AF_INET: the four bytes at
    Address[2..5], as documented (the first two are the port, as in
    [MS-TSTS]'s CLIENT_STACK_ADDRESS).  AF_INET6: the 16 bytes at
    Address[2..17], as System Informer and Veyon read them; UNVERIFIED,
    since the sdk-api page's example shows them from Address[0].  ''
    for AF_UNSPEC and any other family."""
    family, raw = a.AddressFamily, bytes(a.Address)
    if family == AF_INET:
        return "%d.%d.%d.%d" % tuple(raw[2:6])
    if family == AF_INET6:
        return _ipv6_text(raw[2:18])
    return ""


def _ipv6_text(raw):
    """16 bytes as RFC 5952 text: lower-case hex groups, the longest run
    of two or more zero groups (the first of equal ones) as "::".  The
    same on every OS and Python, without importing ipaddress or socket."""
    groups = [raw[i] << 8 | raw[i + 1] for i in range(0, 16, 2)]
    best, start = (0, 0), None
    for i, group in enumerate(groups + [1]):        # 1: ends a last run
        if group == 0:
            if start is None:
                start = i
        elif start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    text = ["%x" % group for group in groups]
    if best[1] - best[0] < 2:
        return ":".join(text)
    return ":".join(text[:best[0]]) + "::" + ":".join(text[best[1]:])


# --- Servers ---------------------------------------------------------------------

class Server:
    """A Remote Desktop Session Host server: the local one by default.

    Use as a context manager, or call ``close()``; the handle is closed
    exactly once, and the local server's pseudo-handle never.  For a server
    that is down, ``WTSOpenServerW`` may fail itself (the constructor raises
    WTSError, typically 1722, with nothing to close) or hand out a handle
    whose first call fails (1722): callers handle both.

    Calls may be made from several threads at once, and ``close()`` is
    safe from any thread: a call in flight closes the handle when it
    returns.  Every call that uses the handle registers first (ValueError
    "I/O operation on a closed Server" once closed) and unregisters when
    the library call returns; ``close()`` marks the server closed and
    closes the handle at once if no call is in flight, else the last call
    in flight closes it.  So a handle is never closed under a call that
    still uses it (Windows could hand the same value to another open).

    ``WTS_CURRENT_SESSION`` (the caller's own session) is accepted on the
    local server only: on a remote handle Windows' answer is inconsistent,
    so every method refuses it there with ValueError, before any call.
    """

    def __init__(self, name=None, connect=True):
        self._api = _load()
        self.name = name or None
        self._handle = WTS_CURRENT_SERVER_HANDLE
        self._lock = allocate_lock()    # guards the three below
        self._closed = False
        self._in_flight = 0            # calls using the handle right now
        # This server answered an Ex call with 120 (or this wtsapi32 lacks
        # one): both Ex enumerations came with Windows 7 / 2008 R2, so
        # neither is asked again.
        self._no_ex = False
        if self.name is not None:
            self._handle = None             # not WTS_CURRENT_SERVER_HANDLE
            if connect:
                self.connect()

    def connect(self):
        """Open the handle (``WTSOpenServerW``) of a Server made with
        ``connect=False``; nothing for the local server.  Safe from any
        thread, as ``close()`` is: closed while this call is in flight,
        the handle is closed as soon as it comes.  No other call is made
        on a remote Server before it is connected."""
        if self.name is None:
            return
        with self._lock:
            if self._closed:
                raise ValueError("I/O operation on a closed Server")
            if self._handle is not None:
                raise ValueError("Server(%r) is already connected"
                                 % self.name)
            self._in_flight += 1
        try:
            handle = _checked(self._api, "WTSOpenServerW", self.name, None,
                              self.name)
            with self._lock:        # two connects at once: one handle kept
                handle, self._handle = (None, handle) if \
                    self._handle is None else (handle, self._handle)
            if handle is not None:
                self._close_handle(handle)
                raise ValueError("Server(%r) is already connected"
                                 % self.name)
        finally:
            self._leave()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "Server(%r)" % (self.name,)

    def close(self):
        """Give the server up, from any thread; later calls raise
        ValueError.  The handle is closed now, or by the last call in
        flight when it returns; exactly once either way."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            handle = self._take_handle()
        self._close_handle(handle)

    def _take_handle(self):
        """With the lock held, once closed: the handle to close, if no call
        uses it any more and nobody took it yet; else None."""
        if self._in_flight:
            return None
        handle, self._handle = self._handle, None
        return handle

    def _close_handle(self, handle):
        if handle is not WTS_CURRENT_SERVER_HANDLE:    # never the local one
            self._api.WTSCloseServer(handle)

    def _enter(self):
        """Register a call about to use the handle and return the handle;
        ValueError once closed.  Pair with ``_leave()`` in ``finally``."""
        with self._lock:
            if self._closed:
                raise ValueError("I/O operation on a closed Server")
            if self.name is not None and self._handle is None:
                raise ValueError("Server(%r) is not connected" % self.name)
            self._in_flight += 1
            return self._handle

    def _leave(self):
        """The call registered by ``_enter()`` returned; the last one out
        after a ``close()`` closes the handle."""
        with self._lock:
            self._in_flight -= 1
            handle = self._take_handle() if self._closed else None
        self._close_handle(handle)

    def _handle_call(self, name, session_id, *args):
        """``name(handle, *args)``, registered as in flight meanwhile."""
        handle = self._enter()
        try:
            return _checked(self._api, name, self.name, session_id, handle,
                            *args)
        finally:
            self._leave()

    def _server_call(self, name, *args):
        """``name(handle, *args)``: a call about the server as a whole."""
        return self._handle_call(name, None, *args)

    def _session_call(self, name, session_id, *rest):
        """``name(handle, session_id, *rest)``: a call about one session,
        which a failure's WTSError names."""
        return self._handle_call(name, session_id, session_id, *rest)

    def _session_arg(self, session_id):
        _check_session_id(session_id, allow_current=True)
        if session_id == WTS_CURRENT_SESSION and self.name is not None:
            raise ValueError(
                "WTS_CURRENT_SESSION names the caller's own session on the "
                "local server only; on a remote server (%s) Windows answers "
                "inconsistently" % self.name)
        return session_id

    # -- enumeration ----------------------------------------------------------

    def sessions(self):
        """Every session on the server this account may see, as a list of
        ``Session``.

        One call to the library (``WTSEnumerateSessionsExW`` level 1); only
        where that function is missing or answers 120 does it fall back to
        ``WTSEnumerateSessionsW`` plus two queries a session.  An account
        that may see no session here (it lacks Query Information permission)
        gets WTSError 259 (ERROR_NO_MORE_ITEMS) from either path: that means
        "no rights here", never "no sessions" (a session host always has
        session 0 and a listener).  On the fallback, a session whose query
        answers 2 or 7022 (SESSION_GONE_CODES) is left out if a second
        enumeration no longer lists it, and raises that WTSError if it does
        (the caller may not query it).
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
        self._server_call("WTSEnumerateSessionsExW", byref(level), 0,
                          byref(info), byref(count))
        if not info:
            return []
        try:
            # A server's sessions share a few domains: one string each,
            # not one a session (ten thousand sessions, half a megabyte).
            server, states, domains, out = self.name, _STATES, {}, []
            for s in info[:count.value]:
                domain = s.pDomainName or ""
                out.append(Session(server, s.SessionId, s.pSessionName or "",
                                   states.get(s.State, s.State),
                                   s.pUserName or "",
                                   domains.setdefault(domain, domain)))
            return out
        finally:
            self._api.WTSFreeMemoryExW(
                WTS_TYPE_CLASS.WTSTypeSessionInfoLevel1, info, count.value)

    def _enumerate_legacy(self):
        """[(id, name, state)] from one ``WTSEnumerateSessionsW``."""
        info = POINTER(WTS_SESSION_INFOW)()
        count = DWORD(0)
        self._server_call("WTSEnumerateSessionsW", 0, 1, byref(info),
                          byref(count))
        if not info:
            return []
        try:
            return [(s.SessionId, s.pWinStationName or "", _state(s.State))
                    for s in info[:count.value]]
        finally:
            self._api.WTSFreeMemory(info)

    def _sessions_legacy(self):
        """``WTSEnumerateSessionsW``, then the user and domain of each
        session.  A query answering one of SESSION_GONE_CODES means the
        session ended meanwhile, or the caller may not query it: after all
        the queries, one more enumeration decides.  A session no longer
        listed is left out (it ended); one still listed raises that
        WTSError (missing rights).  At most two enumerations a call."""
        sessions, perhaps_gone = [], []
        for sid, name, state in self._enumerate_legacy():
            try:
                user = self._query(sid, WTS_INFO_CLASS.WTSUserName, LPWSTR)
                domain = self._query(sid, WTS_INFO_CLASS.WTSDomainName, LPWSTR)
            except WTSError as e:
                if e.winerror not in SESSION_GONE_CODES:
                    raise
                perhaps_gone.append(e)
                continue
            sessions.append(Session(self.name, sid, name, state, user, domain))
        if perhaps_gone:
            listed = {sid for sid, _name, _state in self._enumerate_legacy()}
            for e in perhaps_gone:
                if e.session in listed:
                    raise e
        return sessions

    def processes(self):
        """Every process on the server this account may see, as a list of
        ``Process``: one library call.

        ``WTSEnumerateProcessesExW`` level 0 for every session
        (``WTS_ANY_SESSION``), freed with ``WTSFreeMemoryExW``; where that
        function is missing or answers 120 (before Windows 7 / 2008 R2),
        ``WTSEnumerateProcessesW``, freed with ``WTSFreeMemory``.  Windows
        lists processes in other users' sessions to members of the
        Administrators group only (sdk-api).  The user SIDs are not read.
        """
        if not self._no_ex and \
                self._api.WTSEnumerateProcessesExW is not None:
            try:
                return self._processes_ex()
            except WTSError as e:
                if e.winerror != ERROR_CALL_NOT_IMPLEMENTED:
                    raise
                self._no_ex = True
        return self._processes_legacy()

    def _processes_ex(self):
        level = DWORD(0)
        buf = PVOID()
        count = DWORD(0)
        self._server_call("WTSEnumerateProcessesExW", byref(level),
                          WTS_ANY_SESSION, byref(buf), byref(count))
        if not buf.value:
            return []
        try:
            return self._process_list(
                ctypes.cast(buf, POINTER(WTS_PROCESS_INFOW)), count.value)
        finally:
            self._api.WTSFreeMemoryExW(
                WTS_TYPE_CLASS.WTSTypeProcessInfoLevel0, buf, count.value)

    def _processes_legacy(self):
        info = POINTER(WTS_PROCESS_INFOW)()
        count = DWORD(0)
        self._server_call("WTSEnumerateProcessesW", 0, 1, byref(info),
                          byref(count))
        if not info:
            return []
        try:
            return self._process_list(info, count.value)
        finally:
            self._api.WTSFreeMemory(info)

    def _process_list(self, info, count):
        server = self.name
        return [Process(server, p.SessionId, p.ProcessId,
                        p.pProcessName or "") for p in info[:count]]

    # -- queries ----------------------------------------------------------------

    def _query(self, session_id, info_class, ctype, copy=None):
        """One ``WTSQuerySessionInformationW`` answer, copied out, then
        freed with WTSFreeMemory: the one place its size is checked.

        ``ctype`` is what the buffer holds.  LPWSTR: a string, read only
        within the size the server returned ('' for none).  Any other ctypes
        type: the server must have returned at least its size (else WTSError
        87, nothing read); ``copy(view)`` then turns a view of the buffer
        into Python values before it is freed, and without ``copy`` an owned
        copy of ``ctype`` comes back.
        """
        buf = PVOID()
        size = DWORD(0)
        self._session_call("WTSQuerySessionInformationW", session_id,
                           info_class, byref(buf), byref(size))
        p, n = buf.value, size.value
        try:
            if ctype is LPWSTR:
                if not p:
                    return ""
                return ctypes.wstring_at(p, n // sizeof(WCHAR)).split(
                    "\0", 1)[0]
            if not p or n < sizeof(ctype):
                raise WTSError(ERROR_INVALID_PARAMETER,
                               "WTSQuerySessionInformationW", self.name,
                               session_id)
            if copy is not None:
                return copy(ctype.from_address(p))
            return ctype.from_buffer_copy(ctypes.string_at(p, sizeof(ctype)))
        finally:
            if p:                   # the c_void_p itself: no int conversion
                self._api.WTSFreeMemory(buf)

    def session_id(self, session_id=WTS_CURRENT_SESSION):
        """The id behind ``session_id``; by default the caller's own session
        (local server only)."""
        self._session_arg(session_id)
        return self._query(session_id, WTS_INFO_CLASS.WTSSessionId,
                           DWORD).value

    def times(self, session_id):
        """A ``SessionTimes`` for the session: one
        ``WTSQuerySessionInformationW(WTSSessionInfo)`` call.  On the local
        server ``WTS_CURRENT_SESSION`` is the caller's own session (see
        ``own_session()``); a remote server refuses it with ValueError."""
        self._session_arg(session_id)
        return self._query(session_id, WTS_INFO_CLASS.WTSSessionInfo,
                           WTSINFOW, _times_from_info)

    def times_ex(self, session_id):
        """Like ``times()``, from one
        ``WTSQuerySessionInformationW(WTSSessionInfoEx)`` call (Windows 7 /
        2008 R2 and later), with ``locked`` set: True for
        WTS_SESSIONSTATE_LOCK (0), False for WTS_SESSIONSTATE_UNLOCK (1),
        None for WTS_SESSIONSTATE_UNKNOWN, all as current Windows
        documents them.  Windows 7 and 2008 R2 report the two the other
        way round (a documented defect): there, ``locked`` is the opposite
        of the truth.  WTSError 87 when the answer is not level 1."""
        self._session_arg(session_id)
        times = self._query(session_id, WTS_INFO_CLASS.WTSSessionInfoEx,
                            WTSINFOEXW, _times_from_info_ex)
        if times is None:
            raise WTSError(ERROR_INVALID_PARAMETER,
                           "WTSQuerySessionInformationW", self.name,
                           session_id)
        return times

    def times_many(self, session_ids, ex=False, until=None):
        """``times()`` (``times_ex()`` with ``ex``) of each session, in
        order: a list of SessionTimes, or of the WTSError that session's
        query failed with.  The same calls, one registration for them all:
        at ten thousand sessions the Python around each call costs more
        than the call itself.  With ``until``, a ``time.perf_counter()``
        value, no query but the first starts once it has passed: the
        answers are then those of the ids at the head."""
        session_ids = list(session_ids)     # read twice: no iterator
        top = _MAX_DWORD - (self.name is not None)
        for session_id in session_ids:
            if type(session_id) is not int or not 0 <= session_id <= top:
                self._session_arg(session_id)       # raises its error
        if ex:
            info_class, ctype, convert = (WTS_INFO_CLASS.WTSSessionInfoEx,
                                          WTSINFOEXW, _times_from_info_ex)
        else:
            info_class, ctype, convert = (WTS_INFO_CLASS.WTSSessionInfo,
                                          WTSINFOW, _times_from_info)
        api, name, out = self._api, self.name, []
        query, free = api.WTSQuerySessionInformationW, api.WTSFreeMemory
        set_error, get_error, need = api.set_error, api.get_error, \
            sizeof(ctype)
        at = ctype.from_address
        buf, size = PVOID(), DWORD(0)
        pbuf, psize = byref(buf), byref(size)
        handle = self._enter()
        try:
            for session_id in session_ids:
                if until is not None and out and perf_counter() > until:
                    break
                set_error(0)
                buf.value = None        # never the last answer's, freed
                if not query(handle, session_id, info_class, pbuf, psize):
                    out.append(WTSError(get_error(), "WTSQuerySession"
                                        "InformationW", name, session_id))
                    continue
                address = buf.value
                try:
                    times = convert(at(address)) if address and \
                        size.value >= need else None
                finally:
                    if address:
                        free(buf)
                out.append(times or WTSError(
                    ERROR_INVALID_PARAMETER, "WTSQuerySessionInformationW",
                    name, session_id))
        finally:
            self._leave()
        return out

    def client(self, session_id):
        """The session's ``Client``: its name (``WTSClientName``) and
        address (``WTSClientAddress``), two calls."""
        self._session_arg(session_id)
        name = self._query(session_id, WTS_INFO_CLASS.WTSClientName, LPWSTR)
        address = self._query(session_id, WTS_INFO_CLASS.WTSClientAddress,
                              WTS_CLIENT_ADDRESS, _client_address)
        return Client(name, address)

    # -- actions ----------------------------------------------------------------

    def logoff(self, session_id, wait=False):
        """Log off a session (``WTS_CURRENT_SESSION``, local server only: the
        caller's own).  Without ``wait`` it returns at once and the session
        may still be listed for a while; with ``wait`` Windows has been seen
        to block indefinitely, even after the session is gone."""
        self._session_arg(session_id)
        self._session_call("WTSLogoffSession", session_id, bool(wait))

    def disconnect(self, session_id, wait=False):
        self._session_arg(session_id)
        self._session_call("WTSDisconnectSession", session_id, bool(wait))

    def send_message(self, session_id, title, text, timeout=0, wait=False,
                     style=MB_OK):
        """Show a message box in a session; return the response (``IDASYNC``
        when not waiting, ``IDTIMEOUT`` when ``timeout`` seconds passed).  A
        disconnected session cannot show it: the call may fail or succeed
        without anyone seeing it (which one is unverified)."""
        self._session_arg(session_id)
        title_buf = ctypes.create_unicode_buffer(title)
        text_buf = ctypes.create_unicode_buffer(text)
        # Lengths are in bytes without the terminating NUL: sizeof() is right
        # for UTF-16 surrogate pairs on Windows and for 4-byte wchar_t alike.
        response = DWORD(0)
        self._session_call("WTSSendMessageW", session_id, title_buf,
                           sizeof(title_buf) - sizeof(WCHAR), text_buf,
                           sizeof(text_buf) - sizeof(WCHAR), style,
                           int(timeout), byref(response), bool(wait))
        return response.value


def current_session_id():
    """The caller's own session id on the local server:
    ``WTSQuerySessionInformationW(WTSSessionId)``.  On Windows, where that
    call fails (it does when Remote Desktop Services is not running), the
    process's own session from kernel32's ``ProcessIdToSessionId``, as the
    sdk-api page of WTSQuerySessionInformationW recommends; if that fails
    too, the WTSError of the first call.  Off Windows there is nothing to
    fall back on: the library (the test double) decides."""
    with Server() as local:
        try:
            return local.session_id()
        except WTSError:
            if _WINDOWS:
                sid = _process_session_id()
                if sid is not None:
                    return sid
            raise


def _process_session_id():
    """The session this process runs in (``ProcessIdToSessionId`` of
    ``GetCurrentProcessId()``), or None where kernel32 cannot say."""
    try:
        kernel32 = _system_api("kernel32")
    except OSError:
        return None
    if kernel32.ProcessIdToSessionId is None or \
            kernel32.GetCurrentProcessId is None:
        return None
    sid = DWORD(0)
    if not kernel32.ProcessIdToSessionId(kernel32.GetCurrentProcessId(),
                                         byref(sid)):
        return None
    return sid.value


def own_session():
    """The caller's own session on the local server, as ``SessionTimes``:
    its real id, user, domain, logon time and the rest, in one call,
    ``WTSQuerySessionInformationW(WTS_CURRENT_SERVER_HANDLE,
    WTS_CURRENT_SESSION, WTSSessionInfo)``.  Its ``user``, ``domain`` and
    ``logon_ticks`` identify the caller's session on other servers too
    (where WTS_CURRENT_SESSION must not be used)."""
    with Server() as local:
        return local.times(WTS_CURRENT_SESSION)


# --- The event log, and the SID the process runs as ---------------------------

def process_sid():
    """The SID of the account this process runs as, from its token
    (``OpenProcessToken`` + ``GetTokenInformation(TokenUser)``), in the
    SID's binary form (bytes); None off Windows, where there is no token,
    or when the system cannot say.  It is what ``ReportEventW`` takes as
    lpUserSid, so that Event Viewer shows who wrote an event."""
    if not _WINDOWS:
        return None
    try:
        kernel32 = _system_api("kernel32")
        advapi32 = _system_api("advapi32")
    except OSError:
        return None
    if advapi32.OpenProcessToken is None or \
            advapi32.GetTokenInformation is None:
        return None
    token = HANDLE()
    if not advapi32.OpenProcessToken(kernel32.GetCurrentProcess(),
                                     TOKEN_QUERY, byref(token)):
        return None
    try:
        size = DWORD(0)
        # Once for the size (it fails with ERROR_INSUFFICIENT_BUFFER), once
        # for the TOKEN_USER and the SID behind it.
        advapi32.GetTokenInformation(token, TokenUser, None, 0, byref(size))
        if size.value < sizeof(TOKEN_USER):
            return None
        buf = (ctypes.c_uint64 * ((size.value + 7) // 8))()   # aligned
        if not advapi32.GetTokenInformation(token, TokenUser, buf,
                                            sizeof(buf), byref(size)):
            return None
        return _sid_bytes(TOKEN_USER.from_buffer(buf).User.Sid,
                          ctypes.addressof(buf), sizeof(buf))
    finally:
        kernel32.CloseHandle(token)


def _sid_bytes(address, base, size):
    """The SID at ``address`` as bytes, if it lies within base..base+size."""
    if not address or not base <= address <= base + size - sizeof(SID):
        return None
    sid = SID.from_address(address)
    length = SID.SubAuthority.offset + sid.SubAuthorityCount * sizeof(DWORD)
    if address + length > base + size:
        return None
    return ctypes.string_at(address, length)


def sid_string(sid):
    """A binary SID (bytes) in its string form, ``S-1-5-21-...``, as
    ``ConvertSidToStringSidW`` writes it (an authority of 2**32 or more in
    hex); ValueError if it is not a SID."""
    sid = bytes(sid)
    if len(sid) < 8 or len(sid) != 8 + 4 * sid[1] or sid[0] != 1:
        raise ValueError("not a SID: %r" % sid[:16])
    authority = int.from_bytes(sid[2:8], "big")
    parts = ["S", str(sid[0]),
             str(authority) if authority < 1 << 32 else "0x%012X" % authority]
    parts += [str(int.from_bytes(sid[i:i + 4], "little"))
              for i in range(8, len(sid), 4)]
    return "-".join(parts)


class EventLogError(OSError):
    """An event-log call failed.  ``winerror`` is the Win32 error code (0
    when the call did not set one), ``function`` the API name, ``source``
    the event source."""

    def __init__(self, winerror, function, source=None):
        super().__init__(None, error_text(winerror))
        self.winerror = winerror
        self.function = function
        self.source = source

    def __str__(self):
        return "%s failed for event source %s: %s (error %d)" % (
            self.function, self.source, self.strerror, self.winerror)

    def __reduce__(self):
        return (type(self), (self.winerror, self.function, self.source))


_event_apis = {}                    # ADVAPI32_DLL path -> _SystemApi


def _event_api():
    """Where RegisterEventSourceW, ReportEventW and DeregisterEventSource
    come from: the library ADVAPI32_DLL names, on any OS (off Windows with
    ``ctypes.CDLL(path, use_errno=True)``, the Win32 error code read from
    errno), else the system's advapi32 (Windows only)."""
    override = os.environ.get("ADVAPI32_DLL")
    if not override:
        if not _WINDOWS:
            raise LibraryUnavailable(
                "the event log exists only on Windows; set ADVAPI32_DLL to "
                "a library with RegisterEventSourceW, ReportEventW and "
                "DeregisterEventSource (such as the test double in tests/) "
                "to use it on this system")
        return _system_api("advapi32")
    path = os.path.abspath(override)
    api = _event_apis.get(path)
    if api is None:
        try:
            if _WINDOWS:
                api = _SystemApi(ctypes.WinDLL(path, use_last_error=True),
                                 "advapi32", ctypes.get_last_error,
                                 ctypes.set_last_error)
            else:
                api = _SystemApi(ctypes.CDLL(path, use_errno=True),
                                 "advapi32", ctypes.get_errno,
                                 ctypes.set_errno)
        except OSError as e:
            raise LibraryUnavailable("cannot load %s: %s" % (
                override, e.strerror or e)) from None
        _event_apis[path] = api
    return api


def _event_call(api, name, source, *args):
    """Call an event-log function; EventLogError when it returns
    FALSE/NULL.  The last error is cleared first, so a failure that does
    not set it reads as 0, not as a stale code."""
    fn = getattr(api, name, None)
    if fn is None:
        raise EventLogError(ERROR_CALL_NOT_IMPLEMENTED, name, source)
    api.set_error(0)
    result = fn(*args)
    if not result:
        raise EventLogError(api.get_error(), name, source)
    return result


class EventSource:
    """An event source on the local machine's event log, for writing:
    ``RegisterEventSourceW`` when made, ``DeregisterEventSource`` exactly
    once on ``close()`` (or leaving the ``with`` block).

        with wtsapi.EventSource("PyLogoff") as log:
            log.report(wtsapi.EVENTLOG_INFORMATION_TYPE, 100, "text",
                       sid=wtsapi.process_sid())

    A source never registered (no key under ...\\Services\\EventLog\\
    Application) is still opened, and its events go to the Application log;
    only the viewer lacks a message file for them.  Failures raise
    EventLogError (an OSError with ``winerror``).  Thread-safe: one call at
    a time, and none after ``close()``."""

    def __init__(self, source, server=None):
        self.source = source
        self._lock = allocate_lock()
        self._api = _event_api()
        self._handle = _event_call(self._api, "RegisterEventSourceW", source,
                                   server, source)

    def report(self, event_type, event_id, text, sid=None):
        """One event (``ReportEventW``): ``event_type`` an EVENTLOG_*_TYPE,
        ``event_id`` a DWORD, ``text`` its one insertion string (at most
        31,839 characters, as ReportEventW allows), ``sid`` a binary SID
        (``process_sid()``) or None for no user.  ValueError for a text too
        long or a closed source."""
        if len(text) > _MAX_EVENT_STRING or "\0" in text:
            raise ValueError("an event string is at most %d characters and "
                             "holds no NUL" % _MAX_EVENT_STRING)
        strings = (LPCWSTR * 1)(text)
        sid_buf = ctypes.create_string_buffer(bytes(sid), len(sid)) \
            if sid else None
        with self._lock:
            if self._handle is None:
                raise ValueError("the event source %s is closed"
                                 % self.source)
            _event_call(self._api, "ReportEventW", self.source, self._handle,
                        event_type, 0, event_id,
                        ctypes.addressof(sid_buf) if sid_buf else None, 1, 0,
                        strings, None)

    def close(self):
        """Deregister the source; later calls do nothing."""
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            _event_call(self._api, "DeregisterEventSource", self.source,
                        handle)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
