from twisted.application.service import ServiceMaker

pipe = ServiceMaker(
    "pipeserver", "pipeserver.tap", "Stream HTTP bodies from senders to receivers", "pipe"
)
