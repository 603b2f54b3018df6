from twisted.application.service import ServiceMaker

pipe = ServiceMaker(
    "pipeserver", "pipeserver.ops.tap", "Stream HTTP bodies from senders to receivers", "pipe"
)
