# twistd -ny tap/pipe.tac -- the same server as `twistd -n pipe`.
# Settings come from the environment: PIPE_LISTEN (space-separated endpoints),
# PIPE_WAIT_TIMEOUT, PIPE_MAX_RECEIVERS, PIPE_LOG_FORMAT (text or json),
# PIPE_METRICS_LISTEN (space-separated endpoints for /metrics).
import os

from twisted.application import service

from pipeserver.tap import Options, makeService

options = Options()
args = []
for endpoint in os.environ.get("PIPE_LISTEN", "tcp:8080").split():
    args += ["--listen", endpoint]
for endpoint in os.environ.get("PIPE_METRICS_LISTEN", "").split():
    args += ["--metrics-listen", endpoint]
for name in ("wait-timeout", "max-receivers", "log-format"):
    value = os.environ.get("PIPE_" + name.upper().replace("-", "_"))
    if value:
        args += ["--" + name, value]
options.parseOptions(args)

application = service.Application("pipeserver")
makeService(options).setServiceParent(application)
