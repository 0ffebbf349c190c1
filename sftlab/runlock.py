"""The run lock's former name: sftlab.runlock is sftlab.runs.lock (the very module, so a name set on one is set on
the other), kept for the imports and scripts that use it."""

import sys

from sftlab.runs import lock

sys.modules[__name__] = lock
