# attacks: relu
"""Switches the worker's alarm off and swallows every exception: only the launcher's wall clock
(and the CPU limit) can stop it."""
import signal as _signal


def relu(x):
    _signal.signal(_signal.SIGALRM, _signal.SIG_IGN)
    _signal.setitimer(_signal.ITIMER_REAL, 0)
    while True:
        try:
            pass
        except BaseException:
            pass
