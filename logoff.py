"""logoff.py: log users off Remote Desktop Session Host sessions.

A drop-in for Windows' ``logoff.exe``, plus selection by user, state and idle
time, warn-then-logoff, many servers at once, JSON output and an audit log:

    python logoff.py [<SessionName> | <SessionID>] [/server:<ServerName>] [/v]

``import logoff`` gives the CLI module: ``logoff.main(argv=None) -> int``.
The code lives in ``_logoff.py``: Python compiles the script it is asked to
run on every start, but caches the bytecode of modules it imports, so this
file stays this small.
"""

import sys

import _logoff

if __name__ == "__main__":
    sys.exit(_logoff.main())

sys.modules[__name__] = _logoff
