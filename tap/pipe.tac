# twistd -ny tap/pipe.tac -- the same server as `twistd -n pipe`.
# Settings come from the environment, as in the container image
# (pipeserver/ops/environ.py): each option --NAME of `twistd pipe` is PIPE_NAME,
# e.g. PIPE_WAIT_TIMEOUT, PIPE_MAX_RECEIVERS, PIPE_TOKENS (a file),
# PIPE_SHUTDOWN_GRACE, PIPE_LOG_FORMAT (text or json); PIPE_LISTEN,
# PIPE_METRICS_LISTEN and PIPE_TRUSTED_PROXY take space-separated lists
# (PIPE_LISTEN: tcp:8080). A PIPE_* variable that names no option (a typo)
# or a bad value stops it, in one line.
import os

from twisted.application import service

from pipeserver.ops.environ import options
from pipeserver.ops.tap import makeService

application = service.Application("pipeserver")
makeService(options(os.environ)).setServiceParent(application)
