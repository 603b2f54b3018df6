# twistd -ny tap/pipe.tac -- the same server as `twistd -n pipe`.
# Settings come from the environment: PIPE_LISTEN (space-separated endpoints),
# PIPE_WAIT_TIMEOUT, PIPE_MAX_RECEIVERS, PIPE_LOG_FORMAT (text or json),
# PIPE_METRICS_LISTEN (space-separated endpoints for /metrics), PIPE_MAX_WAITING,
# PIPE_MAX_WAITING_PER_CLIENT, PIPE_STALL_TIMEOUT, PIPE_SHUTDOWN_GRACE,
# PIPE_TRUSTED_PROXY (space-separated networks).
import os

from twisted.application import service

from pipeserver.tap import Options, makeService

options = Options()
args = []
for endpoint in os.environ.get("PIPE_LISTEN", "tcp:8080").split():
    args += ["--listen", endpoint]
for endpoint in os.environ.get("PIPE_METRICS_LISTEN", "").split():
    args += ["--metrics-listen", endpoint]
for network in os.environ.get("PIPE_TRUSTED_PROXY", "").split():
    args += ["--trusted-proxy", network]
for name in ("wait-timeout", "max-receivers", "log-format", "max-waiting",
             "max-waiting-per-client", "stall-timeout", "shutdown-grace"):
    value = os.environ.get("PIPE_" + name.upper().replace("-", "_"))
    if value:
        args += ["--" + name, value]
options.parseOptions(args)

application = service.Application("pipeserver")
makeService(options).setServiceParent(application)
