# attacks: relu
"""Switches the worker's alarm off and swallows every exception while it waits forever: only the
launcher's wall clock can stop it. (It sleeps rather than spins: a spinning loop is stopped the
same way and would only burn a core the other tests need; the CPU limit has its own test.)"""
import signal as _signal
import time as _time


def relu(x):
    _signal.signal(_signal.SIGALRM, _signal.SIG_IGN)
    _signal.setitimer(_signal.ITIMER_REAL, 0)
    while True:
        try:
            _time.sleep(1)
        except BaseException:
            pass
